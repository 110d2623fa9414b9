"""Each conversation's writers in this process wait their turn here, not
on a pooled connection.

Every writer of a conversation takes its row lock first (lock_conversation
in sql/messages.sql), so one conversation's writers go one at a time in the
database whatever this process does. Waiting for that lock in the database
costs each waiter a pooled connection: while one user's conversation was
held (a slow statement, a lock taken by hand), its waiting writers took
every connection, and other users' requests queued for one and were turned
away (RELIABILITY.md, finding 1). Here a conversation's writers wait in
line in the process instead: at most one of this process's transactions per
conversation holds a connection while it waits for the row, and the others
wait with nothing.

A line is the owner's and the conversation's together: a caller naming
somebody else's conversation waits in a line of its own (and is then told
404 by the database), never in the owner's.

The wait in line is a wait for the conversation's connection, and counts
against the acquire timeout with the wait for the pool that follows it: a
writer still in line when it runs out gets TimeoutError, as one waiting
for the pool does (a 503), so a stalled conversation's writers end as
before, after at most the acquire timeout and the statement timeout.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from chatstore import metrics


class _Line:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        # The writers in this line, its holder included: the line goes
        # when the last one leaves.
        self.users = 0


class Writers:
    """One process's lines, one per owner and conversation with writers."""

    def __init__(self) -> None:
        self._lines: dict[tuple[str, uuid.UUID], _Line] = {}
        # Writers in line behind another of their conversation's.
        self.waiting = 0

    @asynccontextmanager
    async def turn(
        self, user_id: str, conversation: uuid.UUID, patience: float
    ) -> AsyncIterator[float]:
        """The block runs as this process's only writer of the conversation,
        after at most ``patience`` seconds in line (TimeoutError after
        that); it is given what is left of ``patience``."""
        key = (user_id, conversation)
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = _Line()
        line.users += 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            if line.users == 1:
                await line.lock.acquire()  # at once: nobody else is in line
            else:
                self.waiting += 1
                metrics.WRITERS_WAITING.inc()
                try:
                    async with asyncio.timeout(patience):
                        await line.lock.acquire()
                finally:
                    self.waiting -= 1
                    metrics.WRITERS_WAITING.dec()
            try:
                yield max(patience - (loop.time() - started), 0.0)
            finally:
                line.lock.release()
        finally:
            line.users -= 1
            if not line.users:
                del self._lines[key]
