"""Plain appends gathered: appends to different conversations that arrive
while this process's append statements are all under way go to the
database together, in one statement (append_messages_together in
sql/messages.sql), instead of each queueing for a connection and a commit
of its own.

Why: an append's fixed costs (the round trip, the executor's start, the
commit and its WAL flush, the driver's call) are most of what it costs, and
under concurrency they are what limits appends a second. A statement of 8
appends pays them once (BENCHMARKS.md, "Gathered appends").

How:

- At most ``statements`` append statements of this process run at once
  (CHATSTORE_APPEND_STATEMENTS; 0: no limit and no gathering, every append
  a statement of its own). An append that finds one free goes at once,
  alone, as ``append_messages``: a lone append waits for nothing.
- An append that finds none free waits in line. When a statement ends, the
  next one takes the line: every waiting append whose conversation is in
  no gathered statement yet (a second append to a conversation waits for
  the statement after, so appends to a conversation that wait in line are
  written in the order they came), up to ``MAX_APPENDS`` appends and
  ``MAX_MESSAGES`` messages.
- These statements never wait for a row lock: a conversation another writer
  holds is skipped (SKIP LOCKED), and its append comes back with no row, as
  one refused does; the caller then waits for the lock on its own
  connection (chatstore/messages.py). So a statement holds its place only
  for its own work, and one busy conversation never holds the others'
  appends.
- Each append is judged alone: one whose conversation is not its caller's,
  or whose expected_last_seq is no longer the leaf, gets no row and the
  others are written. A gathered statement that fails as a whole with
  anything but Unavailable (a tool call id reused in one append violates a
  key) is not the others' failure: each of its appends is then tried alone,
  so that only the one at fault is refused.
- A gathered statement runs in a task of its own, outside every caller's
  context, so a caller that is cancelled takes no other append with it. A
  caller cancelled in line is taken out of it and writes nothing; one
  cancelled while its statement runs may still be written, as an append
  cancelled mid-statement always may.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chatstore import metrics
from chatstore.errors import Unavailable
from chatstore.models import Row

# The most appends, and the most messages, one gathered statement carries:
# a bounded statement, whatever waits in line.
MAX_APPENDS = 64
MAX_MESSAGES = 512

# A named query run on the primary's pool, outside any transaction, by the
# database layer (chatstore/database.py): its name and its parameters.
Run = Callable[[str, dict[str, Any]], Awaitable[Sequence[Row]]]


class _Alone(Exception):
    """The gathered statement failed as a whole: append alone."""


@dataclass(slots=True)
class _Waiting:
    user_id: str
    conversation: uuid.UUID
    expected_last_seq: int | None
    params: dict[str, list[Any]]
    done: asyncio.Future[Sequence[Row]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def size(self) -> int:
        return len(self.params["roles"])


class Appends:
    """One process's plain appends: alone while a statement is free,
    gathered while none is."""

    def __init__(self, run: Run, *, statements: int, search_config: str) -> None:
        self._run = run
        self._statements = statements
        self._search_config = search_config
        self._running = 0
        self._line: list[_Waiting] = []
        # The conversations of the gathered statements under way.
        self._gathering: set[uuid.UUID] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def append(
        self,
        user_id: str,
        conversation: uuid.UUID,
        expected_last_seq: int | None,
        params: dict[str, list[Any]],
    ) -> Sequence[Row]:
        """Append ``params`` (one array per column) to ``conversation``:
        the rows written, or none when nothing was: the conversation is
        not the caller's, expected_last_seq is not its leaf, or another
        writer holds its row. Never inside the caller's transaction."""
        if self._statements and self._running >= self._statements:
            waiting = _Waiting(user_id, conversation, expected_last_seq, params)
            self._line.append(waiting)
            try:
                return await waiting.done
            except _Alone:
                # Uncounted: what failed the gathered statement is in one
                # of its appends, and the statements ahead are not to wait
                # for it a second time.
                return await self._alone(user_id, conversation, expected_last_seq, params)
        self._running += 1
        try:
            return await self._alone(user_id, conversation, expected_last_seq, params)
        finally:
            self._finished()

    async def close(self) -> None:
        """Wait for the gathered statements under way (their callers wait
        for them too)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def _alone(
        self,
        user_id: str,
        conversation: uuid.UUID,
        expected_last_seq: int | None,
        params: dict[str, list[Any]],
    ) -> Awaitable[Sequence[Row]]:
        metrics.APPENDS_PER_STATEMENT.observe(1)
        return self._run(
            "append_messages",
            {
                "user_id": user_id,
                "conversation_id": conversation,
                "expected_last_seq": expected_last_seq,
                "parent_seq": None,
                "search_config": self._search_config,
                **params,
            },
        )

    def _finished(self) -> None:
        self._running -= 1
        while self._line and self._running < self._statements:
            batch = self._take()
            if not batch:
                break
            self._running += 1
            self._gathering.update(w.conversation for w in batch)
            task = asyncio.get_running_loop().create_task(
                self._gathered(batch), name="chatstore-appends", context=contextvars.Context()
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Waiting]:
        """The line's head, as one statement may carry it; the rest waits."""
        taken: list[_Waiting] = []
        left: list[_Waiting] = []
        conversations: set[uuid.UUID] = set()
        messages = 0
        for waiting in self._line:
            if waiting.done.done():  # its caller was cancelled in line
                continue
            if (
                waiting.conversation in conversations
                or waiting.conversation in self._gathering
                or len(taken) == MAX_APPENDS
                or (taken and messages + waiting.size > MAX_MESSAGES)
            ):
                left.append(waiting)
                continue
            taken.append(waiting)
            conversations.add(waiting.conversation)
            messages += waiting.size
        self._line = left
        return taken

    async def _gathered(self, batch: list[_Waiting]) -> None:
        try:
            if len(batch) == 1:
                (one,) = batch
                rows = await self._alone(
                    one.user_id, one.conversation, one.expected_last_seq, one.params
                )
                _settle(one, rows)
                return
            metrics.APPENDS_PER_STATEMENT.observe(len(batch))
            rows = await self._run("append_messages_together", self._params(batch))
        except Unavailable as error:
            for waiting in batch:
                _settle(waiting, error)
        except Exception as error:
            for waiting in batch:
                _settle(waiting, error if len(batch) == 1 else _Alone())
        else:
            by_append: dict[int, list[Row]] = {}
            for row in rows:
                by_append.setdefault(row["append"], []).append(row)
            for number, waiting in enumerate(batch, 1):
                _settle(waiting, by_append.get(number, []))
        finally:
            for waiting in batch:
                # Cancelled itself (the loop closing): its callers too.
                waiting.done.cancel()
            self._gathering.difference_update(w.conversation for w in batch)
            self._finished()

    def _params(self, batch: list[_Waiting]) -> dict[str, Any]:
        params: dict[str, Any] = {
            "conversation_ids": [w.conversation for w in batch],
            "user_ids": [w.user_id for w in batch],
            "expected_last_seqs": [w.expected_last_seq for w in batch],
            "message_counts": [w.size for w in batch],
            "appends": [number for number, w in enumerate(batch, 1) for _ in range(w.size)],
            "positions": [position for w in batch for position in range(1, w.size + 1)],
            "search_config": self._search_config,
        }
        # Each column's array (messages.batch_params: the same columns for
        # every append), the appends' one after the other.
        for column in batch[0].params:
            params[column] = [value for w in batch for value in w.params[column]]
        return params


def _settle(waiting: _Waiting, outcome: Sequence[Row] | BaseException) -> None:
    if waiting.done.done():  # cancelled while its statement ran
        return
    if isinstance(outcome, BaseException):
        waiting.done.set_exception(outcome)
    else:
        waiting.done.set_result(outcome)
