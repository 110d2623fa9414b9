"""Live updates: appended messages, from any process, to every follower;
and session revocations, to whatever remembers a session.

One LISTEN connection per process (not one per client) hears the
``chatstore_messages`` notifications that an appender sends after its
commit (messages.announce; a trigger inside the commit until
migrations/0014), for the conversations that some process follows: a
follower leases its conversation before its first read, and the process
renews the lease while it has followers of it (chatstore/leases.py says why
no append can slip between the two). A notification only says
"conversation C grew to seq N"; each follower then reads what it has not
sent yet from the table, and re-reads it at every idle tick: a message
whose notification never came (a DBA's INSERT, an appender that died
between its commit and its announcement, a lease whose renewal failed)
arrives then.
Reading from the table is what makes a follower gap-free and duplicate-free:
a follower clears its flag *before* reading, so a notification that lands
while it reads makes it read again, and it always asks for seq > the last
one it sent. When the LISTEN connection is lost, every follower is woken
once it is back, so whatever was appended meanwhile is read too.

The same connection hears ``chatstore_sessions`` (migrations/0008): the id
of a better-auth session that was deleted, re-keyed or cut short. Those go
to the revocation listeners (the session cache) and wake the event streams
of that session, which re-check it and end.

A revocation sent while the connection is down is lost for good (NOTIFY
is not queued for a listener that is not there). So whoever trusts a
session because no revocation came must also ask :attr:`listening` and
:attr:`epoch`: ``epoch`` changes whenever the connection is lost or made,
so "listening, and the epoch I saw when I checked the session" means
"no revocation can have been missed since".

Long because: the LISTEN connection's life (epochs, reconnects) and the
follower that relies on it are one protocol; apart, each would re-explain it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from chatstore import messages, metrics
from chatstore.database import Database, Source, database_of
from chatstore.ids import ConversationId, conversation_uuid
from chatstore.leases import FollowLeases
from chatstore.models import Message
from chatstore.pool import server_settings

CHANNEL = "chatstore_messages"
SESSIONS_CHANNEL = "chatstore_sessions"
PAGE = 500
RECONNECT_SECONDS = 1.0
# Near a session's expiry, the shortest wait before re-checking it: the
# database's clock decides, and ours may be a little ahead of it.
MIN_EXPIRY_WAIT_SECONDS = 0.25

log = logging.getLogger("chatstore.events")

RevocationListener = Callable[[str], None]


class MessageEvents:
    """The process's LISTEN connection, its followers by conversation, and
    who wants to hear of revoked sessions."""

    def __init__(self, source: Source) -> None:
        self._db = database_of(source)
        self._followers: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._session_watchers: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        # The highest seq heard announced, per followed conversation.
        self._announced: dict[str, int] = {}
        self._revocation_listeners: list[RevocationListener] = []
        # The followed conversations' leases (chatstore/leases.py).
        self.leases = FollowLeases()
        self._connection: asyncpg.Connection[Any] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._epoch = 0

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is up: no revocation can be missed now."""
        return self._connected.is_set()

    @property
    def epoch(self) -> int:
        """Changes each time the LISTEN connection is made or lost."""
        return self._epoch

    def on_session_revoked(self, listener: RevocationListener) -> None:
        """Call ``listener(session_id)`` for every revocation heard."""
        self._revocation_listeners.append(listener)

    async def start(self) -> None:
        """Start listening in the background (idempotent)."""
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep_listening(), name="chatstore-listen")

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        self._on_lost()
        await self._close()
        await self.leases.close()

    @contextmanager
    def follow(self, conversation: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set whenever ``conversation`` may have new messages."""
        flag = asyncio.Event()
        key = str(conversation)
        self._followers[key].add(flag)
        try:
            yield flag
        finally:
            followers = self._followers.get(key)
            if followers is not None:
                followers.discard(flag)
                if not followers:
                    del self._followers[key]
                    self._announced.pop(key, None)
                    self.leases.release(conversation)

    async def lease(self, db: Database, user_id: str, conversation: uuid.UUID) -> None:
        """Make appends to ``conversation`` announced while this process
        follows it (a follower calls it inside :meth:`follow`, before its
        first read)."""
        await self.leases.take(db, user_id, conversation)

    def announced(self, conversation: uuid.UUID) -> int:
        """The highest seq of ``conversation`` whose notification was heard
        (while it had followers; 0 if none). Notifications arrive in commit
        order, and a message's is sent after its append commits, so every
        revocation committed before that message's append has been heard
        too."""
        return self._announced.get(str(conversation), 0)

    @contextmanager
    def watch_session(self, session_id: str, flag: asyncio.Event) -> Iterator[None]:
        """Set ``flag`` when ``session_id`` is revoked (or may have been:
        also when the connection is back after an outage)."""
        self._session_watchers[session_id].add(flag)
        try:
            yield
        finally:
            watchers = self._session_watchers.get(session_id)
            if watchers is not None:
                watchers.discard(flag)
                if not watchers:
                    del self._session_watchers[session_id]

    def follower_count(self) -> int:
        return sum(len(flags) for flags in self._followers.values())

    async def _keep_listening(self) -> None:
        # One warning when listening starts failing and one info line when it
        # is back, not a line per retry (an outage retries every second).
        failing = False
        ever_connected = False
        while True:
            try:
                settings = self._db.settings
                self._connection = await asyncpg.connect(
                    settings.direct_database_url or self._db.dsn,
                    server_settings=server_settings(settings),
                    timeout=settings.connect_timeout_seconds,
                )
                self._lost.clear()
                self._connection.add_termination_listener(self._terminated)
                await self._connection.add_listener(CHANNEL, self._notified)
                await self._connection.add_listener(SESSIONS_CHANNEL, self._session_revoked)
                self._epoch += 1
                self._connected.set()
                if ever_connected:
                    metrics.LISTEN_RECONNECTS.inc()
                if failing:
                    log.info("LISTEN connection is back")
                    failing = False
                ever_connected = True
                # Anything appended (or revoked) while we were not listening:
                # every follower reads, and every stream re-checks its session.
                self._wake_all()
                await self._lost.wait()
                error: BaseException | None = None
            except Exception as failure:
                # Whatever ended this attempt (a refused or lost connection,
                # a server shutting down, asyncpg's InternalClientError for a
                # connection that died between two of its calls), the next
                # one may work: retried, never the end of listening (a dead
                # keeper left every follower on its tick, and made stop()
                # raise its error).
                error = failure
            self._on_lost()
            if not failing:
                failing = True
                if error is None:
                    log.warning("LISTEN connection lost; reconnecting")
                else:
                    log.warning("LISTEN connection failed: %r; retrying", error)
            await self._close()
            await asyncio.sleep(RECONNECT_SECONDS)

    def _terminated(self, connection: object) -> None:
        # Only the current connection's end matters; a replaced one's is old news.
        if connection is self._connection:
            self._on_lost()

    def _on_lost(self) -> None:
        # Synchronous, from the termination callback: the moment the
        # connection is gone nobody may trust "no revocation came".
        if self._connected.is_set():
            self._connected.clear()
            self._epoch += 1
        self._lost.set()

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            connection.terminate()

    def _notified(self, connection: Any, pid: int, channel: str, payload: object) -> None:
        try:
            news = json.loads(str(payload))
            conversation, seq = str(news["conversation_id"]), int(news["seq"])
        except (ValueError, KeyError, TypeError):
            log.warning("unexpected notification payload %r", payload)
            return
        flags = self._followers.get(conversation)
        if not flags:
            return
        self._announced[conversation] = max(seq, self._announced.get(conversation, 0))
        for flag in flags:
            flag.set()

    def _session_revoked(self, connection: Any, pid: int, channel: str, payload: object) -> None:
        session_id = str(payload)
        for listener in self._revocation_listeners:
            listener(session_id)
        for flag in self._session_watchers.get(session_id, ()):
            flag.set()

    def _wake_all(self) -> None:
        for flags in (*self._followers.values(), *self._session_watchers.values()):
            for flag in flags:
                flag.set()


@dataclass(frozen=True, slots=True)
class SessionGuard:
    """The session a follower runs under: it stops when the session does.

    ``check(fresh)`` answers until when the session is valid, or None once
    it is gone (deleted, expired). It is called after every read, so it
    should be cheap: the session cache answers it without a round trip
    while no revocation came. With ``fresh`` it must ask the database.
    """

    session_id: str
    check: Callable[[bool], Awaitable[datetime | None]]


async def newest_seq(source: Source, user_id: str, conversation_id: ConversationId) -> int:
    """Where a follower given no ``after`` starts: the seq of the newest
    message on the active path (0: none yet). An HTTP event stream reads it
    before it answers, so that whatever is appended once the client has its
    200 is in the stream; following the table from there is gap-free
    whatever happens between that read and the subscription (follow reads
    the table after it has subscribed)."""
    conversation = conversation_uuid(conversation_id)
    start = await messages.page(database_of(source), user_id, conversation, limit=1, order="desc")
    if start.data:
        return start.data[0].seq
    return start.last_seq or 0


async def follow(
    source: Source,
    events: MessageEvents,
    user_id: str,
    conversation_id: ConversationId,
    *,
    after: int | None = None,
    idle_seconds: float = 15.0,
    guard: SessionGuard | None = None,
) -> AsyncIterator[Message | None]:
    """Messages of the conversation as they are appended, in seq order.

    With ``after``, messages with a greater seq are replayed from the table
    first. Yields None after ``idle_seconds`` without news (a heartbeat for
    the caller to pass on). Raises NotFound if the conversation is not the
    caller's, before anything is yielded, or when it has been deleted since
    (noticed at the next notification or idle tick).

    With ``guard``, the session is re-checked after every read and the
    follower ends (returns) once it is gone: at once when its revocation is
    heard, at its expiry, and at the latest at the next heartbeat when the
    LISTEN connection is down. No message appended after the session ended
    is yielded (see the check below).
    """
    conversation = conversation_uuid(conversation_id)
    db = database_of(source)
    await events.start()
    with (
        events.follow(conversation) as flag,
        events.watch_session(guard.session_id, flag) if guard is not None else nullcontext(),
    ):
        # Subscribed and leased first, then read where to start: nothing
        # appended in between can be missed. An append that committed before
        # the lease is in the first read (the lease waited for its row
        # lock); one after it is announced (it read the lease under that
        # lock), and heard: the LISTEN connection hears it, or wakes every
        # follower once it is back.
        await events.lease(db, user_id, conversation)
        last = await newest_seq(db, user_id, conversation) if after is None else after
        valid_until: datetime | None = None
        while True:
            flag.clear()
            page = await messages.page(db, user_id, conversation, limit=PAGE, after=last)
            if guard is not None:
                # The session is checked after the read, so a revocation
                # committed before any message of the page is visible to the
                # check. The cache knows of it if the page's last message was
                # announced already (notifications arrive in commit order,
                # and the cache forgets a session when its revocation is
                # heard); a page read ahead of the announcements asks the
                # database itself.
                ahead = bool(page.data) and page.data[-1].seq > events.announced(conversation)
                valid_until = await guard.check(ahead)
                if valid_until is None:
                    return
            for message in page.data:
                last = message.seq
                yield message
            if page.has_more:
                continue
            wait, heartbeat = idle_seconds, True
            if valid_until is not None:
                left = (valid_until - datetime.now(UTC)).total_seconds()
                if left < wait:
                    wait, heartbeat = max(left, MIN_EXPIRY_WAIT_SECONDS), False
            try:
                await asyncio.wait_for(flag.wait(), wait)
            except TimeoutError:
                if heartbeat:
                    yield None
