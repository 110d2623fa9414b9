"""Read replicas: which server a read goes to, and read-your-writes.

With ``CHATSTORE_REPLICA_URLS`` set, the Database (chatstore/database.py)
keeps one pool per hot standby besides the primary's. Reads that the store
marks as reads (lists, pages, get, search, history, export) go to a replica;
writes, anything inside a transaction, the session lookups of the HTTP
layer and the reads of live updates stay on the primary.

Read-your-writes. After a write commits, the Database asks the primary for
its WAL insert position (``wal_insert_lsn``): it only moves forward, so it is
at or past the end of the write's commit record. That LSN is recorded in the
current :class:`Consistency` (one per HTTP request, or one per asyncio task
for Python callers), raises its ``floor``, and leaves as the ``Chatstore-LSN``
header. A read is served by a replica only when that replica has replayed at
least the floor (``pg_last_wal_replay_lsn()``, known from the monitor or asked
right then); otherwise by the primary. A read never waits for a replica.

Lag. A monitor task samples the primary's flushed WAL position every tick
and asks each replica how far it has replayed. A replica's lag is the age of
the oldest sample it has not replayed yet: an idle primary writes nothing,
so a caught-up standby on an idle primary has no lag (unlike
``now() - pg_last_xact_replay_timestamp()``, which grows while nothing
happens), and a standby whose WAL receiver is cut off does lag. A replica
lagging past ``CHATSTORE_REPLICA_MAX_LAG_SECONDS``, or down, is skipped until
it is back: one log line per change of state, metrics
``chatstore_replica_serving`` and ``chatstore_replica_lag_seconds``, and
reads fall back to the primary (never a 5xx for a replica's sake).

Long because: the consistency token, the lag monitor and the routing rule
are one protocol; apart, each would re-explain the other two.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

import asyncpg

from chatstore import metrics
from chatstore.config import Settings
from chatstore.errors import ValidationError
from chatstore.pool import CONNECTION_LOST, Pool, PoolExecutor, create_pool, server_settings
from chatstore.queries import Queries

log = logging.getLogger("chatstore.replicas")

State = Literal["unchecked", "serving", "lagging", "down"]

# An LSN as PostgreSQL prints it: two hex numbers of up to 32 bits.
_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
# What a query to a server that may be down can raise, besides bugs.
PROBE_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_LOST, asyncpg.PostgresError)
# A floor no replica reaches: the reads of a session whose write's LSN could
# not be learned go to the primary.
UNKNOWN = 1 << 64


def parse_lsn(text: str) -> int:
    """'16/B374D848' -> an integer that orders like the LSN; ValueError else."""
    match = _LSN.fullmatch(text)
    if match is None:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(match[1], 16) << 32) | int(match[2], 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_argument(lsn: str | int | None) -> int:
    """A caller's LSN (text, integer or None) as an integer; a bad one is a
    ValidationError (HTTP 400 for the header)."""
    if lsn is None:
        return 0
    if isinstance(lsn, int):
        if not 0 <= lsn < 1 << 64:
            raise ValidationError.at(["lsn"], "an LSN is between 0/0 and FFFFFFFF/FFFFFFFF")
        return lsn
    try:
        return parse_lsn(lsn)
    except ValueError:
        raise ValidationError.at(
            ["lsn"], "an LSN is two hexadecimal numbers separated by '/', like 16/B374D848"
        ) from None


@dataclass(slots=True)
class Consistency:
    """What one client has seen: reads must show at least ``floor``.

    ``floor``: the highest LSN presented (a header, an argument) or written
    in this consistency scope. ``written``: the commit LSN of its latest
    write, None before any (or when replicas are not configured: then
    nothing needs it and no LSN is asked for).
    """

    floor: int = 0
    written: int | None = None

    @property
    def lsn(self) -> str | None:
        """The latest write's commit LSN as text, what a client presents later."""
        return None if self.written is None else format_lsn(self.written)

    def wrote(self, lsn: int) -> None:
        self.written = lsn if self.written is None else max(self.written, lsn)
        self.floor = max(self.floor, lsn)

    def write_unknown(self) -> None:
        """A write committed but its LSN could not be asked: from now on this
        scope reads from the primary."""
        self.floor = UNKNOWN


_consistency: ContextVar[Consistency | None] = ContextVar("chatstore_consistency", default=None)


def current() -> Consistency:
    """This task's consistency scope, made on first use: set in the caller's
    context (an awaited coroutine shares it), so a Python caller's later
    reads in the same task see its writes without doing anything."""
    scope = _consistency.get()
    if scope is None:
        scope = Consistency()
        _consistency.set(scope)
    return scope


@contextmanager
def consistent(lsn: str | int | None = None) -> Iterator[Consistency]:
    """A scope for the block whose reads show at least ``lsn``, whatever the
    enclosing scope had to show, and every write made in the block; its
    ``lsn`` is the block's own latest write."""
    outer = _consistency.get()
    floor = max(lsn_argument(lsn), 0 if outer is None else outer.floor)
    token = _consistency.set(Consistency(floor=floor))
    try:
        scope = _consistency.get()
        assert scope is not None
        yield scope
    finally:
        _consistency.reset(token)


def redacted(dsn: str) -> str:
    """host:port/database of a URL, for logs (never its password)."""
    parts = urlsplit(dsn)
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


@dataclass(eq=False)
class Replica:
    index: int
    dsn: str
    pool: Pool | None = None
    executor: PoolExecutor | None = None
    # Exports' own pool on this replica, as on the primary (database.py).
    stream_pool: Pool | None = None
    stream_executor: PoolExecutor | None = None
    # The monitor's own connection: a pool busy with reads must not make a
    # check wait (and a slow check must not take a connection from reads).
    probe: asyncpg.Connection[asyncpg.Record] | None = None
    state: State = "unchecked"
    replay_lsn: int = 0
    lag_seconds: float = 0.0
    reason: str = "not checked yet"

    @property
    def label(self) -> str:
        return str(self.index)

    @property
    def serving(self) -> bool:
        return self.state == "serving" and self.executor is not None


@dataclass(eq=False)
class Replicas:
    """The replicas of one Database, their monitor and the routing rule."""

    urls: tuple[str, ...]
    settings: Settings
    queries: Queries
    replicas: list[Replica] = field(default_factory=list)
    _primary: PoolExecutor | None = None
    _monitor: asyncio.Task[None] | None = None
    _turn: Iterator[int] = field(default_factory=itertools.count)
    # (monotonic time, primary's flushed LSN), oldest first.
    _samples: deque[tuple[float, int]] = field(default_factory=deque)

    @property
    def max_lag(self) -> float:
        return self.settings.replica_max_lag_seconds

    @property
    def tick(self) -> float:
        """Seconds between checks: a quarter of the lag allowed, within 0.05 to 1."""
        return min(1.0, max(0.05, self.max_lag / 4))

    async def open(self, primary: PoolExecutor) -> None:
        self._primary = primary
        for index, url in enumerate(self.urls):
            replica = Replica(index, url)
            # Empty at first (min_size 0): a replica down at start-up does not
            # stop the process from starting; the monitor finds it when it comes.
            replica.pool = await create_pool(url, self.settings, min_size=0)
            replica.executor = PoolExecutor(
                replica.pool, self.settings.acquire_timeout_seconds, name=f"replica{index}"
            )
            replica.stream_pool = await create_pool(
                url, self.settings, min_size=0, max_size=self.settings.stream_pool_size
            )
            replica.stream_executor = PoolExecutor(
                replica.stream_pool,
                self.settings.acquire_timeout_seconds,
                name=f"replica{index}-streams",
            )
            metrics.REPLICA_SERVING.labels(replica.label).set(0)
            self.replicas.append(replica)
        await self.check()  # the first state, before the first read
        self._monitor = asyncio.create_task(self._watch(), name="chatstore-replicas")

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        for replica in self.replicas:
            if replica.probe is not None:
                replica.probe.terminate()
            for pool in (replica.pool, replica.stream_pool):
                if pool is not None:
                    await pool.close()
        self.replicas.clear()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                await self.check()
            except Exception:  # the monitor must outlive any surprise
                log.exception("checking the replicas failed")

    async def check(self) -> None:
        """One tick: sample the primary, then ask every replica."""
        now = time.monotonic()
        await self._sample_primary(now)
        await asyncio.gather(*(self._check(replica, now) for replica in self.replicas))

    async def _sample_primary(self, now: float) -> None:
        assert self._primary is not None
        try:
            text = await asyncio.wait_for(
                self.queries.scalar(self._primary, "wal_flush_lsn"), self._probe_timeout
            )
        except PROBE_ERRORS:
            return  # the primary's own outage is told elsewhere (availability.py)
        self._samples.append((now, parse_lsn(text)))
        # Kept: enough history to tell a lag past the maximum, and one more.
        while len(self._samples) > 1 and self._samples[1][0] < now - self.max_lag - 2 * self.tick:
            self._samples.popleft()

    @property
    def _probe_timeout(self) -> float:
        return max(1.0, 4 * self.tick)

    def _lag(self, replayed: int, now: float) -> float:
        """The age of the oldest primary sample not replayed yet (0: none)."""
        for sampled_at, lsn in self._samples:
            if lsn > replayed:
                return now - sampled_at
        return 0.0

    async def _check(self, replica: Replica, now: float) -> None:
        try:
            replayed = await asyncio.wait_for(self._probe(replica), self._probe_timeout)
        except PROBE_ERRORS as error:
            if replica.probe is not None:
                replica.probe.terminate()
                replica.probe = None
            self._set(replica, "down", f"unreachable ({type(error).__name__}: {error})")
            return
        if replayed is None:
            self._set(replica, "down", "not a standby (pg_last_wal_replay_lsn() is NULL)")
            return
        replica.lag_seconds = self._lag(replayed, now)
        metrics.REPLICA_LAG.labels(replica.label).set(replica.lag_seconds)
        if replica.lag_seconds > self.max_lag:
            self._set(
                replica,
                "lagging",
                f"{replica.lag_seconds:.1f} s behind the primary (max {self.max_lag:g} s)",
            )
        else:
            self._set(replica, "serving", "caught up")

    async def _probe(self, replica: Replica) -> int | None:
        """The monitor asks ``replica`` on its own connection (made as needed)."""
        if replica.probe is None or replica.probe.is_closed():
            replica.probe = await asyncpg.connect(
                replica.dsn,
                timeout=self._probe_timeout,
                server_settings=server_settings(self.settings),
            )
        return self._remember(
            replica, await self.queries.scalar(replica.probe, "replica_replay_lsn")
        )

    async def _replayed(self, replica: Replica) -> int | None:
        """A read asks ``replica`` how far it has replayed, on the replica's pool."""
        assert replica.executor is not None
        text = await asyncio.wait_for(
            self.queries.scalar(replica.executor, "replica_replay_lsn"), self._probe_timeout
        )
        return self._remember(replica, text)

    @staticmethod
    def _remember(replica: Replica, text: str | None) -> int | None:
        if text is None:
            return None
        replica.replay_lsn = max(replica.replay_lsn, parse_lsn(text))
        return replica.replay_lsn

    def _set(self, replica: Replica, state: State, reason: str) -> None:
        """The one place a replica changes state: one log line per change."""
        replica.reason = reason
        if state == replica.state:
            return
        before, replica.state = replica.state, state
        metrics.REPLICA_SERVING.labels(replica.label).set(1 if state == "serving" else 0)
        where = redacted(replica.dsn)
        if state == "serving" and before == "unchecked":
            log.info("replica %s (%s) serves reads", replica.index, where)
        elif state == "serving":
            log.warning("replica %s (%s) serves reads again (was %s)", replica.index, where, before)
        else:
            log.warning(
                "replica %s (%s) is %s, skipped until it is back: %s",
                replica.index,
                where,
                state,
                reason,
            )
        if state == "down":
            replica.replay_lsn = 0  # a restarted standby may replay from further back

    def failed(self, replica: Replica, error: BaseException) -> None:
        """A read on ``replica`` failed: down when its connection is gone
        (the monitor brings it back), else (a statement cancelled by a
        replay conflict, a timeout) only this read moves to the primary."""
        cause = error.__cause__ or error
        if isinstance(cause, CONNECTION_LOST) and not isinstance(cause, TimeoutError):
            self._set(replica, "down", f"a read failed ({type(cause).__name__}: {cause})")

    async def choose(self, floor: int) -> Replica | None:
        """A replica to serve a read that must show ``floor``, or None: the
        primary. Never waits for a replica to catch up."""
        serving = [replica for replica in self.replicas if replica.serving]
        if serving:
            start = next(self._turn) % len(serving)
            ordered = serving[start:] + serving[:start]
            for replica in ordered:
                if replica.replay_lsn >= floor:
                    return replica
            if floor < UNKNOWN:
                # Known to be behind as of the last check: ask one now.
                replica = ordered[0]
                try:
                    replayed = await self._replayed(replica)
                except PROBE_ERRORS as error:
                    # No connection free in time says nothing of the replica's
                    # health (the monitor decides): this read goes elsewhere.
                    if not isinstance(error, TimeoutError):
                        self._set(replica, "down", f"unreachable ({type(error).__name__}: {error})")
                    replayed = None
                if replayed is not None and replayed >= floor:
                    return replica
        self.served("primary")
        return None

    @staticmethod
    def served(server: Literal["replica", "primary"]) -> None:
        """Count a read by the server that answered it."""
        metrics.READS.labels(server).inc()


__all__ = [
    "PROBE_ERRORS",
    "Consistency",
    "Replica",
    "Replicas",
    "consistent",
    "current",
    "format_lsn",
    "lsn_argument",
    "parse_lsn",
]
