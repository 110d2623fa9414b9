"""The database layer: the pools, the current task's transaction, and named
queries run with chatstore's error translation (encode/databases' shape).

Every feature module (conversations, messages, idempotency, search, export,
chat, sessions, events) takes a :class:`Database` and runs its queries by
name::

    row = await db.one("get_conversation", user_id=user_id, id=conversation)
    async with db.transaction():      # nested: a savepoint
        await db.exec("...", ...)     # runs on the transaction's connection

A query runs on the connection of the transaction open in this task, if
any, else on a connection of the main pool (chatstore/pool.py bounds every
wait). ``db.on(connection)`` runs them on a given connection instead (an
export's snapshot, on a connection of the stream pool).

Database failures become chatstore's errors here and nowhere else
(chatstore/dberrors.py holds the mapping): every query, connection and
transaction of this module is translated, so no feature module handles
asyncpg's connection errors itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from typing import Any, Literal, Protocol

import asyncpg

from chatstore.config import Settings
from chatstore.dberrors import translate_errors
from chatstore.pool import Pool, PoolConnection, PoolExecutor, create_pool
from chatstore.queries import Executor, Queries, QueryKind
from chatstore.resources import sql_dir

Isolation = Literal["read_committed", "repeatable_read", "serializable"]

# The connection of the transaction open in this task, if any (transaction()).
_transaction_connection: ContextVar[PoolConnection | None] = ContextVar(
    "chatstore_transaction", default=None
)


class Runner:
    """Named queries on one executor (a connection or the pool), translated."""

    __slots__ = ("_executor", "_queries")

    def __init__(self, queries: Queries, executor: Executor) -> None:
        self._queries = queries
        self._executor = executor

    async def one(self, name: str, /, **params: object) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._run("one", name, params)
        return row

    async def many(self, name: str, /, **params: object) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._run("many", name, params)
        return rows

    async def scalar(self, name: str, /, **params: object) -> Any:
        return await self._run("scalar", name, params)

    async def exec(self, name: str, /, **params: object) -> None:
        await self._run("exec", name, params)

    async def execrows(self, name: str, /, **params: object) -> int:
        count: int = await self._run("execrows", name, params)
        return count

    async def _run(self, kind: QueryKind, name: str, params: dict[str, object]) -> Any:
        # The one place where queries execute: their failures become
        # chatstore's errors here (chatstore/dberrors.py).
        run = getattr(self._queries, kind)
        with translate_errors():
            return await run(self._executor, name, **params)


class ConnectionRunner(Runner):
    """Named queries on one connection, and transactions of that connection."""

    __slots__ = ("connection",)

    def __init__(self, queries: Queries, connection: PoolConnection) -> None:
        super().__init__(queries, connection)
        self.connection = connection

    @asynccontextmanager
    async def transaction(
        self, *, isolation: Isolation | None = None, readonly: bool = False
    ) -> AsyncIterator[None]:
        """A transaction of this connection (not the task's: queries run
        through the Database do not join it)."""
        with translate_errors():
            async with self.connection.transaction(isolation=isolation, readonly=readonly):
                yield


class Database:
    """The main pool, the stream pool, the task's transaction, named queries.

    ``Database(dsn, settings=...)`` opens its own pools; ``pool=`` lends it
    one (then it has no stream pool unless it has a dsn too).
    """

    queries = Queries.load(sql_dir())

    def __init__(self, dsn: str | None, *, settings: Settings, pool: Pool | None = None) -> None:
        self.settings = settings
        self._dsn = dsn
        self._pool = pool
        self._owns_pool = pool is None
        self._pool_executor: PoolExecutor | None = None
        # Streamed responses' own pool (see connection(stream=True)).
        self._stream_pool: Pool | None = None
        self._stream_executor: PoolExecutor | None = None

    async def open(self) -> None:
        if self._pool is None:
            assert self._dsn is not None, "ChatStore needs a dsn, a pool or a database URL"
            with translate_errors():
                self._pool = await create_pool(self._dsn, self.settings)
        self._pool_executor = PoolExecutor(self.pool, self.settings.acquire_timeout_seconds)
        self._stream_executor = self._pool_executor
        if self._dsn is not None:
            if self._stream_pool is None:
                with translate_errors():
                    # Empty until a stream needs it: an idle process holds
                    # no connection more than before.
                    self._stream_pool = await create_pool(
                        self._dsn,
                        self.settings,
                        min_size=0,
                        max_size=self.settings.stream_pool_size,
                    )
            self._stream_executor = PoolExecutor(
                self._stream_pool, self.settings.acquire_timeout_seconds, name="streams"
            )

    async def close(self) -> None:
        if self._stream_pool is not None:
            await self._stream_pool.close()
            self._stream_pool = None
        if self._pool is not None and self._owns_pool:
            await self._pool.close()
            self._pool = None

    @property
    def dsn(self) -> str:
        assert self._dsn is not None, "ChatStore was given a pool, not a dsn"
        return self._dsn

    @property
    def pool(self) -> Pool:
        assert self._pool is not None, "ChatStore is not open"
        return self._pool

    @property
    def executor(self) -> Executor:
        """Where queries run: the open transaction's connection, else the pool."""
        connection = _transaction_connection.get()
        if connection is not None:
            return connection
        assert self._pool_executor is not None, "ChatStore is not open"
        return self._pool_executor

    def connection(self, *, stream: bool = False) -> AbstractAsyncContextManager[PoolConnection]:
        """A connection for a block (bounded wait; heals the pool when the
        connection turns out dead), its errors as asyncpg raises them (see
        lease() for the translated one). ``stream``: from the stream pool,
        for a streamed response (an export): however many streams are open,
        stalled or not, they never take the connections ordinary requests
        need. A Database lent a pool and no dsn has no stream pool: its
        streams share the pool."""
        executor = self._stream_executor if stream else self._pool_executor
        assert executor is not None, "ChatStore is not open"
        return executor.connection()

    @asynccontextmanager
    async def lease(self, *, stream: bool = False) -> AsyncIterator[PoolConnection]:
        """connection(), with its failures translated (no connection in time
        is Unavailable)."""
        with translate_errors():
            async with self.connection(stream=stream) as connection:
                yield connection

    def on(self, connection: PoolConnection) -> ConnectionRunner:
        """Named queries (and transactions) on ``connection``."""
        return ConnectionRunner(self.queries, connection)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PoolConnection]:
        """The task's transaction: queries run through this Database inside
        the block (in this task) share its connection; a nested block
        becomes a savepoint."""
        current = _transaction_connection.get()
        if current is not None:
            async with current.transaction():
                yield current
            return
        assert self._pool_executor is not None, "ChatStore is not open"
        with translate_errors():
            async with self._pool_executor.transaction() as connection:
                token = _transaction_connection.set(connection)
                try:
                    yield connection
                finally:
                    _transaction_connection.reset(token)

    def _runner(self) -> Runner:
        return Runner(self.queries, self.executor)

    async def one(self, name: str, /, **params: object) -> asyncpg.Record | None:
        return await self._runner().one(name, **params)

    async def many(self, name: str, /, **params: object) -> list[asyncpg.Record]:
        return await self._runner().many(name, **params)

    async def scalar(self, name: str, /, **params: object) -> Any:
        return await self._runner().scalar(name, **params)

    async def exec(self, name: str, /, **params: object) -> None:
        await self._runner().exec(name, **params)

    async def execrows(self, name: str, /, **params: object) -> int:
        return await self._runner().execrows(name, **params)


class HasDatabase(Protocol):
    """Whatever carries a Database (a ChatStore): feature functions accept
    one where they accept a Database, so ``search(store, ...)`` works."""

    @property
    def db(self) -> Database: ...


Source = Database | HasDatabase


def database_of(source: Source) -> Database:
    return source if isinstance(source, Database) else source.db


__all__ = [
    "ConnectionRunner",
    "Database",
    "HasDatabase",
    "Isolation",
    "Runner",
    "Source",
    "database_of",
]
