"""Live updates in process: chatstore.events.follow over a MessageEvents hub.

(The same over HTTP, across two server processes: test_multiprocess.py.)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from chatstore import events
from chatstore.errors import NotFound
from chatstore.models import Conversation, Message
from chatstore.store import ChatStore
from features.helpers import Caller

TIMEOUT = 10.0
IDLE = 0.2

Follower = AsyncGenerator[Message | None, None]


@pytest.fixture
async def hub(store: ChatStore) -> AsyncIterator[events.MessageEvents]:
    running = events.MessageEvents(store)
    try:
        yield running
    finally:
        await running.stop()


def follow(
    store: ChatStore,
    hub: events.MessageEvents,
    caller: Caller,
    conversation: Conversation | uuid.UUID | str,
    *,
    after: int | None = None,
    idle_seconds: float = IDLE,
) -> Follower:
    conversation_id = conversation.id if isinstance(conversation, Conversation) else conversation
    follower = events.follow(
        store, hub, caller.user_id, conversation_id, after=after, idle_seconds=idle_seconds
    )
    # Declared an AsyncIterator; it is an async generator, which we close.
    assert isinstance(follower, AsyncGenerator)
    return follower


async def next_message(follower: Follower) -> Message:
    """The next message, skipping heartbeats."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            item = await anext(follower)
            if item is not None:
                return item


async def started(follower: Follower) -> None:
    """Run the follower until its first heartbeat: it has subscribed and
    read where it starts, and nothing is waiting for it."""
    async with asyncio.timeout(TIMEOUT):
        assert await anext(follower) is None


async def append(store: ChatStore, caller: Caller, conversation: Conversation, *texts: str) -> None:
    await store.append_messages(
        caller.user_id, conversation.id, [{"role": "user", "content": t} for t in texts]
    )


async def test_a_follower_receives_messages_appended_after_it_started_in_order(
    store: ChatStore, hub: events.MessageEvents, caller: Caller
) -> None:
    conversation = await store.create_conversation(caller.user_id)
    await append(store, caller, conversation, "old 1", "old 2")
    follower = follow(store, hub, caller, conversation)
    try:
        await started(follower)
        await append(store, caller, conversation, "new 3")
        await append(store, caller, conversation, "new 4", "new 5", "new 6")
        received = [await next_message(follower) for _ in range(4)]
        assert [(m.seq, m.content) for m in received] == [
            (3, "new 3"),
            (4, "new 4"),
            (5, "new 5"),
            (6, "new 6"),
        ]
        assert all(m.conversation_id == conversation.id for m in received)
        await append(store, caller, conversation, "new 7")
        assert (await next_message(follower)).seq == 7
    finally:
        await follower.aclose()


async def test_after_replays_the_later_messages_first_then_goes_live(
    store: ChatStore, hub: events.MessageEvents, caller: Caller
) -> None:
    conversation = await store.create_conversation(caller.user_id)
    await append(store, caller, conversation, *(f"m{i}" for i in range(1, 6)))
    follower = follow(store, hub, caller, conversation, after=2)
    try:
        assert [(await next_message(follower)).seq for _ in range(3)] == [3, 4, 5]
        await append(store, caller, conversation, "m6")
        assert (await next_message(follower)).seq == 6
    finally:
        await follower.aclose()

    # after=0 is everything; after the last seq is nothing but live ones.
    everything = follow(store, hub, caller, conversation, after=0)
    try:
        assert [(await next_message(everything)).seq for _ in range(6)] == [1, 2, 3, 4, 5, 6]
    finally:
        await everything.aclose()
    live = follow(store, hub, caller, conversation, after=6)
    try:
        await started(live)
        await append(store, caller, conversation, "m7")
        assert (await next_message(live)).seq == 7
    finally:
        await live.aclose()


async def test_an_idle_follower_yields_a_heartbeat(
    store: ChatStore, hub: events.MessageEvents, caller: Caller
) -> None:
    conversation = await store.create_conversation(caller.user_id)
    follower = follow(store, hub, caller, conversation, idle_seconds=0.3)
    try:
        for _ in range(2):
            began = time.monotonic()
            async with asyncio.timeout(TIMEOUT):
                assert await anext(follower) is None
            assert 0.25 <= time.monotonic() - began < 5
    finally:
        await follower.aclose()


async def test_another_users_conversation_is_not_found_before_anything_is_yielded(
    store: ChatStore, hub: events.MessageEvents, caller: Caller, stranger: Caller
) -> None:
    theirs = await store.create_conversation(stranger.user_id)
    await append(store, stranger, theirs, "private")
    for target, after in (
        (theirs.id, None),
        (theirs.id, 0),
        (uuid.uuid4(), None),
        ("not-a-uuid", None),
    ):
        follower = follow(store, hub, caller, target, after=after)
        with pytest.raises(NotFound):
            async with asyncio.timeout(TIMEOUT):
                await anext(follower)
        assert hub.follower_count() == 0


async def test_the_follower_set_empties_when_consumers_stop(
    store: ChatStore, hub: events.MessageEvents, caller: Caller
) -> None:
    conversation = await store.create_conversation(caller.user_id)
    other = await store.create_conversation(caller.user_id)
    assert hub.follower_count() == 0
    followers = [follow(store, hub, caller, c) for c in (conversation, conversation, other)]
    for follower in followers:
        await started(follower)
    assert hub.follower_count() == 3
    for follower in followers:
        await follower.aclose()
    assert hub.follower_count() == 0

    # A consumer task that is cancelled mid-wait leaves nothing behind either.
    received: list[Message | None] = []
    heard = asyncio.Event()

    async def consume() -> None:
        async for item in follow(store, hub, caller, conversation):
            received.append(item)
            heard.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(TIMEOUT):
        await heard.wait()
    assert hub.follower_count() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hub.follower_count() == 0
    assert received and all(item is None for item in received)  # heartbeats only


async def test_a_deleted_conversation_ends_the_follower(
    store: ChatStore, hub: events.MessageEvents, caller: Caller
) -> None:
    conversation = await store.create_conversation(caller.user_id)
    follower = follow(store, hub, caller, conversation)
    try:
        await started(follower)
        await store.delete_conversation(caller.user_id, conversation.id)
        # It ends (the SSE route turns NotFound into the end of the stream).
        with pytest.raises((StopAsyncIteration, NotFound)):
            async with asyncio.timeout(TIMEOUT):
                while True:
                    assert await anext(follower) is None
    finally:
        await follower.aclose()
    assert hub.follower_count() == 0


async def test_reconnecting_with_the_last_seq_misses_nothing_while_messages_arrive(
    store: ChatStore, hub: events.MessageEvents, caller: Caller
) -> None:
    total = 300
    conversation = await store.create_conversation(caller.user_id)

    async def writer() -> None:
        seq = 0
        batch = 1
        while seq < total:
            size = min(batch, total - seq)
            await append(store, caller, conversation, *(f"m{seq + i + 1}" for i in range(size)))
            seq += size
            batch = batch % 4 + 1  # batches of 1, 2, 3, 4, 1, ...
            await asyncio.sleep(0.01)

    writing = asyncio.create_task(writer())
    received: list[int] = []
    try:
        first = follow(store, hub, caller, conversation, after=0)
        while len(received) < 100:
            received.append((await next_message(first)).seq)
        await first.aclose()  # the client goes away mid-stream ...
        assert not writing.done(), "the writer finished before the reconnect; slow it down"

        # ... and reconnects with Last-Event-ID: the last seq it received.
        second = follow(store, hub, caller, conversation, after=received[-1])
        try:
            while received[-1] < total:
                received.append((await next_message(second)).seq)
        finally:
            await second.aclose()
        await writing
    finally:
        writing.cancel()
    assert received == list(range(1, total + 1))
    assert hub.follower_count() == 0
