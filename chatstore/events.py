"""Live updates: appended messages, from any process, to every follower.

One LISTEN connection per process (not one per client) hears the
``chatstore_messages`` notifications that the messages trigger sends at
commit (migrations/0005). A notification only says "conversation C grew to
seq N"; each follower then reads what it has not sent yet from the table.
Reading from the table is what makes a follower gap-free and duplicate-free:
a follower clears its flag *before* reading, so a notification that lands
while it reads makes it read again, and it always asks for seq > the last
one it sent. When the LISTEN connection is lost, every follower is woken
once it is back, so whatever was appended meanwhile is read too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import asyncpg

from chatstore.models import Message
from chatstore.pool import server_settings
from chatstore.store import ChatStore, ConversationId, conversation_uuid

CHANNEL = "chatstore_messages"
PAGE = 500
RECONNECT_SECONDS = 1.0

log = logging.getLogger("chatstore.events")


class MessageEvents:
    """The process's LISTEN connection and its followers, by conversation."""

    def __init__(self, store: ChatStore) -> None:
        self._store = store
        self._followers: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._connection: asyncpg.Connection[Any] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()

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
        await self._close()

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

    def follower_count(self) -> int:
        return sum(len(flags) for flags in self._followers.values())

    async def _keep_listening(self) -> None:
        while True:
            try:
                settings = self._store.settings
                self._connection = await asyncpg.connect(
                    settings.direct_database_url or self._store.dsn,
                    server_settings=server_settings(settings),
                    timeout=settings.connect_timeout_seconds,
                )
                self._lost.clear()
                self._connection.add_termination_listener(lambda _c: self._lost.set())
                await self._connection.add_listener(CHANNEL, self._notified)
                self._connected.set()
                # Anything appended while we were not listening: read it now.
                self._wake_all()
                await self._lost.wait()
                log.warning("LISTEN connection lost; reconnecting")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                log.warning("LISTEN connection failed: %r; retrying", error)
            self._connected.clear()
            await self._close()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            connection.terminate()

    def _notified(self, connection: Any, pid: int, channel: str, payload: object) -> None:
        try:
            conversation = json.loads(str(payload))["conversation_id"]
        except (ValueError, KeyError, TypeError):
            log.warning("unexpected notification payload %r", payload)
            return
        for flag in self._followers.get(conversation, ()):
            flag.set()

    def _wake_all(self) -> None:
        for flags in self._followers.values():
            for flag in flags:
                flag.set()


async def follow(
    store: ChatStore,
    events: MessageEvents,
    user_id: str,
    conversation_id: ConversationId,
    *,
    after: int | None = None,
    idle_seconds: float = 15.0,
) -> AsyncIterator[Message | None]:
    """Messages of the conversation as they are appended, in seq order.

    With ``after``, messages with a greater seq are replayed from the table
    first. Yields None after ``idle_seconds`` without news (a heartbeat for
    the caller to pass on). Raises NotFound if the conversation is not the
    caller's, before anything is yielded, or when it has been deleted since
    (noticed at the next notification or idle tick).
    """
    conversation = conversation_uuid(conversation_id)
    await events.start()
    with events.follow(conversation) as flag:
        # Subscribed first, then read where to start: nothing appended in
        # between can be missed.
        if after is None:
            start = await store.list_messages(user_id, conversation, limit=1, order="desc")
            last = start.last_seq or 0
            if start.data:
                last = start.data[0].seq
        else:
            last = after
        while True:
            flag.clear()
            page = await store.list_messages(user_id, conversation, limit=PAGE, after=last)
            for message in page.data:
                last = message.seq
                yield message
            if page.has_more:
                continue
            try:
                await asyncio.wait_for(flag.wait(), idle_seconds)
            except TimeoutError:
                yield None
