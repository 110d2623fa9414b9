"""Chat (http-api.md): start, message (the user's message stored first, the
responder's reply when it completes), history windows widened around tool
calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from support.app import app_client
from support.contract import (
    assert_conversation,
    assert_error,
    assert_message,
    assert_validation_error,
)
from support.requests import all_messages, append, tool_call, user_message
from support.users import User

from chatstore.config import Settings
from chatstore.models import Message, MessageInput
from chatstore.store import ChatStore


async def start(client: httpx.AsyncClient, user: User, body: Any = None) -> dict[str, Any]:
    response = await client.post("/api/chat/start", json=body, headers=user.headers)
    assert response.status_code == 201, response.text
    started: dict[str, Any] = response.json()
    return started


async def say(client: httpx.AsyncClient, user: User, session_id: str, content: str) -> Any:
    response = await client.post(
        f"/api/chat/{session_id}/message", json={"content": content}, headers=user.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def history(
    client: httpx.AsyncClient, user: User, session_id: str, **params: str | int
) -> dict[str, Any]:
    response = await client.get(
        f"/api/chat/{session_id}/history", params=params, headers=user.headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"session_id", "messages", "has_more"}, body
    assert body["session_id"] == session_id
    assert isinstance(body["has_more"], bool)
    for message in body["messages"]:
        assert_message(message)
    return body


def seqs(messages: Sequence[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in messages]


# -- start ----------------------------------------------------------------------


async def test_start_is_201_session_and_conversation(client: httpx.AsyncClient, user: User) -> None:
    response = await client.post("/api/chat/start", headers=user.headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"session_id", "conversation"}
    conversation = assert_conversation(body["conversation"])
    assert body["session_id"] == conversation["id"]
    assert conversation["message_count"] == 0
    got = await client.get(f"/api/conversations/{body['session_id']}", headers=user.headers)
    assert got.status_code == 200 and got.json() == conversation


async def test_start_with_title_and_metadata(client: httpx.AsyncClient, user: User) -> None:
    body = await start(client, user, {"title": "support", "metadata": {"channel": "web"}})
    assert body["conversation"]["title"] == "support"
    assert body["conversation"]["metadata"] == {"channel": "web"}
    empty = await start(client, user, {})
    assert empty["conversation"]["title"] is None


# -- message ------------------------------------------------------------------------


async def test_message_stores_user_message_and_echo_reply(
    client: httpx.AsyncClient, user: User
) -> None:
    session_id = (await start(client, user))["session_id"]
    body = await say(client, user, session_id, "Hello there")
    assert set(body) == {"user_message", "reply"}
    user_msg, reply = assert_message(body["user_message"]), assert_message(body["reply"])
    assert (user_msg["role"], user_msg["content"], user_msg["seq"]) == ("user", "Hello there", 1)
    assert (reply["role"], reply["content"], reply["seq"]) == ("assistant", "Hello there", 2)
    assert user_msg["conversation_id"] == reply["conversation_id"] == session_id

    second = await say(client, user, session_id, "again")
    assert (second["user_message"]["seq"], second["reply"]["seq"]) == (3, 4)
    stored = await all_messages(client, user, session_id)
    assert stored == [body["user_message"], body["reply"], second["user_message"], second["reply"]]
    conversation = await client.get(f"/api/conversations/{session_id}", headers=user.headers)
    assert conversation.json()["message_count"] == 4


async def test_message_after_plain_appends_continues_the_seq(
    client: httpx.AsyncClient, user: User
) -> None:
    session_id = (await start(client, user))["session_id"]
    await append(client, user, session_id, {"role": "system", "content": "be nice"})
    body = await say(client, user, session_id, "hi")
    assert (body["user_message"]["seq"], body["reply"]["seq"]) == (2, 3)


class RecordingResponder:
    """Replies with something of its own, and remembers what it was shown."""

    def __init__(self) -> None:
        self.seen: list[tuple[list[int], str | None]] = []

    async def respond(self, history: Sequence[Message], message: MessageInput) -> MessageInput:
        self.seen.append(([m.seq for m in history], message.content))
        return MessageInput(
            role="assistant",
            content=f"you said {len(message.content or '')} characters",
            metadata={"model": "recording"},
        )


async def test_custom_responder_is_used(store: ChatStore, settings: Settings, user: User) -> None:
    responder = RecordingResponder()
    async with app_client(settings, store, responder=responder) as client:
        session_id = (await start(client, user))["session_id"]
        first = await say(client, user, session_id, "abc")
        assert first["reply"]["content"] == "you said 3 characters"
        assert first["reply"]["metadata"] == {"model": "recording"}
        assert first["reply"]["role"] == "assistant"
        second = await say(client, user, session_id, "hello")
        assert second["reply"]["content"] == "you said 5 characters"
        # The responder saw the stored history (oldest first) and the new message.
        assert responder.seen == [([], "abc"), ([1, 2], "hello")]
        stored = await all_messages(client, user, session_id)
        assert [m["content"] for m in stored] == [
            "abc",
            "you said 3 characters",
            "hello",
            "you said 5 characters",
        ]


class FailingResponder:
    async def respond(self, history: Sequence[Message], message: MessageInput) -> MessageInput:
        raise RuntimeError("the model is down")


async def test_failing_responder_is_502_and_keeps_the_user_message(
    store: ChatStore, settings: Settings, user: User
) -> None:
    # The user's message is committed before the responder is asked: it stays;
    # no reply (the responder gave no text) and a 502, never a 500.
    async with app_client(settings, store, responder=FailingResponder()) as client:
        session_id = (await start(client, user))["session_id"]
        response = await client.post(
            f"/api/chat/{session_id}/message", json={"content": "hi"}, headers=user.headers
        )
        assert_error(response, 502, "responder_error")
        stored = await all_messages(client, user, session_id)
        assert [(m["role"], m["content"]) for m in stored] == [("user", "hi")]


async def test_message_to_unknown_session_is_404(client: httpx.AsyncClient, user: User) -> None:
    response = await client.post(
        "/api/chat/00000000-0000-4000-8000-000000000000/message",
        json={"content": "hi"},
        headers=user.headers,
    )
    assert_error(response, 404, "not_found")


# -- history ----------------------------------------------------------------------


async def test_history_of_empty_session(client: httpx.AsyncClient, user: User) -> None:
    session_id = (await start(client, user))["session_id"]
    body = await history(client, user, session_id)
    assert body["messages"] == [] and body["has_more"] is False


async def test_history_default_limit_is_50_latest_oldest_first(
    client: httpx.AsyncClient, user: User
) -> None:
    session_id = (await start(client, user))["session_id"]
    await append(client, user, session_id, *(user_message(f"m{i}") for i in range(1, 61)))
    body = await history(client, user, session_id)
    assert seqs(body["messages"]) == list(range(11, 61))
    assert body["has_more"] is True
    assert body["messages"] == (await all_messages(client, user, session_id))[10:]


@pytest.mark.parametrize(
    ("params", "expected", "has_more"),
    [
        ({"limit": 3}, [8, 9, 10], True),
        ({"limit": 10}, list(range(1, 11)), False),
        ({"limit": 1000}, list(range(1, 11)), False),
        ({"before": 4}, [1, 2, 3], False),
        ({"before": 1}, [], False),
        ({"before": 8, "limit": 2}, [6, 7], True),
        ({"before": 3, "limit": 2}, [1, 2], False),
        ({"before": 9_223_372_036_854_775_807}, list(range(1, 11)), False),
    ],
)
async def test_history_before_is_exclusive_and_has_more_looks_back(
    client: httpx.AsyncClient,
    user: User,
    params: dict[str, str | int],
    expected: list[int],
    has_more: bool,
) -> None:
    session_id = (await start(client, user))["session_id"]
    await append(client, user, session_id, *(user_message(f"m{i}") for i in range(1, 11)))
    body = await history(client, user, session_id, **params)
    assert seqs(body["messages"]) == expected
    assert body["has_more"] is has_more


async def test_walking_history_backwards_sees_everything_once(
    client: httpx.AsyncClient, user: User
) -> None:
    session_id = (await start(client, user))["session_id"]
    await append(client, user, session_id, *(user_message(f"m{i}") for i in range(1, 24)))
    seen: list[int] = []
    params: dict[str, str | int] = {"limit": 5}
    for _ in range(10):
        body = await history(client, user, session_id, **params)
        seen = seqs(body["messages"]) + seen
        if not body["has_more"]:
            break
        params["before"] = body["messages"][0]["seq"]
    assert seen == list(range(1, 24))


async def tool_exchange(client: httpx.AsyncClient, user: User) -> str:
    """[user, assistant calling c1 and c2, tool c1, tool c2, assistant] as seqs 1-5."""
    session_id: str = (await start(client, user))["session_id"]
    await append(
        client,
        user,
        session_id,
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call("c1"), tool_call("c2")]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rainy"},
        {"role": "assistant", "content": "Paris sunny, Rome rainy."},
    )
    return session_id


@pytest.mark.parametrize(
    ("params", "expected", "has_more"),
    [
        # The window would start at "tool c2": widened back to the assistant call.
        ({"limit": 2}, [2, 3, 4, 5], True),
        ({"limit": 3}, [2, 3, 4, 5], True),
        ({"limit": 1, "before": 4}, [2, 3], True),
        ({"limit": 1, "before": 5}, [2, 3, 4], True),
        # Windows that start elsewhere are not widened.
        ({"limit": 1}, [5], True),
        ({"limit": 4}, [2, 3, 4, 5], True),
        ({"limit": 5}, [1, 2, 3, 4, 5], False),
        ({"limit": 1, "before": 3}, [2], True),
    ],
)
async def test_history_is_widened_back_to_the_assistant_tool_call(
    client: httpx.AsyncClient,
    user: User,
    params: dict[str, str | int],
    expected: list[int],
    has_more: bool,
) -> None:
    session_id = await tool_exchange(client, user)
    body = await history(client, user, session_id, **params)
    assert seqs(body["messages"]) == expected
    assert body["messages"][0]["role"] != "tool"
    assert body["has_more"] is has_more


async def test_responder_history_never_starts_with_a_cut_off_tool_message(
    store: ChatStore, settings: Settings, user: User
) -> None:
    responder = RecordingResponder()
    async with app_client(settings, store, responder=responder) as client:
        session_id: str = (await start(client, user))["session_id"]
        await append(client, user, session_id, *(user_message(f"m{i}") for i in range(49)))
        await append(
            client,
            user,
            session_id,
            {"role": "assistant", "content": None, "tool_calls": [tool_call("c1")]},
            {"role": "tool", "tool_call_id": "c1", "content": "result"},
        )
        await say(client, user, session_id, "and?")
        ((shown, _),) = responder.seen
        # 51 messages stored; the responder's 50-message window would start at
        # seq 2, nowhere near a tool message: no widening needed, none done.
        assert shown == list(range(2, 52))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("limit", "0"),
        ("limit", "1001"),
        ("limit", "x"),
        ("limit", "-1"),
        ("limit", "1.5"),
        ("before", "0"),
        ("before", "-1"),
        ("before", "x"),
        ("before", "9223372036854775808"),
    ],
)
async def test_bad_history_parameter_is_422(
    client: httpx.AsyncClient, user: User, name: str, value: str
) -> None:
    session_id = (await start(client, user))["session_id"]
    response = await client.get(
        f"/api/chat/{session_id}/history", params={name: value}, headers=user.headers
    )
    assert_validation_error(response, "query", name)
