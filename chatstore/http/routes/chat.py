"""The chatbot's own flow: start, send a message and get the reply, history."""

from __future__ import annotations

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from chatstore import chat_turn
from chatstore.http.body import read_json
from chatstore.http.chat_stream import event_response, wants_events
from chatstore.http.context import Context, authenticated, body_model, render
from chatstore.http.once import answer, asked, respond_once
from chatstore.http.params import ChatHistoryQuery, query
from chatstore.idempotency import Holds
from chatstore.models import (
    ChatExchange,
    ChatHistory,
    ChatMessageInput,
    ChatStart,
    ConversationInput,
)
from chatstore.store import conversation_uuid

_START = TypeAdapter(ChatStart)
_EXCHANGE = TypeAdapter(ChatExchange)


@authenticated
async def start(request: Request, ctx: Context, user_id: str) -> Response:
    body = await read_json(request, ctx.settings, empty={})
    data = body_model(ConversationInput, body, ctx.settings)

    async def create() -> ChatStart:
        conversation = await ctx.store.create_conversation(
            user_id, title=data.title, metadata=data.metadata
        )
        return ChatStart(session_id=conversation.id, conversation=conversation)

    return await respond_once(
        request,
        ctx,
        user_id,
        body,
        create,
        _START,
        holds_of=lambda started: Holds(started.session_id),
    )


@authenticated
async def message(request: Request, ctx: Context, user_id: str) -> Response:
    body = await read_json(request, ctx.settings)
    data = body_model(ChatMessageInput, body, ctx.settings)
    key = request.headers.get("idempotency-key")
    # The user's message is stored and committed here; the responder then
    # runs holding no pooled connection and no transaction, with or without
    # an Idempotency-Key (chatstore/chat_turn.py).
    started = await chat_turn.begin(
        ctx.store,
        ctx.responder,
        user_id,
        request.path_params["session_id"],
        data,
        key=key,
        request=asked(request, body) if key is not None else b"",
        settings=ctx.settings,
    )
    if wants_events(request):
        return event_response(ctx, started)
    if isinstance(started, chat_turn.Replayed):
        return answer(started.exchange, _EXCHANGE, 201, replayed=True)
    try:
        exchange = await started.finish()
    finally:
        await started.close()
    return answer(exchange, _EXCHANGE, 201, replayed=False)


@authenticated
async def history(request: Request, ctx: Context, user_id: str) -> Response:
    session_id = conversation_uuid(request.path_params["session_id"])
    params = query(request, ChatHistoryQuery)
    window = await ctx.store.history(user_id, session_id, limit=params.limit, before=params.before)
    return render(
        ChatHistory(session_id=session_id, messages=window.messages, has_more=window.has_more)
    )
