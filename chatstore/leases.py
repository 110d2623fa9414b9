"""Follow leases: a process tells the database which conversations it has
followers of, so that only appends to those are announced (issue 11).

An announcement costs the appender a second round trip and a transaction
(chatstore/announcer.py), and nearly all conversations have no follower at
any moment. So a process leases a conversation (``follow_conversation`` in
sql/events.sql sets ``conversations.followed_until``, migrations/0016)
before its first follower of it reads anything, and renews the lease every
third of its length (``CHATSTORE_FOLLOW_LEASE_SECONDS``) while it has
followers of it: one task per process, one short statement per followed
conversation (about what one idle tick of one follower costs), never
several rows in one statement: that could deadlock with a caller's
transaction appending to several conversations in another order.
``append_messages`` reads the lease on the row it locks and returns
whether it is current; only then is the append announced
(chatstore/messages.py).

Why no follower misses an append: the lease and the append both take the
conversation's row lock. If the append locked first, the lease waits for
its commit, and the follower's first read (after the lease) sees it. If the
lease committed first, the append's ``FOR UPDATE`` returns the leased row
(READ COMMITTED locks and reads a row's newest version), so it is announced.

What fails is only late, never lost: a lease or renewal that fails is
logged, and followers still re-read the table at every idle tick
(chatstore/events.py). A process that dies stops renewing; its leases lapse
and appends stop being announced, which costs nothing.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from dataclasses import dataclass

from chatstore.database import Database

log = logging.getLogger("chatstore.leases")


@dataclass(slots=True)
class _Lease:
    db: Database
    user_id: str
    seconds: float
    # Loop time until which the lease surely holds: its length, counted from
    # before the statement that took or renewed it.
    until: float


class FollowLeases:
    """The leases this process holds for its followers, and their renewal."""

    def __init__(self) -> None:
        self._leases: dict[uuid.UUID, _Lease] = {}
        self._renewer: asyncio.Task[None] | None = None
        self.renewals = 0

    def __contains__(self, conversation: object) -> bool:
        return conversation in self._leases

    async def take(self, db: Database, user_id: str, conversation: uuid.UUID) -> None:
        """Lease ``conversation`` for a follower about to read it, unless
        this process holds a lease on it that the renewal keeps. Nothing is
        leased when the conversation is not the caller's (the follower's
        read then finds it missing)."""
        loop = asyncio.get_running_loop()
        seconds = db.settings.follow_lease_seconds
        held = self._leases.get(conversation)
        if held is not None and held.user_id == user_id and held.until > loop.time() + seconds / 3:
            return
        started = loop.time()
        try:
            leased = await _lease(db, user_id, conversation, seconds)
        except Exception as failure:
            # Late, not lost: the follower re-reads the table at each tick.
            log.warning("leasing a followed conversation failed: %r", failure)
            return
        if leased:
            self._leases[conversation] = _Lease(db, user_id, seconds, started + seconds)
            if self._renewer is None or self._renewer.done():
                # In a context of its own: it outlives the request that
                # started it, and must hold none of its state.
                self._renewer = loop.create_task(
                    self._keep_renewing(),
                    name="chatstore-follow-leases",
                    context=contextvars.Context(),
                )

    def release(self, conversation: uuid.UUID) -> None:
        """This process's last follower of ``conversation`` is gone: stop
        renewing (the lease lapses by itself)."""
        self._leases.pop(conversation, None)

    async def close(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
        self._leases.clear()

    async def renew(self) -> None:
        """Renew every lease held, one statement each (sql/events.sql says
        why not all in one): a failure is logged, and the others go on."""
        loop = asyncio.get_running_loop()
        for conversation, lease in list(self._leases.items()):
            started = loop.time()
            try:
                renewed = await _lease(lease.db, lease.user_id, conversation, lease.seconds)
            except Exception as failure:
                log.warning("renewing a followed conversation's lease failed: %r", failure)
                continue
            if renewed:
                lease.until = started + lease.seconds
                self.renewals += 1

    async def _keep_renewing(self) -> None:
        while self._leases:
            await asyncio.sleep(min(lease.seconds for lease in self._leases.values()) / 3)
            await self.renew()


async def _lease(db: Database, user_id: str, conversation: uuid.UUID, seconds: float) -> bool:
    leased = await db.scalar(
        "follow_conversation", user_id=user_id, conversation_id=conversation, lease_seconds=seconds
    )
    return leased is not None
