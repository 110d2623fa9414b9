"""Assertions on the HTTP contract: the error body (one check for every
suite), statuses, the shapes of conversations and messages.

Pytest does not rewrite the asserts of this module: every check says what it saw.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

import httpx

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


def describe(response: httpx.Response) -> str:
    return (
        f"{response.request.method} {response.request.url} -> {response.status_code} "
        + (response.text[:500])
    )


def assert_status(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, describe(response)


def error_of(status: int, headers: Mapping[str, str], body: bytes, what: str) -> dict[str, Any]:
    """The contract's error body ``{"error": {"code", "message", "details"?}}``
    as application/json; returns the inner object. Raw, for responses read
    off a socket; ``assert_error`` is this for an httpx response."""
    context = f"{what} -> {status} {body[:500]!r}"
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    assert media_type == "application/json", context
    parsed = json.loads(body)
    assert isinstance(parsed, dict) and set(parsed) == {"error"}, context
    error = parsed["error"]
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


def assert_error(
    response: httpx.Response, status: int | None = None, code: str | None = None
) -> dict[str, Any]:
    """The contract's error body with ``status`` (any 4xx when None) and
    ``code`` (any when None); returns the inner ``error`` object."""
    context = describe(response)
    if status is None:
        assert 400 <= response.status_code < 500, context
    else:
        assert response.status_code == status, context
    what = f"{response.request.method} {response.request.url}"
    error = error_of(response.status_code, response.headers, response.content, what)
    if code is not None:
        assert error["code"] == code, context
    return error


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
