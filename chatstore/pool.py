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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg

from chatstore.config import Settings

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
PoolConnection: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"

# Errors that mean the connection is gone, not that the statement failed.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
)


async def _init_connection(connection: Connection) -> None:
    # Once per physical connection, not per query: jsonb and json columns
    # arrive as Python objects and go out from Python objects.
    for name in ("jsonb", "json"):
        await connection.set_type_codec(
            name,
            encoder=dumps,
            decoder=json.loads,
            schema="pg_catalog",
        )


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def server_settings(settings: Settings) -> dict[str, str]:
    return {
        "application_name": "chatstore",
        # Session timestamps compare right whether better-auth made
        # "expiresAt" timestamp (UTC wall clock) or timestamptz: with the
        # session in UTC, both mean the same instant (sql/auth.sql).
        "timezone": "UTC",
        "statement_timeout": str(settings.statement_timeout_ms),
    }


async def create_pool(dsn: str, settings: Settings) -> Pool:
    backstop = settings.statement_timeout_ms / 1000 + 5 if settings.statement_timeout_ms else None
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min(settings.pool_min_size, settings.pool_max_size),
        max_size=settings.pool_max_size,
        statement_cache_size=settings.statement_cache_size,
        server_settings=server_settings(settings),
        init=_init_connection,
        timeout=settings.connect_timeout_seconds,
        # Client-side backstop for a server that stops answering altogether
        # (statement_timeout cannot fire on a dead or frozen server).
        command_timeout=backstop,
    )
    assert pool is not None, "asyncpg.create_pool returned no pool"
    return pool


class PoolExecutor:
    """The pool as a query executor with bounded waits (see module docstring)."""

    def __init__(self, pool: Pool, acquire_timeout: float) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[PoolConnection]:
        try:
            async with self._pool.acquire(timeout=self._acquire_timeout) as connection:
                yield connection
        except CONNECTION_LOST:
            await self._pool.expire_connections()
            raise

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        async with self.connection() as connection:
            return await connection.fetch(query, *args)

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        async with self.connection() as connection:
            return await connection.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: object) -> Any:
        async with self.connection() as connection:
            return await connection.fetchval(query, *args)

    async def execute(self, query: str, *args: object) -> str:
        async with self.connection() as connection:
            return await connection.execute(query, *args)
