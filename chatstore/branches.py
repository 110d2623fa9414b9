"""Branches (sql/branches.sql): a message's alternatives, and switching
which branch a conversation shows (its active path, migrations/0012).
Appending on a branch is an append with a parent_seq (messages.py)."""

from __future__ import annotations

from chatstore.database import Database
from chatstore.errors import NotFound
from chatstore.ids import ConversationId, conversation_uuid, seq_param
from chatstore.models import Sibling


async def siblings(
    db: Database, user_id: str, conversation_id: ConversationId, seq: int
) -> list[Sibling]:
    """The message ``seq`` and its alternatives (same parent), oldest first."""
    rows = await db.many(
        "list_siblings",
        user_id=user_id,
        conversation_id=conversation_uuid(conversation_id, "message"),
        seq=seq_param(seq),
    )
    found = Sibling.from_rows(row for row in rows if row["seq"] is not None)
    if not found:
        raise NotFound("message")
    return found


async def switch(db: Database, user_id: str, conversation_id: ConversationId, seq: int) -> int:
    """Show the branch of message ``seq``: its newest descendant (itself
    when it has none) becomes the active leaf, which is returned."""
    conversation = conversation_uuid(conversation_id, "message")
    async with db.transaction(writes=(user_id, conversation)):
        # The row lock first, as every writer takes it: the switch's
        # statement then sees every path change committed before it.
        locked = await db.scalar("lock_conversation", user_id=user_id, conversation_id=conversation)
        if locked is None:
            raise NotFound("message")
        leaf: int | None = await db.scalar(
            "switch_active_leaf",
            user_id=user_id,
            conversation_id=conversation,
            seq=seq_param(seq),
        )
    if leaf is None:
        raise NotFound("message")
    return leaf
