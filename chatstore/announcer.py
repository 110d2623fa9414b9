"""Live-update announcements, sent after their appends' commits, in batches.

An append is announced once it has committed (migrations/0014 says why not
inside its commit). Awaiting that announcement would make every append two
round trips, and a task per announcement would make every append take a
second pool connection; instead each committed append adds its conversation
and seq here and returns, and one task sends what has gathered: a single
``announce_messages`` statement (one transaction, one NOTIFY per
conversation, each with its newest seq) for every append that committed
while the previous batch was being sent. Under concurrency the batches grow
and the announcements cost less per append; alone, an append's announcement
goes out at once, behind it.

What is lost is only late: a batch that fails (no pool connection within
the acquire timeout, the database gone) is logged and dropped, and the
followers read the messages from the table at their next tick
(chatstore/events.py). ``close()`` gives a batch in flight, and what
gathered behind it, a bounded time to go out.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from collections.abc import Awaitable, Callable

log = logging.getLogger("chatstore.announcer")

Send = Callable[[list[uuid.UUID], list[int]], Awaitable[object]]

# How long close() waits for announcements still to go out.
CLOSE_SECONDS = 5.0


class Announcer:
    def __init__(self, send: Send) -> None:
        self._send = send
        # conversation -> the newest seq committed and not yet announced.
        self._pending: dict[uuid.UUID, int] = {}
        self._sender: asyncio.Task[None] | None = None
        self.batches_sent = 0

    def add(self, conversation: uuid.UUID, seq: int) -> None:
        """Announce that ``conversation`` grew to ``seq`` (committed)."""
        if seq > self._pending.get(conversation, 0):
            self._pending[conversation] = seq
        if self._sender is None or self._sender.done():
            # In a context of its own: the task outlives the request that
            # started it, and must hold none of its state.
            self._sender = asyncio.get_running_loop().create_task(
                self._drain(), name="chatstore-announcer", context=contextvars.Context()
            )

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            try:
                await self._send(list(batch), list(batch.values()))
                self.batches_sent += 1
            except Exception as failure:
                # Late, not lost: followers re-read the table at their tick.
                log.warning(
                    "announcing %d conversations' new messages failed: %r", len(batch), failure
                )

    async def flushed(self) -> None:
        """Return once what was added so far has been sent (or dropped)."""
        while self._sender is not None and not self._sender.done():
            await asyncio.wait({self._sender})

    async def close(self) -> None:
        sender = self._sender
        if sender is not None and not sender.done():
            done, _ = await asyncio.wait({sender}, timeout=CLOSE_SECONDS)
            if not done:
                sender.cancel()
        self._sender = None
