"""The chat flow with a real model (issue 13): the openai responder through
the real ``openai`` client against a scripted OpenAI-compatible server on
loopback (features/fake_openai.py), replies streamed as Server-Sent Events,
and failures that keep the user's message and say what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from support.app import app_client
from support.contract import assert_error, assert_status
from support.databases import lock_waiters
from support.users import User, new_key

from chatstore import chat_turn, idempotency
from chatstore.config import Settings
from chatstore.embedded import free_port
from chatstore.http.app import create_app
from chatstore.models import ChatMessageInput, Message, MessageInput, ToolCall
from chatstore.openai_responder import OpenAIResponder
from chatstore.responder import EchoResponder, ReplyChunk, Responder, load_responder
from chatstore.store import ChatStore
from features.fake_openai import MODEL, FakeOpenAI, Script, running_fake_openai

SSE = {"Accept": "text/event-stream"}
PATIENCE_SECONDS = 60.0
SYSTEM_PROMPT = "You are terse."


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with running_fake_openai() as running:
        yield running


def model_settings(settings: Settings, fake: FakeOpenAI, **changes: Any) -> Settings:
    return dataclasses.replace(
        settings,
        responder="openai",
        openai_base_url=fake.base_url,
        openai_api_key="sk-test",
        openai_model="test-model",
        system_prompt=SYSTEM_PROMPT,
        **changes,
    )


@asynccontextmanager
async def model_api(
    settings: Settings, store: ChatStore, fake: FakeOpenAI, **changes: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with CHATSTORE_RESPONDER=openai pointed at the fake model."""
    async with app_client(model_settings(settings, fake, **changes), store) as client:
        yield client


def events_of(text: str) -> list[tuple[str, Any]]:
    """(event, parsed data) of each event of an SSE body."""
    found = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields["event"], json.loads(fields["data"])))
    return found


def chat_path(conversation: str) -> str:
    return f"/api/chat/{conversation}/message"


async def stored(
    store: ChatStore, conversation: str
) -> list[tuple[str, str | None, dict[str, str]]]:
    rows = await store.pool.fetch(
        "SELECT role, content, metadata FROM messages WHERE conversation_id = $1 ORDER BY seq",
        conversation,
    )
    return [(r["role"], r["content"], dict(r["metadata"])) for r in rows]


async def new_conversation(store: ChatStore, user: User) -> str:
    return str((await store.create_conversation(user.user_id)).id)


# -- streaming --------------------------------------------------------------------


async def test_echo_streams_its_reply_word_by_word_between_the_stored_messages(
    client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    conversation = await new_conversation(store, user)
    response = await client.post(
        chat_path(conversation),
        json={"content": "Hello  there world"},
        headers={**user.headers, **SSE},
    )
    assert_status(response, 201)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = events_of(response.text)
    assert [name for name, _ in events] == [
        "message",
        "delta",
        "delta",
        "delta",
        "message",
        "done",
    ]
    assert [data["content"] for name, data in events if name == "delta"] == [
        "Hello  ",
        "there ",
        "world",
    ]
    asked, reply = events[0][1], events[4][1]
    assert (asked["seq"], asked["role"], asked["content"]) == (1, "user", "Hello  there world")
    assert (reply["seq"], reply["role"], reply["content"]) == (2, "assistant", "Hello  there world")
    assert "id: 1\n" in response.text and "id: 2\n" in response.text
    assert [c for _, c, _ in await stored(store, conversation)] == ["Hello  there world"] * 2


async def test_without_the_event_stream_header_the_answer_is_the_json_exchange(
    settings: Settings, store: ChatStore, user: User, fake: FakeOpenAI
) -> None:
    conversation = await new_conversation(store, user)
    async with model_api(settings, store, fake) as client:
        response = await client.post(
            chat_path(conversation), json={"content": "hi"}, headers=user.headers
        )
    assert_status(response, 201)
    body = response.json()
    assert body["reply"]["content"] == "Hello, world"
    assert body["reply"]["metadata"] == {"model": MODEL, "finish_reason": "stop"}
    assert fake.requests[0].body["stream"] is True


@pytest.mark.parametrize(
    "accept",
    [
        "text/event-stream;q=0, application/json",
        "application/json, text/event-stream; q=0.0",
        "text/event-stream;Q=0",
    ],
)
async def test_an_event_stream_accepted_with_q_0_is_refused_and_the_answer_is_json(
    settings: Settings, store: ChatStore, user: User, accept: str
) -> None:
    # q=0 says "not acceptable" (RFC 9110 section 12.4.2).
    conversation = await new_conversation(store, user)
    async with app_client(settings, store, responder=EchoResponder()) as client:
        response = await client.post(
            chat_path(conversation),
            json={"content": "hi"},
            headers={**user.headers, "Accept": accept},
        )
        streamed = await client.post(
            chat_path(conversation),
            json={"content": "hi"},
            headers={**user.headers, "Accept": "text/event-stream;q=0.5"},
        )
    assert_status(response, 201)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["reply"]["content"] == "hi"
    assert streamed.headers["content-type"].startswith("text/event-stream")


# -- the request the model receives ----------------------------------------------


async def test_the_model_receives_the_history_in_chat_completions_form_system_prompt_first(
    settings: Settings, store: ChatStore, user: User, fake: FakeOpenAI
) -> None:
    conversation = await new_conversation(store, user)
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    await store.append_messages(
        user.user_id,
        conversation,
        [
            {"role": "user", "content": "too old to be shown"},
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "assistant", "content": "It is sunny.", "name": "bot"},
        ],
    )
    # A budget of 2 messages would start at the tool message: widened back
    # to its assistant tool call, never cut off from it.
    async with model_api(settings, store, fake, responder_history_messages=2) as client:
        response = await client.post(
            chat_path(conversation), json={"content": "and tomorrow?"}, headers=user.headers
        )
    assert_status(response, 201)
    (request,) = fake.requests
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.body["model"] == "test-model"
    assert request.body["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
        {"role": "assistant", "content": "It is sunny.", "name": "bot"},
        {"role": "user", "content": "and tomorrow?"},
    ]


async def test_the_model_receives_parallel_tool_calls_as_one_assistant_message(
    settings: Settings, store: ChatStore, user: User, fake: FakeOpenAI
) -> None:
    """Responses items store one function_call each: chat completions
    refuse an assistant tool call not directly followed by its answers."""
    conversation = await new_conversation(store, user)

    def call(call_id: str) -> dict[str, Any]:
        return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}

    await store.add_items(
        user.user_id,
        conversation,
        [
            {"role": "user", "content": "both?"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {"type": "function_call_output", "call_id": "c2", "output": "two"},
        ],
    )
    async with model_api(settings, store, fake) as client:
        response = await client.post(
            chat_path(conversation), json={"content": "so?"}, headers=user.headers
        )
    assert_status(response, 201)
    assert fake.requests[0].body["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "both?"},
        {"role": "assistant", "content": None, "tool_calls": [call("c1"), call("c2")]},
        {"role": "tool", "content": "one", "tool_call_id": "c1"},
        {"role": "tool", "content": "two", "tool_call_id": "c2"},
        {"role": "user", "content": "so?"},
    ]
    # The messages list stays one row per seq.
    page = await store.list_messages(user.user_id, conversation)
    assert [m.seq for m in page.data] == [1, 2, 3, 4, 5, 6, 7]


async def test_the_character_budget_drops_the_oldest_and_a_tool_message_cut_from_its_call(
    settings: Settings, store: ChatStore, user: User, fake: FakeOpenAI
) -> None:
    conversation = await new_conversation(store, user)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    await store.append_messages(
        user.user_id,
        conversation,
        [
            {"role": "user", "content": "x" * 100},
            {"role": "assistant", "content": None, "tool_calls": [call]},  # 3 characters
            {"role": "tool", "tool_call_id": "c1", "content": "12345"},  # 5
            {"role": "assistant", "content": "abcdefghij"},  # 10
        ],
    )
    # 4 (the new message) + 10 + 5 fit in 20; the call's 3 more do not: the
    # window would start at the tool message, which goes too.
    async with model_api(settings, store, fake, responder_history_chars=20) as client:
        response = await client.post(
            chat_path(conversation), json={"content": "next"}, headers=user.headers
        )
    assert_status(response, 201)
    assert fake.requests[0].body["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "assistant", "content": "abcdefghij"},
        {"role": "user", "content": "next"},
    ]


async def test_streamed_tool_calls_are_assembled_and_stored(
    settings: Settings, store: ChatStore, user: User, fake: FakeOpenAI
) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    fake.script(Script(chunks=[], tool_calls=[call]))
    conversation = await new_conversation(store, user)
    async with model_api(settings, store, fake) as client:
        response = await client.post(
            chat_path(conversation), json={"content": "call"}, headers=user.headers
        )
    assert_status(response, 201)
    reply = response.json()["reply"]
    assert (reply["content"], reply["tool_calls"]) == (None, [call])
    assert reply["metadata"] == {"model": MODEL, "finish_reason": "tool_calls"}


async def test_respond_asks_the_model_without_streaming(
    settings: Settings, fake: FakeOpenAI
) -> None:
    responder = load_responder("openai", model_settings(settings, fake))
    assert isinstance(responder, OpenAIResponder)
    try:
        reply = await responder.respond([], MessageInput(role="user", content="hi"))
    finally:
        await responder.aclose()
    assert (reply.role, reply.content) == ("assistant", "Hello, world")
    assert reply.metadata == {"model": MODEL, "finish_reason": "stop"}
    (request,) = fake.requests
    assert "stream" not in request.body
    assert request.body["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "hi"},
    ]


def test_the_openai_responder_needs_a_model(settings: Settings) -> None:
    with pytest.raises(ValueError, match="CHATSTORE_OPENAI_MODEL"):
        load_responder("openai", dataclasses.replace(settings, openai_model=None))


# -- failures: visible, never silent -----------------------------------------------


async def test_a_model_error_status_is_502_responder_error_and_keeps_the_user_message(
    settings: Settings, store: ChatStore, user: User, fake: FakeOpenAI
) -> None:
    fake.script(Script(status=500), Script(status=429))
    conversation = await new_conversation(store, user)
    async with model_api(settings, store, fake) as client:
        plain = await client.post(
            chat_path(conversation), json={"content": "a"}, headers=user.headers
        )
        streamed = await client.post(
            chat_path(conversation), json={"content": "b"}, headers={**user.headers, **SSE}
        )
    assert_error(plain, 502, "responder_error")
    assert_status(streamed, 201)
    events = events_of(streamed.text)
    assert [name for name, _ in events] == ["message", "error"]
    assert events[1][1]["error"]["code"] == "responder_error"
    assert set(events[1][1]) == {"error"} and set(events[1][1]["error"]) == {"code", "message"}
    # No text came: no reply stored, the user messages stay.
    assert await stored(store, conversation) == [("user", "a", {}), ("user", "b", {})]


async def test_a_model_failing_halfway_stores_the_partial_reply_marked_incomplete(
    settings: Settings, store: ChatStore, user: User, fake: FakeOpenAI
) -> None:
    halfway = Script(chunks=["one ", "two ", "three"], fail_after=2)
    fake.script(halfway, dataclasses.replace(halfway))
    conversation = await new_conversation(store, user)
    async with model_api(settings, store, fake) as client:
        plain = await client.post(
            chat_path(conversation), json={"content": "a"}, headers=user.headers
        )
        streamed = await client.post(
            chat_path(conversation), json={"content": "b"}, headers={**user.headers, **SSE}
        )
    assert_error(plain, 502, "responder_error")
    events = events_of(streamed.text)
    assert [name for name, _ in events] == ["message", "delta", "delta", "error"]
    assert events[-1][1]["error"]["code"] == "responder_error"
    incomplete = {"incomplete": "responder_error"}
    assert await stored(store, conversation) == [
        ("user", "a", {}),
        ("assistant", "one two ", incomplete),
        ("user", "b", {}),
        ("assistant", "one two ", incomplete),
    ]


async def test_a_reply_past_the_timeout_is_504_and_its_partial_is_stored_as_timeout(
    settings: Settings, store: ChatStore, user: User, fake: FakeOpenAI
) -> None:
    hangs = Script(chunks=["slow ", "never"], hang_after=1)
    fake.script(hangs, dataclasses.replace(hangs), Script(chunks=["never"], hang_after=0))
    conversation = await new_conversation(store, user)
    # Long enough for the first chunk to arrive on a loaded machine; the
    # hang lasts until the fake model is stopped.
    async with model_api(settings, store, fake, responder_timeout_seconds=3.0) as client:
        plain = await client.post(
            chat_path(conversation), json={"content": "a"}, headers=user.headers
        )
        streamed = await client.post(
            chat_path(conversation), json={"content": "b"}, headers={**user.headers, **SSE}
        )
        silent = await client.post(
            chat_path(conversation), json={"content": "c"}, headers=user.headers
        )
    assert_error(plain, 504, "responder_timeout")
    assert_error(silent, 504, "responder_timeout")
    events = events_of(streamed.text)
    assert [name for name, _ in events] == ["message", "delta", "error"]
    assert events[-1][1]["error"]["code"] == "responder_timeout"
    timeout = {"incomplete": "timeout"}
    assert await stored(store, conversation) == [
        ("user", "a", {}),
        ("assistant", "slow ", timeout),
        ("user", "b", {}),
        ("assistant", "slow ", timeout),
        ("user", "c", {}),  # nothing came: nothing stored
    ]


async def test_an_idempotent_retry_after_a_model_failure_asks_again_for_the_same_message(
    settings: Settings, store: ChatStore, user: User, fake: FakeOpenAI
) -> None:
    fake.script(Script(chunks=["par", "tial"], fail_after=1), Script(chunks=["whole"]))
    conversation = await new_conversation(store, user)
    key = new_key()
    headers = {**user.with_key(key), **SSE}
    async with model_api(settings, store, fake) as client:
        failed = await client.post(chat_path(conversation), json={"content": "q"}, headers=headers)
        retried = await client.post(chat_path(conversation), json={"content": "q"}, headers=headers)
        replayed = await client.post(
            chat_path(conversation), json={"content": "q"}, headers=headers
        )
        as_json = await client.post(
            chat_path(conversation), json={"content": "q"}, headers=user.with_key(key)
        )
    assert [name for name, _ in events_of(failed.text)][-1] == "error"
    done = events_of(retried.text)
    assert [name for name, _ in done] == ["message", "delta", "message", "done"]
    assert done[0][1]["seq"] == 1 and done[2][1]["seq"] == 3
    # The retry showed the model the same question once, not the partial reply.
    assert fake.requests[1].body["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "q"},
    ]
    assert len(fake.requests) == 2
    assert replayed.headers.get("idempotent-replayed") == "true"
    assert events_of(replayed.text) == done
    assert as_json.status_code == 201 and as_json.json() == {
        "user_message": done[0][1],
        "reply": done[2][1],
    }
    assert await stored(store, conversation) == [
        ("user", "q", {}),
        ("assistant", "par", {"incomplete": "responder_error"}),
        ("assistant", "whole", {"model": MODEL, "finish_reason": "stop"}),
    ]


# -- over a real server: disconnects, followers, a small pool -------------------------


@asynccontextmanager
async def serving(
    settings: Settings, store: ChatStore, responder: Responder | None = None
) -> AsyncIterator[str]:
    """The app under uvicorn on loopback, in this event loop (it shares the
    suite's store); yields its base URL."""
    app = create_app(settings, store=store, responder=responder)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(PATIENCE_SECONDS):
        while not server.started:
            assert not task.done(), "the server did not start"
            await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def read_events(lines: AsyncIterator[str], count: int) -> list[tuple[str, Any]]:
    """The next ``count`` events of a streamed SSE response's lines."""
    found: list[tuple[str, Any]] = []
    block: dict[str, str] = {}
    async with asyncio.timeout(PATIENCE_SECONDS):
        async for line in lines:
            if line == "":
                if "event" in block:
                    found.append((block["event"], json.loads(block["data"])))
                    if len(found) == count:
                        return found
                block = {}
            elif ": " in line and not line.startswith(":"):
                name, value = line.split(": ", 1)
                block[name] = value
    return found


async def until_stored(store: ChatStore, conversation: str, count: int) -> list[Any]:
    async with asyncio.timeout(PATIENCE_SECONDS):
        while len(rows := await stored(store, conversation)) < count:  # noqa: ASYNC110 - the database's state
            await asyncio.sleep(0.02)
    return rows


async def test_a_client_that_disconnects_mid_stream_leaves_its_partial_reply_marked_disconnected(
    settings: Settings, store: ChatStore, user: User, fake: FakeOpenAI
) -> None:
    # 2 s of reply still to come when the client goes: time for the server
    # to notice, however loaded the machine.
    fake.script(Script(chunks=["first ", "second ", "third ", "fourth ", "fifth"], delay=0.5))
    conversation = await new_conversation(store, user)
    async with (
        serving(model_settings(settings, fake), store) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        async with client.stream(
            "POST",
            chat_path(conversation),
            json={"content": "go"},
            headers={**user.headers, **SSE},
        ) as response:
            assert response.status_code == 201
            lines = response.aiter_lines()
            assert [n for n, _ in await read_events(lines, 2)] == ["message", "delta"]
        # Gone after the first delta: the stream stops at its next write.
        rows = await until_stored(store, conversation, 2)
    assert rows[0] == ("user", "go", {})
    role, content, metadata = rows[1]
    assert role == "assistant" and metadata == {"incomplete": "disconnected"}
    assert content is not None and content.startswith("first ")
    assert content != "first second third fourth fifth"


async def test_followers_see_both_stored_messages_of_a_streamed_turn(
    settings: Settings, store: ChatStore, user: User
) -> None:
    conversation = await new_conversation(store, user)
    async with (
        serving(settings, store) as url,
        httpx.AsyncClient(base_url=url) as client,
        client.stream(
            "GET", f"/api/conversations/{conversation}/events", headers=user.headers
        ) as follower,
    ):
        assert follower.status_code == 200
        chat = await client.post(
            chat_path(conversation),
            json={"content": "hi all"},
            headers={**user.headers, **SSE},
        )
        assert [n for n, _ in events_of(chat.text)][-1] == "done"
        seen = await read_events(follower.aiter_lines(), 2)
    assert [(d["seq"], d["role"], d["content"]) for _, d in seen] == [
        (1, "user", "hi all"),
        (2, "assistant", "hi all"),
    ]


async def test_an_event_stream_starts_from_before_its_200_whenever_its_follower_subscribes(
    settings: Settings, store: ChatStore, user: User
) -> None:
    # The 200 of GET /events promises "everything from now". The follower
    # itself subscribes, leases the conversation and reads the table only
    # once the response is under way, and its lease waits for the
    # conversation's row lock. So: a message appended (its row lock held,
    # not yet committed) before the stream is opened, and committed once the
    # follower is seen waiting for that lock, i.e. after the client has its
    # 200. It must be in the stream: where the stream starts was read before
    # the 200, not after the lock was released.
    conversation = await new_conversation(store, user)
    async with (
        serving(settings, store) as url,
        httpx.AsyncClient(base_url=url) as client,
        contextlib.AsyncExitStack() as held,
    ):
        await held.enter_async_context(store.db.transaction())
        await store.append_message(
            user.user_id, conversation, {"role": "user", "content": "committed after the 200"}
        )
        async with client.stream(
            "GET", f"/api/conversations/{conversation}/events", headers=user.headers
        ) as follower:
            assert follower.status_code == 200
            for _ in range(int(PATIENCE_SECONDS * 100)):  # the follower waits for the lock
                if await lock_waiters(store.pool):
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the follower never waited for the conversation's row lock")
            await held.aclose()  # commits
            seen = await read_events(follower.aiter_lines(), 1)
    assert [(d["seq"], d["content"]) for _, d in seen] == [(1, "committed after the 200")]


async def idle_in_transaction(store: ChatStore) -> int:
    count: int = await store.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
    )
    return count


async def test_a_pool_of_4_serves_other_users_while_8_slow_replies_stream(
    database: str,
    settings: Settings,
    store: ChatStore,
    user: User,
    other_user: User,
    fake: FakeOpenAI,
) -> None:
    streams = 8
    gate = threading.Event()
    fake.script(*(Script(chunks=["thinking ", "done"], gate=gate) for _ in range(streams)))
    small = dataclasses.replace(
        model_settings(settings, fake),
        pool_min_size=1,
        pool_max_size=4,
        acquire_timeout_seconds=2.0,
    )
    conversations = [await new_conversation(store, user) for _ in range(streams)]
    async with (
        ChatStore(database, settings=small) as small_store,
        serving(small, small_store) as url,
        httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=32)) as client,
    ):

        async def chat(conversation: str) -> list[tuple[str, Any]]:
            async with client.stream(
                "POST",
                chat_path(conversation),
                json={"content": "slow"},
                headers={**user.headers, **SSE},
            ) as response:
                assert response.status_code == 201
                lines = response.aiter_lines()
                first = await read_events(lines, 2)  # the user message, a delta
                started.append(conversation)
                return first + await read_events(lines, 3)

        started: list[str] = []
        chats = [asyncio.create_task(chat(c)) for c in conversations]
        try:
            async with asyncio.timeout(PATIENCE_SECONDS):
                while len(started) < streams:  # noqa: ASYNC110 - a count, not an event
                    await asyncio.sleep(0.02)
            # 8 replies mid-stream, each waiting on the model: another user
            # is served at once, and no session sits in a transaction.
            assert fake.streaming == streams
            listed = await client.get("/api/conversations", headers=other_user.headers)
            assert_status(listed, 200)
            assert await idle_in_transaction(store) == 0
            assert fake.streaming == streams
        finally:
            gate.set()
        results = await asyncio.gather(*chats)
    for events in results:
        assert [n for n, _ in events] == ["message", "delta", "delta", "message", "done"]
    for conversation in conversations:
        assert [c for _, c, _ in await stored(store, conversation)] == ["slow", "thinking done"]


async def test_a_keyed_turn_closed_before_it_was_asked_lets_its_key_go_keeping_the_message(
    store: ChatStore, user: User
) -> None:
    # An event stream whose client went before the stream began: the turn is
    # closed unasked. Its key is free at once (not after its lease), and a
    # retry asks for the stored message instead of storing it again.
    conversation = await new_conversation(store, user)
    key, asked = new_key(), idempotency.fingerprint("the request")
    data = ChatMessageInput(content="unasked")
    first = await chat_turn.begin(
        store, EchoResponder(), user.user_id, conversation, data, key=key, request=asked
    )
    assert isinstance(first, chat_turn.Turn)
    await first.close()
    row = await store.pool.fetchrow(
        "SELECT claim_token, first_seq FROM idempotency_keys WHERE user_id = $1 AND key = $2",
        user.user_id,
        key,
    )
    assert row is not None and (row["claim_token"], row["first_seq"]) == (None, 1)
    again = await chat_turn.begin(
        store, EchoResponder(), user.user_id, conversation, data, key=key, request=asked
    )
    assert isinstance(again, chat_turn.Turn)
    try:
        exchange = await again.finish()
    finally:
        await again.close()
    assert (exchange.user_message.seq, exchange.reply.seq) == (1, 2)
    assert [c for _, c, _ in await stored(store, conversation)] == ["unasked", "unasked"]


class UnstorableResponder:
    """Streams a reply that breaks the message rules."""

    def __init__(self, text: str) -> None:
        self.text = text

    async def respond(self, history: Sequence[Message], message: MessageInput) -> MessageInput:
        raise NotImplementedError  # pragma: no cover - the turn streams

    async def stream(
        self, history: Sequence[Message], message: MessageInput
    ) -> AsyncIterator[ReplyChunk]:
        yield ReplyChunk(self.text)


@pytest.mark.parametrize("reply", ["a NUL \x00 in it", "x" * 11])
async def test_a_reply_that_cannot_be_stored_is_a_502_responder_error_not_a_500(
    settings: Settings, store: ChatStore, user: User, reply: str
) -> None:
    capped = dataclasses.replace(settings, max_content_chars=10)
    conversation = await new_conversation(store, user)
    async with app_client(capped, store, responder=UnstorableResponder(reply)) as client:
        plain = await client.post(
            chat_path(conversation), json={"content": "a"}, headers=user.headers
        )
        streamed = await client.post(
            chat_path(conversation), json={"content": "b"}, headers={**user.headers, **SSE}
        )
    error = assert_error(plain, 502, "responder_error")
    assert "could not be stored" in error["message"]
    assert [name for name, _ in events_of(streamed.text)] == ["message", "delta", "error"]
    assert events_of(streamed.text)[-1][1]["error"]["code"] == "responder_error"
    assert await stored(store, conversation) == [("user", "a", {}), ("user", "b", {})]


class ToolCallingResponder:
    """Streams some text, then a tool call whose id is always the same."""

    async def respond(self, history: Sequence[Message], message: MessageInput) -> MessageInput:
        raise NotImplementedError  # pragma: no cover - the turn streams

    async def stream(
        self, history: Sequence[Message], message: MessageInput
    ) -> AsyncIterator[ReplyChunk]:
        yield ReplyChunk("calling f")
        call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        yield ReplyChunk(tool_calls=[ToolCall.model_validate(call)])


async def test_a_reply_that_the_store_refuses_is_a_502_responder_error_keeping_its_partial(
    store: ChatStore, settings: Settings, user: User
) -> None:
    # Only the database knows a tool call id is already used in the
    # conversation: the append's refusal is the model's failure, not the
    # client's 422, and the reply's text is kept (marked incomplete).
    conversation = await new_conversation(store, user)
    async with app_client(settings, store, responder=ToolCallingResponder()) as client:
        first = await client.post(
            chat_path(conversation), json={"content": "a"}, headers=user.headers
        )
        plain = await client.post(
            chat_path(conversation),
            json={"content": "b"},
            headers={**user.headers, "Idempotency-Key": new_key()},
        )
        streamed = await client.post(
            chat_path(conversation), json={"content": "c"}, headers={**user.headers, **SSE}
        )
    assert_status(first, 201)
    error = assert_error(plain, 502, "responder_error")
    assert "already used" in error["message"]
    events = events_of(streamed.text)
    assert [name for name, _ in events] == ["message", "delta", "error"]
    assert events[-1][1]["error"]["code"] == "responder_error"
    incomplete = {"incomplete": "responder_error"}
    assert await stored(store, conversation) == [
        ("user", "a", {}),
        ("assistant", "calling f", {}),
        ("user", "b", {}),
        ("assistant", "calling f", incomplete),
        ("user", "c", {}),
        ("assistant", "calling f", incomplete),
    ]


class DeletingResponder:
    """Deletes its user's conversations while it thinks, then replies."""

    def __init__(self, store: ChatStore, user_id: str) -> None:
        self.store = store
        self.user_id = user_id

    async def respond(self, history: Sequence[Message], message: MessageInput) -> MessageInput:
        for listed in (await self.store.list_conversations(self.user_id)).data:
            await self.store.delete_conversation(self.user_id, listed.id)
        return MessageInput(role="assistant", content="too late")


@pytest.mark.parametrize("key", [None, "keyed"])
async def test_a_conversation_deleted_while_the_model_thinks_ends_the_turn_visibly(
    store: ChatStore, settings: Settings, user: User, key: str | None
) -> None:
    # Neither a 500 nor a stream that just stops.
    def headers() -> dict[str, str]:
        return user.headers if key is None else {**user.headers, "Idempotency-Key": new_key()}

    async with app_client(
        settings,
        store,
        responder=DeletingResponder(store, user.user_id),
    ) as client:
        plain = await client.post(
            chat_path(await new_conversation(store, user)),
            json={"content": "a"},
            headers=headers(),
        )
        streamed = await client.post(
            chat_path(await new_conversation(store, user)),
            json={"content": "b"},
            headers={**headers(), **SSE},
        )
    assert_error(plain, 404, "not_found")
    events = events_of(streamed.text)
    assert [name for name, _ in events] == ["message", "delta", "error"]
    assert events[-1][1]["error"]["code"] == "not_found"


class EditingResponder:
    """While it thinks, the user edits their question (a new first message,
    a sibling of the one being answered), then it replies."""

    def __init__(self, store: ChatStore, user_id: str) -> None:
        self.store = store
        self.user_id = user_id

    async def respond(self, history: Sequence[Message], message: MessageInput) -> MessageInput:
        for listed in (await self.store.list_conversations(self.user_id)).data:
            await self.store.append_messages(
                self.user_id, listed.id, [{"role": "user", "content": "edited"}], parent_seq=0
            )
        return MessageInput(role="assistant", content="an answer to the old question")


@pytest.mark.parametrize("key", [None, "keyed"])
async def test_a_reply_answers_its_question_never_another_branchs_leaf(
    store: ChatStore, settings: Settings, user: User, key: str | None
) -> None:
    # The branch moved while the model thought: the reply is refused visibly
    # (its question is off the active path), not attached under "edited".
    headers = user.headers if key is None else {**user.headers, "Idempotency-Key": new_key()}
    conversation = await new_conversation(store, user)
    async with app_client(
        settings, store, responder=EditingResponder(store, user.user_id)
    ) as client:
        response = await client.post(
            chat_path(conversation), json={"content": "question"}, headers=headers
        )
    assert_error(response, 502, "responder_error")
    shown = await store.list_messages(user.user_id, conversation)
    assert [(m.role, m.content) for m in shown.data] == [("user", "edited")]
