"""Live updates in process: chatstore.events.follow over a MessageEvents hub.

(The same over HTTP, across two server processes: test_multiprocess.py.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import suppress
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from support.users import User, make_user

from chatstore import events, metrics
from chatstore.errors import NotFound
from chatstore.http.auth import Authenticator
from chatstore.models import Conversation, Message
from chatstore.store import ChatStore

TIMEOUT = 10.0
IDLE = 0.2

Follower = AsyncGenerator[Message | None, None]


def follow(
    store: ChatStore,
    hub: events.MessageEvents,
    user: User,
    conversation: Conversation | uuid.UUID | str,
    *,
    after: int | None = None,
    idle_seconds: float = IDLE,
) -> Follower:
    conversation_id = conversation.id if isinstance(conversation, Conversation) else conversation
    follower = events.follow(
        store, hub, user.user_id, conversation_id, after=after, idle_seconds=idle_seconds
    )
    # Declared an AsyncIterator; it is an async generator, which we close.
    assert isinstance(follower, AsyncGenerator)
    return follower


async def next_message(follower: Follower) -> Message:
    """The next message, skipping heartbeats."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            item = await anext(follower)
            if item is not None:
                return item


async def started(follower: Follower) -> None:
    """Run the follower until its first heartbeat: it has subscribed and
    read where it starts, and nothing is waiting for it."""
    async with asyncio.timeout(TIMEOUT):
        assert await anext(follower) is None


async def append(store: ChatStore, user: User, conversation: Conversation, *texts: str) -> None:
    await store.append_messages(
        user.user_id, conversation.id, [{"role": "user", "content": t} for t in texts]
    )


async def leased(store: ChatStore, user: User, *conversations: Conversation) -> None:
    """Lease the conversations as a follower does (chatstore/leases.py): only
    then are appends to them announced."""
    for conversation in conversations:
        leased = await store.db.scalar(
            "follow_conversation",
            user_id=user.user_id,
            conversation_id=conversation.id,
            lease_seconds=60,
        )
        assert leased == conversation.id


async def test_a_follower_receives_messages_appended_after_it_started_in_order(
    store: ChatStore, hub: events.MessageEvents, user: User
) -> None:
    conversation = await store.create_conversation(user.user_id)
    await append(store, user, conversation, "old 1", "old 2")
    follower = follow(store, hub, user, conversation)
    try:
        await started(follower)
        await append(store, user, conversation, "new 3")
        await append(store, user, conversation, "new 4", "new 5", "new 6")
        received = [await next_message(follower) for _ in range(4)]
        assert [(m.seq, m.content) for m in received] == [
            (3, "new 3"),
            (4, "new 4"),
            (5, "new 5"),
            (6, "new 6"),
        ]
        assert all(m.conversation_id == conversation.id for m in received)
        await append(store, user, conversation, "new 7")
        assert (await next_message(follower)).seq == 7
    finally:
        await follower.aclose()


async def test_a_message_whose_announcement_is_lost_still_reaches_the_follower(
    store: ChatStore, hub: events.MessageEvents, user: User
) -> None:
    # Announcements are sent after the append's commit (migrations/0014), so
    # one can be lost: the appending process dies in between, or the message
    # was written by a DBA's INSERT, which announces nothing (as here). The
    # follower re-reads the table at its next idle tick and gets it.
    conversation = await store.create_conversation(user.user_id)
    follower = follow(store, hub, user, conversation)
    try:
        await started(follower)
        await append(store, user, conversation, "announced 1")
        assert (await next_message(follower)).content == "announced 1"
        await store.pool.execute(
            """WITH c AS (
                   UPDATE conversations
                   SET last_seq = last_seq + 1, tail_seq = last_seq + 1,
                       message_count = message_count + 1
                   WHERE id = $1
                   RETURNING id, user_id, last_seq)
               INSERT INTO messages
                   (conversation_id, seq, user_id, role, content, parent_seq, on_path)
               SELECT c.id, c.last_seq, c.user_id, 'user', 'never announced', c.last_seq - 1, true
               FROM c""",
            conversation.id,
        )
        lost = await next_message(follower)
        assert (lost.seq, lost.content) == (2, "never announced")
        await append(store, user, conversation, "announced 3")
        assert (await next_message(follower)).content == "announced 3"
    finally:
        await follower.aclose()


async def test_an_append_is_announced_after_its_transaction_commits_never_if_it_rolls_back(
    store: ChatStore, user: User
) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(store.dsn)
    try:
        await listener.add_listener(events.CHANNEL, lambda *args: heard.put_nowait(args[-1]))
        conversation = await store.create_conversation(user.user_id)
        await leased(store, user, conversation)  # as a follower somewhere would
        # Two appends in one transaction: one announcement, of the newest seq.
        async with store.transaction():
            await append(store, user, conversation, "one")
            await append(store, user, conversation, "two", "three")
        async with asyncio.timeout(TIMEOUT):
            news = json.loads(await heard.get())
        assert news == {"conversation_id": str(conversation.id), "seq": 3}
        with suppress(RuntimeError):
            async with store.transaction():
                await append(store, user, conversation, "rolled back")
                raise RuntimeError("roll back")
        await append(store, user, conversation, "four")
        # Notifications arrive in commit order: the rolled-back append's
        # would have come first.
        async with asyncio.timeout(TIMEOUT):
            news = json.loads(await heard.get())
        assert news == {"conversation_id": str(conversation.id), "seq": 4}
        assert heard.empty()
    finally:
        await listener.close()


async def test_appends_committed_together_are_announced_in_one_batch(
    store: ChatStore, user: User
) -> None:
    # chatstore/announcer.py: the announcements of appends that committed
    # while none was being sent go out in one announce_messages statement
    # (one transaction), one NOTIFY per conversation with its newest seq.
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(store.dsn)
    try:
        await listener.add_listener(events.CHANNEL, lambda *args: heard.put_nowait(args[-1]))
        conversations = [await store.create_conversation(user.user_id) for _ in range(3)]
        await leased(store, user, *conversations)  # as followers somewhere would
        await append(store, user, conversations[0], "before")
        async with asyncio.timeout(TIMEOUT):
            await heard.get()
            # The listener can hear a batch before its sender counts it.
            await store.db.announcer.flushed()
        batches = store.db.announcer.batches_sent
        async with store.transaction():
            for conversation in conversations:
                await append(store, user, conversation, "a", "b")
        async with asyncio.timeout(TIMEOUT):
            news = [json.loads(await heard.get()) for _ in conversations]
            await store.db.announcer.flushed()
        assert sorted((n["conversation_id"], n["seq"]) for n in news) == sorted(
            (str(c.id), 3 if c is conversations[0] else 2) for c in conversations
        )
        assert store.db.announcer.batches_sent == batches + 1
        assert heard.empty()
    finally:
        await listener.close()


async def test_after_replays_the_later_messages_first_then_goes_live(
    store: ChatStore, hub: events.MessageEvents, user: User
) -> None:
    conversation = await store.create_conversation(user.user_id)
    await append(store, user, conversation, *(f"m{i}" for i in range(1, 6)))
    follower = follow(store, hub, user, conversation, after=2)
    try:
        assert [(await next_message(follower)).seq for _ in range(3)] == [3, 4, 5]
        await append(store, user, conversation, "m6")
        assert (await next_message(follower)).seq == 6
    finally:
        await follower.aclose()

    # after=0 is everything; after the last seq is nothing but live ones.
    everything = follow(store, hub, user, conversation, after=0)
    try:
        assert [(await next_message(everything)).seq for _ in range(6)] == [1, 2, 3, 4, 5, 6]
    finally:
        await everything.aclose()
    live = follow(store, hub, user, conversation, after=6)
    try:
        await started(live)
        await append(store, user, conversation, "m7")
        assert (await next_message(live)).seq == 7
    finally:
        await live.aclose()


async def test_an_idle_follower_yields_a_heartbeat(
    store: ChatStore, hub: events.MessageEvents, user: User
) -> None:
    conversation = await store.create_conversation(user.user_id)
    follower = follow(store, hub, user, conversation, idle_seconds=0.3)
    try:
        for _ in range(2):
            began = time.monotonic()
            async with asyncio.timeout(TIMEOUT):
                assert await anext(follower) is None
            assert 0.25 <= time.monotonic() - began < 5
    finally:
        await follower.aclose()


async def test_another_users_conversation_is_not_found_before_anything_is_yielded(
    store: ChatStore, hub: events.MessageEvents, user: User, other_user: User
) -> None:
    theirs = await store.create_conversation(other_user.user_id)
    await append(store, other_user, theirs, "private")
    for target, after in (
        (theirs.id, None),
        (theirs.id, 0),
        (uuid.uuid4(), None),
        ("not-a-uuid", None),
    ):
        follower = follow(store, hub, user, target, after=after)
        with pytest.raises(NotFound):
            async with asyncio.timeout(TIMEOUT):
                await anext(follower)
        assert hub.follower_count() == 0


async def test_the_follower_set_empties_when_consumers_stop(
    store: ChatStore, hub: events.MessageEvents, user: User
) -> None:
    conversation = await store.create_conversation(user.user_id)
    other = await store.create_conversation(user.user_id)
    assert hub.follower_count() == 0
    followers = [follow(store, hub, user, c) for c in (conversation, conversation, other)]
    for follower in followers:
        await started(follower)
    assert hub.follower_count() == 3
    for follower in followers:
        await follower.aclose()
    assert hub.follower_count() == 0

    # A consumer task that is cancelled mid-wait leaves nothing behind either.
    received: list[Message | None] = []
    heard = asyncio.Event()

    async def consume() -> None:
        async for item in follow(store, hub, user, conversation):
            received.append(item)
            heard.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(TIMEOUT):
        await heard.wait()
    assert hub.follower_count() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hub.follower_count() == 0
    assert received and all(item is None for item in received)  # heartbeats only


async def test_a_deleted_conversation_ends_the_follower(
    store: ChatStore, hub: events.MessageEvents, user: User
) -> None:
    conversation = await store.create_conversation(user.user_id)
    follower = follow(store, hub, user, conversation)
    try:
        await started(follower)
        await store.delete_conversation(user.user_id, conversation.id)
        # It ends (the SSE route turns NotFound into the end of the stream).
        with pytest.raises((StopAsyncIteration, NotFound)):
            async with asyncio.timeout(TIMEOUT):
                while True:
                    assert await anext(follower) is None
    finally:
        await follower.aclose()
    assert hub.follower_count() == 0


async def test_reconnecting_with_the_last_seq_misses_nothing_while_messages_arrive(
    store: ChatStore, hub: events.MessageEvents, user: User
) -> None:
    total = 300
    conversation = await store.create_conversation(user.user_id)

    async def writer() -> None:
        seq = 0
        batch = 1
        while seq < total:
            size = min(batch, total - seq)
            await append(store, user, conversation, *(f"m{seq + i + 1}" for i in range(size)))
            seq += size
            batch = batch % 4 + 1  # batches of 1, 2, 3, 4, 1, ...
            await asyncio.sleep(0.01)

    writing = asyncio.create_task(writer())
    received: list[int] = []
    try:
        first = follow(store, hub, user, conversation, after=0)
        while len(received) < 100:
            received.append((await next_message(first)).seq)
        await first.aclose()  # the client goes away mid-stream ...
        assert not writing.done(), "the writer finished before the reconnect; slow it down"

        # ... and reconnects with Last-Event-ID: the last seq it received.
        second = follow(store, hub, user, conversation, after=received[-1])
        try:
            while received[-1] < total:
                received.append((await next_message(second)).seq)
        finally:
            await second.aclose()
        await writing
    finally:
        writing.cancel()
    assert received == list(range(1, total + 1))
    assert hub.follower_count() == 0


# -- a follower under a session (the SSE route's guard) ------------------------


async def guarded(
    store: ChatStore,
    hub: events.MessageEvents,
    user: User,
    conversation: Conversation,
    *,
    idle_seconds: float = IDLE,
    auth: Authenticator | None = None,
    after: int | None = None,
) -> Follower:
    """A follower that runs while ``caller``'s session does, checked through
    the session cache (5 s, the default) as the SSE route does it."""
    auth = auth or Authenticator(store, None, hub, cache_seconds=5)
    await hub.start()
    await until(lambda: hub.listening)  # else the cache is bypassed, proving nothing
    session = await auth.session(user.token)
    assert session is not None

    async def valid_until(fresh: bool) -> dt.datetime | None:
        current = await auth.session(user.token, fresh=fresh)
        return None if current is None else current.expires_at

    follower = events.follow(
        store,
        hub,
        user.user_id,
        conversation.id,
        after=after,
        idle_seconds=idle_seconds,
        guard=events.SessionGuard(session.session_id, valid_until),
    )
    assert isinstance(follower, AsyncGenerator)
    return follower


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


async def rest(follower: Follower, seconds: float = TIMEOUT) -> list[Message]:
    """Everything the follower still yields until it ends (which it must
    within ``seconds``), heartbeats left out."""
    received: list[Message] = []
    async with asyncio.timeout(seconds):
        async for item in follower:
            if item is not None:
                received.append(item)
    return received


async def test_a_follower_ends_when_its_session_is_deleted_and_yields_nothing_appended_after(
    store: ChatStore, hub: events.MessageEvents, user: User
) -> None:
    conversation = await store.create_conversation(user.user_id)
    follower = await guarded(store, hub, user, conversation)
    try:
        await started(follower)
        await append(store, user, conversation, "before")
        assert (await next_message(follower)).content == "before"
        await store.pool.execute('DELETE FROM "session" WHERE token = $1', user.token)
        # Appended right after the sign-out: must not reach the signed-out stream.
        await append(store, user, conversation, "after 1", "after 2")
        # Heartbeats every 0.2 s, the cache trusts for 5 s: ending within 2 s
        # is the revocation's doing.
        assert await rest(follower, 2.0) == []
    finally:
        await follower.aclose()
    assert hub.follower_count() == 0


async def test_a_live_follower_checks_its_session_in_the_cache_not_the_database(
    store: ChatStore, hub: events.MessageEvents, user: User
) -> None:
    # Messages heard announced before they are read need no session lookup.
    conversation = await store.create_conversation(user.user_id)
    auth = Authenticator(store, None, hub, cache_seconds=60)
    # No heartbeat within the test: a heartbeat's read can run ahead of a
    # message's notification (committed, not yet heard) and then rightly
    # asks the database (chatstore/events.py), which a loaded machine made
    # happen now and then. Woken only by notifications, no read is ahead.
    # So it starts from the table (after=0), where "first" already is.
    await append(store, user, conversation, "first")
    follower = await guarded(
        store, hub, user, conversation, auth=auth, idle_seconds=TIMEOUT * 3, after=0
    )
    try:
        assert (await next_message(follower)).content == "first"
        lookups = auth.lookups
        for i in range(10):
            await append(store, user, conversation, f"live {i}")
            assert (await next_message(follower)).content == f"live {i}"
        assert auth.lookups - lookups == 0, auth.lookups - lookups
    finally:
        await follower.aclose()


async def test_a_follower_ends_when_its_session_expiry_is_moved_into_the_past(
    store: ChatStore, hub: events.MessageEvents, user: User
) -> None:
    conversation = await store.create_conversation(user.user_id)
    follower = await guarded(store, hub, user, conversation)
    try:
        await started(follower)
        await store.pool.execute(
            """UPDATE "session" SET "expiresAt" = now() - interval '1 minute' WHERE token = $1""",
            user.token,
        )
        await append(store, user, conversation, "after")
        assert await rest(follower, 2.0) == []
    finally:
        await follower.aclose()


async def test_a_follower_ends_when_its_session_expires(
    store: ChatStore, hub: events.MessageEvents
) -> None:
    user = await make_user(store, ttl=dt.timedelta(seconds=2))
    conversation = await store.create_conversation(user.user_id)
    # No heartbeat within the test: what ends it is the session's expiry.
    follower = await guarded(store, hub, user, conversation, idle_seconds=TIMEOUT * 3)
    try:
        # No notification comes for an expiry either: the follower wakes at
        # the session's expiresAt by itself.
        assert await rest(follower) == []
    finally:
        await follower.aclose()


# -- the LISTEN connection through an outage -----------------------------------


class Gate:
    """A TCP relay to the database that can cut every connection and refuse
    new ones (a network outage between chatstore and PostgreSQL), or hold
    back what the database sends (a slow network)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._writers: set[asyncio.StreamWriter] = set()
        self.open = True
        self.port = 0
        self._server: asyncio.Server | None = None
        self.flowing = asyncio.Event()
        self.flowing.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers |= {writer, up_writer}

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, downstream: bool
        ) -> None:
            with suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    if downstream:
                        await self.flowing.wait()
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(
            pipe(reader, up_writer, downstream=False), pipe(up_reader, writer, downstream=True)
        )


@pytest.fixture
async def gated(
    store: ChatStore, database: str
) -> AsyncIterator[tuple[Gate, events.MessageEvents]]:
    """A hub whose LISTEN connection goes through a Gate."""
    target = urlsplit(database)
    assert target.hostname is not None and target.port is not None
    gate = Gate(target.hostname, target.port)
    await gate.start()
    credentials = target.username or ""
    if target.password:
        credentials += f":{target.password}"
    url = urlunsplit(target._replace(netloc=f"{credentials}@127.0.0.1:{gate.port}"))
    settings = dataclasses.replace(store.settings, direct_database_url=url)
    hub = events.MessageEvents(ChatStore(url, settings=settings))
    try:
        yield gate, hub
    finally:
        await hub.stop()
        gate.flowing.set()
        await gate.close()


async def test_a_follower_never_yields_a_message_appended_after_its_session_ended(
    store: ChatStore, gated: tuple[Gate, events.MessageEvents], user: User
) -> None:
    # Even when the follower reads before its revocation is heard: the
    # notifications are held back here, and the follower wakes by its
    # heartbeat and reads the message appended after the sign-out. The
    # session cache still trusts the session (nothing was heard); the read
    # ran ahead of the announcements, so the database decides.
    gate, hub = gated
    conversation = await store.create_conversation(user.user_id)
    follower = await guarded(store, hub, user, conversation)
    try:
        await started(follower)
        gate.flowing.clear()
        await store.pool.execute('DELETE FROM "session" WHERE token = $1', user.token)
        await append(store, user, conversation, "after the sign-out")
        assert await rest(follower) == []
    finally:
        await follower.aclose()


async def test_a_listen_outage_logs_one_warning_and_one_info_not_a_line_per_retry(
    gated: tuple[Gate, events.MessageEvents],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate, hub = gated
    monkeypatch.setattr(events, "RECONNECT_SECONDS", 0.05)
    caplog.set_level(logging.INFO, logger="chatstore.events")
    reconnects = metrics.REGISTRY.get_sample_value("chatstore_listen_reconnects_total") or 0
    await hub.start()
    await until(lambda: hub.listening)
    epoch = hub.epoch

    gate.open = False
    gate.cut()
    await until(lambda: not hub.listening)
    assert hub.epoch > epoch  # whoever trusted "no revocation came" must not now
    await asyncio.sleep(0.5)  # about ten failed retries
    gate.open = True
    await until(lambda: hub.listening)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "chatstore.events"]
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO], lines
    after = metrics.REGISTRY.get_sample_value("chatstore_listen_reconnects_total") or 0
    assert after == reconnects + 1


async def test_a_listen_failure_of_any_kind_is_retried_and_stop_stays_clean(
    store: ChatStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A failure outside the connection errors (here asyncpg's ValueError for
    # a port that is not a number; in CI once, InternalClientError for a
    # connection that died between connect and LISTEN) once ended the
    # keeper: nothing listened again, and stop() raised its error.
    monkeypatch.setattr(events, "RECONNECT_SECONDS", 0.05)
    caplog.set_level(logging.INFO, logger="chatstore.events")
    settings = dataclasses.replace(
        store.settings, direct_database_url="postgresql://chatstore@127.0.0.1:notaport/x"
    )
    hub = events.MessageEvents(ChatStore(store.db.dsn, settings=settings))
    await hub.start()
    try:
        await until(lambda: any("LISTEN connection" in r.getMessage() for r in caplog.records))
        await asyncio.sleep(0.3)  # several more attempts
        assert not hub.listening
        failures = [r for r in caplog.records if r.name == "chatstore.events"]
        assert len(failures) == 1 and "ValueError" in failures[0].getMessage(), failures
    finally:
        await hub.stop()  # raises nothing: the keeper was still retrying
