"""Erasure: everything a user stored in chatstore, deleted (sql/erasure.sql).

DELETE /api/me/data and ``chatstore erase --user ID``. What stays: the
"user" row and better-auth's rows (session, account), which are the sign-in
itself: the caller is still signed in afterwards, with nothing stored.
"""

from __future__ import annotations

from chatstore.database import Source, database_of
from chatstore.models import Erased, ErasedCounts


async def erase_user_data(source: Source, user_id: str) -> Erased:
    """One transaction: all of it goes, or (on a failure) none of it."""
    db = database_of(source)
    async with db.transaction():
        # The conversations before the keys, as every writer (a chat reply
        # being stored holds its conversation, then its key).
        await db.scalar("lock_user_conversations", user_id=user_id)
        keys: int = await db.scalar("erase_idempotency_keys", user_id=user_id)
        row = await db.one("erase_conversations", user_id=user_id)
    assert row is not None
    return Erased(
        deleted=ErasedCounts(
            conversations=row["conversations"],
            messages=row["messages"],
            idempotency_keys=keys,
        )
    )
