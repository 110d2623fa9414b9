"""The asyncpg pool: one per ChatStore, codecs registered once per connection."""

from __future__ import annotations

import json
from typing import Any, TypeAlias

import asyncpg

from chatstore.config import Settings

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
PoolConnection: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"


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
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min(settings.pool_min_size, settings.pool_max_size),
        max_size=settings.pool_max_size,
        statement_cache_size=settings.statement_cache_size,
        server_settings=server_settings(settings),
        init=_init_connection,
    )
    assert pool is not None, "asyncpg.create_pool returned no pool"
    return pool
