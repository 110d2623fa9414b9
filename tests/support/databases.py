"""Databases made on the suite's server (tests that need one of their own)."""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from chatstore.pool import Pool


def database_url(server_url: str, name: str) -> str:
    """``server_url`` pointed at database ``name``."""
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


async def create_database(server_url: str, prefix: str) -> str:
    """A new empty database named ``<prefix>_<random>``; returns its URL."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_url(server_url, name)


async def drop_database(server_url: str, url: str) -> None:
    """Drop the database of ``url`` (made by create_database), connections and all."""
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def lock_waiters(pool: Pool) -> int:
    """Sessions of ``pool``'s database blocked on a lock right now."""
    count: int = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return count


async def until_a_session_waits_on_a_lock(pool: Pool, patience: float, what: str) -> None:
    """Until some session of ``pool``'s database is blocked on a lock;
    fails, naming ``what`` never waited, after ``patience`` seconds (a bound
    on waiting, never a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + patience
    while not await lock_waiters(pool):
        assert asyncio.get_running_loop().time() < deadline, f"{what} never waited"
        await asyncio.sleep(0.02)
