"""Follow leases (migrations/0016, chatstore/leases.py): an append is
announced only while some process follows its conversation, and no follower
misses an append for it, whichever of the lease and the append locks the
conversation first.

Notifications are heard on a plain asyncpg LISTEN connection; "nothing was
announced" is shown without waiting for a silence: the announcer sends
nothing (its batch count stays), and a later announcement of another
conversation arrives alone (notifications arrive in commit order).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime as dt
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from support.databases import lock_waiters
from support.users import User

from chatstore import events
from chatstore.config import Settings
from chatstore.errors import NotFound
from chatstore.models import Conversation
from chatstore.store import ChatStore
from features.test_events import (
    TIMEOUT,
    append,
    follow,
    leased,
    next_message,
    started,
)

# A lease this short lapses within the test; renewed every third of it.
SHORT_LEASE_SECONDS = 1.0
# A follower that never wakes by its idle tick within a test: what it gets,
# it got because an announcement woke it (or its first read had it).
NO_TICK = 3600.0


@pytest.fixture
async def short_leases(database: str, settings: Settings) -> AsyncIterator[ChatStore]:
    """A store (another process, as it were) whose followers lease for a second."""
    short = dataclasses.replace(settings, follow_lease_seconds=SHORT_LEASE_SECONDS)
    async with ChatStore(database, settings=short) as opened:
        yield opened


class Listener:
    """A LISTEN connection of its own on chatstore_messages."""

    def __init__(self) -> None:
        self.heard: asyncio.Queue[dict[str, object]] = asyncio.Queue()

    def _notified(self, connection: object, pid: int, channel: str, payload: object) -> None:
        self.heard.put_nowait(json.loads(str(payload)))

    async def next(self) -> dict[str, object]:
        async with asyncio.timeout(TIMEOUT):
            return await self.heard.get()


@pytest.fixture
async def listener(store: ChatStore) -> AsyncIterator[Listener]:
    heard = Listener()
    connection = await asyncpg.connect(store.dsn)
    try:
        await connection.add_listener(events.CHANNEL, heard._notified)
        yield heard
    finally:
        await connection.close()


def news(conversation: Conversation, seq: int) -> dict[str, object]:
    return {"conversation_id": str(conversation.id), "seq": seq}


async def followed_until(store: ChatStore, conversation: Conversation) -> dt.datetime | None:
    until: dt.datetime | None = await store.pool.fetchval(
        "SELECT followed_until FROM conversations WHERE id = $1", conversation.id
    )
    return until


async def until_lapsed(store: ChatStore, conversation: Conversation) -> None:
    """Until the database's clock is past the conversation's lease (its own
    clock decides, not ours)."""

    async def lapsed() -> bool:
        return bool(
            await store.pool.fetchval(
                "SELECT followed_until < clock_timestamp() FROM conversations WHERE id = $1",
                conversation.id,
            )
        )

    await until(lapsed)


async def until(condition: Callable[[], Awaitable[bool] | bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while True:
            met = condition()
            if await met if inspect.isawaitable(met) else met:
                return
            await asyncio.sleep(0.02)


async def a_backend_waits_on_a_lock(store: ChatStore) -> bool:
    return await lock_waiters(store.pool) > 0


async def not_announced(
    store: ChatStore, user: User, listener: Listener, appended: Callable[[], Awaitable[None]]
) -> None:
    """``appended()`` sends no announcement: the announcer sends no batch,
    and a leased conversation's announcement, sent after it, is the next
    one heard."""
    await store.db.announcer.flushed()
    batches = store.db.announcer.batches_sent
    await appended()
    await store.db.announcer.flushed()
    assert store.db.announcer.batches_sent == batches
    sentinel = await store.create_conversation(user.user_id)
    await leased(store, user, sentinel)
    await append(store, user, sentinel, "sentinel")
    assert await listener.next() == news(sentinel, 1)
    assert listener.heard.empty()


async def test_an_append_to_an_unfollowed_conversation_sends_no_notification(
    store: ChatStore, user: User, listener: Listener
) -> None:
    conversation = await store.create_conversation(user.user_id)
    await not_announced(
        store, user, listener, lambda: append(store, user, conversation, "nobody follows")
    )
    assert await followed_until(store, conversation) is None


async def test_an_append_to_a_followed_conversation_is_announced(
    store: ChatStore, hub: events.MessageEvents, user: User, listener: Listener
) -> None:
    conversation = await store.create_conversation(user.user_id)
    follower = follow(store, hub, user, conversation)
    try:
        await started(follower)
        assert conversation.id in hub.leases
        await append(store, user, conversation, "followed")
        assert await listener.next() == news(conversation, 1)
        assert (await next_message(follower)).content == "followed"
    finally:
        await follower.aclose()
    assert conversation.id not in hub.leases  # no follower left: no renewal


async def test_a_lease_taken_while_an_append_holds_the_row_lock_misses_nothing(
    store: ChatStore, hub: events.MessageEvents, user: User
) -> None:
    # The append locked first: it read no lease and is never announced; the
    # follower's lease waits for its commit, so the follower's first read
    # has the message. Its idle tick never comes within the test, so only
    # that read can have delivered it.
    conversation = await store.create_conversation(user.user_id)
    await append(store, user, conversation, "1", "2")
    # Listening already: the wake-up of every follower when the LISTEN
    # connection comes up would deliver the message too.
    await hub.start()
    await until(lambda: hub.listening)
    follower = follow(store, hub, user, conversation, after=2, idle_seconds=NO_TICK)
    try:
        async with store.transaction():
            await append(store, user, conversation, "in flight")
            # Not in the transaction's context: the follower is another
            # request, on connections of its own.
            first = asyncio.create_task(next_message(follower), context=contextvars.Context())
            await until(lambda: a_backend_waits_on_a_lock(store))  # the lease
            assert not first.done()
        assert (await first).content == "in flight"
        await append(store, user, conversation, "after")  # leased now: announced
        assert [(m.seq, m.content) for m in [await next_message(follower)]] == [(4, "after")]
    finally:
        await follower.aclose()


async def test_an_append_that_waited_for_a_lease_to_commit_is_announced(
    store: ChatStore, user: User, listener: Listener
) -> None:
    # The lease locked first: the append's statement began (its snapshot has
    # no lease) and waits on the row lock; once the lease commits, FOR
    # UPDATE hands it the leased row, so it is announced.
    conversation = await store.create_conversation(user.user_id)
    leasing = asyncio.Event()
    commit = asyncio.Event()

    async def lease_in_a_transaction() -> None:
        async with store.transaction():
            await leased(store, user, conversation)
            leasing.set()
            await commit.wait()

    holder = asyncio.create_task(lease_in_a_transaction())
    try:
        async with asyncio.timeout(TIMEOUT):
            await leasing.wait()
        appending = asyncio.create_task(append(store, user, conversation, "waited"))
        await until(lambda: a_backend_waits_on_a_lock(store))
        assert not appending.done()
        commit.set()
        await holder
        async with asyncio.timeout(TIMEOUT):
            await appending
        assert await listener.next() == news(conversation, 1)
    finally:
        commit.set()
        await asyncio.gather(holder, return_exceptions=True)


async def test_a_lapsed_lease_announces_nothing_and_a_renewed_one_keeps_announcing(
    store: ChatStore, short_leases: ChatStore, user: User, listener: Listener
) -> None:
    hub = short_leases.message_events()
    conversations = [await store.create_conversation(user.user_id) for _ in range(3)]
    followers = [
        short_leases.follow(hub, user.user_id, c.id, idle_seconds=NO_TICK) for c in conversations
    ]
    firsts = [asyncio.ensure_future(anext(f)) for f in followers]
    try:
        await until(lambda: all(c.id in hub.leases for c in conversations))
        leases = [await followed_until(store, c) for c in conversations]
        # A round of renewals renews every one.
        await until(lambda: hub.leases.renewals >= len(conversations))
        renewed = [await followed_until(store, c) for c in conversations]
        assert all(
            new is not None and old is not None and new > old
            for new, old in zip(renewed, leases, strict=True)
        )
        # Past the first lease's end, by the database's clock: renewed, so
        # still announced.
        await until(lambda: store.pool.fetchval("SELECT clock_timestamp() > $1", leases[0]))
        await append(store, user, conversations[0], "renewed")
        assert await listener.next() == news(conversations[0], 1)
        async with asyncio.timeout(TIMEOUT):
            assert (await firsts[0]) is not None
    finally:
        for first in firsts:
            first.cancel()
        await asyncio.gather(*firsts, return_exceptions=True)
        for follower in followers:
            await follower.aclose()  # type: ignore[attr-defined]
        await hub.stop()
    # Nobody follows any more: nobody renews; once lapsed, nothing is announced.
    await until_lapsed(store, conversations[0])
    await not_announced(
        store, user, listener, lambda: append(store, user, conversations[0], "lapsed")
    )


async def test_leasing_another_users_conversation_does_nothing(
    store: ChatStore, hub: events.MessageEvents, user: User, other_user: User, listener: Listener
) -> None:
    theirs = await store.create_conversation(other_user.user_id)
    assert (
        await store.db.scalar(
            "follow_conversation",
            user_id=user.user_id,
            conversation_id=theirs.id,
            lease_seconds=60,
        )
        is None
    )
    await hub.lease(store.db, user.user_id, theirs.id)
    assert theirs.id not in hub.leases
    follower = follow(store, hub, user, theirs)
    with pytest.raises(NotFound):
        async with asyncio.timeout(TIMEOUT):
            await anext(follower)
    assert await followed_until(store, theirs) is None
    await not_announced(
        store, other_user, listener, lambda: append(store, other_user, theirs, "private")
    )


async def test_a_lease_leaves_updated_at_alone(store: ChatStore, user: User) -> None:
    # Following is not activity: the listing's order and retention stay as
    # they were.
    conversation = await store.create_conversation(user.user_id)
    before = await store.pool.fetchval(
        "SELECT updated_at FROM conversations WHERE id = $1", conversation.id
    )
    await leased(store, user, conversation)
    after = await store.pool.fetchval(
        "SELECT updated_at FROM conversations WHERE id = $1", conversation.id
    )
    assert after == before
    assert await followed_until(store, conversation) is not None


def test_the_follow_lease_setting_comes_from_the_environment_within_bounds() -> None:
    assert Settings.from_env({}).follow_lease_seconds == 60
    assert Settings.from_env({"CHATSTORE_FOLLOW_LEASE_SECONDS": "15"}).follow_lease_seconds == 15
    for bad in ("0", "-5", "soon", "86401"):
        with pytest.raises(ValueError, match="CHATSTORE_FOLLOW_LEASE_SECONDS"):
            Settings.from_env({"CHATSTORE_FOLLOW_LEASE_SECONDS": bad})


async def test_a_renewal_never_deadlocks_with_a_transaction_appending_to_several_conversations(
    store: ChatStore, hub: events.MessageEvents, user: User
) -> None:
    # The renewal waits on a conversation a transaction has locked, and the
    # transaction then appends to another followed conversation. A renewal
    # that held the first's lock while it waited (one statement for both)
    # would deadlock with it; PostgreSQL would fail one of them.
    first, second = sorted(
        [await store.create_conversation(user.user_id) for _ in range(2)], key=lambda c: c.id
    )
    for conversation in (first, second):
        await hub.lease(store.db, user.user_id, conversation.id)
    leases = [await followed_until(store, c) for c in (first, second)]
    renewals = hub.leases.renewals
    async with store.transaction():
        await append(store, user, second, "locked first")
        renewing = asyncio.create_task(hub.leases.renew(), context=contextvars.Context())
        await until(lambda: a_backend_waits_on_a_lock(store))  # the renewal, on second
        await append(store, user, first, "locked second")
    async with asyncio.timeout(TIMEOUT):
        await renewing
    assert hub.leases.renewals == renewals + 2
    renewed = [await followed_until(store, c) for c in (first, second)]
    assert all(
        new is not None and old is not None and new > old
        for new, old in zip(renewed, leases, strict=True)
    )
