"""The shapes chatstore accepts and returns, with every input rule of the contract.

Inputs are strict (no coercion: ``"seq": "1"`` is not an int) and closed
(unknown fields are rejected). Outputs are built from database rows without
re-validation: the schema's CHECK constraints already hold them.

Long because: every model of the contract, input and output side by side,
so that a rule is read next to what it guards.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal, Protocol, Self, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

DEFAULT_MAX_CONTENT_CHARS = 1_000_000
MAX_BATCH = 100
MAX_METADATA_KEYS = 16
# An import is one transaction: its size is bounded by the body cap
# (CHATSTORE_MAX_BODY_BYTES) and by this many messages.
MAX_IMPORT_MESSAGES = 10_000
# seq is a bigint.
MAX_SEQ = 2**63 - 1


class Row(Protocol):
    """A database row (asyncpg.Record) read by column name."""

    def __getitem__(self, key: str, /) -> Any: ...


Role = Literal["system", "developer", "user", "assistant", "tool"]


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold U+0000, and a lone surrogate (which JSON's
    # "\ud800" escape can produce) is not UTF-8: refuse both here as a 422
    # rather than let the database or the driver fail on them.
    found = _UNSTORABLE.search(value)
    if found is not None:
        if found.group() == "\x00":
            raise ValueError("must not contain the NUL character (U+0000)")
        raise ValueError("must not contain a lone UTF-16 surrogate")
    return value


# Constraints first, then the storability check, so that the constraints
# also appear in the JSON schema (openapi.json).
Text = Annotated[str, AfterValidator(_storable)]
Identifier = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$"), AfterValidator(_storable)
]
MetadataKey = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(_storable)
]
MetadataValue = Annotated[str, StringConstraints(max_length=512), AfterValidator(_storable)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=MAX_METADATA_KEYS)]
Title = Annotated[str, StringConstraints(max_length=200), AfterValidator(_storable)]
ToolCallId = Annotated[
    str, StringConstraints(min_length=1, max_length=255), AfterValidator(_storable)
]

M = TypeVar("M", bound=BaseModel)

# A model instance's state is BaseModel's four slots (__slots__): set
# through their own descriptors, not object.__setattr__, which looks each
# one up again on every call (0.34 against 0.49 µs a row, so 8 µs off a
# page of 50).
_new = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


# Each model's field names: an instance's fields-set is a copy of them
# (copying a set: 86 ns; building it from the values' keys: 124 ns).
_field_names: dict[type[BaseModel], frozenset[str]] = {}


def _names(cls: type[BaseModel]) -> frozenset[str]:
    names = _field_names.get(cls)
    if names is None:
        names = _field_names[cls] = frozenset(cls.model_fields)
    return names


def _trusted(cls: type[M], values: dict[str, Any]) -> M:
    """An instance of ``cls`` from every one of its fields, as the database
    returns them (its CHECK constraints already hold the rules): what
    ``model_construct`` ends up doing, without its per-field bookkeeping,
    which cost about 3.7 µs a row (BENCHMARKS.md)."""
    instance: M = _new(cls)
    _set_dict(instance, values)
    _set_fields_set(instance, set(_names(cls)))
    _set_extra(instance, None)
    _set_private(instance, None)
    return instance


def _trusted_rows(
    cls: type[M], fields_of: Callable[[Row], dict[str, Any]], rows: Iterable[Row]
) -> list[M]:
    """``[_trusted(cls, fields_of(row)) for row in rows]``, with the
    instance built in the loop: a page of 50 messages made 150 Python calls
    that way, a third of its models' cost (62 against 46 µs a page)."""
    names = _names(cls)
    built: list[M] = []
    for row in rows:
        instance: M = _new(cls)
        _set_dict(instance, fields_of(row))
        _set_fields_set(instance, set(names))
        _set_extra(instance, None)
        _set_private(instance, None)
        built.append(instance)
    return built


_INPUT = ConfigDict(extra="forbid", strict=True)
_OUTPUT = ConfigDict(extra="forbid")


def _max_content(info: ValidationInfo) -> int:
    context = info.context
    if isinstance(context, Mapping):
        return int(context.get("max_content_chars", DEFAULT_MAX_CONTENT_CHARS))
    return DEFAULT_MAX_CONTENT_CHARS


class ToolFunction(BaseModel):
    model_config = _INPUT

    name: Identifier
    arguments: Text

    @field_validator("arguments")
    @classmethod
    def _arguments_within_cap(cls, value: str, info: ValidationInfo) -> str:
        if len(value) > _max_content(info):
            raise ValueError(f"must be at most {_max_content(info)} characters")
        return value


class ToolCall(BaseModel):
    model_config = _INPUT

    id: ToolCallId
    type: Literal["function"]
    function: ToolFunction


class MessageInput(BaseModel):
    """One message as a client sends it (OpenAI chat-completions shape)."""

    model_config = _INPUT

    role: Role
    content: Text | None = None
    name: Identifier | None = None
    tool_calls: Annotated[list[ToolCall], Field(min_length=1)] | None = None
    tool_call_id: ToolCallId | None = None
    metadata: Metadata = Field(default_factory=dict)

    @field_validator("content")
    @classmethod
    def _content_within_cap(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and len(value) > _max_content(info):
            raise ValueError(f"must be at most {_max_content(info)} characters")
        return value

    @model_validator(mode="after")
    def _role_rules(self) -> Self:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("tool_calls is only allowed on assistant messages")
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("tool_call_id is required on tool messages")
        if self.role != "tool" and self.tool_call_id is not None:
            raise ValueError("tool_call_id is only allowed on tool messages")
        if self.content is None and self.tool_calls is None:
            raise ValueError("content is required unless an assistant message has tool_calls")
        if self.tool_calls is not None:
            ids = [call.id for call in self.tool_calls]
            if len(set(ids)) != len(ids):
                raise ValueError("tool call ids must be unique within a message")
        return self


class MessageBatch(BaseModel):
    """The list form of an append: atomic, optionally guarded by expected_last_seq."""

    model_config = _INPUT

    messages: Annotated[list[MessageInput], Field(min_length=1, max_length=MAX_BATCH)]
    expected_last_seq: Annotated[int, Field(ge=0, le=MAX_SEQ)] | None = None
    # The first message's parent: a message on the active path (a new
    # sibling of its child there), 0 for a new first message; absent: the
    # active leaf. The batch's last message becomes the active leaf.
    parent_seq: Annotated[int, Field(ge=0, le=MAX_SEQ)] | None = None


class MessageAppend(MessageInput):
    """The single-message form of an append: a message, and optionally the
    parent it follows (as MessageBatch.parent_seq)."""

    parent_seq: Annotated[int, Field(ge=0, le=MAX_SEQ)] | None = None


class ConversationInput(BaseModel):
    model_config = _INPUT

    title: Title | None = None
    metadata: Metadata = Field(default_factory=dict)


def _absent() -> Any:
    # A factory, not a default: a None default would appear in the schema.
    return None


class ConversationPatch(BaseModel):
    """The fields to change; absent fields stay as they are, a null title clears it."""

    model_config = _INPUT

    title: Title | None = None
    # Absent means unchanged (then it is None, never validated); null is
    # refused like any other non-object (send {} to clear). Typed as the
    # object alone so that the schema and the error say so.
    metadata: Metadata = Field(default_factory=_absent)
    # Absent means unchanged; null is refused (send true or false).
    archived: bool = Field(default_factory=_absent)


class ImportInput(BaseModel):
    """Body of POST /api/conversations/import (application/json)."""

    model_config = _INPUT

    title: Title | None = None
    metadata: Metadata = Field(default_factory=dict)
    messages: Annotated[list[MessageInput], Field(max_length=MAX_IMPORT_MESSAGES)]


class ChatMessageInput(BaseModel):
    """Body of POST /api/chat/{session_id}/message."""

    model_config = _INPUT

    content: Text

    @field_validator("content")
    @classmethod
    def _content_within_cap(cls, value: str, info: ValidationInfo) -> str:
        if len(value) > _max_content(info):
            raise ValueError(f"must be at most {_max_content(info)} characters")
        return value


class Conversation(BaseModel):
    model_config = _OUTPUT

    id: uuid.UUID
    title: str | None
    metadata: dict[str, str]
    # Put away (PATCH {"archived": true}): left out of the listing unless
    # asked for. A default so that a response stored for an Idempotency-Key
    # before the field existed (migrations/0010) still replays.
    archived: bool = False
    message_count: int
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def from_row(cls, row: Row) -> Conversation:
        return _trusted(cls, conversation_json(row))

    @classmethod
    def from_rows(cls, rows: Iterable[Row]) -> list[Conversation]:
        return _trusted_rows(cls, conversation_json, rows)


class Message(BaseModel):
    # Every field is in every response: the document says so of parent_seq
    # too, although it has a default.
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)

    conversation_id: uuid.UUID
    seq: int
    # The message this one follows (null for a first message): a
    # conversation is a tree, and what it shows is the active path. (A
    # default, so that Python code building a Message before branches still
    # does; the store always sets it.)
    parent_seq: int | None = None
    role: Role
    content: str | None
    name: str | None
    tool_calls: list[ToolCall] | None
    tool_call_id: str | None
    metadata: dict[str, str]
    created_at: dt.datetime

    @classmethod
    def from_row(cls, row: Row) -> Self:
        return _trusted(cls, cls.fields_of(row))

    @classmethod
    def from_rows(cls, rows: Iterable[Row]) -> list[Self]:
        return _trusted_rows(cls, cls.fields_of, rows)

    @staticmethod
    def fields_of(row: Row) -> dict[str, Any]:
        fields = message_json(row)
        if fields["tool_calls"] is not None:
            fields["tool_calls"] = [_tool_call(call) for call in row["tool_calls"]]
        return fields


class Sibling(Message):
    """A message among its alternatives (GET .../messages/{seq}/siblings)."""

    # Whether the conversation shows it: it is on the path from the root to
    # the active leaf.
    on_active_path: bool

    @staticmethod
    def fields_of(row: Row) -> dict[str, Any]:
        return {**Message.fields_of(row), "on_active_path": row["on_path"]}


class SiblingList(BaseModel):
    model_config = _OUTPUT

    data: list[Sibling]


class ActiveLeafInput(BaseModel):
    """PUT .../active: the message to show; the conversation's active leaf
    becomes its newest descendant (itself when it has none)."""

    model_config = _INPUT

    leaf_seq: Annotated[int, Field(ge=1, le=MAX_SEQ)]


class ActiveLeaf(BaseModel):
    model_config = _OUTPUT

    # The active leaf now: the end of the path the conversation shows.
    leaf_seq: int


def _tool_call(call: Mapping[str, Any]) -> ToolCall:
    function = call["function"]
    return _trusted(
        ToolCall,
        {
            "id": call["id"],
            "type": call["type"],
            "function": _trusted(
                ToolFunction, {"name": function["name"], "arguments": function["arguments"]}
            ),
        },
    )


class Item(BaseModel):
    """A Responses item of a conversation (chatstore/items.py)."""

    model_config = _OUTPUT

    # The row's seq: several items derived from one chat-completions
    # message (an assistant message with tool calls) share it.
    seq: int
    # The item's own "id" when usable (chatstore/items.py: a string with no
    # "/", not of the derived form, not already another item's), else one
    # chatstore derives (msg_<seq>, fc_<seq>_<i>, ...): stable, unique
    # within the conversation.
    id: str
    # Verbatim (JSON-equal) when added as an item, derived from the
    # chat-completions message otherwise.
    item: dict[str, Any]
    created_at: dt.datetime


class ItemPage(BaseModel):
    model_config = _OUTPUT

    items: list[Item]
    has_more: bool


# -- bodies rendered straight from rows ---------------------------------------
# The hot reads' HTTP bodies (a page of messages, of conversations) skip the
# models: a row becomes the dict its model would serialise to, in the same
# field order, and orjson writes it (issue 11: building 50 models and
# serialising them cost more than reading the rows). The bytes are the
# models' own, which tests/test_models.py and the HTTP tests check.


def message_json(row: Row) -> dict[str, Any]:
    """What ``Message.from_row(row).model_dump_json()`` holds, as a dict
    (and, with its tool calls made models, the model's fields). Metadata
    NULL is empty: the hot reads send it so (sql/messages.sql)."""
    calls = row["tool_calls"]
    metadata = row["metadata"]
    return {
        "conversation_id": row["conversation_id"],
        "seq": row["seq"],
        "parent_seq": row["parent_seq"],
        "role": row["role"],
        "content": row["content"],
        "name": row["name"],
        "tool_calls": None if calls is None else [_tool_call_json(call) for call in calls],
        "tool_call_id": row["tool_call_id"],
        "metadata": {} if metadata is None else metadata,
        "created_at": row["created_at"],
    }


def _tool_call_json(call: Mapping[str, Any]) -> dict[str, Any]:
    function = call["function"]
    return {
        "id": call["id"],
        "type": call["type"],
        "function": {"name": function["name"], "arguments": function["arguments"]},
    }


def conversation_json(row: Row) -> dict[str, Any]:
    """What ``Conversation.from_row(row).model_dump_json()`` holds, as a dict
    (and the model's fields: none of them is a model). Metadata NULL is
    empty, as in message_json."""
    metadata = row["metadata"]
    return {
        "id": row["id"],
        "title": row["title"],
        "metadata": {} if metadata is None else metadata,
        "archived": row["archived"],
        "message_count": row["message_count"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def json_body(value: Any) -> bytes:
    """JSON as pydantic writes it for the models (UUIDs as strings,
    datetimes ISO 8601 with Z, non-ASCII as is)."""
    return orjson.dumps(value, default=_uuid_text, option=orjson.OPT_UTC_Z)


def _uuid_text(value: object) -> str:
    # asyncpg's UUID subclasses uuid.UUID, which orjson writes only exactly.
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


class ConversationPage(BaseModel):
    model_config = _OUTPUT

    data: list[Conversation]
    next_cursor: str | None


class MessagePage(BaseModel):
    model_config = _OUTPUT

    data: list[Message]
    has_more: bool
    first_seq: int | None
    last_seq: int | None

    @classmethod
    def of(cls, data: list[Message], has_more: bool) -> MessagePage:
        """The page of ``data``, messages the store has just read: built as
        they were, without validating the 50 of them again."""
        return _trusted(
            cls,
            {
                "data": data,
                "has_more": has_more,
                "first_seq": data[0].seq if data else None,
                "last_seq": data[-1].seq if data else None,
            },
        )


class MessageList(BaseModel):
    model_config = _OUTPUT

    data: list[Message]


class ChatStart(BaseModel):
    model_config = _OUTPUT

    session_id: uuid.UUID
    conversation: Conversation


class ChatExchange(BaseModel):
    model_config = _OUTPUT

    user_message: Message
    reply: Message


class ChatHistory(BaseModel):
    model_config = _OUTPUT

    session_id: uuid.UUID
    messages: list[Message]
    has_more: bool


class Deleted(BaseModel):
    model_config = _OUTPUT

    deleted: int


class ErasedCounts(BaseModel):
    model_config = _OUTPUT

    conversations: int
    messages: int
    idempotency_keys: int


class Erased(BaseModel):
    """What an erasure deleted; all zeros when there was nothing (a repeat)."""

    model_config = _OUTPUT

    deleted: ErasedCounts


class SearchHit(BaseModel):
    model_config = _OUTPUT

    conversation_id: uuid.UUID
    seq: int
    role: Role
    # HTML-safe: the content is escaped; matches are wrapped in <mark></mark>.
    snippet: str
    created_at: dt.datetime


class SearchResults(BaseModel):
    model_config = _OUTPUT

    data: list[SearchHit]


# -- shapes of answers made without these models (error bodies, health, the
# openai export, streamed as it is read), for the OpenAPI document ---------------


def _without_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def absent() -> Any:
    """A field that is left out (never null) when it does not apply."""
    return Field(default=None, json_schema_extra=_without_default)


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] | SkipJsonSchema[None] = absent()  # only on 422


class Error(BaseModel):
    """Every error response: `{"error": {"code", "message", "details"?}}`."""

    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    reason: str | SkipJsonSchema[None] = absent()  # only when not ready


class ExportedMessage(BaseModel):
    """A chat-completions message: role and content, the rest only when set."""

    role: Role
    content: str | None
    name: str | SkipJsonSchema[None] = absent()
    tool_calls: list[ToolCall] | SkipJsonSchema[None] = absent()
    tool_call_id: str | SkipJsonSchema[None] = absent()


class OpenAIExport(BaseModel):
    messages: list[ExportedMessage]


class AnyObject(BaseModel):
    """The OpenAPI document itself."""
