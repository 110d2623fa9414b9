"""The suite's fixtures, one set of names for every folder (a pytest plugin
loaded by tests/conftest.py).

PostgreSQL: a throwaway cluster started once per run (initdb into a temp
folder, a free port, run as an unprivileged user when we are root) and one
database migrated once, or CHATSTORE_TEST_DATABASE_URL. Tests isolate
themselves by acting as fresh users, never by mocks. With
CHATSTORE_TEST_PGBOUNCER=1 the ``store`` fixture (and so the app) goes
through a PgBouncer in transaction mode, as with a pooled connection string
(Neon's ``-pooler`` host): see tests/support/pgbouncer.py.

The vocabulary:

- ``new_user``: makes a ``User`` (a better-auth user with a live session);
  ``user`` and ``other_user`` are two of them; ``user_id`` and
  ``other_user_id`` are their ids, for tests of the store below HTTP.
- ``app``: the real app (``create_app``) with its lifespan running over the
  suite's database; ``client``: an httpx client of it, in process.

A failed test that used something showing logs (a server, a lab) shows them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator, Generator, Iterator

import httpx
import pytest
from starlette.applications import Starlette

from chatstore import migrations
from chatstore.config import Settings
from chatstore.store import ChatStore
from support import pgbouncer
from support.app import open_app, open_client
from support.cluster import ThrowawayCluster, throwaway
from support.databases import create_database
from support.serve import ShowsLogs
from support.users import MakeUser, User, make_user


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test shows the output of the servers (and clusters) it used."""
    report = yield
    if report.failed and isinstance(item, pytest.Function):
        for name, value in item.funcargs.items():
            if isinstance(value, ShowsLogs):
                report.sections.append((f"logs of {name}", value.logs()))
    return report


# -- PostgreSQL ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[ThrowawayCluster | None]:
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
def server_url(pg_cluster: ThrowawayCluster | None) -> str:
    """A URL to the server's maintenance database, for tests that make databases."""
    given = os.environ.get("CHATSTORE_TEST_DATABASE_URL")
    if given:
        return given
    assert pg_cluster is not None
    return pg_cluster.dsn("postgres")


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


# -- users ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def new_user(store: ChatStore) -> MakeUser:
    async def make() -> User:
        return await make_user(store)

    return make


@pytest.fixture
async def user(new_user: MakeUser) -> User:
    return await new_user()


@pytest.fixture
async def other_user(new_user: MakeUser) -> User:
    return await new_user()


@pytest.fixture
def user_id(user: User) -> str:
    return user.user_id


@pytest.fixture
def other_user_id(other_user: User) -> str:
    return other_user.user_id


# -- the app -------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def app(settings: Settings, store: ChatStore) -> AsyncIterator[Starlette]:
    async with open_app(settings, store) as running:
        yield running


@pytest.fixture(scope="session")
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with open_client(app) as opened:
        yield opened
