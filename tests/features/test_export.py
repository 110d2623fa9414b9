"""GET /api/conversations/{id}/export: the openai and jsonl formats, and
streaming a 200,000-message conversation from a real server in flat memory."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from support.contract import assert_error, assert_status
from support.serve import ServerGroup, rss_bytes, start_servers
from support.users import MakeUser, User

from chatstore.config import Settings
from chatstore.models import Conversation
from chatstore.store import ChatStore

WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
}


def export_url(conversation_id: object, fmt: str | None = None) -> str:
    url = f"/api/conversations/{conversation_id}/export"
    return url if fmt is None else f"{url}?format={fmt}"


async def export_openai(
    client: httpx.AsyncClient, user: User, conversation_id: object, fmt: str | None = "openai"
) -> list[dict[str, Any]]:
    response = await client.get(export_url(conversation_id, fmt), headers=user.headers)
    assert_status(response, 200)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"messages"}, body
    messages: list[dict[str, Any]] = body["messages"]
    return messages


async def tool_conversation(store: ChatStore, user: User) -> Conversation:
    conversation = await store.create_conversation(user.user_id, title="weather")
    await store.append_messages(
        user.user_id,
        conversation.id,
        [
            {"role": "system", "content": "be brief", "metadata": {"source": "test"}},
            {"role": "user", "content": "weather in Paris?", "name": "alice_1"},
            {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
            {"role": "tool", "content": "sunny, 21°C", "tool_call_id": "call_1"},
            {"role": "assistant", "content": "It is sunny.", "metadata": {"k": "v"}},
        ],
    )
    return conversation


async def test_openai_format_has_only_what_chat_completions_takes_in_order(
    client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    conversation = await tool_conversation(store, user)
    assert await export_openai(client, user, conversation.id) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather in Paris?", "name": "alice_1"},
        {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
        {"role": "tool", "content": "sunny, 21°C", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "It is sunny."},
    ]


async def test_the_default_format_is_openai(
    client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    conversation = await tool_conversation(store, user)
    assert await export_openai(client, user, conversation.id, None) == await export_openai(
        client, user, conversation.id, "openai"
    )


async def test_openai_format_leaves_out_tool_messages_whose_call_is_gone(
    client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    # The tool message would come first once the assistant message is deleted.
    first = await store.create_conversation(user.user_id)
    await store.append_messages(
        user.user_id,
        first.id,
        [
            {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
            {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
            {"role": "assistant", "content": "It is sunny."},
        ],
    )
    await store.delete_message(user.user_id, first.id, 1)
    assert await export_openai(client, user, first.id) == [
        {"role": "assistant", "content": "It is sunny."}
    ]

    # ... and in the middle of a history.
    middle = await tool_conversation(store, user)
    await store.delete_message(user.user_id, middle.id, 3)
    exported = await export_openai(client, user, middle.id)
    assert [m["role"] for m in exported] == ["system", "user", "assistant"]
    assert all(m["role"] != "tool" for m in exported)

    # jsonl is the stored history as it is, the tool message included.
    response = await client.get(export_url(first.id, "jsonl"), headers=user.headers)
    assert [json.loads(line)["seq"] for line in response.text.splitlines()] == [2, 3]


async def test_jsonl_format_is_one_message_per_line_in_seq_order(
    client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    conversation = await tool_conversation(store, user)
    await store.append_messages(
        user.user_id,
        conversation.id,
        [{"role": "user", "content": f"line {i}\nwith a newline"} for i in range(30)],
    )
    await store.delete_message(user.user_id, conversation.id, 7)
    response = await client.get(export_url(conversation.id, "jsonl"), headers=user.headers)
    assert_status(response, 200)
    assert response.headers["content-type"].split(";")[0] == "application/x-ndjson"
    assert response.text.endswith("\n")
    lines = response.text.split("\n")[:-1]
    listed = await client.get(
        f"/api/conversations/{conversation.id}/messages",
        params={"limit": 1000},
        headers=user.headers,
    )
    assert_status(listed, 200)
    expected = listed.json()["data"]
    assert len(lines) == len(expected) == 34
    assert [json.loads(line) for line in lines] == expected
    assert [json.loads(line)["seq"] for line in lines] == [s for s in range(1, 36) if s != 7]


async def test_an_empty_conversation_exports_nothing(
    client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    conversation = await store.create_conversation(user.user_id)
    assert await export_openai(client, user, conversation.id) == []
    response = await client.get(export_url(conversation.id, "jsonl"), headers=user.headers)
    assert_status(response, 200)
    assert response.content == b""


async def test_an_unknown_format_is_a_validation_error(
    client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    conversation = await store.create_conversation(user.user_id)
    for fmt in ("csv", "OPENAI", "", "json"):
        response = await client.get(export_url(conversation.id, fmt), headers=user.headers)
        error = assert_error(response, 422, "validation_error")
        assert any("format" in item["loc"] for item in error["details"]), (fmt, error)


async def test_another_users_conversation_is_not_found(
    client: httpx.AsyncClient, store: ChatStore, user: User, other_user: User
) -> None:
    theirs = await tool_conversation(store, other_user)
    for target in (theirs.id, uuid.uuid4(), "not-a-uuid"):
        for fmt in (None, "openai", "jsonl"):
            response = await client.get(export_url(target, fmt), headers=user.headers)
            assert_error(response, 404, "not_found")
    response = await client.get(export_url(theirs.id))
    assert_error(response, 401, "unauthorized")


# -- memory: a real server streaming 200,000 messages ------------------------

BIG = 200_000
SMALL = 20_000


@pytest.fixture(scope="module")
def export_server(database: str, settings: Settings) -> Iterator[ServerGroup]:
    group = start_servers(["export"], database, settings.auth_secret)
    try:
        yield group
    finally:
        group.stop()


async def seed_conversation(store: ChatStore, user_id: str, count: int) -> Conversation:
    """``count`` messages appended with one set-based statement; the
    conversation's counters match."""
    conversation = await store.create_conversation(user_id, title=f"{count} messages")
    async with store.transaction() as connection:
        await connection.execute("SET LOCAL synchronous_commit = off")
        await connection.execute(
            """
            INSERT INTO messages (conversation_id, seq, user_id, role, content, metadata,
                                  search_vector)
            SELECT $1, g, $2, CASE WHEN g % 2 = 1 THEN 'user' ELSE 'assistant' END,
                   t.content, jsonb_build_object('n', g::text), to_tsvector('simple', t.content)
            FROM generate_series(1, $3::bigint) AS g
            CROSS JOIN LATERAL (
                -- About 300 characters, but few words: cheap to index.
                SELECT format('message %s: %s', g, repeat('abcdefghij', 30)) AS content
            ) AS t
            """,
            conversation.id,
            user_id,
            count,
        )
        await connection.execute(
            "UPDATE conversations SET last_seq = $2::integer, message_count = $2::integer,"
            " updated_at = now()"
            " WHERE id = $1",
            conversation.id,
            count,
        )
    return conversation


class Peak:
    """The highest RSS of a process seen while sampling."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = rss_bytes(pid)
        self.peak = self.before

    def sample(self) -> None:
        self.peak = max(self.peak, rss_bytes(self.pid))

    @property
    def growth(self) -> int:
        return self.peak - self.before


async def stream_jsonl(
    client: httpx.AsyncClient, conversation: Conversation, peak: Peak
) -> tuple[int, float]:
    """Lines received (each checked to be the next seq) and seconds taken."""
    started = time.monotonic()
    count = 0
    async with client.stream("GET", export_url(conversation.id, "jsonl")) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].split(";")[0] == "application/x-ndjson"
        lines: AsyncIterator[str] = response.aiter_lines()
        async for line in lines:
            count += 1
            if count % 1000 == 1:
                peak.sample()
                assert json.loads(line)["seq"] == count, line[:200]
    peak.sample()
    return count, time.monotonic() - started


MB = 1024 * 1024


async def test_jsonl_export_of_200000_messages_streams_in_flat_memory(
    export_server: ServerGroup, store: ChatStore, new_user: MakeUser
) -> None:
    (server,) = export_server.servers
    user = await new_user()
    started = time.monotonic()
    small = await seed_conversation(store, user.user_id, SMALL)
    big = await seed_conversation(store, user.user_id, BIG)
    seeded_in = time.monotonic() - started

    async with httpx.AsyncClient(
        base_url=server.base_url, headers=user.headers, timeout=60
    ) as client:
        # Warm up: the first export loads code and fills the pool and caches.
        warm = Peak(server.pid)
        assert (await stream_jsonl(client, small, warm))[0] == SMALL
        small_peak = Peak(server.pid)
        small_count, small_seconds = await stream_jsonl(client, small, small_peak)
        big_peak = Peak(server.pid)
        big_count, big_seconds = await stream_jsonl(client, big, big_peak)

    figures = (
        f"seeded {SMALL + BIG} rows in {seeded_in:.1f} s; server RSS at start of warm-up "
        f"{warm.before / MB:.1f} MB (peak {warm.peak / MB:.1f} MB); "
        f"{SMALL} lines in {small_seconds:.1f} s: RSS {small_peak.before / MB:.1f} MB "
        f"+{small_peak.growth / MB:.1f} MB; "
        f"{BIG} lines in {big_seconds:.1f} s: RSS {big_peak.before / MB:.1f} MB "
        f"+{big_peak.growth / MB:.1f} MB"
    )
    print(figures)
    assert (small_count, big_count) == (SMALL, BIG), figures
    # About 85 MB of JSON leave the server for the big export. Buffered,
    # the body (and the Python objects behind it) would grow the server by
    # far more than that; streamed, the working set is one prefetch of 1,000
    # rows, so 10x the messages must not cost more than the small export's
    # growth (x1.5) plus 20 MB of allocator noise, and never 50 MB.
    assert big_peak.growth < 50 * MB, figures
    assert big_peak.growth <= 1.5 * small_peak.growth + 20 * MB, figures


async def test_openai_export_of_a_long_conversation_is_complete(
    export_server: ServerGroup, store: ChatStore, new_user: MakeUser
) -> None:
    (server,) = export_server.servers
    user = await new_user()
    conversation = await seed_conversation(store, user.user_id, 5_000)
    async with httpx.AsyncClient(
        base_url=server.base_url, headers=user.headers, timeout=60
    ) as client:
        response = await client.get(export_url(conversation.id, "openai"))
    assert_status(response, 200)
    messages = response.json()["messages"]
    assert len(messages) == 5_000
    assert messages[0] == {
        "role": "user",
        "content": "message 1: " + "abcdefghij" * 30,
    }
    assert messages[-1]["content"].startswith("message 5000: ")


async def test_the_seeded_conversation_is_consistent(store: ChatStore, new_user: MakeUser) -> None:
    # The seeding shortcut above keeps the counters and appends working.
    user = await new_user()
    conversation = await seed_conversation(store, user.user_id, 10)
    got = await store.get_conversation(user.user_id, conversation.id)
    assert got.message_count == 10
    (appended,) = await store.append_messages(
        user.user_id, conversation.id, [{"role": "user", "content": "next"}]
    )
    assert appended.seq == 11
