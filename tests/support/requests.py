"""Small requests over the app's API and the bodies they carry.

Pytest does not rewrite the asserts of this module: every check says what it saw.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import httpx

from support.contract import assert_conversation
from support.users import User


async def create_conversation(
    client: httpx.AsyncClient, user: User, body: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    response = await client.post("/api/conversations", json=dict(body or {}), headers=user.headers)
    assert response.status_code == 201, response.text
    return assert_conversation(response.json())


async def append(
    client: httpx.AsyncClient, user: User, conversation_id: str, *messages: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Append ``messages`` in one list-form request; returns the stored messages."""
    response = await client.post(
        f"/api/conversations/{conversation_id}/messages",
        json={"messages": [dict(m) for m in messages]},
        headers=user.headers,
    )
    assert response.status_code == 201, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def all_messages(
    client: httpx.AsyncClient, user: User, conversation_id: str
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/api/conversations/{conversation_id}/messages",
        params={"limit": 1000},
        headers=user.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["has_more"] is False
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def user_message(content: str = "hello") -> dict[str, Any]:
    return {"role": "user", "content": content}


def tool_call(call_id: str, name: str = "lookup", arguments: str = "{}") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def seed_messages(tag: str) -> list[dict[str, Any]]:
    """A realistic history: system, user, an assistant tool call, its tool
    answer, the assistant's reply. ``tag`` makes the contents searchable."""
    call_id = f"call_{secrets.token_hex(4)}"
    return [
        {"role": "system", "content": f"you are a helpful {tag} assistant"},
        {"role": "user", "content": f"what is the weather in {tag} town", "metadata": {"k": tag}},
        {"role": "assistant", "content": None, "tool_calls": [tool_call(call_id, "weather")]},
        {"role": "tool", "tool_call_id": call_id, "content": f"sunny in {tag} town"},
        {"role": "assistant", "content": f"It is sunny in {tag} town.", "name": "bot_1"},
    ]
