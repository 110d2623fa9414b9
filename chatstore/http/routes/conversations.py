"""Conversations: create, list, get, update, delete."""

from __future__ import annotations

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from chatstore.http.body import read_json
from chatstore.http.context import JSON, Context, authenticated, body_model, render
from chatstore.http.once import respond_once
from chatstore.http.params import ConversationListQuery, query
from chatstore.idempotency import Holds
from chatstore.models import Conversation, ConversationInput, ConversationPatch

_CONVERSATION = TypeAdapter(Conversation)


@authenticated
async def create_conversation(request: Request, ctx: Context, user_id: str) -> Response:
    body = await read_json(request, ctx.settings, empty={})
    data = body_model(ConversationInput, body, ctx.settings)

    async def create() -> Conversation:
        return await ctx.store.create_conversation(
            user_id, title=data.title, metadata=data.metadata
        )

    return await respond_once(
        request,
        ctx,
        user_id,
        body,
        create,
        _CONVERSATION,
        holds_of=lambda created: Holds(created.id),
    )


@authenticated
async def list_conversations(request: Request, ctx: Context, user_id: str) -> Response:
    asked = query(request, ConversationListQuery)
    body = await ctx.store.list_conversations_json(
        user_id, limit=asked.limit, cursor=asked.cursor, archived=asked.archived == "true"
    )
    return Response(body, media_type=JSON)


@authenticated
async def get_conversation(request: Request, ctx: Context, user_id: str) -> Response:
    conversation = await ctx.store.get_conversation(user_id, request.path_params["id"])
    return render(conversation)


@authenticated
async def update_conversation(request: Request, ctx: Context, user_id: str) -> Response:
    body = await read_json(request, ctx.settings)
    patch = body_model(ConversationPatch, body, ctx.settings)
    conversation = await ctx.store.patch_conversation(user_id, request.path_params["id"], patch)
    return render(conversation)


@authenticated
async def delete_conversation(request: Request, ctx: Context, user_id: str) -> Response:
    await ctx.store.delete_conversation(user_id, request.path_params["id"])
    return Response(status_code=204)
