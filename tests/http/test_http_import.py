"""Import (http-api.md, "Import"): POST /api/conversations/import creates a
conversation from chat-completions messages or from chatstore's JSONL
export, atomically, under the rules of an append."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx
from support.app import app_client
from support.contract import assert_conversation, assert_error, assert_validation_error
from support.requests import append, create_conversation, tool_call
from support.users import User

from chatstore.config import Settings
from chatstore.imports import MAX_IMPORT_MESSAGES, import_conversation
from chatstore.store import ChatStore

IMPORT = "/api/conversations/import"
NDJSON = {"content-type": "application/x-ndjson"}

HISTORY: list[dict[str, Any]] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "weather?", "name": "ann"},
    {"role": "assistant", "content": None, "tool_calls": [tool_call("c1", "weather", '{"x":1}')]},
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    {"role": "assistant", "content": "It is sunny.", "metadata": {"model": "m1"}},
]


async def _conversations(client: httpx.AsyncClient, user: User) -> int:
    response = await client.get("/api/conversations", params={"limit": 100}, headers=user.headers)
    return len(response.json()["data"])


async def _export(client: httpx.AsyncClient, user: User, cid: str, fmt: str) -> httpx.Response:
    response = await client.get(
        f"/api/conversations/{cid}/export", params={"format": fmt}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    return response


def _lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines()]


async def test_import_of_an_openai_export_round_trips(
    client: httpx.AsyncClient, user: User
) -> None:
    original = await create_conversation(client, user)
    await append(client, user, original["id"], *HISTORY)
    exported = (await _export(client, user, original["id"], "openai")).json()

    response = await client.post(IMPORT, json=exported, headers=user.headers)
    assert response.status_code == 201, response.text
    imported = assert_conversation(response.json())
    assert imported["id"] != original["id"]
    assert imported["message_count"] == len(HISTORY)
    assert (await _export(client, user, imported["id"], "openai")).json() == exported


async def test_import_of_a_jsonl_export_round_trips_with_seqs_renumbered_from_1(
    client: httpx.AsyncClient, user: User
) -> None:
    original = await create_conversation(client, user)
    await append(client, user, original["id"], *HISTORY)
    # A gap: seq 2 deleted. The import's seqs are 1, 2, 3, 4.
    deleted = await client.delete(
        f"/api/conversations/{original['id']}/messages/2", headers=user.headers
    )
    assert deleted.status_code == 204
    exported = (await _export(client, user, original["id"], "jsonl")).content

    response = await client.post(IMPORT, content=exported, headers={**user.headers, **NDJSON})
    assert response.status_code == 201, response.text
    imported = assert_conversation(response.json())
    again = _lines((await _export(client, user, imported["id"], "jsonl")).content)

    def kept(line: dict[str, Any]) -> dict[str, Any]:
        # parent_seq names a seq: renumbered with them (one line, one branch).
        renumbered = ("conversation_id", "seq", "parent_seq", "created_at")
        return {k: v for k, v in line.items() if k not in renumbered}

    before = _lines(exported)
    assert [m["seq"] for m in before] == [1, 3, 4, 5]
    assert [m["seq"] for m in again] == [1, 2, 3, 4]
    assert [m["parent_seq"] for m in before] == [None, 1, 3, 4]
    assert [m["parent_seq"] for m in again] == [None, 1, 2, 3]
    assert {m["conversation_id"] for m in again} == {imported["id"]}
    assert [kept(m) for m in again] == [kept(m) for m in before]


async def test_import_keeps_title_and_metadata(client: httpx.AsyncClient, user: User) -> None:
    response = await client.post(
        IMPORT,
        json={"title": "moved", "metadata": {"from": "elsewhere"}, "messages": HISTORY[:2]},
        headers=user.headers,
    )
    created = assert_conversation(response.json())
    assert (created["title"], created["metadata"], created["message_count"]) == (
        "moved",
        {"from": "elsewhere"},
        2,
    )


async def test_import_of_no_messages_is_an_empty_conversation(
    client: httpx.AsyncClient, user: User
) -> None:
    response = await client.post(IMPORT, json={"messages": []}, headers=user.headers)
    assert assert_conversation(response.json())["message_count"] == 0
    empty = await client.post(IMPORT, content=b"", headers={**user.headers, **NDJSON})
    assert assert_conversation(empty.json())["message_count"] == 0


async def test_import_an_invalid_message_is_422_at_its_index_and_stores_nothing(
    client: httpx.AsyncClient, user: User
) -> None:
    before = await _conversations(client, user)
    # Past the first append batch (100): the import is one transaction.
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"m{i}"} for i in range(250)]
    messages[230] = {"role": "robot", "content": "x"}
    response = await client.post(IMPORT, json={"messages": messages}, headers=user.headers)
    assert_validation_error(response, "body", "messages", 230)
    assert await _conversations(client, user) == before


async def test_import_a_tool_message_answering_no_earlier_call_is_422_at_its_index(
    client: httpx.AsyncClient, user: User
) -> None:
    before = await _conversations(client, user)
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "nope", "content": "x"},
    ]
    response = await client.post(IMPORT, json={"messages": messages}, headers=user.headers)
    error = assert_validation_error(response, "body", "messages", 1, "tool_call_id")
    assert "nope" in error["message"] or "nope" in json.dumps(error["details"])
    # A call id used twice in the import: the second is refused.
    twice = [
        {"role": "assistant", "tool_calls": [tool_call("c1")]},
        {"role": "tool", "tool_call_id": "c1", "content": "x"},
        {"role": "assistant", "tool_calls": [tool_call("c1")]},
    ]
    response = await client.post(IMPORT, json={"messages": twice}, headers=user.headers)
    assert_validation_error(response, "body", "messages", 2, "tool_calls")
    assert await _conversations(client, user) == before


async def test_import_jsonl_an_invalid_line_is_422_at_its_index(
    client: httpx.AsyncClient, user: User
) -> None:
    before = await _conversations(client, user)
    lines = [{"role": "user", "content": "a"}, {"role": "user"}, {"role": "user", "content": "c"}]
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    response = await client.post(IMPORT, content=body, headers={**user.headers, **NDJSON})
    assert_validation_error(response, "body", 1)
    not_json = await client.post(
        IMPORT,
        content=b'{"role": "user", "content": "a"}\n{nope\n',
        headers={**user.headers, **NDJSON},
    )
    error = assert_error(not_json, 400, "invalid_json")
    assert error["message"].startswith("line 2:"), error
    assert await _conversations(client, user) == before


async def test_import_over_the_body_cap_is_413_in_either_format(
    settings: Settings, store: ChatStore, user: User
) -> None:
    small = dataclasses.replace(settings, max_body_bytes=1000)
    messages = [{"role": "user", "content": "x" * 100} for _ in range(20)]
    async with app_client(small, store) as client:
        response = await client.post(IMPORT, json={"messages": messages}, headers=user.headers)
        assert_error(response, 413, "payload_too_large")
        body = "".join(json.dumps(m) + "\n" for m in messages).encode()
        response = await client.post(IMPORT, content=body, headers={**user.headers, **NDJSON})
        assert_error(response, 413, "payload_too_large")


async def test_import_over_the_message_cap_is_422(client: httpx.AsyncClient, user: User) -> None:
    messages = [{"role": "user", "content": "x"}] * (MAX_IMPORT_MESSAGES + 1)
    response = await client.post(IMPORT, json={"messages": messages}, headers=user.headers)
    assert_validation_error(response, "body", "messages")


async def test_import_content_over_the_cap_is_422_at_its_index(
    settings: Settings, store: ChatStore, user: User
) -> None:
    capped = dataclasses.replace(settings, max_content_chars=10)
    async with app_client(capped, store) as client:
        messages = [{"role": "user", "content": "short"}, {"role": "user", "content": "x" * 11}]
        response = await client.post(IMPORT, json={"messages": messages}, headers=user.headers)
        assert_validation_error(response, "body", "messages", 1, "content")


async def test_import_in_another_media_type_is_415(client: httpx.AsyncClient, user: User) -> None:
    response = await client.post(
        IMPORT, content=b"{}", headers={**user.headers, "content-type": "text/plain"}
    )
    assert_error(response, 415, "unsupported_media_type")


async def test_import_with_an_idempotency_key_is_stored_once(
    client: httpx.AsyncClient, user: User
) -> None:
    key = {**user.headers, "Idempotency-Key": "import-once"}
    body = {"messages": HISTORY}
    first = await client.post(IMPORT, json=body, headers=key)
    assert first.status_code == 201, first.text
    again = await client.post(IMPORT, json=body, headers=key)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = await client.post(IMPORT, json={"messages": HISTORY[:1]}, headers=key)
    assert_error(other, 409, "idempotency_conflict")
    lines = "".join(json.dumps(m) + "\n" for m in HISTORY).encode()
    ndjson_key = {**user.headers, **NDJSON, "Idempotency-Key": "import-ndjson-once"}
    first = await client.post(IMPORT, content=lines, headers=ndjson_key)
    again = await client.post(IMPORT, content=lines, headers=ndjson_key)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


async def test_python_import_conversation(store: ChatStore, user_id: str) -> None:
    created = await import_conversation(store, user_id, HISTORY, title="py", idempotency_key="imp")
    assert created.message_count == len(HISTORY)
    replayed = await import_conversation(store, user_id, HISTORY, title="py", idempotency_key="imp")
    assert replayed.id == created.id
    page = await store.list_messages(user_id, created.id)
    assert [m.seq for m in page.data] == [1, 2, 3, 4, 5]
