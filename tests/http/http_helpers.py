"""Helpers of the HTTP suite (tests/http): users, apps, clients, shape checks.

The fixtures are in http_fixtures.py. This module is imported by the tests
directly, so pytest does not rewrite its asserts: each says what it saw.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.applications import Starlette

from chatstore import sessions
from chatstore.config import Settings
from chatstore.http.app import create_app
from chatstore.responder import Responder
from chatstore.store import ChatStore

BASE_URL = "http://test"
JSON_HEADERS = {"content-type": "application/json"}

CONVERSATION_KEYS = {
    "id",
    "title",
    "metadata",
    "archived",
    "message_count",
    "created_at",
    "updated_at",
}
MESSAGE_KEYS = {
    "conversation_id",
    "seq",
    "parent_seq",
    "role",
    "content",
    "name",
    "tool_calls",
    "tool_call_id",
    "metadata",
    "created_at",
}
# RFC 3339 date-time with an explicit offset ("Z" or +hh:mm / -hh:mm).
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    """A better-auth user with a live session."""

    user_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def json_headers(self) -> dict[str, str]:
        return {**self.headers, **JSON_HEADERS}


MakeUser = Callable[[], Awaitable[User]]


async def make_user(store: ChatStore) -> User:
    user_id, token = await sessions.create_session(store, f"{secrets.token_hex(6)}@example.test")
    return User(user_id=user_id, token=token)


@asynccontextmanager
async def open_app(
    settings: Settings, store: ChatStore, *, responder: Responder | None = None
) -> AsyncIterator[Starlette]:
    """An app with its lifespan running (httpx's ASGITransport runs none)."""
    app = create_app(settings, store=store, responder=responder)
    async with app.router.lifespan_context(app):
        yield app


@asynccontextmanager
async def open_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    # raise_app_exceptions=False: a bug surfaces as the 500 a real client would
    # get (the traceback is logged by chatstore.http), not as an exception here.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client


@asynccontextmanager
async def app_client(
    settings: Settings, store: ChatStore, *, responder: Responder | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a separately configured app (other caps, cache, responder)."""
    async with open_app(settings, store, responder=responder) as app, open_client(app) as client:
        yield client


# -- assertions ----------------------------------------------------------------


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The contract's error body, exactly; returns the inner ``error`` object."""
    context = f"{response.request.method} {response.request.url} -> {response.status_code} "
    context += response.text[:500]
    assert response.status_code == status, context
    error = assert_error_shape(response)
    assert error["code"] == code, context
    return error


def assert_error_shape(response: httpx.Response) -> dict[str, Any]:
    """``{"error": {"code", "message", "details"?}}`` as application/json."""
    context = f"{response.request.method} {response.request.url} -> {response.status_code} "
    context += response.text[:500]
    media_type = response.headers.get("content-type", "").split(";")[0].strip()
    assert media_type == "application/json", context
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, context
    error = body["error"]
    assert isinstance(error, dict), context
    assert set(error) in ({"code", "message"}, {"code", "message", "details"}), context
    assert isinstance(error["code"], str) and error["code"], context
    assert isinstance(error["message"], str) and error["message"], context
    if "details" in error:
        assert_details(error["details"], context)
    return error


def assert_details(details: Any, context: str = "") -> None:
    assert isinstance(details, list) and details, context
    for item in details:
        assert isinstance(item, dict) and set(item) == {"loc", "msg"}, context
        assert isinstance(item["loc"], list), context
        assert all(isinstance(part, str | int) for part in item["loc"]), context
        assert isinstance(item["msg"], str) and item["msg"], context


def assert_validation_error(response: httpx.Response, *loc_parts: str | int) -> dict[str, Any]:
    """422 validation_error whose details name every one of ``loc_parts`` somewhere."""
    error = assert_error(response, 422, "validation_error")
    assert "details" in error, response.text
    if loc_parts:
        locs = [item["loc"] for item in error["details"]]
        assert any(all(part in loc for part in loc_parts) for loc in locs), (loc_parts, locs)
    return error


def assert_time(value: Any) -> dt.datetime:
    assert isinstance(value, str) and _RFC3339.match(value), value
    parsed = dt.datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


def assert_conversation(body: Any) -> dict[str, Any]:
    assert isinstance(body, dict) and set(body) == CONVERSATION_KEYS, body
    uuid.UUID(body["id"])
    assert body["title"] is None or isinstance(body["title"], str), body
    assert isinstance(body["metadata"], dict), body
    assert all(isinstance(v, str) for v in body["metadata"].values()), body
    assert type(body["archived"]) is bool, body
    assert type(body["message_count"]) is int and body["message_count"] >= 0, body
    created = assert_time(body["created_at"])
    updated = assert_time(body["updated_at"])
    assert updated >= created, body
    return body


def assert_message(body: Any) -> dict[str, Any]:
    assert isinstance(body, dict) and set(body) == MESSAGE_KEYS, body
    uuid.UUID(body["conversation_id"])
    assert type(body["seq"]) is int and body["seq"] >= 1, body
    assert body["role"] in ("system", "developer", "user", "assistant", "tool"), body
    assert isinstance(body["metadata"], dict), body
    assert_time(body["created_at"])
    return body


# -- small request helpers -----------------------------------------------------


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
