"""POST /api/chat/{session_id}/message answered as it is made: with
``Accept: text/event-stream``, Server-Sent Events.

    event: message   the stored user message (data: Message, id: its seq)
    event: delta     {"content": "..."} (as a chat-completions delta), per piece
    event: message   the stored reply (data: Message, id: its seq)
    event: done      {}

A reply that fails ends the stream with ``event: error`` and the contract's
error body (``{"error": {"code": "responder_error" | "responder_timeout" |
"unavailable" | "not_found", "message": ...}}``; docs/http-api.md lists
when) after what chatstore/chat_turn.py stores for it. A replayed
Idempotency-Key streams the stored pair (its reply as one delta) with
Idempotent-Replayed: true. The stream holds no connection while the model
works; BoundedStreamingResponse ends it when its client stops
reading or disconnects (the turn then stores its partial reply as
``disconnected``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing

from starlette.requests import Request

from chatstore.chat_turn import Replayed, Turn
from chatstore.errors import ChatStoreError
from chatstore.http.context import Context
from chatstore.http.once import REPLAYED_HEADER
from chatstore.http.streaming import BoundedStreamingResponse
from chatstore.models import ChatExchange, Message

EVENT_STREAM = "text/event-stream"
# As the JSON form: the user's message is created, whatever the reply does.
CREATED = 201


def wants_events(request: Request) -> bool:
    """Accept names text/event-stream, and not with ``q=0`` (which says
    "not this one", RFC 9110 section 12.4.2)."""
    accept = request.headers.get("accept", "")
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        if media.lower() != EVENT_STREAM:
            continue
        if not any(_refused(param) for param in params):
            return True
    return False


def _refused(param: str) -> bool:
    name, _, value = param.partition("=")
    if name.strip().lower() != "q":
        return False
    try:
        return float(value.strip()) == 0
    except ValueError:
        return False


def _event(event: str, data: str, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


def _message(message: Message) -> bytes:
    return _event("message", message.model_dump_json(), message.seq)


def _delta(text: str) -> bytes:
    return _event("delta", json.dumps({"content": text}, ensure_ascii=False))


async def _turn_events(turn: Turn) -> AsyncIterator[bytes]:
    yield _message(turn.user_message)
    try:
        async with aclosing(turn.deltas()) as deltas:
            async for text in deltas:
                yield _delta(text)
    except ChatStoreError as error:
        body = {"error": {"code": error.code, "message": str(error)}}
        yield _event("error", json.dumps(body, ensure_ascii=False))
        return
    assert turn.exchange is not None
    yield _message(turn.exchange.reply)
    yield _event("done", "{}")


async def _replay_events(exchange: ChatExchange) -> AsyncIterator[bytes]:
    yield _message(exchange.user_message)
    if exchange.reply.content:
        yield _delta(exchange.reply.content)
    yield _message(exchange.reply)
    yield _event("done", "{}")


# Proxies (nginx) buffer a response unless told not to.
_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event_response(ctx: Context, started: Turn | Replayed) -> BoundedStreamingResponse:
    if isinstance(started, Replayed):
        return BoundedStreamingResponse(
            _replay_events(started.exchange),
            send_timeout=ctx.settings.stream_send_timeout_seconds,
            status_code=CREATED,
            headers={**_HEADERS, REPLAYED_HEADER: "true"},
            media_type=EVENT_STREAM,
        )
    return BoundedStreamingResponse(
        _turn_events(started),
        send_timeout=ctx.settings.stream_send_timeout_seconds,
        on_close=started.close,
        status_code=CREATED,
        headers=_HEADERS,
        media_type=EVENT_STREAM,
    )
