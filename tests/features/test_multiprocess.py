"""Two ``chatstore serve`` processes on one database, over real sockets:
idempotency keys and live updates work across processes."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from support.contract import assert_error, assert_status
from support.serve import ServerGroup, start_servers
from support.sse import read_block, read_event
from support.users import User, new_key

from chatstore.config import Settings
from chatstore.store import ChatStore

REPLAYED = "Idempotent-Replayed"
# Well under the 15 s heartbeat interval: an event that arrives within it
# was pushed (LISTEN/NOTIFY), not found by a heartbeat's re-read.
EVENT_TIMEOUT = 5.0
STOP_WITHIN_SECONDS = 10.0


@pytest.fixture(scope="module")
def servers(database: str, settings: Settings) -> Iterator[ServerGroup]:
    group = start_servers(["A", "B"], database, settings.auth_secret)
    try:
        yield group
    finally:
        group.stop()


@asynccontextmanager
async def clients(
    group: ServerGroup, user: User
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    a, b = group.servers
    async with (
        httpx.AsyncClient(base_url=a.base_url, headers=user.headers, timeout=30) as on_a,
        httpx.AsyncClient(base_url=b.base_url, headers=user.headers, timeout=30) as on_b,
    ):
        yield on_a, on_b


async def message_count(store: ChatStore, conversation_id: str) -> int:
    count: int = await store.pool.fetchval(
        "SELECT count(*) FROM messages WHERE conversation_id = $1::uuid", conversation_id
    )
    return count


async def new_conversation(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/conversations", json={"title": "two processes"})
    assert_status(response, 201)
    conversation_id: str = response.json()["id"]
    return conversation_id


async def test_both_processes_are_ready_and_distinct(servers: ServerGroup) -> None:
    a, b = servers.servers
    assert a.pid != b.pid and a.base_url != b.base_url
    for server in servers.servers:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            response = await client.get("/readyz")
        assert_status(response, 200)


async def test_a_key_used_on_one_process_replays_on_the_other(
    servers: ServerGroup, store: ChatStore, user: User
) -> None:
    async with clients(servers, user) as (on_a, on_b):
        conversation_id = await new_conversation(on_a)
        path = f"/api/conversations/{conversation_id}/messages"
        body = {"role": "user", "content": "once, on A"}
        key = {"Idempotency-Key": new_key()}

        first = await on_a.post(path, json=body, headers=key)
        assert_status(first, 201)
        assert REPLAYED.lower() not in first.headers
        repeat = await on_b.post(path, json=body, headers=key)
        assert_status(repeat, 201)
        assert repeat.headers.get(REPLAYED) == "true"
        assert repeat.content == first.content
        conflict = await on_b.post(path, json={**body, "content": "changed"}, headers=key)
        assert_error(conflict, 409, "idempotency_conflict")

        # The chat flow too.
        start_key = {"Idempotency-Key": new_key()}
        started = await on_b.post("/api/chat/start", json={}, headers=start_key)
        assert_status(started, 201)
        again = await on_a.post("/api/chat/start", json={}, headers=start_key)
        assert again.headers.get(REPLAYED) == "true"
        assert again.content == started.content
    assert await message_count(store, conversation_id) == 1


async def test_concurrent_repeats_across_processes_store_once(
    servers: ServerGroup, store: ChatStore, user: User
) -> None:
    async with clients(servers, user) as (on_a, on_b):
        conversation_id = await new_conversation(on_a)
        path = f"/api/conversations/{conversation_id}/messages"
        for round_ in range(3):
            body = {"role": "user", "content": f"exactly once, round {round_}"}
            key = {"Idempotency-Key": new_key()}
            responses = await asyncio.gather(
                *(
                    (on_a if i % 2 == 0 else on_b).post(path, json=body, headers=key)
                    for i in range(8)
                )
            )
            for response in responses:
                assert_status(response, 201)
            assert len({r.content for r in responses}) == 1
            fresh = [r for r in responses if REPLAYED.lower() not in r.headers]
            assert len(fresh) == 1, [dict(r.headers) for r in responses]
            assert await message_count(store, conversation_id) == round_ + 1


def parse_event(block: list[str]) -> tuple[int, str, dict[str, Any]]:
    """(id, event, data) of an SSE block of exactly those three lines."""
    assert len(block) == 3, block
    id_line, event_line, data_line = block
    assert id_line.startswith("id: "), block
    assert event_line.startswith("event: "), block
    assert data_line.startswith("data: "), block
    data: dict[str, Any] = json.loads(data_line.removeprefix("data: "))
    return int(id_line.removeprefix("id: ")), event_line.removeprefix("event: "), data


async def test_a_listener_on_one_process_hears_appends_made_through_the_other(
    servers: ServerGroup, user: User
) -> None:
    async with clients(servers, user) as (on_a, on_b):
        conversation_id = await new_conversation(on_a)
        path = f"/api/conversations/{conversation_id}/messages"
        # Last-Event-ID 0: whatever is appended once the stream is open is
        # sent, however soon (the follower reads from seq 1).
        async with on_b.stream(
            "GET", f"/api/conversations/{conversation_id}/events", headers={"Last-Event-ID": "0"}
        ) as stream:
            assert_status(stream, 200)
            assert stream.headers["content-type"].split(";")[0] == "text/event-stream"
            assert stream.headers["cache-control"] == "no-cache"
            lines = stream.aiter_lines()
            assert await read_block(lines, EVENT_TIMEOUT) == [": connected"]

            for seq in (1, 2, 3):
                appended = await on_a.post(
                    path, json={"role": "user", "content": f"hello {seq} from A"}
                )
                assert_status(appended, 201)
                event_id, event, data = parse_event(await read_event(lines, EVENT_TIMEOUT))
                assert (event_id, event) == (seq, "message")
                assert data == appended.json()

            # A batch arrives as one event per message, in order.
            batch = await on_a.post(
                path,
                json={"messages": [{"role": "user", "content": f"batch {i}"} for i in range(3)]},
            )
            assert_status(batch, 201)
            received = [parse_event(await read_event(lines, EVENT_TIMEOUT)) for _ in range(3)]
            assert [(i, e) for i, e, _ in received] == [
                (4, "message"),
                (5, "message"),
                (6, "message"),
            ]
            assert [d for _, _, d in received] == batch.json()["data"]


async def test_a_reconnect_with_last_event_id_replays_what_came_after_first(
    servers: ServerGroup, user: User
) -> None:
    async with clients(servers, user) as (on_a, on_b):
        conversation_id = await new_conversation(on_a)
        path = f"/api/conversations/{conversation_id}/messages"
        appended = await on_a.post(
            path,
            json={"messages": [{"role": "user", "content": f"m{i}"} for i in range(1, 5)]},
        )
        assert_status(appended, 201)
        stored = appended.json()["data"]
        async with on_b.stream(
            "GET", f"/api/conversations/{conversation_id}/events", headers={"Last-Event-ID": "2"}
        ) as stream:
            assert_status(stream, 200)
            lines = stream.aiter_lines()
            replayed = [parse_event(await read_event(lines, EVENT_TIMEOUT)) for _ in range(2)]
            assert [(i, d) for i, _, d in replayed] == [(3, stored[2]), (4, stored[3])]
            # ... then live.
            live = await on_a.post(path, json={"role": "assistant", "content": "m5"})
            assert_status(live, 201)
            event_id, _, data = parse_event(await read_event(lines, EVENT_TIMEOUT))
            assert (event_id, data) == (5, live.json())


async def test_the_event_stream_refuses_strangers_and_bad_last_event_ids(
    servers: ServerGroup, user: User, other_user: User
) -> None:
    async with clients(servers, user) as (on_a, on_b):
        conversation_id = await new_conversation(on_a)
        url = f"/api/conversations/{conversation_id}/events"
        response = await on_b.get(url, headers=other_user.headers)
        assert_error(response, 404, "not_found")
        for bad in ("-1", "abc", "1.5", "99999999999999999999"):
            response = await on_b.get(url, headers={"Last-Event-ID": bad})
            assert_error(response, 422, "validation_error")


async def test_a_server_with_an_open_event_stream_stops_on_sigterm(
    database: str, settings: Settings, user: User
) -> None:
    # A process of its own: this test stops it.
    group = start_servers(["C"], database, settings.auth_secret)
    (server,) = group.servers
    try:
        async with httpx.AsyncClient(
            base_url=server.base_url, headers=user.headers, timeout=30
        ) as client:
            conversation_id = await new_conversation(client)
            async with client.stream("GET", f"/api/conversations/{conversation_id}/events") as sse:
                assert_status(sse, 200)
                # Held in a variable: a dropped line iterator closes the stream.
                lines = sse.aiter_lines()
                assert await read_block(lines, EVENT_TIMEOUT) == [": connected"]
                # A deploy stops the process while a client follows events:
                # it must stop within a bounded time (the client reconnects
                # elsewhere with Last-Event-ID and misses nothing), not wait
                # for a stream that never ends by itself.
                server.signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(server.wait, STOP_WITHIN_SECONDS)
                except subprocess.TimeoutExpired:
                    pytest.fail(
                        f"chatstore serve still running {STOP_WITHIN_SECONDS} s after SIGTERM "
                        "with one open event stream"
                    )
                assert not sse.is_closed
    finally:
        group.stop()
