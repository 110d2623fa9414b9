"""Conversations: create, read, list by recent activity, patch, delete
(sql/conversations.sql). Every query filters by the acting user: another
user's conversation is NotFound, exactly like a missing one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from pydantic import TypeAdapter

from chatstore import cursor as cursor_module
from chatstore import idempotency
from chatstore.database import Database
from chatstore.errors import NotFound
from chatstore.ids import ConversationId, conversation_uuid
from chatstore.models import (
    Conversation,
    ConversationInput,
    ConversationPage,
    ConversationPatch,
    Row,
    conversation_json,
    json_body,
)
from chatstore.validation import check_limit, validate_model

MAX_PAGE = 100

_CONVERSATION = TypeAdapter(Conversation)


async def create(
    db: Database,
    user_id: str,
    *,
    title: str | None = None,
    metadata: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
) -> Conversation:
    data = validate_model(
        ConversationInput, {"title": title, "metadata": dict(metadata or {})}, db.settings
    )

    async def create() -> Conversation:
        row = await db.one(
            "create_conversation", user_id=user_id, title=data.title, metadata=data.metadata
        )
        assert row is not None
        return Conversation.from_row(row)

    if idempotency_key is None:
        return await create()
    request = idempotency.fingerprint("create_conversation", data.model_dump())
    return await create_once(db, user_id, idempotency_key, request, create)


async def create_once(
    db: Database,
    user_id: str,
    idempotency_key: str,
    request: bytes,
    work: Callable[[], Awaitable[Conversation]],
) -> Conversation:
    """``work`` (which creates a conversation) at most once per Idempotency-Key;
    a repeat replays the first conversation, and its record goes with it."""
    created, _ = await idempotency.run_once(
        db,
        user_id,
        idempotency_key,
        request,
        work,
        _CONVERSATION,
        holds_of=lambda created: idempotency.Holds(created.id),
    )
    return created


async def get(db: Database, user_id: str, conversation_id: ConversationId) -> Conversation:
    row = await db.one("get_conversation", user_id=user_id, id=conversation_uuid(conversation_id))
    if row is None:
        raise NotFound("conversation")
    return Conversation.from_row(row)


async def page(
    db: Database,
    user_id: str,
    *,
    limit: int = 20,
    cursor: str | None = None,
    archived: bool = False,
) -> ConversationPage:
    """A page of the conversations not archived, or (``archived``) of the
    archived ones only; a cursor pages within the list it came from."""
    rows, has_more = await _page_rows(db, user_id, limit, cursor, archived)
    found = Conversation.from_rows(rows)
    next_cursor = None
    if has_more:
        last = found[-1]
        next_cursor = cursor_module.encode(last.updated_at, last.id)
    return ConversationPage(data=found, next_cursor=next_cursor)


async def page_json(
    db: Database,
    user_id: str,
    *,
    limit: int = 20,
    cursor: str | None = None,
    archived: bool = False,
) -> bytes:
    """page(), as the JSON of its ConversationPage, written from the rows
    (models.conversation_json: no model built)."""
    rows, has_more = await _page_rows(db, user_id, limit, cursor, archived)
    next_cursor = None
    if has_more:
        next_cursor = cursor_module.encode(rows[-1]["updated_at"], rows[-1]["id"])
    return json_body({"data": [conversation_json(row) for row in rows], "next_cursor": next_cursor})


async def _page_rows(
    db: Database, user_id: str, limit: int, cursor: str | None, archived: bool
) -> tuple[Sequence[Row], bool]:
    """A page's conversation rows, and whether more follow."""
    check_limit(limit, MAX_PAGE)
    if cursor is None:
        rows = await db.many(
            "list_conversations_first", user_id=user_id, archived=archived, limit=limit + 1
        )
    else:
        updated_at, id = cursor_module.decode(cursor)
        rows = await db.many(
            "list_conversations_after",
            user_id=user_id,
            cursor_updated_at=updated_at,
            cursor_id=id,
            archived=archived,
            limit=limit + 1,
        )
    return rows[:limit], len(rows) > limit


async def patch(
    db: Database, user_id: str, conversation_id: ConversationId, change: ConversationPatch
) -> Conversation:
    """Apply a validated PATCH body: only its fields_set change."""
    fields = change.model_fields_set
    conversation = conversation_uuid(conversation_id)
    # A transaction for its place in line: the statement waits for the
    # row's lock behind the conversation's other writers, as they do
    # (chatstore/writers.py).
    async with db.transaction(writes=(user_id, conversation)):
        row = await db.one(
            "update_conversation",
            user_id=user_id,
            id=conversation,
            set_title="title" in fields,
            title=change.title,
            set_metadata="metadata" in fields,
            metadata=change.metadata,
            set_archived="archived" in fields,
            archived=change.archived,
        )
    if row is None:
        raise NotFound("conversation")
    return Conversation.from_row(row)


async def delete(db: Database, user_id: str, conversation_id: ConversationId) -> None:
    conversation = conversation_uuid(conversation_id)
    async with db.transaction(writes=(user_id, conversation)):  # as patch's
        deleted = await db.execrows("delete_conversation", user_id=user_id, id=conversation)
    if deleted == 0:
        raise NotFound("conversation")
