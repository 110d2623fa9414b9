"""Gathered appends (chatstore/appends.py): plain appends that wait for a
free append statement go together, in one statement and one commit, and
each is still judged, refused, cancelled and ordered as if alone.

Each test opens a store of its own with CHATSTORE_APPEND_STATEMENTS=1: one
append statement at a time, so that appends started together are
deterministic: the first goes alone at once, the rest wait in line and go
together when it ends (asyncio runs every started task up to its first wait
before the first statement's answer can arrive).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest
from support.databases import until_a_session_waits_on_a_lock
from support.users import MakeUser

from chatstore.config import Settings
from chatstore.errors import NotFound, SeqConflict, Unavailable, ValidationError
from chatstore.models import Message
from chatstore.store import ChatStore

# Bounded waits, generous for a loaded machine: never a timing assertion.
PATIENCE_SECONDS = 60.0


@pytest.fixture
async def one_statement(database: str, settings: Settings) -> AsyncIterator[ChatStore]:
    """A store whose process runs one append statement at a time."""
    gathering = dataclasses.replace(settings, append_statements=1)
    async with ChatStore(database, settings=gathering) as opened:
        yield opened


async def conversations(store: ChatStore, user_id: str, count: int) -> list[uuid.UUID]:
    return [(await store.create_conversation(user_id)).id for _ in range(count)]


async def transactions_of(store: ChatStore, ids: Sequence[uuid.UUID]) -> list[int]:
    """The transaction that wrote each conversation's messages (xmin), by
    conversation, in order."""
    rows = await store.pool.fetch(
        "SELECT conversation_id, xmin::text::bigint AS xid FROM messages"
        " WHERE conversation_id = ANY($1::uuid[])",
        list(ids),
    )
    by_conversation = {row["conversation_id"]: row["xid"] for row in rows}
    return [by_conversation[conversation] for conversation in ids]


def said(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


async def test_appends_that_wait_for_a_statement_go_together_in_one_commit(
    one_statement: ChatStore, new_user: MakeUser
) -> None:
    store = one_statement
    user = await new_user()
    ids = await conversations(store, user.user_id, 8)
    stored = await asyncio.gather(
        *(store.append_message(user.user_id, c, said(f"to {n}")) for n, c in enumerate(ids))
    )
    assert [(m.conversation_id, m.seq, m.content) for m in stored] == [
        (c, 1, f"to {n}") for n, c in enumerate(ids)
    ]
    xids = await transactions_of(store, ids)
    # The first alone; the seven that waited for it in one transaction.
    assert xids[0] != xids[1]
    assert len(set(xids[1:])) == 1


async def test_a_gathered_append_is_judged_alone(
    one_statement: ChatStore, new_user: MakeUser
) -> None:
    store = one_statement
    user, stranger = await new_user(), await new_user()
    first, mine, stale, twice = await conversations(store, user.user_id, 4)
    (theirs,) = await conversations(store, stranger.user_id, 1)
    await store.append_message(user.user_id, stale, said("already here"))
    outcomes = await asyncio.gather(
        store.append_message(user.user_id, first, said("goes alone")),
        store.append_message(user.user_id, theirs, said("not mine")),
        store.append_messages(user.user_id, stale, [said("late")], expected_last_seq=0),
        store.append_message(user.user_id, twice, said("one")),
        store.append_message(user.user_id, twice, said("two")),
        store.append_messages(user.user_id, mine, [said("a"), said("b")], expected_last_seq=0),
        return_exceptions=True,
    )
    alone, not_found, conflict, one, two, pair = outcomes
    assert isinstance(alone, Message)
    assert isinstance(not_found, NotFound)
    assert isinstance(conflict, SeqConflict)
    assert isinstance(one, Message) and isinstance(two, Message)
    assert (one.seq, two.seq) == (1, 2)  # in the order they were asked for
    assert isinstance(pair, list) and [m.seq for m in pair] == [1, 2]
    # What was refused wrote nothing.
    theirs_page = await store.list_messages(stranger.user_id, theirs)
    assert theirs_page.data == []
    stale_page = await store.list_messages(user.user_id, stale)
    assert [m.content for m in stale_page.data] == ["already here"]


async def test_a_gathered_statement_that_fails_refuses_only_the_append_at_fault(
    one_statement: ChatStore, new_user: MakeUser
) -> None:
    store = one_statement
    user = await new_user()
    first, reused, fine = await conversations(store, user.user_id, 3)
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    calling = {"role": "assistant", "content": None, "tool_calls": [call]}
    await store.append_message(user.user_id, reused, calling)
    await store.append_message(
        user.user_id, reused, {"role": "tool", "tool_call_id": "call_1", "content": "ok"}
    )
    outcomes = await asyncio.gather(
        store.append_message(user.user_id, first, said("goes alone")),
        store.append_message(user.user_id, reused, calling),  # call_1 again
        store.append_message(user.user_id, fine, said("fine")),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], Message)
    assert isinstance(outcomes[1], ValidationError)
    assert isinstance(outcomes[2], Message) and outcomes[2].seq == 1
    assert len((await store.list_messages(user.user_id, reused)).data) == 2


async def test_a_held_conversation_holds_no_other_appends(
    one_statement: ChatStore, new_user: MakeUser, database: str
) -> None:
    store = one_statement
    user = await new_user()
    held, *others = await conversations(store, user.user_id, 4)
    holder = await asyncpg.connect(database)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT id FROM conversations WHERE id = $1 FOR UPDATE", held)
        waiting = asyncio.create_task(store.append_message(user.user_id, held, said("held")))
        # The other conversations' appends, alone and gathered, end while
        # the held one's waits for its lock.
        for _ in range(2):
            stored = await asyncio.wait_for(
                asyncio.gather(
                    *(store.append_message(user.user_id, c, said("free")) for c in others)
                ),
                PATIENCE_SECONDS,
            )
            assert all(isinstance(m, Message) for m in stored)
        await until_a_session_waits_on_a_lock(store.pool, PATIENCE_SECONDS, "the held append")
        assert not waiting.done()
        await transaction.commit()
    finally:
        await holder.close()
    appended = await asyncio.wait_for(waiting, PATIENCE_SECONDS)
    assert (appended.conversation_id, appended.seq) == (held, 1)


async def test_a_caller_cancelled_in_line_writes_nothing(
    one_statement: ChatStore, new_user: MakeUser
) -> None:
    store = one_statement
    user = await new_user()
    first, cancelled, kept = await conversations(store, user.user_id, 3)
    going = asyncio.create_task(store.append_message(user.user_id, first, said("alone")))
    in_line = asyncio.create_task(store.append_message(user.user_id, cancelled, said("never")))
    behind = asyncio.create_task(store.append_message(user.user_id, kept, said("kept")))
    await asyncio.sleep(0)  # each has started: one statement, two in line
    in_line.cancel()
    await asyncio.gather(going, behind)
    with pytest.raises(asyncio.CancelledError):
        await in_line
    assert (await store.list_messages(user.user_id, cancelled)).data == []
    assert [m.content for m in (await store.list_messages(user.user_id, kept)).data] == ["kept"]


async def test_an_unavailable_database_fails_every_gathered_append_and_writes_nothing(
    database: str, settings: Settings, new_user: MakeUser
) -> None:
    # The messages table locked whole (as a migration may): every append
    # statement, alone or gathered, waits past its statement timeout.
    impatient = dataclasses.replace(settings, append_statements=1, statement_timeout_ms=300)
    user = await new_user()
    async with ChatStore(database, settings=impatient) as store:
        ids = await conversations(store, user.user_id, 4)
        holder = await asyncpg.connect(database)
        try:
            async with holder.transaction():
                await holder.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
                outcomes = await asyncio.gather(
                    *(store.append_message(user.user_id, c, said("then")) for c in ids),
                    return_exceptions=True,
                )
        finally:
            await holder.close()
        assert all(isinstance(outcome, Unavailable) for outcome in outcomes), outcomes
        for conversation in ids:
            assert (await store.list_messages(user.user_id, conversation)).data == []


async def test_an_append_in_the_callers_transaction_is_that_transactions(
    one_statement: ChatStore, new_user: MakeUser
) -> None:
    store = one_statement
    user = await new_user()
    (conversation,) = await conversations(store, user.user_id, 1)

    class Undo(Exception):
        pass

    with pytest.raises(Undo):
        async with store.db.transaction():
            stored = await store.append_message(user.user_id, conversation, said("undone"))
            assert stored.seq == 1
            raise Undo
    assert (await store.list_messages(user.user_id, conversation)).data == []
