"""An idempotent chat message holds nothing while the responder thinks.

POST /api/chat/{id}/message with an Idempotency-Key commits a pending claim
(with a lease), stores the user's message (and its seq on the claim) in one
short transaction, asks the responder holding nothing, then stores the reply
and completes the key in one transaction. These tests show that no
pooled connection and no open transaction is held across the responder, that
the exchange is still stored exactly once, that a repeat of a pending key
waits (holding nothing) and then replays or answers 409
idempotency_in_progress, that a dead holder's claim is free after its lease,
and that a failed turn lets the key go but keeps its stored user message
for the retry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
from support.app import app_client
from support.contract import assert_error, assert_status
from support.users import MakeUser, User, new_key

from chatstore import idempotency, metrics
from chatstore.config import Settings
from chatstore.models import Message, MessageInput
from chatstore.store import ChatStore

REPLAYED = "Idempotent-Replayed"
POOL_SIZE = 4
# Bounded waits, generous for a loaded machine: never a timing assertion.
PATIENCE_SECONDS = 60.0


class SleepingResponder:
    """A responder that takes its time: it sleeps until the test wakes it
    (at most PATIENCE_SECONDS), then echoes. ``thinking`` counts the calls
    that are asleep right now."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.thinking = 0
        self.calls = 0

    async def respond(self, history: Sequence[Message], message: MessageInput) -> MessageInput:
        self.calls += 1
        self.thinking += 1
        try:
            await asyncio.wait_for(self.wake.wait(), PATIENCE_SECONDS)
        finally:
            self.thinking -= 1
        return MessageInput(role="assistant", content=f"you said {message.content}")

    async def until_thinking(self, count: int) -> None:
        """Until ``count`` calls are asleep in the responder at once."""
        deadline = asyncio.get_running_loop().time() + PATIENCE_SECONDS
        while self.thinking < count:
            assert asyncio.get_running_loop().time() < deadline, (
                f"only {self.thinking} of {count} chats reached the responder"
                " (the others are waiting for a connection?)"
            )
            await asyncio.sleep(0.02)


class FailingResponder:
    def __init__(self) -> None:
        self.calls = 0

    async def respond(self, history: Sequence[Message], message: MessageInput) -> MessageInput:
        self.calls += 1
        raise RuntimeError("the model is down")


@pytest.fixture
async def small_store(database: str, settings: Settings) -> AsyncIterator[ChatStore]:
    """A store of its own with a pool of POOL_SIZE connections, on the
    suite's database (directly, never through a test pooler)."""
    small = dataclasses.replace(
        settings, pool_min_size=1, pool_max_size=POOL_SIZE, acquire_timeout_seconds=2.0
    )
    async with ChatStore(database, settings=small) as opened:
        yield opened


@pytest.fixture
def responder() -> SleepingResponder:
    return SleepingResponder()


@pytest.fixture
async def slow_client(
    small_store: ChatStore, responder: SleepingResponder
) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(small_store.settings, small_store, responder=responder) as client:
        yield client


async def idle_in_transaction(store: ChatStore) -> int:
    """Sessions of the test database sitting in an open transaction."""
    count: int = await store.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
    )
    return count


async def messages_of(store: ChatStore, conversation_id: str) -> list[str]:
    rows = await store.pool.fetch(
        "SELECT content FROM messages WHERE conversation_id = $1 ORDER BY seq",
        conversation_id,
    )
    return [row["content"] for row in rows]


def replays() -> float:
    value = metrics.REGISTRY.get_sample_value("chatstore_idempotent_replays_total")
    return value or 0.0


def chat_path(conversation_id: str) -> str:
    return f"/api/chat/{conversation_id}/message"


async def test_no_connection_or_transaction_is_held_while_the_responder_thinks(
    slow_client: httpx.AsyncClient,
    store: ChatStore,
    responder: SleepingResponder,
    user: User,
    other_user: User,
) -> None:
    # More idempotent chats than the pool has connections, each asleep in the
    # responder at once, plus repeats of the first key.
    chats = POOL_SIZE + 2
    repeats = 4
    conversations = [
        str((await store.create_conversation(user.user_id, title=f"chat {i}")).id)
        for i in range(chats)
    ]
    keys = [new_key() for _ in range(chats)]
    replays_before = replays()

    firsts = [
        asyncio.create_task(
            slow_client.post(
                chat_path(conversation),
                json={"content": f"question {i}"},
                headers=user.with_key(key),
            )
        )
        for i, (conversation, key) in enumerate(zip(conversations, keys, strict=True))
    ]
    await responder.until_thinking(chats)
    again = [
        asyncio.create_task(
            slow_client.post(
                chat_path(conversations[0]),
                json={"content": "question 0"},
                headers=user.with_key(keys[0]),
            )
        )
        for _ in range(repeats)
    ]
    try:
        # Meanwhile another user is served at once (the pool is not held) ...
        listed = await asyncio.wait_for(
            slow_client.get("/api/conversations", headers=other_user.headers), PATIENCE_SECONDS
        )
        assert_status(listed, 200)
        assert responder.thinking == chats, "the chats were still thinking"
        # ... and no session sits in an open transaction, however often we look.
        for _ in range(5):
            assert await idle_in_transaction(store) == 0
            await asyncio.sleep(0.05)
        assert responder.thinking == chats
    finally:
        responder.wake.set()
    answered = await asyncio.gather(*firsts)
    repeated = await asyncio.gather(*again)

    # Exactly once: each key's exchange is stored once, the repeats replay it.
    for i, response in enumerate(answered):
        assert_status(response, 201)
        assert REPLAYED.lower() not in response.headers
        assert await messages_of(store, conversations[i]) == [
            f"question {i}",
            f"you said question {i}",
        ]
    for response in repeated:
        assert_status(response, 201)
        assert response.headers.get(REPLAYED) == "true"
        assert response.content == answered[0].content
    assert responder.calls == chats
    assert replays() - replays_before == repeats


async def test_concurrent_repeats_of_a_pending_chat_key_store_the_exchange_once(
    slow_client: httpx.AsyncClient, store: ChatStore, responder: SleepingResponder, user: User
) -> None:
    conversation = str((await store.create_conversation(user.user_id)).id)
    key = new_key()
    requests = [
        asyncio.create_task(
            slow_client.post(
                chat_path(conversation), json={"content": "once"}, headers=user.with_key(key)
            )
        )
        for _ in range(POOL_SIZE * 2)
    ]
    await responder.until_thinking(1)
    # Give the others every chance to be let in too; none is.
    await asyncio.sleep(0.3)
    assert responder.calls == 1
    responder.wake.set()
    responses = await asyncio.gather(*requests)
    for response in responses:
        assert_status(response, 201)
    assert len({response.content for response in responses}) == 1
    assert sum(REPLAYED.lower() not in r.headers for r in responses) == 1
    assert await messages_of(store, conversation) == ["once", "you said once"]


async def test_a_repeat_of_a_pending_key_waits_a_bounded_time_then_answers_in_progress(
    slow_client: httpx.AsyncClient,
    store: ChatStore,
    responder: SleepingResponder,
    user: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(idempotency, "WAIT_SECONDS", 0.5)
    conversation = str((await store.create_conversation(user.user_id)).id)
    key = new_key()
    body = {"content": "slow"}
    first = asyncio.create_task(
        slow_client.post(chat_path(conversation), json=body, headers=user.with_key(key))
    )
    try:
        await responder.until_thinking(1)
        waiting = await slow_client.post(
            chat_path(conversation), json=body, headers=user.with_key(key)
        )
        assert_error(waiting, 409, "idempotency_in_progress")
        assert waiting.headers.get("retry-after") == "1"
        # Another request with the key is a conflict at once, pending or not.
        other = await slow_client.post(
            chat_path(conversation), json={"content": "other"}, headers=user.with_key(key)
        )
        assert_error(other, 409, "idempotency_conflict")
        assert responder.calls == 1
    finally:
        responder.wake.set()
    done = await first
    assert_status(done, 201)
    replay = await slow_client.post(chat_path(conversation), json=body, headers=user.with_key(key))
    assert replay.headers.get(REPLAYED) == "true" and replay.content == done.content
    assert await messages_of(store, conversation) == ["slow", "you said slow"]


async def pending_claim(store: ChatStore, user: User, key: str, path: str, body: object) -> None:
    """The row a holder leaves behind when its process is killed while its
    responder thinks: a committed pending claim with a live lease."""
    await store.pool.execute(
        "INSERT INTO idempotency_keys (user_id, key, fingerprint, claim_token, expires_at)"
        " VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
        user.user_id,
        key,
        idempotency.fingerprint("POST", path, body),
        uuid.uuid4(),
        idempotency.LEASE_SECONDS,
    )


async def test_a_dead_holders_claim_is_claimable_again_after_its_lease(
    client: httpx.AsyncClient,
    store: ChatStore,
    user: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(idempotency, "WAIT_SECONDS", 0.3)
    conversation = str((await store.create_conversation(user.user_id)).id)
    key = new_key()
    body = {"content": "orphaned"}
    await pending_claim(store, user, key, chat_path(conversation), body)

    # Within the lease the holder may still be alive: nobody takes over.
    held = await client.post(chat_path(conversation), json=body, headers=user.with_key(key))
    assert_error(held, 409, "idempotency_in_progress")
    assert await messages_of(store, conversation) == []

    # The lease ran out without a renewal: the holder is dead, the key is free.
    await store.pool.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second'"
        " WHERE user_id = $1 AND key = $2",
        user.user_id,
        key,
    )
    taken = await client.post(chat_path(conversation), json=body, headers=user.with_key(key))
    assert_status(taken, 201)
    assert REPLAYED.lower() not in taken.headers
    replay = await client.post(chat_path(conversation), json=body, headers=user.with_key(key))
    assert replay.headers.get(REPLAYED) == "true" and replay.content == taken.content
    assert await messages_of(store, conversation) == ["orphaned", "orphaned"]  # echo


async def test_a_live_holder_keeps_its_claim_past_one_lease(
    slow_client: httpx.AsyncClient,
    store: ChatStore,
    responder: SleepingResponder,
    user: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A lease far shorter than the responder's sleep, renewed often.
    monkeypatch.setattr(idempotency, "LEASE_SECONDS", 2.0)
    monkeypatch.setattr(idempotency, "RENEW_SECONDS", 0.1)
    monkeypatch.setattr(idempotency, "WAIT_SECONDS", 0.3)
    conversation = str((await store.create_conversation(user.user_id)).id)
    key = new_key()
    body = {"content": "long thought"}
    first = asyncio.create_task(
        slow_client.post(chat_path(conversation), json=body, headers=user.with_key(key))
    )
    try:
        await responder.until_thinking(1)
        await asyncio.sleep(2 * idempotency.LEASE_SECONDS)
        waiting = await slow_client.post(
            chat_path(conversation), json=body, headers=user.with_key(key)
        )
        assert_error(waiting, 409, "idempotency_in_progress")
        assert responder.calls == 1
    finally:
        responder.wake.set()
    assert_status(await first, 201)
    assert await messages_of(store, conversation) == ["long thought", "you said long thought"]


async def test_an_idempotent_retry_of_a_failed_turn_does_not_store_the_user_message_twice(
    settings: Settings, client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    conversation = str((await store.create_conversation(user.user_id)).id)
    key = new_key()
    body = {"content": "try again"}
    failing = FailingResponder()
    async with app_client(settings, store, responder=failing) as down:
        for _ in range(2):
            failed = await down.post(chat_path(conversation), json=body, headers=user.with_key(key))
            assert_error(failed, 502, "responder_error")
    # Each retry reached the responder again (the claim was let go), for the
    # one user message the first attempt stored: the key remembers its seq.
    assert failing.calls == 2
    row = await store.pool.fetchrow(
        "SELECT status, claim_token, first_seq, last_seq FROM idempotency_keys"
        " WHERE user_id = $1 AND key = $2",
        user.user_id,
        key,
    )
    assert row is not None and dict(row) == {
        "status": None,
        "claim_token": None,
        "first_seq": 1,
        "last_seq": 1,
    }
    assert await messages_of(store, conversation) == ["try again"]

    retried = await client.post(chat_path(conversation), json=body, headers=user.with_key(key))
    assert_status(retried, 201)
    assert REPLAYED.lower() not in retried.headers
    assert retried.json()["user_message"]["seq"] == 1
    assert retried.json()["reply"]["seq"] == 2
    assert await messages_of(store, conversation) == ["try again", "try again"]  # echo, once
    # A replay after success answers the same.
    replay = await client.post(chat_path(conversation), json=body, headers=user.with_key(key))
    assert replay.headers.get(REPLAYED) == "true" and replay.content == retried.content
    # Another request with the key, after the failure, is still a conflict.
    other = await client.post(
        chat_path(conversation), json={"content": "other"}, headers=user.with_key(key)
    )
    assert_error(other, 409, "idempotency_conflict")


async def test_deleting_the_stored_user_message_of_a_failed_turn_forgets_the_key(
    settings: Settings, client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    conversation = str((await store.create_conversation(user.user_id)).id)
    key = new_key()
    body = {"content": "gone"}
    async with app_client(settings, store, responder=FailingResponder()) as down:
        failed = await down.post(chat_path(conversation), json=body, headers=user.with_key(key))
        assert_error(failed, 502, "responder_error")
    await store.delete_message(user.user_id, conversation, 1)
    retried = await client.post(chat_path(conversation), json=body, headers=user.with_key(key))
    assert_status(retried, 201)
    # New work: the message is stored again, after the deleted seq.
    assert (retried.json()["user_message"]["seq"], retried.json()["reply"]["seq"]) == (2, 3)
    assert await messages_of(store, conversation) == ["gone", "gone"]


async def test_a_chat_without_a_key_holds_no_transaction_either(
    slow_client: httpx.AsyncClient,
    store: ChatStore,
    responder: SleepingResponder,
    new_user: MakeUser,
) -> None:
    user = await new_user()
    conversations = [
        str((await store.create_conversation(user.user_id)).id) for _ in range(POOL_SIZE + 2)
    ]
    chats = [
        asyncio.create_task(
            slow_client.post(chat_path(c), json={"content": "no key"}, headers=user.headers)
        )
        for c in conversations
    ]
    try:
        await responder.until_thinking(len(conversations))
        assert await idle_in_transaction(store) == 0
        listed = await slow_client.get("/api/conversations", headers=user.headers)
        assert_status(listed, 200)
    finally:
        responder.wake.set()
    for response in await asyncio.gather(*chats):
        assert_status(response, 201)
