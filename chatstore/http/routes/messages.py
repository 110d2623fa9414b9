"""Messages: append (one or a batch), list, get, delete one, truncate;
branches: a message's siblings, switching the active leaf."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from chatstore.http.body import read_json
from chatstore.http.context import JSON, Context, authenticated, body_model, render
from chatstore.http.once import respond_once
from chatstore.http.params import MessageListQuery, TruncateQuery, path_seq, query
from chatstore.idempotency import Holds
from chatstore.models import (
    ActiveLeaf,
    ActiveLeafInput,
    Deleted,
    Message,
    MessageAppend,
    MessageBatch,
    MessageList,
    SiblingList,
)
from chatstore.store import conversation_uuid

_MESSAGE = TypeAdapter(Message)
_MESSAGE_LIST = TypeAdapter(MessageList)


@authenticated
async def append_messages(request: Request, ctx: Context, user_id: str) -> Response:
    body: Any = await read_json(request, ctx.settings)
    conversation_id = request.path_params["id"]
    if isinstance(body, dict) and "messages" in body:
        batch = body_model(MessageBatch, body, ctx.settings)

        async def append_batch() -> MessageList:
            stored = await ctx.store.append_messages(
                user_id,
                conversation_id,
                batch.messages,
                expected_last_seq=batch.expected_last_seq,
                parent_seq=batch.parent_seq,
            )
            return MessageList(data=stored)

        return await respond_once(
            request,
            ctx,
            user_id,
            body,
            append_batch,
            _MESSAGE_LIST,
            holds_of=lambda stored: Holds.messages(
                conversation_uuid(conversation_id), [m.seq for m in stored.data]
            ),
            conversation_id=conversation_id,
        )
    message = body_model(MessageAppend, body, ctx.settings)

    async def append_one() -> Message:
        return await ctx.store.append_message(
            user_id, conversation_id, message, parent_seq=message.parent_seq
        )

    return await respond_once(
        request,
        ctx,
        user_id,
        body,
        append_one,
        _MESSAGE,
        holds_of=lambda stored: Holds.messages(stored.conversation_id, [stored.seq]),
        conversation_id=conversation_id,
    )


@authenticated
async def list_messages(request: Request, ctx: Context, user_id: str) -> Response:
    asked = query(request, MessageListQuery)
    body = await ctx.store.list_messages_json(
        user_id,
        request.path_params["id"],
        limit=asked.limit,
        order=asked.order,
        after=asked.after,
        before=asked.before,
    )
    return Response(body, media_type=JSON)


@authenticated
async def get_message(request: Request, ctx: Context, user_id: str) -> Response:
    message = await ctx.store.get_message(user_id, request.path_params["id"], path_seq(request))
    return render(message)


@authenticated
async def delete_message(request: Request, ctx: Context, user_id: str) -> Response:
    await ctx.store.delete_message(user_id, request.path_params["id"], path_seq(request))
    return Response(status_code=204)


@authenticated
async def truncate_messages(request: Request, ctx: Context, user_id: str) -> Response:
    asked = query(request, TruncateQuery)
    deleted = await ctx.store.truncate_messages(user_id, request.path_params["id"], asked.from_seq)
    return render(Deleted(deleted=deleted))


@authenticated
async def list_siblings(request: Request, ctx: Context, user_id: str) -> Response:
    found = await ctx.store.list_siblings(user_id, request.path_params["id"], path_seq(request))
    return render(SiblingList(data=found))


@authenticated
async def switch_branch(request: Request, ctx: Context, user_id: str) -> Response:
    asked = body_model(ActiveLeafInput, await read_json(request, ctx.settings), ctx.settings)
    leaf = await ctx.store.switch_branch(user_id, request.path_params["id"], asked.leaf_seq)
    return render(ActiveLeaf(leaf_seq=leaf))
