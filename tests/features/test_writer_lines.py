"""A conversation's writers wait in line in the process, not on pooled
connections (chatstore/writers.py; RELIABILITY.md, finding 1).

Each test holds one conversation's row lock from a session of its own
(``SELECT ... FOR UPDATE`` in an open transaction), as a stalled statement
would, and sends that conversation's writers at a store with a small pool.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from support.databases import lock_waiters, until_a_session_waits_on_a_lock
from support.users import MakeUser

from chatstore.config import Settings
from chatstore.errors import NotFound, Unavailable
from chatstore.models import Message
from chatstore.store import ChatStore

# Bounded waits, generous for a loaded machine: never a timing assertion.
PATIENCE_SECONDS = 60.0


def said(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


async def held(database: str, conversation: uuid.UUID) -> asyncpg.Connection:
    """A session holding ``conversation``'s row lock until it closes."""
    holder = await asyncpg.connect(database)
    await holder.execute("BEGIN")
    await holder.execute("SELECT id FROM conversations WHERE id = $1 FOR UPDATE", conversation)
    return holder


async def until_in_line(store: ChatStore, count: int) -> None:
    """Until ``count`` writers wait in line in ``store``'s process."""
    deadline = asyncio.get_running_loop().time() + PATIENCE_SECONDS
    while store.db.writers.waiting < count:
        assert asyncio.get_running_loop().time() < deadline, (
            f"{store.db.writers.waiting} writers in line, never {count}"
        )
        await asyncio.sleep(0.01)


@pytest.fixture
async def two_connections(database: str, settings: Settings) -> AsyncIterator[ChatStore]:
    """A store with a pool of two: fewer connections than a stalled
    conversation has writers."""
    small = dataclasses.replace(
        settings, pool_min_size=1, pool_max_size=2, acquire_timeout_seconds=PATIENCE_SECONDS
    )
    async with ChatStore(database, settings=small) as opened:
        yield opened


async def test_a_held_conversations_writers_take_one_connection(
    two_connections: ChatStore, new_user: MakeUser, database: str
) -> None:
    store = two_connections
    user, other = await new_user(), await new_user()
    stalled = (await store.create_conversation(user.user_id)).id
    free = (await store.create_conversation(other.user_id)).id
    holder = await held(database, stalled)
    try:
        # Six writers of every kind: plain appends (whose statement skips
        # the held row, then waits for it), a keyed append, a title change.
        writers: list[asyncio.Task[object]] = [
            asyncio.create_task(store.append_message(user.user_id, stalled, said(f"m{n}")))
            for n in range(4)
        ]
        writers.append(
            asyncio.create_task(
                store.append_message(user.user_id, stalled, said("keyed"), idempotency_key="k1")
            )
        )
        writers.append(
            asyncio.create_task(store.update_conversation(user.user_id, stalled, title="held"))
        )
        await until_a_session_waits_on_a_lock(store.pool, PATIENCE_SECONDS, "a writer")
        await until_in_line(store, len(writers) - 1)
        # One of them waits in the database, holding one connection; the
        # other user's writes and reads have the other.
        assert await lock_waiters(store.pool) == 1
        for n in range(3):
            stored = await asyncio.wait_for(
                store.append_message(other.user_id, free, said(f"free {n}")), PATIENCE_SECONDS
            )
            assert stored.seq == n + 1
        page = await asyncio.wait_for(store.list_messages(other.user_id, free), PATIENCE_SECONDS)
        assert [m.content for m in page.data] == ["free 0", "free 1", "free 2"]
        assert not any(writer.done() for writer in writers)
    finally:
        await holder.close()
    outcomes = await asyncio.wait_for(asyncio.gather(*writers), PATIENCE_SECONDS)
    appended = [m for m in outcomes if isinstance(m, Message)]
    assert sorted(m.seq for m in appended) == [1, 2, 3, 4, 5]
    page = await store.list_messages(user.user_id, stalled)
    assert sorted(str(m.content) for m in page.data) == ["keyed", "m0", "m1", "m2", "m3"]
    assert (await store.get_conversation(user.user_id, stalled)).title == "held"
    assert store.db.writers.waiting == 0


async def test_a_writer_in_line_waits_no_longer_than_it_could_for_the_row(
    database: str, settings: Settings, new_user: MakeUser
) -> None:
    # Without the line a writer waited at most the acquire timeout (for a
    # connection) and the statement timeout (for the row): 1 s + 3 s here.
    # With it, the first writer waits for the row until its statement
    # timeout (3 s); the second, in line behind it, then gets only what is
    # left of its 4 s for the row (lock_timeout, 1 s); the third runs out in
    # line, or just after it, as the second did. Each is a 503, none later.
    impatient = dataclasses.replace(
        settings, acquire_timeout_seconds=1.0, statement_timeout_ms=3000
    )
    async with ChatStore(database, settings=impatient) as store:
        user = await new_user()
        stalled = (await store.create_conversation(user.user_id)).id
        holder = await held(database, stalled)
        try:
            first = asyncio.create_task(store.append_message(user.user_id, stalled, said("first")))
            await until_a_session_waits_on_a_lock(store.pool, PATIENCE_SECONDS, "the first")
            behind = [
                asyncio.create_task(store.append_message(user.user_id, stalled, said(text)))
                for text in ("second", "third")
            ]
            outcomes = await asyncio.wait_for(
                asyncio.gather(first, *behind, return_exceptions=True), PATIENCE_SECONDS
            )
        finally:
            await holder.close()
        refused = [outcome for outcome in outcomes if isinstance(outcome, Unavailable)]
        assert len(refused) == 3, outcomes
        causes = [type(outcome.__cause__) for outcome in refused]
        assert causes[0] is asyncpg.QueryCanceledError  # the statement timeout
        assert causes[1] is asyncpg.LockNotAvailableError  # what was left of its 4 s
        assert causes[2] in (TimeoutError, asyncpg.LockNotAvailableError)
        assert store.db.writers.waiting == 0
        page = await store.list_messages(user.user_id, stalled)
        assert page.data == []


async def test_a_stranger_naming_a_held_conversation_waits_in_no_line_of_the_owners(
    two_connections: ChatStore, new_user: MakeUser, database: str
) -> None:
    store = two_connections
    owner, stranger = await new_user(), await new_user()
    stalled = (await store.create_conversation(owner.user_id)).id
    holder = await held(database, stalled)
    try:
        waiting = asyncio.create_task(store.append_message(owner.user_id, stalled, said("mine")))
        await until_a_session_waits_on_a_lock(store.pool, PATIENCE_SECONDS, "the owner")
        # The owner's writer holds the owner's line while it waits for the
        # row; the stranger's is a line of its own, and the database finds
        # no conversation of the stranger's to lock: a 404 at once.
        for attempt in (
            store.append_message(stranger.user_id, stalled, said("not mine")),
            store.update_conversation(stranger.user_id, stalled, title="not mine"),
            store.delete_conversation(stranger.user_id, stalled),
        ):
            with pytest.raises(NotFound):
                await asyncio.wait_for(attempt, PATIENCE_SECONDS)
        assert not waiting.done()
    finally:
        await holder.close()
    stored = await asyncio.wait_for(waiting, PATIENCE_SECONDS)
    assert stored.seq == 1
    assert (await store.get_conversation(owner.user_id, stalled)).title is None
