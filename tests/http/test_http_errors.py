"""The error table (http-api.md, Errors): every error has the one body shape,
with the status and code the table gives; no request produces a 500."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from support.app import app_client
from support.contract import assert_details, assert_error, assert_validation_error
from support.requests import all_messages, create_conversation
from support.users import User

from chatstore.config import Settings
from chatstore.store import ChatStore

JSON = {"content-type": "application/json"}


# -- 400 invalid_json -------------------------------------------------------------

INVALID_JSON = {
    "truncated": b'{"title": "x"',
    "truncated_string": b'{"title": "x',
    "invalid_utf8": b'{"title": "\xff\xfe"}',
    "overlong_utf8": b'{"title": "\xc0\xaf"}',
    "utf8_encoded_surrogate": b'{"title": "\xed\xa0\x80"}',
    "latin1_bytes": '{"title": "caf\u00e9"}'.encode("latin-1"),
    "utf16": '{"title": "x"}'.encode("utf-16"),
    "nan": b'{"title": NaN}',
    "infinity": b'{"title": Infinity}',
    "minus_infinity": b'{"metadata": {"k": -Infinity}}',
    "bare_nan": b"NaN",
    "duplicate_keys": b'{"title": "a", "title": "b"}',
    "nested_duplicate_keys": b'{"metadata": {"k": "a", "k": "b"}}',
    "deep_array": b"[" * 100_000 + b"]" * 100_000,
    "deep_object": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "single_quotes": b"{'title': 'x'}",
    "trailing_comma": b'{"title": "x",}',
    "comment": b'{"title": "x"} // hi',
    "two_documents": b"{}{}",
    "bom": b'\xef\xbb\xbf{"title": "x"}',
    "control_char_in_string": b'{"title": "a\x01b"}',
    "bad_escape": b'{"title": "\\x41"}',
}


@pytest.mark.parametrize("body", INVALID_JSON.values(), ids=INVALID_JSON.keys())
async def test_unparseable_body_is_400_invalid_json(
    client: httpx.AsyncClient, user: User, body: bytes
) -> None:
    response = await client.post("/api/conversations", content=body, headers=user.json_headers())
    assert_error(response, 400, "invalid_json")
    listing = await client.get("/api/conversations", headers=user.headers)
    assert listing.json()["data"] == []


async def test_empty_json_body_where_one_is_required_is_400(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation = await create_conversation(client, user)
    response = await client.post(
        f"/api/conversations/{conversation['id']}/messages",
        content=b"",
        headers=user.json_headers(),
    )
    assert_error(response, 400, "invalid_json")


# -- 415 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "application/problem+json",
        "json",
        "",
    ],
)
async def test_body_that_is_not_application_json_is_415(
    client: httpx.AsyncClient, user: User, content_type: str
) -> None:
    response = await client.post(
        "/api/conversations",
        content=b'{"title": "x"}',
        headers={**user.headers, "content-type": content_type},
    )
    assert_error(response, 415, "unsupported_media_type")


async def test_body_without_content_type_is_415(client: httpx.AsyncClient, user: User) -> None:
    conversation = await create_conversation(client, user)
    for path in ("/api/conversations", f"/api/conversations/{conversation['id']}/messages"):
        response = await client.post(
            path, content=b'{"role": "user", "content": "x"}', headers=user.headers
        )
        assert "content-type" not in response.request.headers
        assert_error(response, 415, "unsupported_media_type")
    assert await all_messages(client, user, conversation["id"]) == []


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        'application/json; charset="utf-8"',
        "Application/JSON",
    ],
)
async def test_json_media_type_variants_are_accepted(
    client: httpx.AsyncClient, user: User, content_type: str
) -> None:
    response = await client.post(
        "/api/conversations",
        content=b'{"title": "x"}',
        headers={**user.headers, "content-type": content_type},
    )
    assert response.status_code == 201, response.text


# -- 413 --------------------------------------------------------------------------


@pytest.fixture
def small_body_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, max_body_bytes=1024)


async def test_body_over_the_cap_is_413(
    store: ChatStore, small_body_settings: Settings, user: User
) -> None:
    async with app_client(small_body_settings, store) as client:
        conversation = await create_conversation(client, user)
        big = b'{"role": "user", "content": "' + b"x" * 2048 + b'"}'
        response = await client.post(
            f"/api/conversations/{conversation['id']}/messages",
            content=big,
            headers=user.json_headers(),
        )
        assert_error(response, 413, "payload_too_large")
        fits = b'{"role": "user", "content": "' + b"x" * 900 + b'"}'
        accepted = await client.post(
            f"/api/conversations/{conversation['id']}/messages",
            content=fits,
            headers=user.json_headers(),
        )
        assert accepted.status_code == 201, accepted.text
        assert len(await all_messages(client, user, conversation["id"])) == 1


async def test_streamed_body_over_the_cap_is_413(
    store: ChatStore, small_body_settings: Settings, user: User
) -> None:
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"role": "user", "content": "'
        for _ in range(64):
            sent.append(256)
            yield b"x" * 256
        yield b'"}'

    async with app_client(small_body_settings, store) as client:
        conversation = await create_conversation(client, user)
        response = await client.post(
            f"/api/conversations/{conversation['id']}/messages",
            content=chunks(),
            headers=user.json_headers(),
        )
        assert "content-length" not in response.request.headers
        assert_error(response, 413, "payload_too_large")
        assert await all_messages(client, user, conversation["id"]) == []


async def test_lying_content_length_cannot_sneak_a_big_body_in(
    store: ChatStore, small_body_settings: Settings, user: User
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"title": "' + b"x" * 4096 + b'"}'

    async with app_client(small_body_settings, store) as client:
        response = await client.post(
            "/api/conversations",
            content=chunks(),
            headers={**user.json_headers(), "content-length": "10"},
        )
        # Refused as too large once the bytes pass the cap, or as broken JSON if the
        # transport cuts the body at the declared length: never stored either way.
        error = assert_error(response)
        refusals = {(413, "payload_too_large"), (400, "invalid_json")}
        assert (response.status_code, error["code"]) in refusals, response.text
        listing = await client.get("/api/conversations", headers=user.headers)
        assert listing.json()["data"] == []


async def test_streamed_body_under_the_cap_is_accepted(
    store: ChatStore, small_body_settings: Settings, user: User
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"title": '
        yield b'"streamed"}'

    async with app_client(small_body_settings, store) as client:
        response = await client.post(
            "/api/conversations", content=chunks(), headers=user.json_headers()
        )
        assert response.status_code == 201, response.text
        assert response.json()["title"] == "streamed"


# -- 422 --------------------------------------------------------------------------


async def test_validation_error_details_list_loc_and_msg(
    client: httpx.AsyncClient, user: User
) -> None:
    response = await client.post(
        "/api/conversations",
        json={"title": 5, "metadata": {"k": 1}, "extra": True},
        headers=user.headers,
    )
    error = assert_validation_error(response)
    assert_details(error["details"])
    locs = [item["loc"] for item in error["details"]]
    assert ["body", "title"] in locs, locs
    assert any(loc[:2] == ["body", "metadata"] for loc in locs), locs
    assert ["body", "extra"] in locs, locs


async def test_query_validation_error_locates_the_parameter(
    client: httpx.AsyncClient, user: User
) -> None:
    response = await client.get("/api/conversations?limit=0", headers=user.headers)
    error = assert_validation_error(response)
    assert error["details"][0]["loc"] == ["query", "limit"]


# -- routing errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/api/conversations"),
        ("DELETE", "/api/conversations"),
        ("PUT", "/api/conversations/00000000-0000-4000-8000-000000000000"),
        ("POST", "/api/conversations/00000000-0000-4000-8000-000000000000"),
        ("PATCH", "/api/conversations/00000000-0000-4000-8000-000000000000/messages"),
        ("POST", "/api/conversations/00000000-0000-4000-8000-000000000000/messages/1"),
        ("GET", "/api/chat/start"),
        ("GET", "/api/chat/00000000-0000-4000-8000-000000000000/message"),
        ("POST", "/api/chat/00000000-0000-4000-8000-000000000000/history"),
        ("POST", "/healthz"),
        ("DELETE", "/readyz"),
    ],
)
async def test_wrong_method_is_405_with_error_body(
    client: httpx.AsyncClient, user: User, method: str, path: str
) -> None:
    response = await client.request(method, path, headers=user.headers)
    assert_error(response, 405, "method_not_allowed")


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/api",
        "/api/",
        "/api/conversation",
        "/api/conversations/00000000-0000-4000-8000-000000000000/other",
        "/api/chat",
        "/api/chat/00000000-0000-4000-8000-000000000000",
    ],
)
async def test_unknown_path_is_404_with_error_body(
    client: httpx.AsyncClient, user: User, path: str
) -> None:
    for headers in ({}, user.headers):
        response = await client.get(path, headers=headers)
        assert_error(response, 404, "not_found")


# -- 503 --------------------------------------------------------------------------


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_unreachable_database_is_503_with_retry_after(settings: Settings) -> None:
    down = dataclasses.replace(
        settings,
        database_url=f"postgresql://nobody@127.0.0.1:{unused_port()}/none",
        pool_min_size=0,
    )
    async with (
        ChatStore(down.database_url, settings=down) as unreachable,
        app_client(down, unreachable) as client,
    ):
        response = await client.get(
            "/api/conversations", headers={"Authorization": "Bearer abcdefghijklmnop"}
        )
        assert_error(response, 503, "unavailable")
        assert response.headers.get("retry-after") == "1"
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "retry-after" in ready.headers
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
