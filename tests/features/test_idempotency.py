"""Idempotency-Key on the four POST endpoints, and in the Python API.

A repeat of the same request by the same user with the same key replays
the first status and body with ``Idempotent-Replayed: true`` and stores
nothing; the same key with another request is 409; keys are per user; a
refused request leaves no record; concurrent repeats do the work once; an
expired key is taken over; the purge deletes a bounded batch of expired keys.
(Two server processes sharing keys: test_multiprocess.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from typing import Any

import httpx
import pytest
from support.contract import assert_error, assert_status
from support.users import MakeUser, User, new_key

from chatstore import idempotency
from chatstore.errors import IdempotencyConflict
from chatstore.store import ChatStore

REPLAYED = "Idempotent-Replayed"

KINDS = ["create_conversation", "append_one", "append_list", "chat_start", "chat_message"]


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """One POST endpoint, ready to be called by one caller."""

    path: str
    body: dict[str, Any]
    other_body: dict[str, Any]  # a different request to the same path
    other_path: str  # the same body sent elsewhere is a different request
    invalid_body: dict[str, Any]  # refused (422) before any work
    conversations: int  # rows the request stores
    messages: int


async def target(kind: str, store: ChatStore, user: User) -> Target:
    """The endpoint ``kind`` for ``caller``, with the conversations it needs."""
    if kind in ("create_conversation", "chat_start"):
        here, there = "/api/conversations", "/api/chat/start"
        if kind == "chat_start":
            here, there = there, here
        return Target(
            path=here,
            body={"title": "first", "metadata": {"k": "v"}},
            other_body={"title": "second", "metadata": {"k": "v"}},
            other_path=there,
            invalid_body={"title": "first", "bogus": 1},
            conversations=1,
            messages=0,
        )
    conversation = await store.create_conversation(user.user_id, title=kind)
    elsewhere = await store.create_conversation(user.user_id, title=f"{kind} elsewhere")
    if kind == "chat_message":
        return Target(
            path=f"/api/chat/{conversation.id}/message",
            body={"content": "hello"},
            other_body={"content": "goodbye"},
            other_path=f"/api/chat/{elsewhere.id}/message",
            invalid_body={"content": "hello", "bogus": 1},
            conversations=0,
            messages=2,
        )
    one = {"role": "user", "content": "hello", "metadata": {"k": "v"}}
    two = {"role": "assistant", "content": "hi there"}
    if kind == "append_one":
        return Target(
            path=f"/api/conversations/{conversation.id}/messages",
            body=one,
            other_body={**one, "content": "goodbye"},
            other_path=f"/api/conversations/{elsewhere.id}/messages",
            invalid_body={**one, "bogus": 1},
            conversations=0,
            messages=1,
        )
    assert kind == "append_list", kind
    return Target(
        path=f"/api/conversations/{conversation.id}/messages",
        body={"messages": [one, two]},
        other_body={"messages": [one, {**two, "content": "bye"}]},
        other_path=f"/api/conversations/{elsewhere.id}/messages",
        invalid_body={"messages": [one, {**two, "bogus": 1}]},
        conversations=0,
        messages=2,
    )


async def stored(store: ChatStore, user_id: str) -> tuple[int, int]:
    """(conversations, messages) of the user."""
    row = await store.pool.fetchrow(
        """
        SELECT (SELECT count(*) FROM conversations WHERE user_id = $1) AS conversations,
               (SELECT count(*) FROM messages WHERE user_id = $1) AS messages
        """,
        user_id,
    )
    assert row is not None
    return row["conversations"], row["messages"]


def plus(counts: tuple[int, int], t: Target, times: int = 1) -> tuple[int, int]:
    return counts[0] + times * t.conversations, counts[1] + times * t.messages


def assert_first(response: httpx.Response) -> None:
    assert_status(response, 201)
    assert REPLAYED.lower() not in response.headers, dict(response.headers)


def assert_replay_of(first: httpx.Response, repeat: httpx.Response) -> None:
    assert repeat.status_code == first.status_code, repeat.text
    assert repeat.headers.get(REPLAYED) == "true", dict(repeat.headers)
    assert repeat.content == first.content
    assert repeat.headers["content-type"] == first.headers["content-type"]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_repeat_replays_the_first_response_and_stores_nothing(
    kind: str, client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    t = await target(kind, store, user)
    key = new_key()
    before = await stored(store, user.user_id)

    first = await client.post(t.path, json=t.body, headers=user.with_key(key))
    assert_first(first)
    after_first = await stored(store, user.user_id)
    assert after_first == plus(before, t)

    for _ in range(2):
        repeat = await client.post(t.path, json=t.body, headers=user.with_key(key))
        assert_replay_of(first, repeat)
    assert await stored(store, user.user_id) == after_first


async def test_a_repeat_with_other_key_order_and_whitespace_is_the_same_request(
    client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    t = await target("append_one", store, user)
    key = new_key()
    first = await client.post(
        t.path,
        content=b'{"role": "user", "content": "hello", "metadata": {"k": "v"}}',
        headers={**user.with_key(key), "content-type": "application/json"},
    )
    assert_first(first)
    repeat = await client.post(
        t.path,
        content=b'{ "metadata":{"k":"v"},\n "content":"hello","role":"user" }',
        headers={**user.with_key(key), "content-type": "application/json"},
    )
    assert_replay_of(first, repeat)
    assert await stored(store, user.user_id) == (2, 1)


@pytest.mark.parametrize("kind", KINDS)
async def test_the_same_key_with_a_different_body_is_a_conflict(
    kind: str, client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    t = await target(kind, store, user)
    key = new_key()
    first = await client.post(t.path, json=t.body, headers=user.with_key(key))
    assert_first(first)
    after_first = await stored(store, user.user_id)

    conflict = await client.post(t.path, json=t.other_body, headers=user.with_key(key))
    assert_error(conflict, 409, "idempotency_conflict")
    assert REPLAYED.lower() not in conflict.headers
    assert await stored(store, user.user_id) == after_first
    # The key still replays its own request.
    assert_replay_of(first, await client.post(t.path, json=t.body, headers=user.with_key(key)))


@pytest.mark.parametrize("kind", KINDS)
async def test_the_same_key_on_a_different_path_is_a_conflict(
    kind: str, client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    t = await target(kind, store, user)
    key = new_key()
    assert_first(await client.post(t.path, json=t.body, headers=user.with_key(key)))
    after_first = await stored(store, user.user_id)

    conflict = await client.post(t.other_path, json=t.body, headers=user.with_key(key))
    assert_error(conflict, 409, "idempotency_conflict")
    assert await stored(store, user.user_id) == after_first


@pytest.mark.parametrize("kind", KINDS)
async def test_the_same_key_of_another_user_is_independent(
    kind: str, client: httpx.AsyncClient, store: ChatStore, user: User, other_user: User
) -> None:
    key = new_key()
    mine = await target(kind, store, user)
    theirs = await target(kind, store, other_user)
    my_before = await stored(store, user.user_id)
    their_before = await stored(store, other_user.user_id)

    a = await client.post(mine.path, json=mine.body, headers=user.with_key(key))
    b = await client.post(theirs.path, json=theirs.body, headers=other_user.with_key(key))
    assert_first(a)
    assert_first(b)
    assert a.content != b.content  # two resources, not one replayed to both
    assert await stored(store, user.user_id) == plus(my_before, mine)
    assert await stored(store, other_user.user_id) == plus(their_before, theirs)
    # Each user's key replays that user's own response.
    assert_replay_of(a, await client.post(mine.path, json=mine.body, headers=user.with_key(key)))
    assert_replay_of(
        b, await client.post(theirs.path, json=theirs.body, headers=other_user.with_key(key))
    )


BAD_KEYS: list[tuple[str, str | bytes]] = [
    ("empty", ""),
    ("256 characters", "k" * 256),
    ("non-ASCII", "clé-é".encode()),
    ("control character", "a\x01b"),
    ("tab", "a\tb"),
    ("DEL", "a\x7fb"),
]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_bad_key_is_refused_and_nothing_is_stored(
    kind: str, client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    t = await target(kind, store, user)
    before = await stored(store, user.user_id)
    for name, key in BAD_KEYS:
        raw = key if isinstance(key, bytes) else key.encode()
        headers = [(b"authorization", f"Bearer {user.token}".encode()), (b"idempotency-key", raw)]
        response = await client.post(t.path, json=t.body, headers=headers)
        # A malformed key is a rule broken by well-formed input: 422, like any other.
        error = assert_error(response, 422)
        assert error["code"] == "validation_error", (name, error)
        assert await stored(store, user.user_id) == before, name
    # The longest and the widest keys that are allowed.
    for key in ("k" * 255, " !~printable ASCII~! ", "x"):
        response = await client.post(t.path, json=t.body, headers=user.with_key(key))
        assert_first(response)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_request_refused_before_the_work_does_not_use_up_the_key(
    kind: str, client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    t = await target(kind, store, user)
    key = new_key()
    before = await stored(store, user.user_id)
    refused = await client.post(t.path, json=t.invalid_body, headers=user.with_key(key))
    assert_error(refused, 422, "validation_error")
    assert await stored(store, user.user_id) == before
    # The failed request left no record: another (valid) request with the
    # same key is new work, not a conflict and not a replay.
    done = await client.post(t.path, json=t.other_body, headers=user.with_key(key))
    assert_first(done)
    assert await stored(store, user.user_id) == plus(before, t)


async def test_a_request_that_fails_inside_the_work_does_not_use_up_the_key(
    client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    # Refused by the database after the key was claimed: the claim is
    # rolled back with the work.
    t = await target("append_one", store, user)
    key = new_key()
    before = await stored(store, user.user_id)
    orphan = {"role": "tool", "content": "42", "tool_call_id": "no-such-call"}
    refused = await client.post(t.path, json=orphan, headers=user.with_key(key))
    assert_error(refused, 422, "validation_error")
    assert await stored(store, user.user_id) == before
    done = await client.post(t.path, json=t.body, headers=user.with_key(key))
    assert_first(done)
    assert await stored(store, user.user_id) == plus(before, t)

    # A chat message to a conversation that does not exist: 404 from inside
    # the work; the same key then works on a real conversation.
    chat = await target("chat_message", store, user)
    key = new_key()
    before = await stored(store, user.user_id)
    missing = await client.post(
        f"/api/chat/{uuid.uuid4()}/message", json=chat.body, headers=user.with_key(key)
    )
    assert_error(missing, 404, "not_found")
    done = await client.post(chat.path, json=chat.body, headers=user.with_key(key))
    assert_first(done)
    assert await stored(store, user.user_id) == plus(before, chat)


@pytest.mark.parametrize("kind", KINDS)
async def test_concurrent_repeats_of_one_key_do_the_work_once(
    kind: str, client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    t = await target(kind, store, user)
    key = new_key()
    before = await stored(store, user.user_id)
    responses = await asyncio.gather(
        *(client.post(t.path, json=t.body, headers=user.with_key(key)) for _ in range(8))
    )
    for response in responses:
        assert_status(response, 201)
    assert len({response.content for response in responses}) == 1
    fresh = [r for r in responses if REPLAYED.lower() not in r.headers]
    replayed = [r for r in responses if r.headers.get(REPLAYED) == "true"]
    assert (len(fresh), len(replayed)) == (1, 7)
    assert await stored(store, user.user_id) == plus(before, t)


async def expire(store: ChatStore, user_id: str, key: str) -> None:
    status = await store.pool.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second'"
        " WHERE user_id = $1 AND key = $2",
        user_id,
        key,
    )
    assert status == "UPDATE 1", status


@pytest.mark.parametrize("kind", KINDS)
async def test_an_expired_key_is_taken_over_by_a_new_request(
    kind: str, client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    t = await target(kind, store, user)
    key = new_key()
    before = await stored(store, user.user_id)
    first = await client.post(t.path, json=t.body, headers=user.with_key(key))
    assert_first(first)
    await expire(store, user.user_id, key)

    again = await client.post(t.path, json=t.body, headers=user.with_key(key))
    assert_first(again)
    assert again.content != first.content  # the work was done again
    assert await stored(store, user.user_id) == plus(before, t, times=2)
    # ... and the key now replays the new response, for another 24 hours.
    assert_replay_of(again, await client.post(t.path, json=t.body, headers=user.with_key(key)))
    expires_in = await store.pool.fetchval(
        "SELECT extract(epoch FROM expires_at - now()) FROM idempotency_keys"
        " WHERE user_id = $1 AND key = $2",
        user.user_id,
        key,
    )
    assert 24 * 3600 - 120 < float(expires_in) <= 24 * 3600

    # An expired key is free for a different request too: no conflict.
    await expire(store, user.user_id, key)
    other = await client.post(t.path, json=t.other_body, headers=user.with_key(key))
    assert_first(other)
    assert await stored(store, user.user_id) == plus(before, t, times=3)


async def test_purge_expired_deletes_at_most_a_batch_and_leaves_live_keys(
    store: ChatStore, new_user: MakeUser
) -> None:
    owner = await new_user()
    keys_of_owner = (
        "SELECT key, expires_at <= now() AS expired FROM idempotency_keys"
        " WHERE user_id = $1 ORDER BY key"
    )
    # One transaction: until it commits no other process's purger sees
    # these rows, and they are the oldest expired keys there are (a century
    # old), so they are the first that purge_expired takes.
    async with store.transaction() as connection:
        await connection.execute(
            """
            INSERT INTO idempotency_keys (user_id, key, fingerprint, status, response, expires_at)
            SELECT $1, 'expired-' || i, sha256(i::text::bytea), 201, '{}',
                   now() - interval '100 years' + i * interval '1 second'
            FROM generate_series(1, 5) AS i
            UNION ALL
            SELECT $1, 'live-' || i, sha256(i::text::bytea), 201, '{}',
                   now() + interval '1 hour'
            FROM generate_series(1, 2) AS i
            """,
            owner.user_id,
        )
        assert await idempotency.purge_expired(store, batch=3) == 3
        rows = await connection.fetch(keys_of_owner, owner.user_id)
        # The oldest three went.
        assert [(r["key"], r["expired"]) for r in rows] == [
            ("expired-4", True),
            ("expired-5", True),
            ("live-1", False),
            ("live-2", False),
        ]
        # Other (committed) expired keys may exist, so the second batch can
        # take more than ours; it takes no more than the batch.
        assert 2 <= await idempotency.purge_expired(store, batch=3) <= 3
        rows = await connection.fetch(keys_of_owner, owner.user_id)
        assert [r["key"] for r in rows] == ["live-1", "live-2"]
        assert await idempotency.purge_expired(store, batch=0) == 0
    # Live keys survive any number of purges.
    while await idempotency.purge_expired(store, batch=1000):
        pass
    remaining = await store.pool.fetch(keys_of_owner, owner.user_id)
    assert [r["key"] for r in remaining] == ["live-1", "live-2"]


async def test_python_api_append_messages_with_a_key_stores_once(
    store: ChatStore, user: User
) -> None:
    conversation = await store.create_conversation(user.user_id)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    first = await store.append_messages(
        user.user_id, conversation.id, messages, idempotency_key="k"
    )
    again = await store.append_messages(
        user.user_id, conversation.id, messages, idempotency_key="k"
    )
    assert again == first
    assert [m.seq for m in first] == [1, 2]
    assert await stored(store, user.user_id) == (1, 2)

    with pytest.raises(IdempotencyConflict):
        await store.append_messages(
            user.user_id, conversation.id, messages[:1], idempotency_key="k"
        )
    with pytest.raises(IdempotencyConflict):
        await store.append_messages(
            user.user_id,
            conversation.id,
            messages,
            expected_last_seq=0,
            idempotency_key="k",
        )
    assert await stored(store, user.user_id) == (1, 2)
    # The single-message form is the same operation as a batch of one.
    one = await store.append_message(
        user.user_id, conversation.id, messages[0], idempotency_key="one"
    )
    assert [one] == await store.append_messages(
        user.user_id, conversation.id, messages[:1], idempotency_key="one"
    )
    assert await stored(store, user.user_id) == (1, 3)


async def test_python_api_create_conversation_with_a_key_stores_once(
    store: ChatStore, user: User
) -> None:
    first = await store.create_conversation(user.user_id, title="t", idempotency_key="c")
    again = await store.create_conversation(user.user_id, title="t", idempotency_key="c")
    assert again == first
    with pytest.raises(IdempotencyConflict):
        await store.create_conversation(user.user_id, title="other", idempotency_key="c")
    assert await stored(store, user.user_id) == (1, 0)


async def test_the_purge_loop_logs_an_unexpected_failure_with_its_traceback_and_keeps_going(
    store: ChatStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The loop is the process's only purger: a bug in one round must not end
    # it silently for the process's life.
    monkeypatch.setattr(idempotency, "PURGE_EVERY_SECONDS", 0.01)
    rounds = 0

    async def purge_expired(source: object, batch: int = idempotency.PURGE_BATCH) -> int:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise RuntimeError("a bug in the purge")
        return 0

    monkeypatch.setattr(idempotency, "purge_expired", purge_expired)
    purging = asyncio.create_task(idempotency.purge_forever(store.db))
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while rounds < 3 and not purging.done():
            assert asyncio.get_running_loop().time() < deadline, "the purge stopped looping"
            await asyncio.sleep(0.01)
        assert not purging.done(), purging
    finally:
        purging.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await purging
    (failed,) = [r for r in caplog.records if r.name == "chatstore.http" and r.exc_info]
    assert failed.levelname == "ERROR"
    assert failed.exc_info is not None and isinstance(failed.exc_info[1], RuntimeError)
