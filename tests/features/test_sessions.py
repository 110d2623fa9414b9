"""Sessions end everywhere at once: on another ``chatstore serve`` process,
and for the event streams they opened; and a user's event streams are capped.

A ``chatstore serve`` process with a long session cache (CACHE_SECONDS)
hears revocations on its LISTEN connection (migrations/0008); each test
waits at most REVOKED_WITHIN, far under the cache time, for one to arrive.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from support.contract import assert_error, assert_status
from support.serve import ServerGroup, start_servers
from support.sse import read_block
from support.users import User, make_user

from chatstore.config import Settings
from chatstore.store import ChatStore

# The server trusts a checked session for CACHE_SECONDS. Far less than that
# and than the heartbeat (15 s), REVOKED_WITHIN is generous for a loaded
# machine (it takes milliseconds): what happens within it is the
# revocation's doing, never the cache's expiry or a heartbeat's check.
CACHE_SECONDS = 300
REVOKED_WITHIN = 10.0
STREAM_CAP = 2
WAIT = 10.0


async def listeners(store: ChatStore) -> int:
    count: int = await store.pool.fetchval(
        """SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND application_name = 'chatstore'
            AND query LIKE 'LISTEN%'"""
    )
    return count


@pytest.fixture(scope="module")
async def server(database: str, settings: Settings, store: ChatStore) -> AsyncIterator[ServerGroup]:
    before = await listeners(store)
    group = start_servers(
        ["S"],
        database,
        settings.auth_secret,
        CHATSTORE_MAX_STREAMS_PER_USER=str(STREAM_CAP),
        CHATSTORE_AUTH_CACHE_SECONDS=str(CACHE_SECONDS),
    )
    try:
        # Its LISTEN connection is up: the session cache is in use.
        async with asyncio.timeout(WAIT):
            while True:
                if await listeners(store) > before:
                    break
                await asyncio.sleep(0.05)
        yield group
    finally:
        group.stop()


@pytest.fixture
async def client(server: ServerGroup) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.servers[0].base_url, timeout=30) as opened:
        yield opened


async def sign_out(store: ChatStore, user: User) -> None:
    await store.pool.execute('DELETE FROM "session" WHERE token = $1', user.token)


async def cut_short(store: ChatStore, user: User) -> None:
    await store.pool.execute(
        """UPDATE "session" SET "expiresAt" = now() - interval '1 second' WHERE token = $1""",
        user.token,
    )


async def cached(client: httpx.AsyncClient, user: User) -> None:
    for _ in range(2):  # the second is answered from the process's cache
        assert_status(await client.get("/api/conversations", headers=user.headers), 200)


async def until_unauthorized(client: httpx.AsyncClient, user: User) -> None:
    began = time.monotonic()
    while True:
        response = await client.get("/api/conversations", headers=user.headers)
        if response.status_code == 401:
            assert_error(response, 401, "unauthorized")
            return
        elapsed = time.monotonic() - began
        assert elapsed < REVOKED_WITHIN, f"still {response.status_code} after {elapsed:.2f} s"
        await asyncio.sleep(0.02)


async def new_conversation(client: httpx.AsyncClient, user: User) -> str:
    response = await client.post("/api/conversations", json={}, headers=user.headers)
    assert_status(response, 201)
    conversation_id: str = response.json()["id"]
    return conversation_id


async def remaining_lines(lines: AsyncIterator[str], seconds: float) -> list[str]:
    """What the stream still sends until it ends, which it must within ``seconds``."""
    rest: list[str] = []
    try:
        async with asyncio.timeout(seconds):
            async for line in lines:
                rest.append(line)
    except TimeoutError:
        pytest.fail(f"the event stream is still open after {seconds} s; it sent {rest!r}")
    return rest


# -- the session cache of another process ---------------------------------------


async def test_a_deleted_session_is_401_on_another_process_at_once(
    client: httpx.AsyncClient, store: ChatStore
) -> None:
    user = await make_user(store)
    await cached(client, user)
    await sign_out(store, user)
    await until_unauthorized(client, user)


async def test_a_session_whose_expiry_moved_into_the_past_is_401_on_another_process_at_once(
    client: httpx.AsyncClient, store: ChatStore
) -> None:
    user = await make_user(store)
    await cached(client, user)
    await cut_short(store, user)
    await until_unauthorized(client, user)


# -- event streams end with their session -------------------------------------------


async def stream_ends_with_the_session(
    client: httpx.AsyncClient, store: ChatStore, user: User, end: object
) -> None:
    assert callable(end)
    conversation_id = await new_conversation(client, user)
    await cached(client, user)
    async with client.stream(
        "GET", f"/api/conversations/{conversation_id}/events", headers=user.headers
    ) as stream:
        assert_status(stream, 200)
        lines = stream.aiter_lines()
        assert await read_block(lines, WAIT) == [": connected"]
        await end(store, user)
        # Appended right after the session ended: must not reach its stream.
        await store.append_messages(
            user.user_id, conversation_id, [{"role": "user", "content": "after the end"}]
        )
        rest = await remaining_lines(lines, REVOKED_WITHIN)
    assert not [line for line in rest if not line.startswith(":") and line], rest


async def test_an_event_stream_ends_when_its_session_is_deleted_and_sends_nothing_after(
    client: httpx.AsyncClient, store: ChatStore
) -> None:
    await stream_ends_with_the_session(client, store, await make_user(store), sign_out)


async def test_an_event_stream_ends_when_its_session_expiry_is_moved_into_the_past(
    client: httpx.AsyncClient, store: ChatStore
) -> None:
    await stream_ends_with_the_session(client, store, await make_user(store), cut_short)


async def test_an_event_stream_ends_when_its_session_expires(
    client: httpx.AsyncClient, store: ChatStore
) -> None:
    user = await make_user(store, ttl=dt.timedelta(seconds=3))
    conversation_id = await new_conversation(client, user)
    async with client.stream(
        "GET", f"/api/conversations/{conversation_id}/events", headers=user.headers
    ) as stream:
        assert_status(stream, 200)
        lines = stream.aiter_lines()
        # No notification for an expiry, and no heartbeat (15 s) before the
        # end: the stream wakes at the session's expiresAt by itself.
        rest = await remaining_lines(lines, WAIT)
    assert rest[:1] == [": connected"], rest
    assert not [line for line in rest if not line.startswith(":") and line], rest


# -- the cap on event streams per user ----------------------------------------------


async def test_event_streams_past_the_per_user_cap_are_429_and_a_closed_stream_frees_a_slot(
    client: httpx.AsyncClient, store: ChatStore
) -> None:
    user, other = await make_user(store), await make_user(store)
    conversation_id = await new_conversation(client, user)
    url = f"/api/conversations/{conversation_id}/events"
    streams = [client.stream("GET", url, headers=user.headers) for _ in range(STREAM_CAP)]
    opened = [await stream.__aenter__() for stream in streams]
    try:
        for response in opened:
            assert_status(response, 200)
        refused = await client.get(url, headers=user.headers)
        error = assert_error(refused, 429, "too_many_streams")
        assert str(STREAM_CAP) in error["message"], error
        assert int(refused.headers["retry-after"]) > 0
        # Per user: another user's stream is not counted against this one.
        theirs = await new_conversation(client, other)
        async with client.stream(
            "GET", f"/api/conversations/{theirs}/events", headers=other.headers
        ) as their_stream:
            assert_status(their_stream, 200)

        # One stream closes: its slot is free again (once the server has
        # seen the disconnect, which it does at once).
        await streams.pop().__aexit__(None, None, None)
        began = time.monotonic()
        while True:
            async with client.stream("GET", url, headers=user.headers) as again:
                if again.status_code == 200:
                    break
                await again.aread()
                assert_error(again, 429, "too_many_streams")
            assert time.monotonic() - began < WAIT, "the closed stream's slot was not freed"
            await asyncio.sleep(0.05)
    finally:
        for stream in streams:
            await stream.__aexit__(None, None, None)
