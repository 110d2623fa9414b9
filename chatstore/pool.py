"""The asyncpg pool: one per ChatStore, codecs registered once per connection.

Queries reach the pool through PoolExecutor, which bounds every wait: for a
free connection (acquire_timeout), for a new one (connect_timeout), for a
statement (statement_timeout on the server, with a client-side backstop).
A request therefore ends with an answer or a 503, never a hang. When a
connection turns out dead (the server restarted, crashed or terminated
it), every idle connection of the pool is renewed: they all died with it, and
each would otherwise fail one more request before being replaced.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, TypeAlias, TypeVar

import asyncpg
import orjson

from chatstore import metrics
from chatstore.config import Settings

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
PoolConnection: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
T = TypeVar("T")

# Errors that mean the connection is gone, not that the statement failed.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

# A connection the server ended while it sat idle in the pool (restart,
# pg_terminate_backend) can be handed out before asyncpg notices it is
# closed; its first operation then fails with "cannot switch to state ...;
# another operation is in progress", before anything is sent. That, and only
# that, is safe to retry on a fresh connection: an error after sending may
# come after a commit.
DEAD_ON_ARRIVAL = asyncpg.InternalClientError


async def _init_connection(connection: Connection) -> None:
    # Once per physical connection, not per query: jsonb and json columns
    # arrive as Python objects and go out from Python objects.
    for name in ("jsonb", "json"):
        await connection.set_type_codec(
            name,
            encoder=dumps,
            decoder=loads,
            schema="pg_catalog",
        )


def loads(text: str) -> Any:
    """A JSON document as Python objects: orjson (a page of 50 messages
    decodes 50 metadata objects and any tool calls, and the stdlib's json
    took longer over them than the driver over the rows: issue 11).

    json where orjson would change or refuse the value: orjson reads an
    integer beyond 64 bits as a float (items are stored verbatim, so an
    item's 2**70 must come back as 2**70), and refuses a number beyond a
    double (1e400), which PostgreSQL's json accepts. Such an integer has at
    least 19 digits in a row, which the scan below finds (a long fraction
    or a digit string sends a document to json too, which reads it the
    same, only slower)."""
    if _LONG_DIGITS.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


# 2**63 has 19 digits: any integer orjson cannot hold has at least as many.
_LONG_DIGITS = re.compile(r"[0-9]{19}")


def dumps(value: Any) -> str:
    """Compact JSON text, non-ASCII as is (orjson; json for what it
    refuses: keys that are not strings, integers beyond 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def server_settings(settings: Settings) -> dict[str, str]:
    """Session settings sent when connecting (startup parameters)."""
    chosen = {
        "application_name": "chatstore",
        # Writes into better-auth's timestamp-without-zone columns are UTC
        # wall clock only with the session in UTC (sql/auth.sql).
        "timezone": "UTC",
    }
    if settings.direct_database_url is None:
        chosen["statement_timeout"] = str(settings.statement_timeout_ms)
    # else: database_url is a transaction-mode pooler, and poolers refuse
    # (Neon) or must be told to drop (PgBouncer's ignore_startup_parameters)
    # a statement_timeout startup parameter. Set it on the role instead
    # (ALTER ROLE ... SET statement_timeout); command_timeout stays as the
    # client-side backstop either way.
    return chosen


class _Connection(asyncpg.Connection):
    """A connection returned to the pool as it is.

    asyncpg resets a released connection with RESET ALL, CLOSE ALL, UNLISTEN *
    and pg_advisory_unlock_all(): a round trip on every release, for state
    chatstore never leaves behind (no SET, LISTEN or advisory lock on pooled
    connections; cursors close with their transaction, which asyncpg still
    rolls back). Behind a transaction-mode pooler it was worse: the pooler took
    RESET ALL as the client's wish and dropped the UTC time zone."""

    def get_reset_query(self) -> str:
        return ""


async def create_pool(
    dsn: str, settings: Settings, *, min_size: int | None = None, max_size: int | None = None
) -> Pool:
    """A pool sized by the settings (pool_min_size, pool_max_size) unless
    ``min_size`` and ``max_size`` say otherwise (the stream pool)."""
    backstop = settings.statement_timeout_ms / 1000 + 5 if settings.statement_timeout_ms else None
    largest = settings.pool_max_size if max_size is None else max_size
    smallest = settings.pool_min_size if min_size is None else min_size
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min(smallest, largest),
        max_size=largest,
        statement_cache_size=settings.statement_cache_size,
        server_settings=server_settings(settings),
        init=_init_connection,
        connection_class=_Connection,
        timeout=settings.connect_timeout_seconds,
        # Client-side backstop for a server that stops answering altogether
        # (statement_timeout cannot fire on a dead or frozen server).
        command_timeout=backstop,
    )
    assert pool is not None, "asyncpg.create_pool returned no pool"
    return pool


class PoolExecutor:
    """The pool as a query executor with bounded waits (see module docstring)."""

    def __init__(self, pool: Pool, acquire_timeout: float, name: str = "main") -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout
        self._waiters = metrics.POOL_WAITERS.labels(name)
        metrics.POOLS.track(name, pool)

    def connection(self, acquire_timeout: float | None = None) -> _Lease:
        """A pooled connection for an ``async with`` block, after at most
        ``acquire_timeout`` seconds (None: the pool's) of waiting for one."""
        return _Lease(self, acquire_timeout)

    async def _acquire(self, patience: float | None = None) -> PoolConnection:
        try:
            if self._pool.get_idle_size():
                # An idle connection is handed out at once (nothing runs
                # between this check and the pool's queue), so there is no
                # wait for acquire_timeout to bound; making one anew stays
                # bounded by connect_timeout. On Python 3.11 that bound cost
                # a task and a timer per query (asyncpg's wait_for): ~6 µs
                # of CPU.
                return await self._pool.acquire()
            self._waiters.inc()
            try:
                return await self._pool.acquire(
                    timeout=self._acquire_timeout if patience is None else patience
                )
            finally:
                self._waiters.dec()
        except TimeoutError:
            # No connection free (or made) in time says nothing about the
            # pool's connections: renewing them all (TimeoutError is an
            # OSError, so CONNECTION_LOST) only added connects to a pool
            # already short of them, and closed every stream's connection
            # once an export had been refused.
            raise
        except CONNECTION_LOST:
            await self._pool.expire_connections()
            raise

    async def _release(self, connection: PoolConnection, error: BaseException | None) -> None:
        """Return ``connection`` to the pool after a block that raised
        ``error`` (None: none); renew the pool's connections when either
        says the connection was lost."""
        try:
            if isinstance(error, DEAD_ON_ARRIVAL):
                # Closed before its release, so that the pool replaces it.
                connection.terminate()
            await self._pool.release(connection)
        except CONNECTION_LOST:
            await self._pool.expire_connections()
            raise
        if isinstance(error, CONNECTION_LOST):
            await self._pool.expire_connections()

    async def _run(self, operation: Callable[[PoolConnection], Awaitable[T]]) -> T:
        for attempt in range(2):
            try:
                async with _Lease(self) as connection:
                    return await operation(connection)
            except DEAD_ON_ARRIVAL:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def transaction(
        self, acquire_timeout: float | None = None
    ) -> AsyncIterator[PoolConnection]:
        """A pooled connection inside a transaction; a connection found dead
        at BEGIN is replaced once. ``acquire_timeout``: as connection()'s."""
        for attempt in range(2):
            async with self.connection(acquire_timeout) as connection:
                transaction = connection.transaction()
                try:
                    await transaction.start()
                except DEAD_ON_ARRIVAL:
                    connection.terminate()
                    await self._pool.expire_connections()
                    if attempt:
                        raise
                    continue
                try:
                    yield connection
                except BaseException:
                    await transaction.rollback()
                    raise
                await transaction.commit()
                return

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        return await self._run(lambda connection: connection.fetch(query, *args))

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        return await self._run(lambda connection: connection.fetchrow(query, *args))

    async def fetchval(self, query: str, *args: object) -> Any:
        return await self._run(lambda connection: connection.fetchval(query, *args))

    async def execute(self, query: str, *args: object) -> str:
        return await self._run(lambda connection: connection.execute(query, *args))


class _Lease:
    """One pooled connection for an ``async with`` block (PoolExecutor's
    connection()). A class rather than an @asynccontextmanager generator:
    every query enters one, and the generator cost about 4 µs of CPU."""

    __slots__ = ("_connection", "_executor", "_timeout")

    def __init__(self, executor: PoolExecutor, timeout: float | None = None) -> None:
        self._executor = executor
        self._timeout = timeout

    async def __aenter__(self) -> PoolConnection:
        self._connection = await self._executor._acquire(self._timeout)
        return self._connection

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._executor._release(self._connection, error)
