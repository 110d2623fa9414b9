"""The OpenAPI 3.1 document of the HTTP contract, generated from the pydantic models.

Each path and method the app serves is one row of ``ENDPOINTS``
(chatstore/http/endpoints.py), walked here; the schemas and query
parameters are the models' own (inputs as validated, outputs as serialized), so the
document cannot drift from what the app accepts and returns. The error
responses of an operation follow from its shape: every /api operation can
answer 401 and 503, one with a path parameter 404, one with a body 400, 408,
413, 415 and 422, one with query or header parameters 422, one that takes an
Idempotency-Key 409 (the chat message's 409 may also be idempotency_in_progress).
The /v1 operations (OpenAI's Conversations API) answer the same errors in
OpenAI's body, a broken rule as a 400.

The repository keeps a copy in openapi.json: ``scripts/openapi`` rewrites it
(``python -m chatstore.http.openapi`` prints it).

Long because: the document's shared responses and their prose for every
error, next to the code that walks the endpoint table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from chatstore.http.endpoints import ENDPOINTS, Endpoint
from chatstore.http.params import MAX_SEQ, QueryModel, choices, rules
from chatstore.http.v1_shapes import V1Error
from chatstore.idempotency import MAX_KEY_LENGTH, WAIT_SECONDS
from chatstore.models import Error, Readiness

VERSION = "0.1.0"
SCHEMAS = "#/components/schemas/{model}"
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"cookie": []}]

Models = tuple[type[BaseModel], ...]  # more than one: any one of them (oneOf)

# -- parameters -----------------------------------------------------------------------


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


def query_parameters(model: type[QueryModel]) -> list[dict[str, Any]]:
    """The model's fields as OpenAPI query parameters (chatstore/http/params.py)."""
    found = []
    for name, field in model.model_fields.items():
        rule = rules(field)
        allowed = choices(field)
        schema: dict[str, Any]
        if allowed is not None:
            schema = {"type": "string", "enum": list(allowed)}
        elif "minimum" in rule:
            schema = {"type": "integer", "minimum": rule["minimum"], "maximum": rule["maximum"]}
        else:
            schema = {"type": "string"}
        schema.update(rule["schema"])
        if field.default is not None and not rule["required"]:
            schema["default"] = field.default
        assert field.description is not None, f"{model.__name__}.{name} needs a description"
        found.append(
            parameter(name, "query", field.description, schema, required=bool(rule["required"]))
        )
    return found


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

# Read-your-writes with read replicas (chatstore/http/consistency.py).
LSN_PATTERN = "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"
CHATSTORE_LSN = parameter(
    "Chatstore-LSN",
    "header",
    "A Chatstore-LSN from an earlier response: this request's reads show at least every "
    "write up to it (served by a read replica only once it has replayed that far, else by "
    "the primary). Malformed: 400 bad_request.",
    {"type": "string", "pattern": LSN_PATTERN},
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
    "conversation_id": {
        "description": "The conversation's id: conv_ and its uuid's 32 hex digits, or the "
        "uuid itself (as /api knows it). Anything else is a 404, like an unknown id.",
        "schema": {"type": "string", "minLength": 1},
    },
    "item_id": {
        "description": "The item's id (its own, when it was added with one; else the one "
        "chatstore gave it).",
        "schema": {"type": "string", "minLength": 1},
    },
}

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
    "Chatstore-LSN": {
        "description": "With read replicas configured, on a response whose request wrote: the "
        "commit LSN of its write. Send it back as the Chatstore-LSN request header to read "
        "that write from any server process.",
        "schema": {"type": "string", "pattern": LSN_PATTERN},
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
    "BadLsn": (400, "`bad_request`: the Chatstore-LSN header is not an LSN.", Error, ()),
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
    "ResponderError": (
        502, "`responder_error`: the model failed before its reply was complete. The user's "
        "message is stored (committed before the model was asked); the partial reply, if it "
        "had any text, is stored with metadata `incomplete: responder_error`. A retry with "
        "the same Idempotency-Key asks the model again for the stored message.",
        Error, ()
    ),
    "ResponderTimeout": (
        504, "`responder_timeout`: the reply was not complete within "
        "CHATSTORE_RESPONDER_TIMEOUT_SECONDS; stored as for 502, with `incomplete: timeout`.",
        Error, ()
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
        429, "`too_many_streams`: the caller already holds the most streams of this kind one "
        "user may hold open on this server process (event streams: "
        "CHATSTORE_MAX_STREAMS_PER_USER; exports: CHATSTORE_MAX_EXPORTS_PER_USER); close one.",
        Error, ("Retry-After",)
    ),
    "Unavailable": (
        503, "`unavailable`: the database cannot be reached; retry.", Error, ("Retry-After",)
    ),
    "NotReady": (503, "Not ready: see `reason`.", Readiness, ("Retry-After",)),
    # OpenAI's Conversations API (/v1): the same errors in OpenAI's body.
    "V1BadRequest": (
        400, "`invalid_json`: the body is not parseable JSON; or `validation_error`: a broken "
        "rule (more than 20 items, metadata over OpenAI's limits, an invalid item, a bad query "
        "parameter), with `param` naming the field.", V1Error, ()
    ),
    "V1Unauthorized": (
        401, "`invalid_api_key`: no, invalid or expired session token (the client's api_key).",
        V1Error, ("WWW-Authenticate",)
    ),
    "V1NotFound": (
        404, "`not_found`: unknown, another user's, or malformed conversation or item id.",
        V1Error, ()
    ),
    "V1RequestTimeout": (408, "`request_timeout`: the body did not arrive in time.", V1Error, ()),
    "V1IdempotencyConflict": (
        409, "`idempotency_conflict`: the Idempotency-Key was used with a different request "
        "(with `x-should-retry: false`).", V1Error, ()
    ),
    "V1PayloadTooLarge": (413, "`payload_too_large`: the body is over the size cap.", V1Error, ()),
    "V1UnsupportedMediaType": (
        415, "`unsupported_media_type`: the body is not application/json.", V1Error, ()
    ),
    "V1Unavailable": (
        503, "`unavailable`: the database cannot be reached; retry.", V1Error, ("Retry-After",)
    ),
}
# fmt: on

# An OpenAI route's responses for each of the above (chatstore/http/v1_errors.py).
V1_NAMES = {
    "BadLsn": "V1BadRequest",
    "InvalidJson": "V1BadRequest",
    "ValidationError": "V1BadRequest",
    "Unauthorized": "V1Unauthorized",
    "NotFound": "V1NotFound",
    "RequestTimeout": "V1RequestTimeout",
    "IdempotencyConflict": "V1IdempotencyConflict",
    "PayloadTooLarge": "V1PayloadTooLarge",
    "UnsupportedMediaType": "V1UnsupportedMediaType",
    "Unavailable": "V1Unavailable",
}


def error_responses(op: Endpoint) -> dict[int, str]:
    """The error responses an operation's shape implies, then its own (which win)."""
    names: list[str] = []
    if not op.public:
        names += ["BadLsn", "Unauthorized", "Unavailable"]
    if "{" in op.path:
        names.append("NotFound")
    if op.body:
        names += ["InvalidJson", "RequestTimeout", "PayloadTooLarge", "UnsupportedMediaType"]
        names.append("ValidationError")
    if op.query is not None or op.headers or op.idempotent:
        names.append("ValidationError")
    if op.idempotent:
        names.append("IdempotencyConflict")
    if op.openai:
        names = [V1_NAMES[name] for name in names]
    return {RESPONSES[name][0]: name for name in [*names, *op.extra]}


SUCCESS = {200: "OK", 201: "Created", 204: "Done; no content"}

# -- the document -------------------------------------------------------------------------

Refs = Mapping[tuple[Any, JsonSchemaMode], Mapping[str, Any]]  # (model, mode): its $ref


def _schemas() -> tuple[Refs, dict[str, Any]]:
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for op in ENDPOINTS:
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


# The events of a chat message's stream (chatstore/http/chat_stream.py).
CHAT_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": ["message", "delta", "done", "error"]},
        "id": {"type": "string", "pattern": "^[1-9][0-9]*$"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": 'message: a Message; delta: {"content": string}; done: {}; '
            "error: the error body.",
        },
    },
}
EVENT_SCHEMAS = {"sendChatMessage": CHAT_EVENT}


def _stream_schema(op: Endpoint, media_type: str, description: str) -> dict[str, Any]:
    if media_type == "text/event-stream":
        return {**EVENT_SCHEMAS.get(op.id, SSE_EVENT), "description": description}
    return {"type": "string", "description": description}


def _operation(op: Endpoint, refs: Refs) -> dict[str, Any]:
    success: dict[str, Any] = {"description": SUCCESS[op.status]}
    content = _content(op.response, "serialization", refs) if op.response else {}
    for media_type, description in op.streams:
        content[media_type] = {"schema": _stream_schema(op, media_type, description)}
    if content:
        success["content"] = content
    success["headers"] = {"X-Request-ID": HEADERS["X-Request-ID"]}
    if not op.public:
        success["headers"]["Chatstore-LSN"] = HEADERS["Chatstore-LSN"]
    if op.idempotent:
        success["headers"]["Idempotent-Replayed"] = HEADERS["Idempotent-Replayed"]
    responses: dict[str, Any] = {str(op.status): success}
    for status, name in sorted(error_responses(op).items()):
        responses[str(status)] = {"$ref": f"#/components/responses/{name}"}
    parameters = [
        {"name": name, "in": "path", "required": True, **PATH_PARAMETERS[name]}
        for name in re.findall(r"{(\w+)}", op.path)
    ]
    if op.query is not None:
        parameters += query_parameters(op.query)
    parameters += [*op.headers, *([IDEMPOTENCY_KEY] if op.idempotent else [])]
    if not op.public:
        parameters.append(CHATSTORE_LSN)
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
            "content": {
                **_content(op.body, "validation", refs),
                **{
                    media_type: {"schema": _stream_schema(op, media_type, description)}
                    for media_type, description in op.body_streams
                },
            },
        }
    if not op.public:
        document["security"] = SECURITY
    return document


def openapi_document() -> dict[str, Any]:
    refs, schemas = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for op in ENDPOINTS:
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
            "messages over HTTP. Every /api operation needs a better-auth session; so "
            "does every /v1 operation (OpenAI's Conversations API, for the official "
            "clients: the session token is the api_key).",
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
