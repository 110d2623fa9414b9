"""Deleted content leaves no copy in idempotency_keys.

A completed key stores its response (titles, message contents) to replay for
24 hours. Deleting a conversation, a message, a range of messages (truncate)
or a user deletes the keys whose responses could hold that content, in the
delete's own transaction; a repeat of such a key afterwards is answered as a
fresh request would be, never replayed.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

import httpx
from support.app import app_client
from support.contract import assert_error, assert_status
from support.users import User, new_key

from chatstore.config import Settings
from chatstore.store import ChatStore

REPLAYED = "Idempotent-Replayed"


def secret(what: str) -> str:
    """Content found nowhere else in the database."""
    return f"{what}-{secrets.token_hex(12)}"


async def copies(store: ChatStore, text: str) -> int:
    """Rows of idempotency_keys (every user's) whose text holds ``text``."""
    count: int = await store.pool.fetchval(
        "SELECT count(*) FROM idempotency_keys AS k WHERE strpos(k::text, $1) > 0", text
    )
    return count


async def keyed_post(
    client: httpx.AsyncClient, user: User, key: str, path: str, body: dict[str, Any]
) -> httpx.Response:
    return await client.post(path, json=body, headers=user.with_key(key))


def assert_fresh(response: httpx.Response, status: int = 201) -> None:
    assert_status(response, status)
    assert REPLAYED.lower() not in response.headers, dict(response.headers)


async def test_deleting_a_conversation_leaves_no_copy_in_idempotency_keys(
    client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    title, appended, chatted = secret("title"), secret("appended"), secret("chatted")
    start = {"title": title}
    started = await keyed_post(client, user, (start_key := new_key()), "/api/chat/start", start)
    assert_fresh(started)
    conversation = started.json()["session_id"]
    append_path = f"/api/conversations/{conversation}/messages"
    append = {"role": "user", "content": appended}
    assert_fresh(await keyed_post(client, user, (append_key := new_key()), append_path, append))
    chat_path = f"/api/chat/{conversation}/message"
    chat = {"content": chatted}
    assert_fresh(await keyed_post(client, user, (chat_key := new_key()), chat_path, chat))
    for text in (title, appended, chatted):
        assert await copies(store, text) > 0, text  # the responses are stored

    deleted = await client.delete(f"/api/conversations/{conversation}", headers=user.headers)
    assert_status(deleted, 204)

    for text in (title, appended, chatted):
        assert await copies(store, text) == 0, text
    # Repeats are fresh requests: a new conversation; 404s for the deleted one.
    again = await keyed_post(client, user, start_key, "/api/chat/start", start)
    assert_fresh(again)
    assert again.json()["session_id"] != conversation
    assert_error(await keyed_post(client, user, append_key, append_path, append), 404, "not_found")
    assert_error(await keyed_post(client, user, chat_key, chat_path, chat), 404, "not_found")


async def test_deleting_a_message_leaves_no_copy_in_idempotency_keys(
    client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    conversation = (await store.create_conversation(user.user_id)).id
    path = f"/api/conversations/{conversation}/messages"
    doomed, kept = secret("doomed"), secret("kept")
    body = {"role": "user", "content": doomed}
    first = await keyed_post(client, user, (key := new_key()), path, body)
    assert_fresh(first)
    assert first.json()["seq"] == 1
    kept_body = {"role": "user", "content": kept}
    kept_first = await keyed_post(client, user, (kept_key := new_key()), path, kept_body)
    assert_fresh(kept_first)
    assert await copies(store, doomed) == 1

    deleted = await client.delete(f"{path}/1", headers=user.headers)
    assert_status(deleted, 204)

    assert await copies(store, doomed) == 0
    # The repeat is new work: the message is stored again, at a new seq.
    again = await keyed_post(client, user, key, path, body)
    assert_fresh(again)
    assert again.json()["seq"] == 3
    assert [m.content for m in (await store.list_messages(user.user_id, conversation)).data] == [
        kept,
        doomed,
    ]
    # A key whose response holds only messages that are still there replays.
    kept_again = await keyed_post(client, user, kept_key, path, kept_body)
    assert kept_again.headers.get(REPLAYED) == "true"
    assert kept_again.content == kept_first.content


async def test_truncating_messages_leaves_no_copy_in_idempotency_keys(
    client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    conversation = (await store.create_conversation(user.user_id)).id
    path = f"/api/chat/{conversation}/message"
    kept, asked = secret("kept"), secret("asked")
    kept_body = {"content": kept}
    kept_first = await keyed_post(client, user, (kept_key := new_key()), path, kept_body)
    assert_fresh(kept_first)  # seqs 1 and 2
    body = {"content": asked}
    first = await keyed_post(client, user, (key := new_key()), path, body)
    assert_fresh(first)  # seqs 3 and 4
    assert await copies(store, asked) == 1

    truncated = await client.delete(
        f"/api/conversations/{conversation}/messages",
        params={"from_seq": 3},
        headers=user.headers,
    )
    assert_status(truncated, 200)

    assert await copies(store, asked) == 0
    again = await keyed_post(client, user, key, path, body)
    assert_fresh(again)
    assert [again.json()["user_message"]["seq"], again.json()["reply"]["seq"]] == [5, 6]
    assert [m.content for m in (await store.list_messages(user.user_id, conversation)).data] == [
        kept,
        kept,  # the echo responder's reply
        asked,
        asked,
    ]
    # The exchange before the truncation point still replays.
    kept_again = await keyed_post(client, user, kept_key, path, kept_body)
    assert kept_again.headers.get(REPLAYED) == "true"
    assert kept_again.content == kept_first.content


async def test_deleting_a_user_leaves_no_copy_in_idempotency_keys(
    settings: Settings, store: ChatStore, user: User
) -> None:
    # An app whose auth cache outlives the test: a session stays usable for
    # a moment after its user is deleted (up to CHATSTORE_AUTH_CACHE_SECONDS
    # in production), the case where a repeat could still reach the keys.
    remembering = dataclasses.replace(settings, auth_cache_seconds=600)
    async with app_client(remembering, store) as client:
        title, chatted = secret("title"), secret("chatted")
        started = await keyed_post(client, user, new_key(), "/api/chat/start", {"title": title})
        assert_fresh(started)
        path = f"/api/chat/{started.json()['session_id']}/message"
        body = {"content": chatted}
        assert_fresh(await keyed_post(client, user, (key := new_key()), path, body))
        assert await copies(store, title) == 1 and await copies(store, chatted) == 1

        await store.pool.execute('DELETE FROM "user" WHERE id = $1', user.user_id)

        assert await copies(store, title) == 0 and await copies(store, chatted) == 0
        left = await store.pool.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE user_id = $1", user.user_id
        )
        assert left == 0
        # The repeat is answered as the same request without a key is, never
        # replayed: 401 once the session's revocation has reached this process
        # (migration 0008 notifies it at once), or 404 in the moment before
        # (the conversation went with its user).
        fresh = await client.post(path, json=body, headers=user.headers)
        repeat = await keyed_post(client, user, key, path, body)
        for response in (fresh, repeat):
            error = assert_error(response)
            expected = {(401, "unauthorized"), (404, "not_found")}
            assert (response.status_code, error["code"]) in expected, response.text
            assert REPLAYED.lower() not in response.headers
        assert await copies(store, chatted) == 0
