"""OpenAI's Conversations API at /v1, over chatstore's conversations and items.

The official ``openai`` client pointed at ``<server>/v1`` with a session
token as its api_key works unchanged: conversations create / retrieve /
update / delete and their items create / list / retrieve / delete. The
shapes are chatstore/http/v1_shapes.py's, the errors OpenAI's
(chatstore/http/v1_errors.py). What is stored is what /api and the Python
API see: the same conversations (by uuid there, ``conv_<hex>`` here) and the
same items (chatstore/items.py), owner-checked by the store as everywhere.

Every POST honours an Idempotency-Key (the official client sends one as an
extra header); answers are 200 as OpenAI's are.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from chatstore.http.body import read_json
from chatstore.http.context import Context, authenticated, body_model, render
from chatstore.http.once import respond_once
from chatstore.http.params import V1ItemListQuery, query
from chatstore.http.v1_shapes import (
    V1Conversation,
    V1ConversationCreate,
    V1ConversationDeleted,
    V1ConversationUpdate,
    V1ItemList,
    V1ItemsCreate,
    conversation_uuid,
    openai_item,
    public_id,
)
from chatstore.idempotency import Holds
from chatstore.models import Item

_CONVERSATION = TypeAdapter(V1Conversation)
_ITEMS = TypeAdapter(V1ItemList)
OK = 200


def _conversation(request: Request) -> tuple[uuid.UUID, str]:
    """The path's conversation, and the path spelt with its /v1 id (one
    spelling for an Idempotency-Key, whichever id the caller used)."""
    raw: str = request.path_params["conversation_id"]
    found = conversation_uuid(raw)
    path = request.url.path.replace(f"/{raw}", f"/{public_id(found)}", 1)
    return found, path


def _shown(items: Sequence[Item], has_more: bool = False) -> V1ItemList:
    return V1ItemList.of([openai_item(item.item, item.id) for item in items], has_more)


# -- conversations ----------------------------------------------------------------------


@authenticated
async def create_conversation(request: Request, ctx: Context, user_id: str) -> Response:
    body = await read_json(request, ctx.settings, empty={})
    data = body_model(V1ConversationCreate, body, ctx.settings)

    async def create() -> V1Conversation:
        # The conversation and its first items together, or neither.
        async with ctx.store.transaction():
            created = await ctx.store.create_conversation(user_id, metadata=data.metadata or {})
            if data.items:
                await ctx.store.add_items(user_id, created.id, data.items)
        return V1Conversation.of(created)

    return await respond_once(
        request,
        ctx,
        user_id,
        body,
        create,
        _CONVERSATION,
        holds_of=lambda made: Holds(conversation_uuid(made.id)),
        status=OK,
    )


@authenticated
async def get_conversation(request: Request, ctx: Context, user_id: str) -> Response:
    conversation_id, _ = _conversation(request)
    return render(V1Conversation.of(await ctx.store.get_conversation(user_id, conversation_id)))


@authenticated
async def update_conversation(request: Request, ctx: Context, user_id: str) -> Response:
    conversation_id, path = _conversation(request)
    body = await read_json(request, ctx.settings)
    data = body_model(V1ConversationUpdate, body, ctx.settings)

    async def update() -> V1Conversation:
        changed = await ctx.store.update_conversation(
            user_id, conversation_id, metadata=data.metadata or {}
        )
        return V1Conversation.of(changed)

    return await respond_once(
        request,
        ctx,
        user_id,
        body,
        update,
        _CONVERSATION,
        holds_of=lambda _: Holds(conversation_id),
        status=OK,
        conversation_id=str(conversation_id),
        path=path,
    )


@authenticated
async def delete_conversation(request: Request, ctx: Context, user_id: str) -> Response:
    conversation_id, _ = _conversation(request)
    await ctx.store.delete_conversation(user_id, conversation_id)
    return render(V1ConversationDeleted(id=public_id(conversation_id)))


# -- items ------------------------------------------------------------------------------


@authenticated
async def create_items(request: Request, ctx: Context, user_id: str) -> Response:
    conversation_id, path = _conversation(request)
    body = await read_json(request, ctx.settings)
    data = body_model(V1ItemsCreate, body, ctx.settings)

    seqs: list[int] = []  # the rows the answer shows: deleting one forgets the answer

    async def add() -> V1ItemList:
        added = await ctx.store.add_items(user_id, conversation_id, data.items)
        seqs.extend(item.seq for item in added)
        return _shown(added)

    return await respond_once(
        request,
        ctx,
        user_id,
        body,
        add,
        _ITEMS,
        holds_of=lambda _: Holds.messages(conversation_id, seqs),
        status=OK,
        conversation_id=str(conversation_id),
        path=path,
    )


@authenticated
async def list_items(request: Request, ctx: Context, user_id: str) -> Response:
    conversation_id, _ = _conversation(request)
    asked = query(request, V1ItemListQuery)
    page = await ctx.store.list_items(
        user_id, conversation_id, limit=asked.limit, order=asked.order, after=asked.after
    )
    return render(_shown(page.items, page.has_more))


@authenticated
async def get_item(request: Request, ctx: Context, user_id: str) -> Response:
    conversation_id, _ = _conversation(request)
    item = await ctx.store.get_item(user_id, conversation_id, request.path_params["item_id"])
    return render(_shown([item]).data[0])


@authenticated
async def delete_item(request: Request, ctx: Context, user_id: str) -> Response:
    """OpenAI answers an item's deletion with the conversation."""
    conversation_id, _ = _conversation(request)
    await ctx.store.delete_item(user_id, conversation_id, request.path_params["item_id"])
    return render(V1Conversation.of(await ctx.store.get_conversation(user_id, conversation_id)))
