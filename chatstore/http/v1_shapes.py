"""The shapes of OpenAI's Conversations API, as the /v1 routes speak it.

The objects are those of the official ``openai`` client's types
(openai/types/conversations): a conversation is
``{"id": "conv_...", "object": "conversation", "created_at": <Unix seconds>,
"metadata": {...}}``, a deletion ``{"id", "object": "conversation.deleted",
"deleted": true}``, a page of items the list envelope ``{"object": "list",
"data", "first_id", "last_id", "has_more"}``.

Ids: a conversation's /v1 id is ``conv_`` and its uuid's 32 hex digits, so
the same conversation is reachable through /api (by its uuid) and /v1; a /v1
path takes either form. An item's id is the one chatstore.items gives it,
unique within the conversation (its own "id" when usable, else derived), and
replaces the "id" of the stored item in the answer.

Items are stored verbatim (chatstore/items.py) and shown the way OpenAI's API
shows them (``openai_item``): an easy message ``{"role", "content": "text"}``
comes back as a ``message`` item with its id, ``status: "completed"`` and the
text as an ``input_text`` part (``output_text`` for the assistant); every
item carries its id.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chatstore.errors import NotFound
from chatstore.models import Conversation, Metadata

PREFIX = "conv_"
MAX_ITEMS_PER_CALL = 20  # OpenAI's: "You may add up to 20 items at a time."
MAX_LIST_LIMIT = 100

# Item types OpenAI gives a status when it returns them; chatstore stores
# what was sent and shows "completed" when the item did not say.
_WITH_STATUS = frozenset({"message", "function_call", "function_call_output"})
_ASSISTANT = "assistant"


def public_id(conversation_id: uuid.UUID) -> str:
    """The conversation's /v1 id: ``conv_`` and its uuid's 32 hex digits."""
    return PREFIX + conversation_id.hex


def conversation_uuid(raw: str) -> uuid.UUID:
    """The conversation a /v1 path names, by its /v1 id or its uuid; anything
    else names nothing (404, like an unknown id)."""
    hex_digits = raw.removeprefix(PREFIX) if raw.startswith(PREFIX) else None
    try:
        if hex_digits is not None:
            if len(hex_digits) != 32 or not all(c in "0123456789abcdefABCDEF" for c in hex_digits):
                raise ValueError(raw)
            return uuid.UUID(hex=hex_digits)
        if len(raw) != 36:
            raise ValueError(raw)
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound("conversation") from None


def _text_part(role: Any, text: Any) -> dict[str, Any]:
    if role == _ASSISTANT:
        return {"type": "output_text", "text": text, "annotations": []}
    return {"type": "input_text", "text": text}


def openai_item(item: Mapping[str, Any], item_id: str) -> dict[str, Any]:
    """``item`` as OpenAI's API returns it: typed, with its id and a status,
    an easy message's text as a content part. Fields the item has are kept
    as they are."""
    shown = dict(item)
    kind = shown.get("type")
    if kind is None and "role" in shown:
        kind = shown["type"] = "message"
    if kind == "message" and isinstance(shown.get("content"), str):
        shown["content"] = [_text_part(shown.get("role"), shown["content"])]
    if kind in _WITH_STATUS:
        shown.setdefault("status", "completed")
    shown["id"] = item_id
    return shown


# -- the objects ------------------------------------------------------------------------

_OUTPUT = ConfigDict(extra="forbid")


class V1Conversation(BaseModel):
    """A conversation as OpenAI's Conversations API returns it."""

    model_config = _OUTPUT

    id: str = Field(description="conv_ and the conversation's uuid in 32 hex digits.")
    object: Literal["conversation"] = "conversation"
    created_at: int = Field(description="Unix seconds.")
    metadata: dict[str, str]

    @classmethod
    def of(cls, conversation: Conversation) -> V1Conversation:
        return cls(
            id=public_id(conversation.id),
            created_at=int(conversation.created_at.timestamp()),
            metadata=conversation.metadata,
        )


class V1ConversationDeleted(BaseModel):
    model_config = _OUTPUT

    id: str
    object: Literal["conversation.deleted"] = "conversation.deleted"
    deleted: bool = True


class V1Item(BaseModel):
    """A conversation item: any Responses item (message, function_call,
    function_call_output, reasoning, ... and types not known here), with
    every field it was added with."""

    model_config = ConfigDict(extra="allow")

    id: str
    type: str


class V1ItemList(BaseModel):
    """A page of items (OpenAI's list envelope)."""

    model_config = _OUTPUT

    object: Literal["list"] = "list"
    data: list[V1Item]
    first_id: str | None = Field(description="The first item's id; null when data is empty.")
    last_id: str | None = Field(
        description="The last item's id (pass it as `after` for the next page); null when "
        "data is empty."
    )
    has_more: bool

    @classmethod
    def of(cls, items: list[dict[str, Any]], has_more: bool) -> V1ItemList:
        data = [V1Item.model_validate(item) for item in items]
        return cls(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=has_more,
        )


class V1ErrorBody(BaseModel):
    model_config = _OUTPUT

    message: str
    type: str = Field(description="invalid_request_error, or server_error for a 5xx.")
    param: str | None = Field(description="The field at fault, e.g. items[0].content.")
    code: str | None = Field(description="chatstore's machine code (invalid_api_key for a 401).")


class V1Error(BaseModel):
    """An error as OpenAI's API returns it."""

    model_config = _OUTPUT

    error: V1ErrorBody


# -- the requests -----------------------------------------------------------------------

_INPUT = ConfigDict(extra="forbid", strict=True)

# Each an object; what makes a valid item is chatstore.items' to say.
InputItems = Annotated[list[dict[str, Any]], Field(max_length=MAX_ITEMS_PER_CALL)]


class V1ConversationCreate(BaseModel):
    """Body of POST /v1/conversations (every field optional)."""

    model_config = _INPUT

    items: InputItems | None = Field(
        None, description=f"Items to start with, at most {MAX_ITEMS_PER_CALL}."
    )
    metadata: Metadata | None = None
    safety_identifier: str | None = Field(None, description="Accepted and ignored.")


class V1ConversationUpdate(BaseModel):
    """Body of POST /v1/conversations/{conversation_id}: the new metadata
    (replaces the old; null clears it)."""

    model_config = _INPUT

    metadata: Metadata | None


class V1ItemsCreate(BaseModel):
    """Body of POST /v1/conversations/{conversation_id}/items."""

    model_config = _INPUT

    items: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_ITEMS_PER_CALL)]
