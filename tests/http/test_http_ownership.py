"""Ownership is strict (http-api.md, Authentication): another user's
conversation does not exist for the caller. Every endpoint that takes a
conversation id answers bob about alice's conversation exactly as about a
uuid that exists nowhere, and as about a malformed id; alice's data is
untouched."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from support.contract import assert_error
from support.requests import all_messages, append, create_conversation, tool_call
from support.users import User

MALFORMED_IDS = ("nope", "123", "00000000-0000-0000-0000-00000000000g", "%20")

# (method, path after the id, JSON body or None). Bodies are valid, so only
# the id can be what makes the request fail.
ENDPOINTS: list[tuple[str, str, str, Any]] = [
    ("get_conversation", "GET", "/api/conversations/{id}", None),
    ("patch_conversation", "PATCH", "/api/conversations/{id}", {"title": "bob was here"}),
    ("delete_conversation", "DELETE", "/api/conversations/{id}", None),
    (
        "append_message",
        "POST",
        "/api/conversations/{id}/messages",
        {"role": "user", "content": "x"},
    ),
    (
        "append_messages_list",
        "POST",
        "/api/conversations/{id}/messages",
        {"messages": [{"role": "user", "content": "x"}], "expected_last_seq": 3},
    ),
    (
        "append_tool_answer",
        "POST",
        "/api/conversations/{id}/messages",
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ),
    ("list_messages", "GET", "/api/conversations/{id}/messages", None),
    ("list_messages_desc", "GET", "/api/conversations/{id}/messages?order=desc&limit=1", None),
    ("truncate_messages", "DELETE", "/api/conversations/{id}/messages?from_seq=1", None),
    ("get_message", "GET", "/api/conversations/{id}/messages/1", None),
    ("delete_message", "DELETE", "/api/conversations/{id}/messages/1", None),
    ("chat_message", "POST", "/api/chat/{id}/message", {"content": "hi"}),
    ("chat_history", "GET", "/api/chat/{id}/history", None),
    ("chat_history_before", "GET", "/api/chat/{id}/history?limit=1&before=3", None),
]


def without_request_id(headers: httpx.Headers) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name != "x-request-id"}


async def snapshot(client: httpx.AsyncClient, user: User, conversation_id: str) -> Any:
    conversation = await client.get(f"/api/conversations/{conversation_id}", headers=user.headers)
    assert conversation.status_code == 200, conversation.text
    listing = await client.get("/api/conversations", headers=user.headers)
    assert listing.status_code == 200, listing.text
    return conversation.json(), await all_messages(client, user, conversation_id), listing.json()


async def request(
    client: httpx.AsyncClient, user: User, method: str, path: str, body: Any
) -> httpx.Response:
    return await client.request(
        method, path, headers=user.headers, json=body if body is not None else None
    )


@pytest.mark.parametrize(
    ("method", "template", "body"),
    [pytest.param(method, template, body, id=name) for name, method, template, body in ENDPOINTS],
)
async def test_another_users_conversation_is_not_found_like_a_missing_one(
    client: httpx.AsyncClient,
    user: User,
    other_user: User,
    method: str,
    template: str,
    body: Any,
) -> None:
    conversation = await create_conversation(
        client, user, {"title": "alice's", "metadata": {"a": "1"}}
    )
    conversation_id = conversation["id"]
    await append(
        client,
        user,
        conversation_id,
        {"role": "user", "content": "what is 6 x 7?"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call("call_9")]},
        {"role": "tool", "tool_call_id": "call_9", "content": "42"},
    )
    before = await snapshot(client, user, conversation_id)

    foreign = await request(client, other_user, method, template.format(id=conversation_id), body)
    missing = await request(client, other_user, method, template.format(id=uuid.uuid4()), body)
    assert_error(foreign, 404, "not_found")
    assert_error(missing, 404, "not_found")
    # Nothing may tell bob that alice's id exists: same status, body, headers.
    assert foreign.json() == missing.json()
    # (Each response has its own request id, which tells nothing of the data.)
    assert without_request_id(foreign.headers) == without_request_id(missing.headers)

    for malformed in MALFORMED_IDS:
        answer = await request(client, other_user, method, template.format(id=malformed), body)
        assert_error(answer, 404, "not_found")

    # Alice's conversation, its messages and her listing are exactly as they were.
    assert await snapshot(client, user, conversation_id) == before


@pytest.mark.parametrize(
    ("method", "template", "body"),
    [pytest.param(method, template, body, id=name) for name, method, template, body in ENDPOINTS],
)
async def test_malformed_id_is_answered_exactly_like_an_unknown_one(
    client: httpx.AsyncClient, user: User, method: str, template: str, body: Any
) -> None:
    # "404 not_found: unknown id, another user's id, malformed id": one answer,
    # body included, whatever the id looks like.
    missing = await request(client, user, method, template.format(id=uuid.uuid4()), body)
    assert_error(missing, 404, "not_found")
    for malformed in MALFORMED_IDS:
        answer = await request(client, user, method, template.format(id=malformed), body)
        assert_error(answer, 404, "not_found")
        assert answer.json() == missing.json(), (malformed, answer.json(), missing.json())


async def test_another_users_conversation_is_absent_from_listings(
    client: httpx.AsyncClient, user: User, other_user: User
) -> None:
    await create_conversation(client, user, {"title": "alice's"})
    listing = await client.get("/api/conversations", headers=other_user.headers)
    assert listing.status_code == 200, listing.text
    assert listing.json() == {"data": [], "next_cursor": None}


async def test_cursor_from_another_user_reveals_nothing(
    client: httpx.AsyncClient, user: User, other_user: User
) -> None:
    for index in range(3):
        await create_conversation(client, user, {"title": f"a{index}"})
    first = await client.get("/api/conversations?limit=1", headers=user.headers)
    cursor = first.json()["next_cursor"]
    assert cursor is not None
    page = await client.get(
        "/api/conversations", params={"cursor": cursor}, headers=other_user.headers
    )
    assert page.status_code == 200, page.text
    assert page.json() == {"data": [], "next_cursor": None}
