"""Responses items in the store (issue 12 item 1): stored verbatim, in
order, one seq space with the chat-completions messages, which see the
items that have a chat form and nothing else."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

import pytest

from chatstore.errors import NotFound, ValidationError
from chatstore.store import ChatStore

REASONING: dict[str, Any] = {
    "type": "reasoning",
    "id": "rs_1",
    "summary": [{"type": "summary_text", "text": "thinking"}],
    "encrypted_content": "gAAAAB" + "x" * 200,
}
UNKNOWN: dict[str, Any] = {
    "type": "shiny_new_call",
    "id": "snc_1",
    "nested": {"a": [1, 2.5, None, True]},
}
WEB_SEARCH: dict[str, Any] = {
    "type": "web_search_call",
    "id": "ws_1",
    "status": "completed",
    "action": {},
}
FUNCTION_CALL: dict[str, Any] = {
    "type": "function_call",
    "id": "fc_a",
    "call_id": "call_w",
    "name": "weather",
    "arguments": '{"city": "Paris"}',
    "status": "completed",
}
FUNCTION_OUTPUT: dict[str, Any] = {
    "type": "function_call_output",
    "call_id": "call_w",
    "output": "sunny",
}
EASY: dict[str, Any] = {"role": "user", "content": "What's the weather?"}
ASSISTANT: dict[str, Any] = {
    "type": "message",
    "id": "msg_x",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "It is sunny.", "annotations": []}],
}
TURN = [EASY, REASONING, FUNCTION_CALL, FUNCTION_OUTPUT, WEB_SEARCH, ASSISTANT, UNKNOWN]


async def new_conversation(store: ChatStore, user_id: str) -> str:
    return str((await store.create_conversation(user_id)).id)


async def test_items_round_trip_verbatim_in_order_with_seqs(store: ChatStore, user_id: str) -> None:
    conversation = await new_conversation(store, user_id)
    added = await store.add_items(user_id, conversation, TURN)
    assert [i.item for i in added] == TURN
    assert [i.seq for i in added] == list(range(1, len(TURN) + 1))
    page = await store.list_items(user_id, conversation)
    assert [i.item for i in page.items] == TURN
    assert [i.seq for i in page.items] == [i.seq for i in added]
    assert not page.has_more
    # JSON-equal, encrypted reasoning included.
    assert json.dumps(page.items[1].item, sort_keys=True) == json.dumps(REASONING, sort_keys=True)


async def test_item_ids_are_their_own_or_derived_and_unique(store: ChatStore, user_id: str) -> None:
    conversation = await new_conversation(store, user_id)
    added = await store.add_items(user_id, conversation, TURN)
    assert [i.id for i in added] == ["msg_1", "rs_1", "fc_a", "fco_4", "ws_1", "msg_x", "snc_1"]
    for item in added:
        assert (await store.get_item(user_id, conversation, item.id)) == item


async def test_chat_view_shows_items_with_a_chat_form_only(store: ChatStore, user_id: str) -> None:
    conversation = await new_conversation(store, user_id)
    await store.add_items(user_id, conversation, TURN)
    page = await store.list_messages(user_id, conversation)
    assert [(m.seq, m.role, m.content) for m in page.data] == [
        (1, "user", "What's the weather?"),
        (3, "assistant", None),
        (4, "tool", "sunny"),
        (6, "assistant", "It is sunny."),
    ]
    call = page.data[1].tool_calls
    assert call is not None
    assert call[0].model_dump() == {
        "id": "call_w",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
    }
    assert page.data[2].tool_call_id == "call_w"
    # A position of an item without a chat form is no message.
    with pytest.raises(NotFound):
        await store.get_message(user_id, conversation, 2)


async def test_messages_appended_through_the_chat_api_appear_as_items(
    store: ChatStore, user_id: str
) -> None:
    conversation = await new_conversation(store, user_id)
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": "{}"},
    }
    await store.append_messages(
        user_id,
        conversation,
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "assistant", "content": "Sunny."},
        ],
    )
    page = await store.list_items(user_id, conversation)
    assert [(i.seq, i.id, i.item) for i in page.items] == [
        (
            1,
            "msg_1",
            {
                "type": "message",
                "role": "system",
                "content": [{"type": "input_text", "text": "Be brief."}],
            },
        ),
        (
            2,
            "msg_2",
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        ),
        (
            3,
            "msg_3",
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}],
            },
        ),
        (
            3,
            "fc_3_0",
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{}"},
        ),
        (4, "fco_4", {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}),
        (
            5,
            "msg_5",
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Sunny.", "annotations": []}],
            },
        ),
    ]
    assert (await store.get_item(user_id, conversation, "fc_3_0")).seq == 3


async def test_item_pages_follow_order_limit_and_after(store: ChatStore, user_id: str) -> None:
    conversation = await new_conversation(store, user_id)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    await store.append_message(
        user_id, conversation, {"role": "assistant", "content": "a", "tool_calls": [call]}
    )
    await store.add_items(user_id, conversation, [REASONING, UNKNOWN])
    every = [i.id for i in (await store.list_items(user_id, conversation)).items]
    assert every == ["msg_1", "fc_1_0", "rs_1", "snc_1"]
    orders: list[tuple[Literal["asc", "desc"], list[str]]] = [
        ("asc", every),
        ("desc", every[::-1]),
    ]
    for order, expected in orders:
        seen: list[str] = []
        after = None
        while True:
            page = await store.list_items(
                user_id,
                conversation,
                limit=1,
                order=order,
                after=after,
            )
            seen += [i.id for i in page.items]
            if not page.has_more:
                break
            after = page.items[-1].id
        assert seen == expected, order
    last_two = await store.list_items(user_id, conversation, limit=2, order="desc")
    assert [i.id for i in last_two.items] == ["snc_1", "rs_1"]
    assert last_two.has_more


async def test_function_call_output_must_answer_a_known_call(
    store: ChatStore, user_id: str
) -> None:
    conversation = await new_conversation(store, user_id)
    with pytest.raises(ValidationError) as refused:
        await store.add_items(user_id, conversation, [EASY, FUNCTION_OUTPUT])
    assert refused.value.details[0]["loc"] == ["items", 1, "call_id"]
    assert (await store.list_items(user_id, conversation)).items == []
    # Answering a call of the same batch, or of an earlier one, is fine.
    await store.add_items(user_id, conversation, [FUNCTION_CALL])
    await store.add_items(user_id, conversation, [FUNCTION_OUTPUT])


async def test_another_users_conversation_is_not_found_for_items(
    store: ChatStore, user_id: str, other_user_id: str
) -> None:
    conversation = await new_conversation(store, user_id)
    await store.add_items(user_id, conversation, [EASY])
    for attempt in (
        store.add_items(other_user_id, conversation, [EASY]),
        store.list_items(other_user_id, conversation),
        store.get_item(other_user_id, conversation, "msg_1"),
        store.delete_item(other_user_id, conversation, "msg_1"),
        store.pop_item(other_user_id, conversation),
        store.clear_items(other_user_id, conversation),
    ):
        with pytest.raises(NotFound):
            await attempt
    assert len((await store.list_items(user_id, conversation)).items) == 1


async def test_pop_item_returns_each_item_once_newest_first(store: ChatStore, user_id: str) -> None:
    conversation = await new_conversation(store, user_id)
    await store.add_items(user_id, conversation, TURN)
    popped = await asyncio.gather(*(store.pop_item(user_id, conversation) for _ in range(10)))
    got = [p.item for p in popped if p is not None]
    assert sorted(json.dumps(i, sort_keys=True) for i in got) == sorted(
        json.dumps(i, sort_keys=True) for i in TURN
    )
    assert popped.count(None) == 10 - len(TURN)
    assert (await store.list_items(user_id, conversation)).items == []


async def test_clear_items_keeps_the_conversation(store: ChatStore, user_id: str) -> None:
    conversation = await new_conversation(store, user_id)
    await store.add_items(user_id, conversation, TURN)
    await store.clear_items(user_id, conversation)
    assert (await store.list_items(user_id, conversation)).items == []
    assert (await store.get_conversation(user_id, conversation)).message_count == 0
    again = await store.add_items(user_id, conversation, [EASY])
    assert again[0].seq == len(TURN) + 1


async def test_delete_item_by_reused_id_deletes_the_newest(store: ChatStore, user_id: str) -> None:
    conversation = await new_conversation(store, user_id)
    first: dict[str, Any] = {"id": "same", "type": "message", "role": "user", "content": "one"}
    second = {**first, "content": "two"}
    await store.add_items(user_id, conversation, [first, second])
    assert (await store.get_item(user_id, conversation, "same")).item == second
    await store.delete_item(user_id, conversation, "same")
    assert (await store.get_item(user_id, conversation, "same")).item == first
    with pytest.raises(NotFound):
        await store.get_item(user_id, conversation, "nope")
