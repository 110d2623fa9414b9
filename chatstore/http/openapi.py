"""The OpenAPI 3.1 document of the HTTP contract, generated from the pydantic models.

Each path and method the app serves is one row of ``OPERATIONS``; the schemas
are the models' own (inputs as validated, outputs as serialized), so the
document cannot drift from what the app accepts and returns. The error
responses of an operation follow from its shape: every /api operation can
answer 401 and 503, one with a path parameter 404, one with a body 400, 408,
413, 415 and 422, one with query or header parameters 422, one that takes an
Idempotency-Key 409 (the chat message's 409 may also be idempotency_in_progress).

The repository keeps a copy in openapi.json: ``scripts/openapi`` rewrites it
(``python -m chatstore.http.openapi`` prints it).

Long because: the document's shared responses and their prose for every
error, next to the code that walks the endpoint table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import JsonSchemaMode, SkipJsonSchema, models_json_schema

from chatstore.chat import MAX_HISTORY
from chatstore.http.params import MAX_SEQ
from chatstore.idempotency import MAX_KEY_LENGTH, WAIT_SECONDS
from chatstore.models import (
    ChatExchange,
    ChatHistory,
    ChatMessageInput,
    ChatStart,
    Conversation,
    ConversationInput,
    ConversationPage,
    ConversationPatch,
    Deleted,
    Message,
    MessageBatch,
    MessageInput,
    MessageList,
    MessagePage,
    Role,
    SearchResults,
    ToolCall,
)
from chatstore.search import MAX_QUERY_CHARS

VERSION = "0.1.0"
SCHEMAS = "#/components/schemas/{model}"
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"cookie": []}]

# -- shapes only the document needs -------------------------------------------------------


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


Models = tuple[type[BaseModel], ...]  # more than one: any one of them (oneOf)

# -- the operations -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    id: str
    summary: str
    tag: str
    status: int  # success
    response: Models  # () for no content
    body: Models = ()
    body_required: bool = True
    parameters: tuple[dict[str, Any], ...] = ()  # query and header; path ones are implied
    streams: tuple[tuple[str, str], ...] = ()  # (media type, description): non-JSON successes
    idempotent: bool = False  # takes an Idempotency-Key
    extra: tuple[str, ...] = ()  # more responses, by name in RESPONSES
    public: bool = False


def parameter(
    name: str, where: str, description: str, schema: dict[str, Any], *, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required,
        "description": description,
        "schema": schema,
    }


def query_int(
    name: str,
    description: str,
    *,
    minimum: int,
    maximum: int = MAX_SEQ,
    default: int | None = None,
    required: bool = False,
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum, "maximum": maximum}
    if default is not None:
        schema["default"] = default
    return parameter(name, "query", description, schema, required=required)


def query_str(
    name: str, description: str, *, required: bool = False, **schema: Any
) -> dict[str, Any]:
    return parameter(name, "query", description, {"type": "string", **schema}, required=required)


IDEMPOTENCY_KEY = parameter(
    "Idempotency-Key",
    "header",
    "Within 24 hours, a repeat of this request with the same key stores nothing new and "
    "replays the first answer (with Idempotent-Replayed: true); the same key with a different "
    "request is a 409. A repeat that arrives while the first is still being answered waits for "
    "it (a chat message's, for up to a bounded time: then 409 idempotency_in_progress). "
    "Deleting the conversation, the messages or the user an answer holds forgets the answer: "
    "a repeat is then new work.",
    {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": "^[ -~]+$"},
)


PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "id": {
        "description": "The conversation's id. A malformed id is a 404, like an unknown one.",
        "schema": {"type": "string", "format": "uuid"},
    },
    "session_id": {
        "description": "The chat session's id (its conversation's id); malformed is a 404.",
        "schema": {"type": "string", "format": "uuid"},
    },
    "seq": {
        "description": "The message's position in its conversation.",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_SEQ},
    },
}

CONVERSATIONS = "/api/conversations"
CONVERSATION = "/api/conversations/{id}"
MESSAGES = "/api/conversations/{id}/messages"
MESSAGE = "/api/conversations/{id}/messages/{seq}"

# fmt: off
OPERATIONS: tuple[Operation, ...] = (
    Operation("post", CONVERSATIONS, "createConversation", "Create a conversation",
              "conversations", 201, (Conversation,), (ConversationInput,), body_required=False,
              idempotent=True),
    Operation("get", CONVERSATIONS, "listConversations",
              "List conversations, newest activity first", "conversations", 200,
              (ConversationPage,), parameters=(
                  query_int("limit", "Page size.", minimum=1, maximum=100, default=20),
                  query_str("cursor", "The next_cursor of the previous page (opaque)."))),
    Operation("get", CONVERSATION, "getConversation", "Get a conversation", "conversations",
              200, (Conversation,)),
    Operation("patch", CONVERSATION, "updateConversation",
              "Change a conversation's title or metadata", "conversations", 200,
              (Conversation,), (ConversationPatch,)),
    Operation("delete", CONVERSATION, "deleteConversation",
              "Delete a conversation and its messages", "conversations", 204, ()),
    Operation("post", MESSAGES, "appendMessages", "Append a message, or a list atomically",
              "messages", 201, (Message, MessageList), (MessageInput, MessageBatch),
              idempotent=True, extra=("Conflict",)),
    Operation("get", MESSAGES, "listMessages", "List a conversation's messages", "messages",
              200, (MessagePage,), parameters=(
                  query_int("limit", "Page size.", minimum=1, maximum=1000, default=100),
                  query_str("order", "By seq.", enum=["asc", "desc"], default="asc"),
                  query_int("after", "Only messages with a greater seq.", minimum=0),
                  query_int("before", "Only messages with a smaller seq.", minimum=0))),
    Operation("delete", MESSAGES, "truncateMessages",
              "Delete every message from a seq on (edit and regenerate)", "messages", 200,
              (Deleted,), parameters=(query_int(
                  "from_seq", "Delete every message with seq >= from_seq.", minimum=1,
                  required=True),)),
    Operation("get", MESSAGE, "getMessage", "Get a message", "messages", 200, (Message,)),
    Operation("delete", MESSAGE, "deleteMessage", "Delete a message (its seq is not reused)",
              "messages", 204, ()),
    Operation("post", "/api/chat/start", "startChat", "Start a chat session", "chat", 201,
              (ChatStart,), (ConversationInput,), body_required=False, idempotent=True),
    Operation("post", "/api/chat/{session_id}/message", "sendChatMessage",
              "Send the user's message and get the reply", "chat", 201, (ChatExchange,),
              (ChatMessageInput,), idempotent=True, extra=("ChatConflict",)),
    Operation("get", "/api/chat/{session_id}/history", "getChatHistory",
              "The latest messages of a chat session, oldest first", "chat", 200,
              (ChatHistory,), parameters=(
                  query_int("limit", "How many messages.", minimum=1, maximum=MAX_HISTORY,
                            default=50),
                  query_int("before", "Only messages with a smaller seq.", minimum=1))),
    Operation("get", "/api/search", "searchMessages",
              "Full-text search over the caller's messages, best matches first", "search", 200,
              (SearchResults,), parameters=(
                  query_str("q", 'Web-search syntax: words, "phrases", -exclusions, or.',
                            required=True, minLength=1, maxLength=MAX_QUERY_CHARS),
                  query_int("limit", "How many matches.", minimum=1, maximum=100, default=20),
                  query_str("conversation_id", "Only this conversation's messages.",
                            format="uuid"))),
    Operation("get", "/api/conversations/{id}/export", "exportConversation",
              "Export a conversation", "export", 200, (OpenAIExport,), parameters=(
                  query_str("format", "openai: a chat-completions messages array (JSON); "
                            "jsonl: one Message per line, streamed.", enum=["openai", "jsonl"],
                            default="openai"),),
              streams=(("application/x-ndjson", "format=jsonl: one Message (see the Message "
                        "schema) per line, in seq order."),)),
    Operation("get", "/api/conversations/{id}/events", "followConversation",
              "Live updates: every message appended, as Server-Sent Events", "export", 200, (),
              parameters=(parameter(
                  "Last-Event-ID", "header", "Replay the messages after this seq first.",
                  {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}),),
              extra=("TooManyStreams",),
              streams=(("text/event-stream", "One `event: message` per message appended, "
                        "with `id: <seq>` and the Message (see the Message schema) as `data`; "
                        "comment lines keep an idle stream open. The stream ends when the "
                        "session that opened it is signed out, revoked or expires (the "
                        "client's reconnection then gets its 401)."),)),
    Operation("get", "/healthz", "getHealth", "Liveness", "service", 200, (Health,),
              public=True),
    Operation("get", "/readyz", "getReadiness",
              "Readiness: the database answers and every migration is applied", "service",
              200, (Readiness,), extra=("NotReady",), public=True),
    Operation("get", "/openapi.json", "getOpenapi", "This document", "service", 200,
              (AnyObject,), public=True),
    Operation("get", "/metrics", "getMetrics",
              "This process's metrics (unauthenticated: expose it to the scraper only)",
              "service", 200, (), public=True,
              streams=(("text/plain", "Prometheus text exposition format 0.0.4."),)),
)
# fmt: on

# -- responses shared by operations -------------------------------------------------------

HEADERS: dict[str, dict[str, Any]] = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "WWW-Authenticate": {
        "description": "The scheme to authenticate with.",
        "schema": {"type": "string"},
    },
    "X-Request-ID": {
        "description": "The request's id, as in the server's log line for it: the "
        "request's own X-Request-ID when that is 1 to 128 visible ASCII characters, "
        "otherwise a generated one.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    },
    "Idempotent-Replayed": {
        "description": "Present when this answer replays the first one for its Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
}

# name: (status, description, schema, headers)
# fmt: off
RESPONSES: dict[str, tuple[int, str, type[BaseModel], tuple[str, ...]]] = {
    "InvalidJson": (400, "`invalid_json`: the body is not parseable JSON.", Error, ()),
    "Unauthorized": (
        401, "`unauthorized`: no, invalid or expired credentials.", Error, ("WWW-Authenticate",)
    ),
    "NotFound": (404, "`not_found`: unknown, another user's, or malformed id.", Error, ()),
    "IdempotencyConflict": (
        409, "`idempotency_conflict`: the Idempotency-Key was used with a different request.",
        Error, ()
    ),
    "Conflict": (
        409, "`seq_conflict`: expected_last_seq is no longer the last seq, nothing is stored; "
        "or `idempotency_conflict`: the Idempotency-Key was used with a different request.",
        Error, ()
    ),
    "ChatConflict": (
        409, "`idempotency_conflict`: the Idempotency-Key was used with a different request; "
        f"or `idempotency_in_progress` (with Retry-After): the key's first request is still "
        f"waiting for its reply after this repeat waited {WAIT_SECONDS:g} s for it; nothing is "
        "stored, and a retry with the key replays the first answer once it is done.",
        Error, ("Retry-After",)
    ),
    "RequestTimeout": (408, "`request_timeout`: the body did not arrive in time.", Error, ()),
    "PayloadTooLarge": (413, "`payload_too_large`: the body is over the size cap.", Error, ()),
    "UnsupportedMediaType": (
        415, "`unsupported_media_type`: the body is not application/json.", Error, ()
    ),
    "ValidationError": (
        422, "`validation_error`: well-formed input that breaks a rule; `details` locates each.",
        Error, ()
    ),
    "TooManyStreams": (
        429, "`too_many_streams`: the caller already holds the most event streams one user "
        "may hold open on this server process (CHATSTORE_MAX_STREAMS_PER_USER); close one.",
        Error, ("Retry-After",)
    ),
    "Unavailable": (
        503, "`unavailable`: the database cannot be reached; retry.", Error, ("Retry-After",)
    ),
    "NotReady": (503, "Not ready: see `reason`.", Readiness, ("Retry-After",)),
}
# fmt: on


def error_responses(op: Operation) -> dict[int, str]:
    """The error responses an operation's shape implies, then its own (which win)."""
    names: list[str] = []
    if not op.public:
        names += ["Unauthorized", "Unavailable"]
    if "{" in op.path:
        names.append("NotFound")
    if op.body:
        names += ["InvalidJson", "RequestTimeout", "PayloadTooLarge", "UnsupportedMediaType"]
        names.append("ValidationError")
    if op.parameters or op.idempotent:
        names.append("ValidationError")
    if op.idempotent:
        names.append("IdempotencyConflict")
    return {RESPONSES[name][0]: name for name in [*names, *op.extra]}


SUCCESS = {200: "OK", 201: "Created", 204: "Done; no content"}

# -- the document -------------------------------------------------------------------------

Refs = Mapping[tuple[Any, JsonSchemaMode], Mapping[str, Any]]  # (model, mode): its $ref


def _schemas() -> tuple[Refs, dict[str, Any]]:
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for op in OPERATIONS:
        wanted.update(dict.fromkeys((model, "validation") for model in op.body))
        wanted.update(dict.fromkeys((model, "serialization") for model in op.response))
    for _status, _text, model, _headers in RESPONSES.values():
        wanted[(model, "serialization")] = None
    refs, top = models_json_schema(list(wanted), ref_template=SCHEMAS)
    return refs, top["$defs"]


def _content(models: Models, mode: JsonSchemaMode, refs: Refs) -> dict[str, Any]:
    schemas = [dict(refs[(model, mode)]) for model in models]
    schema = schemas[0] if len(schemas) == 1 else {"oneOf": schemas}
    return {"application/json": {"schema": schema}}


# One server-sent event, as OpenAPI 3.1 tools read a text/event-stream schema
# (an event's fields, with the Message as JSON in `data`).
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"const": "message"},
        "id": {"type": "string", "pattern": "^[1-9][0-9]*$"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": SCHEMAS.format(model="Message")},
        },
        "retry": {"type": "integer", "minimum": 0},
    },
}


def _stream_schema(media_type: str, description: str) -> dict[str, Any]:
    if media_type == "text/event-stream":
        return {**SSE_EVENT, "description": description}
    return {"type": "string", "description": description}


def _operation(op: Operation, refs: Refs) -> dict[str, Any]:
    success: dict[str, Any] = {"description": SUCCESS[op.status]}
    content = _content(op.response, "serialization", refs) if op.response else {}
    for media_type, description in op.streams:
        content[media_type] = {"schema": _stream_schema(media_type, description)}
    if content:
        success["content"] = content
    success["headers"] = {"X-Request-ID": HEADERS["X-Request-ID"]}
    if op.idempotent:
        success["headers"]["Idempotent-Replayed"] = HEADERS["Idempotent-Replayed"]
    responses: dict[str, Any] = {str(op.status): success}
    for status, name in sorted(error_responses(op).items()):
        responses[str(status)] = {"$ref": f"#/components/responses/{name}"}
    parameters = [
        {"name": name, "in": "path", "required": True, **PATH_PARAMETERS[name]}
        for name in re.findall(r"{(\w+)}", op.path)
    ]
    parameters += [*op.parameters, *([IDEMPOTENCY_KEY] if op.idempotent else [])]
    document: dict[str, Any] = {
        "operationId": op.id,
        "summary": op.summary,
        "tags": [op.tag],
        "responses": responses,
    }
    if parameters:
        document["parameters"] = parameters
    if op.body:
        document["requestBody"] = {
            "required": op.body_required,
            "content": _content(op.body, "validation", refs),
        }
    if not op.public:
        document["security"] = SECURITY
    return document


def openapi_document() -> dict[str, Any]:
    refs, schemas = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, refs)
    responses = {
        name: {
            "description": text,
            "content": _content((model,), "serialization", refs),
            "headers": {h: HEADERS[h] for h in ("X-Request-ID", *headers)},
        }
        for name, (_status, text, model, headers) in RESPONSES.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chatstore",
            "version": VERSION,
            "description": "PostgreSQL persistence for LLM chatbots: conversations and "
            "messages over HTTP. Every /api operation needs a better-auth session.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": responses,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The token column of a row in better-auth's session table.",
                },
                "cookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "better-auth.session_token",
                    "description": "better-auth's signed session cookie, <token>.<signature> "
                    "(also accepted as __Secure-better-auth.session_token).",
                },
            },
        },
    }


def render() -> str:
    """The document as committed in openapi.json."""
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(render())
