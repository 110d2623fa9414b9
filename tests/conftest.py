"""The test suite's PostgreSQL: a throwaway cluster, or CHATSTORE_TEST_DATABASE_URL.

The cluster is started once per run (initdb into a temp folder, a free
port, run as an unprivileged user when we are root) and migrated once.
Tests isolate themselves by acting as fresh users, never by mocks.

With CHATSTORE_TEST_PGBOUNCER=1 the ``store`` fixture (and so the HTTP
suite's app) goes through a PgBouncer in transaction mode, as with a pooled
connection string (Neon's ``-pooler`` host): see tests/pgbouncer.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pgbouncer
import pytest

from chatstore import migrations
from chatstore.auth import new_id
from chatstore.config import Settings
from chatstore.embedded import Cluster, throwaway
from chatstore.store import ChatStore

NewUser = Callable[[], Awaitable[str]]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster | None]:
    """Our own cluster, or None when the suite runs on a given URL."""
    if os.environ.get("CHATSTORE_TEST_DATABASE_URL"):
        yield None
        return
    cluster = throwaway()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def server_url(pg_cluster: Cluster | None) -> str:
    """A URL to the server's maintenance database, for tests that make databases."""
    given = os.environ.get("CHATSTORE_TEST_DATABASE_URL")
    if given:
        return given
    assert pg_cluster is not None
    return pg_cluster.dsn("postgres")


def database_url(server_url: str, name: str) -> str:
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


async def create_database(server_url: str, prefix: str) -> str:
    name = f"{prefix}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_url(server_url, name)


@pytest.fixture(scope="session")
async def database(server_url: str) -> str:
    """One migrated database shared by the suite (tests use fresh users)."""
    url = await create_database(server_url, "chatstore_test")
    await asyncio.to_thread(migrations.apply, url)
    return url


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings(auth_secret="test-secret-" + "x" * 20, pool_min_size=1, pool_max_size=8)


@pytest.fixture(scope="session")
def pooler(server_url: str) -> Iterator[pgbouncer.PgBouncer | None]:
    """With CHATSTORE_TEST_PGBOUNCER=1, a PgBouncer (transaction pooling) in
    front of the suite's server; else None and nothing changes."""
    if os.environ.get("CHATSTORE_TEST_PGBOUNCER") != "1":
        yield None
        return
    with pgbouncer.start(server_url) as bouncer:
        yield bouncer


@pytest.fixture(scope="session")
async def store(
    database: str, settings: Settings, pooler: pgbouncer.PgBouncer | None
) -> AsyncIterator[ChatStore]:
    dsn = database
    if pooler is not None:
        # The documented setup behind a transaction-mode pooler: queries through
        # it with statement_cache_size=0; LISTEN (live updates) on the direct URL.
        # Migrations already ran on the direct URL (the `database` fixture).
        dsn = pooler.url(database)
        settings = dataclasses.replace(
            settings, statement_cache_size=0, direct_database_url=database
        )
    async with ChatStore(dsn, settings=settings) as opened:
        yield opened


@pytest.fixture(scope="session")
def new_user(store: ChatStore) -> NewUser:
    async def make() -> str:
        user_id: str = await store.queries.scalar(
            store.pool,
            "upsert_user_by_email",
            id=new_id(),
            name="Test User",
            email=f"{secrets.token_hex(8)}@example.test",
        )
        return user_id

    return make


@pytest.fixture
async def user(new_user: NewUser) -> str:
    return await new_user()


@pytest.fixture
async def other_user(new_user: NewUser) -> str:
    return await new_user()
