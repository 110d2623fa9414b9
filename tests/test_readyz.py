"""/readyz: 200 only while the database answers and every migration is applied;
otherwise 503 with Retry-After, promptly, and 200 again once that is fixed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from support.app import app_client
from support.cluster import throwaway
from support.databases import create_database

from chatstore import migrations
from chatstore.config import Settings


@asynccontextmanager
async def serving(url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app over ``url`` with its lifespan running (it opens the pool)."""
    settings = Settings(database_url=url, pool_min_size=1, pool_max_size=2)
    async with app_client(settings, None) as client:
        yield client


async def readyz(client: httpx.AsyncClient) -> httpx.Response:
    async with asyncio.timeout(10):  # an answer, not a hang (ASGITransport has no timeouts)
        return await client.get("/readyz")


def assert_not_ready(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    assert response.json()["status"] == "unavailable"
    assert reason in response.json()["reason"]


async def assert_ready_soon(client: httpx.AsyncClient, seconds: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while (response := await readyz(client)).status_code != 200:
        assert asyncio.get_running_loop().time() < deadline, response.text
        await asyncio.sleep(0.2)
    assert response.json() == {"status": "ready"}


async def test_not_ready_while_a_migration_is_pending(server_url: str) -> None:
    url = await create_database(server_url, "readyz")
    async with serving(url) as client:
        assert_not_ready(await readyz(client), "no migration has been applied")

        await asyncio.to_thread(migrations.apply, url)
        assert (await readyz(client)).status_code == 200

        [rolled_back] = await asyncio.to_thread(migrations.rollback, url, 1)
        assert_not_ready(await readyz(client), f"migrations not applied: {rolled_back}")

        await asyncio.to_thread(migrations.apply, url)
        assert (await readyz(client)).status_code == 200


async def test_not_ready_while_the_database_is_down() -> None:
    cluster = await asyncio.to_thread(throwaway)
    try:
        await asyncio.to_thread(cluster.start)
        await asyncio.to_thread(cluster.create_database, "readyz")
        url = cluster.dsn("readyz")
        await asyncio.to_thread(migrations.apply, url)
        async with serving(url) as client:
            assert (await readyz(client)).status_code == 200

            await asyncio.to_thread(cluster.stop)
            assert_not_ready(await readyz(client), "the database does not answer")
            assert_not_ready(await readyz(client), "the database does not answer")

            await asyncio.to_thread(cluster.start)
            await assert_ready_soon(client)  # the pool heals on its own
    finally:
        await asyncio.to_thread(cluster.destroy)
