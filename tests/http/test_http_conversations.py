"""Conversations (http-api.md): create, get, patch, delete, list and page."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import uuid
from typing import Any

import httpx
import pytest
from support.contract import assert_conversation, assert_error, assert_validation_error
from support.requests import append, create_conversation, user_message
from support.users import User

from chatstore.store import ChatStore

# -- create ---------------------------------------------------------------------


async def test_create_without_body_is_201_conversation(
    client: httpx.AsyncClient, user: User
) -> None:
    response = await client.post("/api/conversations", headers=user.headers)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = assert_conversation(response.json())
    assert body["title"] is None
    assert body["metadata"] == {}
    assert body["message_count"] == 0
    assert body["created_at"] == body["updated_at"]


async def test_create_with_empty_body_and_no_content_type_is_201(
    client: httpx.AsyncClient, user: User
) -> None:
    response = await client.post("/api/conversations", content=b"", headers=user.headers)
    assert response.status_code == 201, response.text
    assert_conversation(response.json())


async def test_create_with_empty_json_object_is_201(client: httpx.AsyncClient, user: User) -> None:
    response = await client.post("/api/conversations", json={}, headers=user.headers)
    assert response.status_code == 201, response.text
    body = assert_conversation(response.json())
    assert (body["title"], body["metadata"]) == (None, {})


async def test_create_with_title_and_metadata_is_201(client: httpx.AsyncClient, user: User) -> None:
    sent = {"title": "Trip to Lisbon \u2708", "metadata": {"project": "travel", "lang": "pt"}}
    response = await client.post("/api/conversations", json=sent, headers=user.headers)
    assert response.status_code == 201, response.text
    body = assert_conversation(response.json())
    assert body["title"] == sent["title"]
    assert body["metadata"] == sent["metadata"]


async def test_create_accepts_limits_exactly(client: httpx.AsyncClient, user: User) -> None:
    sent = {
        "title": "t" * 200,
        "metadata": {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)},
    }
    response = await client.post("/api/conversations", json=sent, headers=user.headers)
    assert response.status_code == 201, response.text
    body = assert_conversation(response.json())
    assert body["title"] == sent["title"] and body["metadata"] == sent["metadata"]


async def test_conversation_times_are_rfc3339_with_offset(
    client: httpx.AsyncClient, user: User
) -> None:
    body = await create_conversation(client, user)
    for field in ("created_at", "updated_at"):
        value = body[field]
        assert value.endswith("Z") or value[-6] in "+-", value
        assert dt.datetime.fromisoformat(value).utcoffset() == dt.timedelta(0)


# -- get ------------------------------------------------------------------------


async def test_get_returns_the_created_conversation(client: httpx.AsyncClient, user: User) -> None:
    created = await create_conversation(client, user, {"title": "x", "metadata": {"k": "v"}})
    response = await client.get(f"/api/conversations/{created['id']}", headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.json() == created


async def test_get_unknown_conversation_is_404(client: httpx.AsyncClient, user: User) -> None:
    response = await client.get(f"/api/conversations/{uuid.uuid4()}", headers=user.headers)
    assert_error(response, 404, "not_found")


async def test_message_count_follows_messages(client: httpx.AsyncClient, user: User) -> None:
    created = await create_conversation(client, user)
    await append(client, user, created["id"], user_message("a"), user_message("b"))
    path = f"/api/conversations/{created['id']}"
    assert (await client.get(path, headers=user.headers)).json()["message_count"] == 2
    deleted = await client.delete(f"{path}/messages/1", headers=user.headers)
    assert deleted.status_code == 204
    assert (await client.get(path, headers=user.headers)).json()["message_count"] == 1


# -- patch ----------------------------------------------------------------------


async def patch(
    client: httpx.AsyncClient, user: User, conversation_id: str, body: Any
) -> httpx.Response:
    return await client.patch(
        f"/api/conversations/{conversation_id}", json=body, headers=user.headers
    )


async def test_patch_title_only_keeps_metadata(client: httpx.AsyncClient, user: User) -> None:
    created = await create_conversation(client, user, {"title": "old", "metadata": {"k": "v"}})
    response = await patch(client, user, created["id"], {"title": "new"})
    assert response.status_code == 200, response.text
    body = assert_conversation(response.json())
    assert body["title"] == "new"
    assert body["metadata"] == {"k": "v"}
    assert body["created_at"] == created["created_at"]
    assert dt.datetime.fromisoformat(body["updated_at"]) > dt.datetime.fromisoformat(
        created["updated_at"]
    )
    got = await client.get(f"/api/conversations/{created['id']}", headers=user.headers)
    assert got.json() == body


async def test_patch_metadata_only_replaces_it_and_keeps_title(
    client: httpx.AsyncClient, user: User
) -> None:
    created = await create_conversation(client, user, {"title": "t", "metadata": {"a": "1"}})
    response = await patch(client, user, created["id"], {"metadata": {"b": "2"}})
    assert response.status_code == 200, response.text
    body = assert_conversation(response.json())
    assert body["title"] == "t"
    assert body["metadata"] == {"b": "2"}  # replaced whole, not merged
    cleared = await patch(client, user, created["id"], {"metadata": {}})
    assert cleared.status_code == 200 and cleared.json()["metadata"] == {}


async def test_patch_title_null_clears_it(client: httpx.AsyncClient, user: User) -> None:
    created = await create_conversation(client, user, {"title": "t", "metadata": {"a": "1"}})
    response = await patch(client, user, created["id"], {"title": None})
    assert response.status_code == 200, response.text
    assert response.json()["title"] is None
    assert response.json()["metadata"] == {"a": "1"}


async def test_patch_empty_object_changes_nothing(client: httpx.AsyncClient, user: User) -> None:
    created = await create_conversation(client, user, {"title": "t", "metadata": {"a": "1"}})
    response = await patch(client, user, created["id"], {})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["title"], body["metadata"]) == ("t", {"a": "1"})


async def test_patch_unknown_field_is_422(client: httpx.AsyncClient, user: User) -> None:
    created = await create_conversation(client, user, {"title": "t"})
    response = await patch(client, user, created["id"], {"title": "u", "colour": "red"})
    assert_validation_error(response, "colour")
    got = await client.get(f"/api/conversations/{created['id']}", headers=user.headers)
    assert got.json() == created


async def test_patch_metadata_null_is_422(client: httpx.AsyncClient, user: User) -> None:
    created = await create_conversation(client, user, {"metadata": {"a": "1"}})
    response = await patch(client, user, created["id"], {"metadata": None})
    assert_validation_error(response, "metadata")
    got = await client.get(f"/api/conversations/{created['id']}", headers=user.headers)
    assert got.json() == created


async def test_patch_title_too_long_is_422(client: httpx.AsyncClient, user: User) -> None:
    created = await create_conversation(client, user)
    assert_validation_error(await patch(client, user, created["id"], {"title": "t" * 201}), "title")


# -- delete ---------------------------------------------------------------------


async def test_delete_is_204_then_gone_with_its_messages(
    client: httpx.AsyncClient, user: User, store: ChatStore
) -> None:
    created = await create_conversation(client, user)
    await append(client, user, created["id"], user_message("a"), user_message("b"))
    path = f"/api/conversations/{created['id']}"
    response = await client.delete(path, headers=user.headers)
    assert response.status_code == 204
    assert response.content == b""
    assert_error(await client.get(path, headers=user.headers), 404, "not_found")
    assert_error(await client.get(f"{path}/messages", headers=user.headers), 404, "not_found")
    assert_error(await client.get(f"{path}/messages/1", headers=user.headers), 404, "not_found")
    assert_error(await client.delete(path, headers=user.headers), 404, "not_found")
    left = await store.pool.fetchval(
        "SELECT count(*) FROM messages WHERE conversation_id = $1", uuid.UUID(created["id"])
    )
    assert left == 0


# -- list -----------------------------------------------------------------------


async def list_page(client: httpx.AsyncClient, user: User, **params: str | int) -> dict[str, Any]:
    response = await client.get("/api/conversations", params=params, headers=user.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"data", "next_cursor"}
    for conversation in body["data"]:
        assert_conversation(conversation)
    return body


async def test_list_is_newest_activity_first(client: httpx.AsyncClient, user: User) -> None:
    first = await create_conversation(client, user, {"title": "first"})
    second = await create_conversation(client, user, {"title": "second"})
    third = await create_conversation(client, user, {"title": "third"})
    page = await list_page(client, user)
    assert [c["id"] for c in page["data"]] == [third["id"], second["id"], first["id"]]
    assert page["next_cursor"] is None

    # Appending to the oldest moves it to the top, and its updated_at forward.
    await append(client, user, first["id"], user_message("bump"))
    page = await list_page(client, user)
    assert [c["id"] for c in page["data"]] == [first["id"], third["id"], second["id"]]
    assert dt.datetime.fromisoformat(page["data"][0]["updated_at"]) > dt.datetime.fromisoformat(
        first["updated_at"]
    )
    assert page["data"][0]["message_count"] == 1

    # So does a PATCH of the one now last.
    await patch(client, user, second["id"], {"title": "renamed"})
    page = await list_page(client, user)
    assert [c["id"] for c in page["data"]] == [second["id"], first["id"], third["id"]]


async def test_list_default_limit_is_20(client: httpx.AsyncClient, user: User) -> None:
    await asyncio.gather(*(create_conversation(client, user) for _ in range(21)))
    page = await list_page(client, user)
    assert len(page["data"]) == 20
    assert page["next_cursor"] is not None


async def test_paging_walks_every_conversation_once(client: httpx.AsyncClient, user: User) -> None:
    created = [await create_conversation(client, user, {"title": f"c{i}"}) for i in range(45)]
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 7}
        if cursor is not None:
            params["cursor"] = cursor
        page = await list_page(client, user, **params)
        pages += 1
        seen.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page["data"]) == 7
        assert pages < 20, "paging does not end"
    assert pages == 7
    assert len(page["data"]) == 3
    ids = [c["id"] for c in seen]
    assert len(ids) == len(set(ids)) == 45
    assert set(ids) == {c["id"] for c in created}
    # Sorted by (updated_at desc, id desc) across page boundaries.
    keys = [(dt.datetime.fromisoformat(c["updated_at"]), uuid.UUID(c["id"])) for c in seen]
    assert keys == sorted(keys, reverse=True)
    assert ids == [c["id"] for c in reversed(created)]


async def test_paging_stays_consistent_when_a_seen_conversation_moves_to_the_top(
    client: httpx.AsyncClient, user: User
) -> None:
    created = [await create_conversation(client, user) for _ in range(6)]
    first = await list_page(client, user, limit=3)
    # The newest conversation gets new activity after the first page was read.
    await append(client, user, created[-1]["id"], user_message("late"))
    second = await list_page(client, user, limit=3, cursor=first["next_cursor"])
    ids = [c["id"] for c in first["data"] + second["data"]]
    assert len(ids) == len(set(ids)) == 6


async def test_last_page_exactly_full_has_no_next_cursor(
    client: httpx.AsyncClient, user: User
) -> None:
    for _ in range(4):
        await create_conversation(client, user)
    first = await list_page(client, user, limit=2)
    assert first["next_cursor"] is not None
    second = await list_page(client, user, limit=2, cursor=first["next_cursor"])
    assert len(second["data"]) == 2
    assert second["next_cursor"] is None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD_CURSORS = [
    "",
    "x",
    "not-a-cursor",
    "!!!!",
    "A" * 500,
    _b64(b"not json"),
    _b64(b"[]"),
    _b64(b"{}"),
    _b64(b'["2026-01-01T00:00:00+00:00"]'),
    _b64(json.dumps(["2026-01-01T00:00:00", str(uuid.uuid4())]).encode()),  # no offset
    _b64(json.dumps(["yesterday", str(uuid.uuid4())]).encode()),
    _b64(json.dumps(["2026-01-01T00:00:00+00:00", "nope"]).encode()),
    _b64(json.dumps(["2026-01-01T00:00:00+00:00", str(uuid.uuid4()), 1]).encode()),
    _b64(json.dumps([1, 2]).encode()),
    _b64(json.dumps([None, None]).encode()),
    _b64(json.dumps(["99999-01-01T00:00:00+00:00", str(uuid.uuid4())]).encode()),
    _b64(b"\xff\xfe"),
]


@pytest.mark.parametrize("cursor", BAD_CURSORS)
async def test_bad_cursor_is_422(client: httpx.AsyncClient, user: User, cursor: str) -> None:
    response = await client.get(
        "/api/conversations", params={"cursor": cursor}, headers=user.headers
    )
    assert_validation_error(response, "cursor")


@pytest.mark.parametrize("limit", ["0", "101", "x", "-1", "1.5", "", " 5", "+5", "1e1", "0x10"])
async def test_bad_limit_is_422(client: httpx.AsyncClient, user: User, limit: str) -> None:
    response = await client.get("/api/conversations", params={"limit": limit}, headers=user.headers)
    assert_validation_error(response, "limit")


@pytest.mark.parametrize("limit", ["1", "100"])
async def test_limit_bounds_are_accepted(client: httpx.AsyncClient, user: User, limit: str) -> None:
    response = await client.get("/api/conversations", params={"limit": limit}, headers=user.headers)
    assert response.status_code == 200, response.text


async def test_updated_at_moves_forward_on_every_change(
    client: httpx.AsyncClient, user: User
) -> None:
    created = await create_conversation(client, user)
    path = f"/api/conversations/{created['id']}"
    stamps = [dt.datetime.fromisoformat(created["updated_at"])]

    async def changed() -> None:
        body = (await client.get(path, headers=user.headers)).json()
        stamps.append(dt.datetime.fromisoformat(body["updated_at"]))
        assert stamps[-1] > stamps[-2], stamps

    await append(client, user, created["id"], user_message("a"), user_message("b"))
    await changed()
    await append(client, user, created["id"], user_message("c"))
    await changed()
    assert (await client.delete(f"{path}/messages/3", headers=user.headers)).status_code == 204
    await changed()
    truncated = await client.delete(f"{path}/messages?from_seq=2", headers=user.headers)
    assert truncated.json() == {"deleted": 1}
    await changed()
    assert (await patch(client, user, created["id"], {"title": "t"})).status_code == 200
    await changed()
    assert (await client.get(path, headers=user.headers)).json()["created_at"] == created[
        "created_at"
    ]
