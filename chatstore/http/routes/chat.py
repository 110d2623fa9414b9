"""The chatbot's own flow: start, send a message and get the reply, history."""

from __future__ import annotations

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from chatstore import chat
from chatstore.http.body import read_json
from chatstore.http.context import Context, authenticated, body_model, render
from chatstore.http.once import respond_once, respond_once_outside
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

    session_id = request.path_params["session_id"]

    async def think() -> chat.Reply:
        return await ctx.store.think(ctx.responder, user_id, session_id, data)

    async def send(reply: chat.Reply) -> ChatExchange:
        done = await ctx.store.store_reply(user_id, session_id, reply)
        return ChatExchange(user_message=done.user_message, reply=done.reply)

    # The responder may take seconds: it runs holding no pooled connection
    # and no transaction, with or without an Idempotency-Key.
    return await respond_once_outside(
        request,
        ctx,
        user_id,
        body,
        think,
        send,
        _EXCHANGE,
        holds_of=lambda done: Holds.messages(
            done.user_message.conversation_id, [done.user_message.seq, done.reply.seq]
        ),
    )


@authenticated
async def history(request: Request, ctx: Context, user_id: str) -> Response:
    session_id = conversation_uuid(request.path_params["session_id"])
    asked = query(request, ChatHistoryQuery)
    window = await ctx.store.history(user_id, session_id, limit=asked.limit, before=asked.before)
    return render(
        ChatHistory(session_id=session_id, messages=window.messages, has_more=window.has_more)
    )
