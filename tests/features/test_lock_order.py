"""Every write takes the conversation's row lock before an idempotency key's.

A message delete, a truncate and a conversation delete (by ON DELETE
CASCADE) lock the conversation, then the keys whose responses hold its
messages. A writer that locked such a key first and the conversation second
would wait on them while they wait on it: a deadlock, which PostgreSQL
breaks by failing one side (a 503 to its client). These tests pause a
keyed writer just after it took the key's row, start each delete against
the same messages, wait until the delete is seen blocked on a lock, then
let the writer go: both must end cleanly.

The deletes run in a store of their own, as another server process's would:
one process's writers of a conversation wait for each other in the process
(chatstore/writers.py) and would never meet in the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any

import pytest
from support.databases import until_a_session_waits_on_a_lock
from support.users import User, new_key

from chatstore import chat_turn, idempotency, messages, turn_claim
from chatstore.models import ChatMessageInput, Message, MessageInput
from chatstore.store import ChatStore

# Bounded waits, generous for a loaded machine: never a timing assertion.
PATIENCE_SECONDS = 60.0


@pytest.fixture
async def elsewhere(store: ChatStore) -> AsyncIterator[ChatStore]:
    """Another process's store on the same database."""
    async with ChatStore(store.db.dsn, settings=store.settings) as opened:
        yield opened


class Echo:
    async def respond(self, history: Sequence[Message], message: MessageInput) -> MessageInput:
        return MessageInput(role="assistant", content=f"you said {message.content}")


def deletes(
    store: ChatStore, user_id: str, conversation: str
) -> dict[str, Callable[[], Coroutine[Any, Any, object]]]:
    """Each delete that takes the key of a message at seq 1."""
    return {
        "truncate": lambda: store.truncate_messages(user_id, conversation, 1),
        "message_delete": lambda: store.delete_message(user_id, conversation, 1),
        "conversation_delete": lambda: store.delete_conversation(user_id, conversation),
    }


class Pause:
    """Holds a writer at one point until the test lets it go."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.go = asyncio.Event()

    async def here(self) -> None:
        self.reached.set()
        await asyncio.wait_for(self.go.wait(), PATIENCE_SECONDS)

    async def race(
        self,
        store: ChatStore,
        writer: Awaitable[object],
        delete: Callable[[], Coroutine[Any, Any, object]],
    ) -> list[object]:
        async def delete_while_paused() -> object:
            await asyncio.wait_for(self.reached.wait(), PATIENCE_SECONDS)
            deleting: asyncio.Task[object] = asyncio.create_task(delete())
            await until_a_session_waits_on_a_lock(store.pool, PATIENCE_SECONDS, "the delete")
            self.go.set()
            return await deleting

        return list(await asyncio.gather(writer, delete_while_paused(), return_exceptions=True))


@pytest.mark.parametrize("delete", ["truncate", "message_delete", "conversation_delete"])
async def test_storing_a_keyed_chat_reply_takes_the_conversation_before_the_key(
    store: ChatStore,
    elsewhere: ChatStore,
    user: User,
    monkeypatch: pytest.MonkeyPatch,
    delete: str,
) -> None:
    conversation = str((await store.create_conversation(user.user_id)).id)
    turn = await chat_turn.begin(
        store,
        Echo(),
        user.user_id,
        conversation,
        ChatMessageInput(content="hi"),
        key=new_key(),
        request=idempotency.fingerprint("a chat turn"),
    )
    assert isinstance(turn, chat_turn.Turn)
    # The reply's transaction pauses once it holds the key's row (the user
    # message at seq 1 is stored and the key holds it).
    pause = Pause()
    hold = turn_claim.TurnClaim.hold

    async def paused_hold(claim: turn_claim.TurnClaim) -> bool:
        held = await hold(claim)
        await pause.here()
        return held

    monkeypatch.setattr(turn_claim.TurnClaim, "hold", paused_hold)
    try:
        stored, deleted = await pause.race(
            store, turn.finish(), deletes(elsewhere, user.user_id, conversation)[delete]
        )
    finally:
        await turn.close()
    # The reply was stored first, then the delete went through.
    assert not isinstance(stored, BaseException), repr(stored)
    assert not isinstance(deleted, BaseException), repr(deleted)
    left = await store.pool.fetch(
        "SELECT seq FROM messages WHERE conversation_id = $1 ORDER BY seq", conversation
    )
    assert [row["seq"] for row in left] == ([] if delete != "message_delete" else [2])


@pytest.mark.parametrize("delete", ["truncate", "message_delete", "conversation_delete"])
async def test_an_idempotent_append_takes_the_conversation_before_the_key(
    store: ChatStore,
    elsewhere: ChatStore,
    user: User,
    monkeypatch: pytest.MonkeyPatch,
    delete: str,
) -> None:
    # A key completed for seq 1, past its 24 hours but not purged yet: a
    # repeat of the key takes it over (locking its row) while its row still
    # says it holds seq 1, so each delete of seq 1 wants it too.
    conversation = str((await store.create_conversation(user.user_id)).id)
    key = new_key()
    first = MessageInput(role="user", content="first")
    await store.append_messages(user.user_id, conversation, [first], idempotency_key=key)
    await store.pool.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second'"
        " WHERE user_id = $1 AND key = $2",
        user.user_id,
        key,
    )
    pause = Pause()
    append = messages._append

    async def paused_append(*args: object, **kwargs: object) -> list[Message]:
        await pause.here()
        return await append(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(messages, "_append", paused_append)
    again = MessageInput(role="user", content="again")
    appended, deleted = await pause.race(
        store,
        store.append_messages(user.user_id, conversation, [again], idempotency_key=key),
        deletes(elsewhere, user.user_id, conversation)[delete],
    )
    # The append came first, then the delete went through.
    assert not isinstance(appended, BaseException), repr(appended)
    assert not isinstance(deleted, BaseException), repr(deleted)
    assert isinstance(appended, list) and [m.seq for m in appended] == [2]
    left = await store.pool.fetch(
        "SELECT seq FROM messages WHERE conversation_id = $1 ORDER BY seq", conversation
    )
    assert [row["seq"] for row in left] == ([2] if delete == "message_delete" else [])


async def test_erasing_a_users_data_takes_the_conversations_before_the_keys(
    store: ChatStore, elsewhere: ChatStore, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reply's transaction holds the conversation and is about to take
    # its key; the erasure must queue on the conversation, not take the key
    # first and then wait for the conversation.
    conversation = str((await store.create_conversation(user.user_id)).id)
    turn = await chat_turn.begin(
        store,
        Echo(),
        user.user_id,
        conversation,
        ChatMessageInput(content="hi"),
        key=new_key(),
        request=idempotency.fingerprint("a chat turn"),
    )
    assert isinstance(turn, chat_turn.Turn)
    pause = Pause()
    hold = turn_claim.TurnClaim.hold

    async def hold_after_a_pause(claim: turn_claim.TurnClaim) -> bool:
        await pause.here()
        return await hold(claim)

    monkeypatch.setattr(turn_claim.TurnClaim, "hold", hold_after_a_pause)
    try:
        stored, erased = await pause.race(
            store, turn.finish(), lambda: elsewhere.erase_user_data(user.user_id)
        )
    finally:
        await turn.close()
    assert not isinstance(stored, BaseException), repr(stored)
    assert not isinstance(erased, BaseException), repr(erased)
    assert erased.deleted.messages == 2  # type: ignore[attr-defined]
    assert (
        await store.pool.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE user_id = $1", user.user_id
        )
        == 0
    )
