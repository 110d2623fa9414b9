"""Export of a conversation, and its live updates as Server-Sent Events."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

from starlette.requests import Request
from starlette.responses import Response

from chatstore import events, export
from chatstore.errors import NotFound, Unavailable, ValidationError
from chatstore.http.auth import Authenticator, Caller
from chatstore.http.context import Context, authenticated, context
from chatstore.http.params import MAX_SEQ, ExportQuery, query
from chatstore.http.streaming import BoundedStreamingResponse
from chatstore.http.streams import StreamSlots
from chatstore.models import Message

# A comment line at least this often keeps idle streams open through proxies
# that close quiet connections (often after 30 to 60 seconds).
HEARTBEAT_SECONDS = 15.0


@authenticated
async def export_conversation(request: Request, ctx: Context, user_id: str) -> Response:
    fmt = query(request, ExportQuery).format
    # Ownership first: a stranger gets a 404, not a 200 that then stops.
    conversation = await ctx.store.get_conversation(user_id, request.path_params["id"])
    # One user may run only a few exports at once (429 past the cap), fewer
    # than the stream pool holds: one user cannot take it from everyone.
    slots: StreamSlots = request.app.state.exports
    slots.take(user_id)
    lease = AsyncExitStack()
    lease.callback(slots.give_back, user_id)
    try:
        # The stream's connection, from the stream pool, before the response
        # starts: a spent budget (or no database) is a 503 with Retry-After
        # now, not a 200 cut short later. The response gives it back (and the
        # user's slot) when it ends.
        connection = await lease.enter_async_context(ctx.store.stream_lease())
        send_timeout = ctx.settings.stream_send_timeout_seconds
        encode, media_type = (
            (ctx.store.export_jsonl, "application/x-ndjson")
            if fmt == "jsonl"
            else (ctx.store.export_openai, "application/json")
        )
        body = encode(
            user_id,
            conversation.id,
            connection=connection,
            idle_seconds=export.idle_backstop_seconds(send_timeout),
        )
        return BoundedStreamingResponse(
            body,
            send_timeout=send_timeout,
            max_seconds=ctx.settings.export_max_seconds,
            on_close=lease.aclose,
            media_type=media_type,
        )
    except BaseException:
        await lease.aclose()
        raise


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
    if after is None:
        # "From now" is decided before the 200 goes out: a client that has
        # its response and then appends sees its append in the stream (the
        # follower's own subscription, lease and first read come later).
        after = await events.newest_seq(ctx.store, user_id, conversation.id)
    slots: StreamSlots = request.app.state.streams
    slots.take(user_id)  # 429 past the cap; given back when the response ends
    try:
        stream = ctx.store.follow(
            ctx.events,
            user_id,
            conversation.id,
            after=after,
            idle_seconds=ctx.settings.heartbeat_seconds,
            guard=_session_guard(ctx.auth, caller),
        )

        async def release() -> None:
            slots.give_back(user_id)

        # Bounded like an export: a client that stops reading is dropped at
        # the send timeout, and the slot is given back however the stream ends
        # (finished, client gone, cancelled, or before its first byte).
        return BoundedStreamingResponse(
            _sse(stream),
            send_timeout=ctx.settings.stream_send_timeout_seconds,
            on_close=release,
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
