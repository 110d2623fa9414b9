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

A writer waits in line for as long as it could have waited for the row in
the database: ``patience``, the acquire timeout and the statement timeout
together (chatstore/database.py). A writer still in line when that runs
out gets TimeoutError, as one waiting for the pool does (a 503); one that
waited gets only what is left for its pool wait and its lock wait, so a
stalled conversation's writers end as they did before the line: after at
most the acquire timeout and the statement timeout.
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
        self, user_id: str, conversation: uuid.UUID, patience: float | None
    ) -> AsyncIterator[bool]:
        """The block runs as this process's only writer of the conversation,
        after at most ``patience`` seconds in line (None: no bound;
        TimeoutError after that); it is told whether it waited."""
        key = (user_id, conversation)
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = _Line()
        line.users += 1
        waited = line.users > 1
        try:
            if not waited:
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
                yield waited
            finally:
                line.lock.release()
        finally:
            line.users -= 1
            if not line.users:
                del self._lines[key]
