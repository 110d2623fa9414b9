"""POST /api/conversations/import: a conversation from an export (chatstore/imports.py)."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from chatstore.http.body import parse_json, read_body, read_json
from chatstore.http.context import Context, authenticated, body_model
from chatstore.http.errors import HTTPError
from chatstore.http.once import respond_once
from chatstore.idempotency import Holds
from chatstore.imports import ImportInput, from_jsonl_line, validate_import
from chatstore.models import Conversation, ConversationInput

_CONVERSATION = TypeAdapter(Conversation)
NDJSON = "application/x-ndjson"


def _is_ndjson(request: Request) -> bool:
    raw = request.headers.get("content-type", "")
    return raw.partition(";")[0].strip().lower() == NDJSON


async def _jsonl_lines(request: Request, ctx: Context) -> list[Any]:
    """One JSON value a line, as export?format=jsonl writes them (each line
    ends with a newline; an empty body is an empty conversation). Read under
    the same streaming cap as every body (CHATSTORE_MAX_BODY_BYTES)."""
    body = await read_body(request, ctx.settings.max_body_bytes, ctx.settings.body_timeout_seconds)
    lines = body.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    parsed = []
    for index, line in enumerate(lines):
        try:
            parsed.append(parse_json(line))
        except HTTPError as error:
            raise HTTPError(400, "invalid_json", f"line {index + 1}: {error}") from None
    return parsed


@authenticated
async def import_conversation(request: Request, ctx: Context, user_id: str) -> Response:
    body: Any
    if _is_ndjson(request):
        body = await _jsonl_lines(request, ctx)
        data = ConversationInput()
        checked = validate_import([from_jsonl_line(line) for line in body], ctx.settings, ("body",))
    else:
        body = await read_json(request, ctx.settings)
        given = body_model(ImportInput, body, ctx.settings)
        data = ConversationInput(title=given.title, metadata=given.metadata)
        checked = validate_import(given.messages, ctx.settings, ("body", "messages"))

    async def create() -> Conversation:
        return await ctx.store.store_import(user_id, data, checked)

    return await respond_once(
        request,
        ctx,
        user_id,
        body,
        create,
        _CONVERSATION,
        holds_of=lambda created: Holds(created.id),
    )
