"""A tool message answers a tool call on its own path, even when the path
moves (a regenerate, a switch) while the append waits for the conversation.

A plain append locks the conversation inside its one statement, with the
snapshot its statement started with; a tool message's check reads the
active path, so such an append now takes the conversation's row lock first
and reads the path after it (chatstore/messages.py, found by review).
"""

from __future__ import annotations

import asyncio

import pytest

from chatstore import ValidationError
from chatstore.store import ChatStore

WAIT = 10.0

CALL = {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}}


async def blocked_on_a_lock(store: ChatStore) -> bool:
    count: int = await store.pool.fetchval(
        """SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND wait_event_type = 'Lock'"""
    )
    return count > 0


async def test_a_tool_reply_racing_a_regenerate_is_refused_not_attached_off_its_path(
    store: ChatStore, user_id: str
) -> None:
    conversation = await store.create_conversation(user_id)
    await store.append_messages(
        user_id,
        conversation.id,
        [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [CALL]}],
    )
    regenerated = asyncio.Event()
    release = asyncio.Event()

    async def regenerate() -> None:
        # Another tab regenerates the assistant's answer (a sibling of seq 2
        # without the call) and holds the conversation until released.
        async with store.transaction():
            await store.append_messages(
                user_id,
                conversation.id,
                [{"role": "assistant", "content": "another answer"}],
                parent_seq=1,
            )
            regenerated.set()
            await release.wait()

    regenerating = asyncio.create_task(regenerate())
    await asyncio.wait_for(regenerated.wait(), WAIT)
    answering = asyncio.create_task(
        store.append_messages(
            user_id,
            conversation.id,
            [{"role": "tool", "tool_call_id": "call_a", "content": "42"}],
        )
    )
    async with asyncio.timeout(WAIT):
        while True:
            if await blocked_on_a_lock(store):
                break
            await asyncio.sleep(0.02)
    release.set()
    await regenerating
    with pytest.raises(ValidationError):
        await answering

    shown = await store.list_messages(user_id, conversation.id)
    assert [(m.seq, m.role) for m in shown.data] == [(1, "user"), (3, "assistant")]
