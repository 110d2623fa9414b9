"""A tool message answers a tool call on its own path, even when the path
moves (a regenerate, a switch) while the append waits for the conversation.

A plain append locks the conversation inside its one statement, with the
snapshot its statement started with; a tool message's check reads the
active path, so such an append now takes the conversation's row lock first
and reads the path after it (chatstore/messages.py, found by review).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest
from support.databases import lock_waiters

from chatstore import ValidationError
from chatstore.models import Conversation
from chatstore.store import ChatStore

WAIT = 10.0

CALL = {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}}


async def blocked_on_a_lock(store: ChatStore) -> bool:
    return await lock_waiters(store.pool) > 0


async def calling(store: ChatStore, user_id: str) -> Conversation:
    """A conversation of 1 (a question) -> 2 (an assistant calling call_a)."""
    conversation = await store.create_conversation(user_id)
    await store.append_messages(
        user_id,
        conversation.id,
        [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [CALL]}],
    )
    return conversation


async def test_a_tool_reply_racing_a_regenerate_is_refused_not_attached_off_its_path(
    store: ChatStore, user_id: str
) -> None:
    conversation = await calling(store, user_id)
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


async def test_tool_answers_racing_branch_switches_join_only_paths_holding_their_call(
    store: ChatStore, user_id: str
) -> None:
    # 1 -> 2 (calls call_a) | 3 (a regenerated answer without it). Answers to
    # call_a join the active leaf while switches move it between the two
    # branches, in whatever order the row lock grants them: each answer is
    # stored on a path that holds its call, or refused, never stored where
    # its call is not.
    conversation = await calling(store, user_id)
    await store.append_messages(
        user_id, conversation.id, [{"role": "assistant", "content": "no tools"}], parent_seq=1
    )
    await store.switch_branch(user_id, conversation.id, 2)  # the first answer finds its call
    jobs: list[Awaitable[object]] = []
    for i in range(8):
        answer = {"role": "tool", "tool_call_id": "call_a", "content": f"r{i}"}
        jobs.append(store.append_messages(user_id, conversation.id, [answer]))
        jobs.append(store.switch_branch(user_id, conversation.id, 3 - i % 2))
    results = await asyncio.gather(*jobs, return_exceptions=True)
    refused = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, ValidationError) for r in refused), refused
    answers = [m for r in results if isinstance(r, list) for m in r]
    assert answers, "no answer joined the branch that holds its call"
    for answer in answers:
        ancestors = []
        seq = answer.parent_seq
        while seq is not None:
            ancestors.append(seq)
            seq = (await store.get_message(user_id, conversation.id, seq)).parent_seq
        assert 2 in ancestors, (answer, ancestors)
