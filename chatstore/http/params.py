"""Path and query parameters, parsed strictly: a bad value is a 422 (query)
or a 404 (path: a malformed id names nothing).

Each endpoint's query parameters are one pydantic model (its row in
chatstore/http/endpoints.py names it): the model's fields carry each
parameter's type, default, bounds and description, which both the parser
below and the OpenAPI document (chatstore/http/openapi.py) read, so a limit
is written once. A field is an int (bounded by ``minimum``/``maximum``), a
Literal (one of its values) or a string (checked by the store).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo
from starlette.requests import Request

from chatstore import chat, conversations, messages, search
from chatstore.errors import NotFound, ValidationError
from chatstore.http import v1_shapes
from chatstore.models import MAX_SEQ

__all__ = ["MAX_SEQ", "QueryModel", "parse_query", "path_seq", "query", "rules"]

Q = TypeVar("Q", bound="QueryModel")


def param(
    description: str,
    default: Any = None,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    required: str | bool = False,
    **schema: Any,
) -> Any:
    """A query parameter. ``required``: documented as required; a string
    is also the message when it is missing (else a missing one is its
    default, for the store to judge). ``schema``: more of its OpenAPI
    schema (the store enforces those)."""
    rules: dict[str, Any] = {"required": required, "schema": schema}
    if minimum is not None:
        rules["minimum"] = minimum
        rules["maximum"] = MAX_SEQ if maximum is None else maximum
    return Field(default, description=description, json_schema_extra={"rules": rules})


def rules(field: FieldInfo) -> dict[str, Any]:
    extra = field.json_schema_extra
    assert isinstance(extra, dict), "declare query fields with param()"
    found: dict[str, Any] = extra["rules"]  # type: ignore[assignment]
    return found


def choices(field: FieldInfo) -> tuple[str, ...] | None:
    """The values of a Literal field, else None."""
    if get_origin(field.annotation) is Literal:
        return tuple(get_args(field.annotation))
    return None


class QueryModel(BaseModel):
    """An endpoint's query parameters."""

    model_config = ConfigDict(frozen=True)


def parse_query(model: type[Q], request: Request) -> Q:
    """The request's query parameters as ``model``, checked in field order."""
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        rule = rules(field)
        raw = request.query_params.get(name)
        if raw is None:
            if isinstance(rule["required"], str):
                raise ValidationError.at(["query", name], rule["required"])
            continue
        allowed = choices(field)
        if allowed is not None:
            if raw not in allowed:
                raise ValidationError.at(
                    ["query", name], f"{name} must be one of {', '.join(allowed)}"
                )
            values[name] = raw
        elif "minimum" in rule:
            values[name] = _integer(name, raw, rule["minimum"], rule["maximum"])
        else:
            values[name] = raw
    return model.model_construct(**values)


def _integer(name: str, raw: str, minimum: int, maximum: int) -> int:
    # ASCII digits only: int() would also take " 5", "+5", "5_0" and other scripts' digits.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not minimum <= int(raw) <= maximum:
        raise ValidationError.at(
            ["query", name], f"{name} must be an integer from {minimum} to {maximum}"
        )
    return int(raw)


def query(request: Request, model: type[Q]) -> Q:
    """The query of the endpoint serving ``request`` (its row's model),
    parsed where the handler asks for it: after authentication."""
    declared = request.scope.get("chatstore.query")
    assert declared is model, f"{model.__name__} is not this endpoint's query model"
    return parse_query(model, request)


def path_seq(request: Request) -> int:
    raw: str = request.path_params["seq"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > MAX_SEQ:
        raise NotFound("message")
    return int(raw)


# -- the endpoints' query models ----------------------------------------------------


class ConversationListQuery(QueryModel):
    limit: int = param("Page size.", 20, minimum=1, maximum=conversations.MAX_PAGE)
    cursor: str | None = param("The next_cursor of the previous page (opaque).")
    archived: Literal["false", "true"] = param(
        "false: the conversations not archived; true: the archived ones only.", "false"
    )


class MessageListQuery(QueryModel):
    limit: int = param("Page size.", 100, minimum=1, maximum=messages.MAX_PAGE)
    order: Literal["asc", "desc"] = param("By seq.", "asc")
    after: int | None = param("Only messages with a greater seq.", minimum=0)
    before: int | None = param("Only messages with a smaller seq.", minimum=0)


class TruncateQuery(QueryModel):
    from_seq: int = param(
        "Delete the active path from its first message with seq >= from_seq, "
        "and everything below it.",
        minimum=1,
        required="from_seq is required: the active path from it on is deleted",
    )


class ChatHistoryQuery(QueryModel):
    limit: int = param("How many messages.", 50, minimum=1, maximum=chat.MAX_HISTORY)
    before: int | None = param("Only messages with a smaller seq.", minimum=1)


class SearchQuery(QueryModel):
    q: str = param(
        'Web-search syntax: words, "phrases", -exclusions, or.',
        "",
        required=True,
        minLength=1,
        maxLength=search.MAX_QUERY_CHARS,
    )
    limit: int = param("How many matches.", 20, minimum=1, maximum=search.MAX_PAGE)
    conversation_id: str | None = param("Only this conversation's messages.", format="uuid")
    archived: search.Archived = param(
        "include: every conversation's messages; exclude: not those of archived "
        "conversations; only: only theirs.",
        "include",
    )


class ExportQuery(QueryModel):
    format: Literal["openai", "jsonl"] = param(
        "openai: a chat-completions messages array (JSON); jsonl: one Message per line, streamed.",
        "openai",
    )


class V1ItemListQuery(QueryModel):
    """OpenAI's items.list (include is accepted and ignored: items are
    returned whole)."""

    limit: int = param("Page size.", 20, minimum=1, maximum=v1_shapes.MAX_LIST_LIMIT)
    order: Literal["asc", "desc"] = param("By position in the conversation.", "desc")
    after: str | None = param("An item id: only the items after it, in this order.")
