"""Export of a conversation, and its live updates as Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from chatstore import events, export
from chatstore.errors import NotFound, Unavailable, ValidationError
from chatstore.http.context import Context, authenticated
from chatstore.http.params import MAX_SEQ, query_choice
from chatstore.models import Message

# A comment line at least this often keeps idle streams open through proxies
# that close quiet connections (often after 30 to 60 seconds).
HEARTBEAT_SECONDS = 15.0


@authenticated
async def export_conversation(request: Request, ctx: Context, user_id: str) -> Response:
    fmt = query_choice(request, "format", ("openai", "jsonl"), "openai")
    # Ownership first: a stranger gets a 404, not a 200 that then stops.
    conversation = await ctx.store.get_conversation(user_id, request.path_params["id"])
    if fmt == "jsonl":
        return StreamingResponse(
            export.jsonl(ctx.store, user_id, conversation.id), media_type="application/x-ndjson"
        )
    return StreamingResponse(
        export.openai(ctx.store, user_id, conversation.id), media_type="application/json"
    )


def _last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id")
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > MAX_SEQ:
        raise ValidationError.at(
            ["header", "Last-Event-ID"], "Last-Event-ID must be the seq of a message"
        )
    return int(raw)


@authenticated
async def conversation_events(request: Request, ctx: Context, user_id: str) -> Response:
    after = _last_event_id(request)
    conversation = await ctx.store.get_conversation(user_id, request.path_params["id"])
    stream = events.follow(
        ctx.store,
        ctx.events,
        user_id,
        conversation.id,
        after=after,
        idle_seconds=ctx.settings.heartbeat_seconds,
    )
    return StreamingResponse(
        _sse(stream),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(stream: AsyncIterator[Message | None]) -> AsyncIterator[bytes]:
    # Sent at once so that clients and proxies see the stream open.
    yield b": connected\n\n"
    try:
        async for message in stream:
            if message is None:
                yield b": heartbeat\n\n"
                continue
            yield (
                f"id: {message.seq}\nevent: message\ndata: {message.model_dump_json()}\n\n"
            ).encode()
    except (NotFound, Unavailable):
        # The conversation was deleted, or the database went away: end the
        # stream; the client reconnects with Last-Event-ID and misses nothing.
        return


routes = [
    Route("/api/conversations/{id}/export", export_conversation, methods=["GET"]),
    Route("/api/conversations/{id}/events", conversation_events, methods=["GET"]),
]
