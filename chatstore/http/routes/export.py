"""Export of a conversation, and its live updates as Server-Sent Events."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from chatstore import events, export
from chatstore.errors import NotFound, Unavailable, ValidationError
from chatstore.http.auth import Authenticator, Caller
from chatstore.http.context import Context, authenticated, context
from chatstore.http.params import MAX_SEQ, query_choice
from chatstore.http.streams import StreamSlots
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


async def conversation_events(request: Request) -> Response:
    ctx = context(request)
    # Not @authenticated: the stream needs the session itself, to end with it.
    caller = await ctx.auth.caller(request)
    user_id = caller.user_id
    after = _last_event_id(request)
    conversation = await ctx.store.get_conversation(user_id, request.path_params["id"])
    slots: StreamSlots = request.app.state.streams
    slots.take(user_id)  # 429 past the cap; given back when the response ends
    try:
        stream = events.follow(
            ctx.store,
            ctx.events,
            user_id,
            conversation.id,
            after=after,
            idle_seconds=ctx.settings.heartbeat_seconds,
            guard=_session_guard(ctx.auth, caller),
        )
        return _SlotStream(
            _sse(stream),
            release=lambda: slots.give_back(user_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    except BaseException:
        slots.give_back(user_id)
        raise


def _session_guard(auth: Authenticator, caller: Caller) -> events.SessionGuard:
    """The stream lives while the session that opened it does: the same
    session (not merely some session for the token), of the same user."""

    async def valid_until(fresh: bool) -> dt.datetime | None:
        session = await auth.session(caller.token, fresh=fresh)
        if session is None or session.session_id != caller.session.session_id:
            return None
        if session.user_id != caller.user_id:
            return None
        return session.expires_at

    return events.SessionGuard(caller.session.session_id, valid_until)


class _SlotStream(StreamingResponse):
    """A streaming response that gives its stream slot back however its
    sending ends: finished, client gone, cancelled, or failed before the
    first byte (a finally in the body generator would not run if the body
    was never iterated)."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        release: Callable[[], None],
        media_type: str,
        headers: dict[str, str],
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


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
        # (A stream whose session ended simply ends: the follower returns,
        # and the client's reconnection gets its 401.)
        return


routes = [
    Route("/api/conversations/{id}/export", export_conversation, methods=["GET"]),
    Route("/api/conversations/{id}/events", conversation_events, methods=["GET"]),
]
