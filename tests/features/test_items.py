"""Responses items in the store (issue 12 item 1): stored verbatim, in
order, one seq space with the chat-completions messages, which see the
items that have a chat form and nothing else."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, Literal

import httpx
import pytest
from support.users import User

from chatstore import export
from chatstore.errors import IdempotencyConflict, NotFound, ValidationError
from chatstore.store import ChatStore
from chatstore.tool_turns import merge_dicts

REASONING: dict[str, Any] = {
    "type": "reasoning",
    "id": "rs_68ab",
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
    assert [i.id for i in added] == ["msg_1", "rs_68ab", "fc_a", "fco_4", "ws_1", "msg_x", "snc_1"]
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
    assert every == ["msg_1", "fc_1_0", "rs_68ab", "snc_1"]
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
    assert [i.id for i in last_two.items] == ["snc_1", "rs_68ab"]
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


async def test_a_reused_id_names_one_item_the_others_get_derived_ids(
    store: ChatStore, user_id: str
) -> None:
    conversation = await new_conversation(store, user_id)
    first: dict[str, Any] = {"id": "same", "type": "message", "role": "user", "content": "one"}
    second = {**first, "content": "two"}
    third = {**first, "content": "three"}
    added = await store.add_items(user_id, conversation, [first, second])
    added += await store.add_items(user_id, conversation, [third])
    # The first keeps its id; the others get derived ones; all verbatim.
    assert [i.id for i in added] == ["same", "msg_2", "msg_3"]
    assert [i.item for i in added] == [first, second, third]
    for item in added:
        assert await store.get_item(user_id, conversation, item.id) == item
    await store.delete_item(user_id, conversation, "msg_2")
    assert [i.item for i in (await store.list_items(user_id, conversation)).items] == [
        first,
        third,
    ]
    # Deleted, its id is free again.
    await store.delete_item(user_id, conversation, "same")
    (again,) = await store.add_items(user_id, conversation, [first])
    assert again.id == "same" and again.seq == 4
    with pytest.raises(NotFound):
        await store.get_item(user_id, conversation, "nope")


async def test_concurrent_adds_of_one_id_give_it_to_one_item(
    store: ChatStore, user_id: str
) -> None:
    conversation = await new_conversation(store, user_id)
    sent = {"id": "shared", "type": "message", "role": "user", "content": "x"}
    added = await asyncio.gather(
        *(store.add_items(user_id, conversation, [sent]) for _ in range(6))
    )
    ids = [item.id for (item,) in added]
    assert ids.count("shared") == 1 and len(set(ids)) == 6
    assert (await store.get_item(user_id, conversation, "shared")).id == "shared"


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_paging_over_reused_ids_returns_each_item_once(
    store: ChatStore, user_id: str, order: Literal["asc", "desc"], limit: int
) -> None:
    """The Agents SDK's placeholder id, and ScriptedModel's fixed one."""
    conversation = await new_conversation(store, user_id)
    sent: list[dict[str, Any]] = [
        {"id": "__fake_id__", "type": "message", "role": "assistant", "content": f"a{n}"}
        for n in range(4)
    ] + [
        {"id": "scripted-message", "type": "message", "role": "user", "content": f"u{n}"}
        for n in range(3)
    ]
    await store.add_items(user_id, conversation, sent[:2])
    await store.add_items(user_id, conversation, sent[2:])
    seen: list[Any] = []
    after = None
    for _ in range(len(sent) + 1):
        page = await store.list_items(user_id, conversation, limit=limit, order=order, after=after)
        seen += page.items
        if not page.has_more:
            break
        after = page.items[-1].id
    expected = sent if order == "asc" else sent[::-1]
    assert [i.item for i in seen] == expected
    assert len({i.id for i in seen}) == len(sent)


async def test_a_client_id_of_the_derived_form_never_shadows_a_derived_id(
    store: ChatStore, user_id: str
) -> None:
    conversation = await new_conversation(store, user_id)
    await store.append_message(user_id, conversation, {"role": "user", "content": "row 1"})
    posing = {"id": "msg_1", "type": "message", "role": "user", "content": "posing"}
    future = {"id": "item_3", "type": "shiny"}
    added = await store.add_items(user_id, conversation, [posing, future])
    assert [i.id for i in added] == ["msg_2", "item_3"]
    assert [i.item for i in added] == [posing, future]
    assert (await store.get_item(user_id, conversation, "msg_1")).item["content"][0]["text"] == (
        "row 1"
    )
    assert (await store.get_item(user_id, conversation, "msg_2")).item == posing


@pytest.mark.parametrize("given", ["a/b", "/", ".", "..", ""])
async def test_an_id_not_routable_in_a_url_path_gets_a_derived_id(
    store: ChatStore, user_id: str, given: str
) -> None:
    conversation = await new_conversation(store, user_id)
    sent = {"id": given, "type": "reasoning", "summary": []}
    (added,) = await store.add_items(user_id, conversation, [sent])
    assert added.id == "rs_1" and added.item == sent
    assert await store.get_item(user_id, conversation, "rs_1") == added
    with pytest.raises(NotFound):
        await store.get_item(user_id, conversation, given)
    await store.delete_item(user_id, conversation, "rs_1")
    assert (await store.list_items(user_id, conversation)).items == []


async def test_an_id_taken_on_another_branch_gets_a_derived_id(
    store: ChatStore, user_id: str
) -> None:
    conversation = await new_conversation(store, user_id)
    await store.add_items(user_id, conversation, [EASY, {**REASONING, "id": "kept"}])
    # A new branch from the first message: "kept" is off the path, still taken.
    await store.append_messages(
        user_id, conversation, [{"role": "assistant", "content": "A"}], parent_seq=1
    )
    (added,) = await store.add_items(user_id, conversation, [{**REASONING, "id": "kept"}])
    assert added.id == "rs_4"
    with pytest.raises(NotFound):  # the one on the other branch
        await store.get_item(user_id, conversation, "kept")
    assert await store.switch_branch(user_id, conversation, 2) == 2
    assert (await store.get_item(user_id, conversation, "kept")).seq == 2


async def test_an_explicit_null_type_derives_the_id_of_its_form(
    store: ChatStore, user_id: str
) -> None:
    conversation = await new_conversation(store, user_id)
    sent = {"type": None, "role": "user", "content": "hi"}
    (added,) = await store.add_items(user_id, conversation, [sent])
    assert added.id == "msg_1" and added.item == sent
    assert (await store.list_items(user_id, conversation)).items[0].id == "msg_1"


# -- every chat-completions read ignores the items without a chat form ----------


async def mixed_conversation(store: ChatStore, user_id: str) -> str:
    """seq 1 user, 2 reasoning, 3 function_call, 4 function_call_output,
    5 web_search_call, 6 assistant, 7 unknown type."""
    conversation = await new_conversation(store, user_id)
    await store.add_items(user_id, conversation, TURN)
    return conversation


CHAT_VIEW = [
    (1, "user", "What's the weather?"),
    (3, "assistant", None),
    (4, "tool", "sunny"),
    (6, "assistant", "It is sunny."),
]


async def test_messages_list_both_orders_and_pages_skip_items_without_a_chat_form(
    store: ChatStore, user_id: str
) -> None:
    conversation = await mixed_conversation(store, user_id)
    desc = await store.list_messages(user_id, conversation, order="desc")
    assert [(m.seq, m.role, m.content) for m in desc.data] == CHAT_VIEW[::-1]
    first = await store.list_messages(user_id, conversation, limit=2)
    assert [m.seq for m in first.data] == [1, 3] and first.has_more
    rest = await store.list_messages(user_id, conversation, limit=2, after=first.last_seq)
    assert [m.seq for m in rest.data] == [4, 6] and not rest.has_more


async def test_chat_history_skips_items_without_a_chat_form(store: ChatStore, user_id: str) -> None:
    conversation = await mixed_conversation(store, user_id)
    history = await store.history(user_id, conversation)
    assert [(m.seq, m.role, m.content) for m in history.messages] == CHAT_VIEW
    assert not history.has_more
    # A window of two still starts at the tool call the tool message answers.
    short = await store.history(user_id, conversation, limit=2)
    assert [m.seq for m in short.messages] == [3, 4, 6]
    assert short.has_more


async def test_exports_openai_and_jsonl_leave_out_items_without_a_chat_form(
    store: ChatStore, user_id: str
) -> None:
    conversation = await mixed_conversation(store, user_id)
    exported = json.loads(
        b"".join([chunk async for chunk in store.export_openai(user_id, conversation)])
    )
    assert exported["messages"] == [
        {"role": "user", "content": "What's the weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_w",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "call_w"},
        {"role": "assistant", "content": "It is sunny."},
    ]
    lines = b"".join([chunk async for chunk in store.export_jsonl(user_id, conversation)])
    assert [json.loads(line)["seq"] for line in lines.splitlines()] == [1, 3, 4, 6]
    assert [m.seq async for m in store.export_messages(user_id, conversation)] == [1, 3, 4, 6]


async def test_an_openai_export_of_items_imports_as_the_chat_view(
    store: ChatStore, user_id: str
) -> None:
    conversation = await mixed_conversation(store, user_id)
    exported = json.loads(
        b"".join([chunk async for chunk in store.export_openai(user_id, conversation)])
    )
    imported = await store.import_conversation(user_id, exported["messages"])
    page = await store.list_messages(user_id, imported.id)
    assert [(m.role, m.content) for m in page.data] == [(r, c) for _, r, c in CHAT_VIEW]


def answers_follow_calls(messages: list[dict[str, Any]]) -> bool:
    """What chat completions require: every assistant message with tool
    calls is directly followed by tool messages answering all its calls."""
    for index, message in enumerate(messages):
        calls = message.get("tool_calls") if message["role"] == "assistant" else None
        if not calls:
            continue
        wanted = {call["id"] for call in calls}
        following = messages[index + 1 : index + 1 + len(wanted)]
        if {m.get("tool_call_id") for m in following if m["role"] == "tool"} != wanted:
            return False
    return True


def function_call(call_id: str) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": "f", "arguments": call_id}


def function_output(call_id: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": f"out {call_id}"}


def chat_call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": call_id}}


PARALLEL_TURN: list[dict[str, Any]] = [
    {"role": "user", "content": "both?"},
    {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "On it."}],
    },
    function_call("c1"),
    function_call("c2"),
    {"type": "reasoning", "summary": []},  # no chat form: not in between
    function_call("c3"),
    function_output("c1"),
    function_output("c2"),
    function_output("c3"),
    function_call("c4"),
    function_output("c4"),
    {"role": "assistant", "content": "Done."},
]
PARALLEL_CHAT = [
    {"role": "user", "content": "both?"},
    {
        "role": "assistant",
        "content": "On it.",
        "tool_calls": [chat_call("c1"), chat_call("c2"), chat_call("c3")],
    },
    {"role": "tool", "content": "out c1", "tool_call_id": "c1"},
    {"role": "tool", "content": "out c2", "tool_call_id": "c2"},
    {"role": "tool", "content": "out c3", "tool_call_id": "c3"},
    {"role": "assistant", "content": None, "tool_calls": [chat_call("c4")]},
    {"role": "tool", "content": "out c4", "tool_call_id": "c4"},
    {"role": "assistant", "content": "Done."},
]


def test_merge_tool_turns_joins_null_content_assistants_into_the_one_before() -> None:
    a = {"role": "assistant", "content": None, "tool_calls": [chat_call("a")]}
    b = {"role": "assistant", "content": None, "tool_calls": [chat_call("b")]}
    said = {"role": "assistant", "content": "x"}
    tool = {"role": "tool", "content": "r", "tool_call_id": "a"}
    assert merge_dicts([]) == []
    assert merge_dicts([a, b]) == [{**a, "tool_calls": [chat_call("a"), chat_call("b")]}]
    assert merge_dicts([said, a]) == [{**said, "tool_calls": [chat_call("a")]}]
    # Only into an assistant message right before; a said one is never merged.
    assert merge_dicts([a, tool, b]) == [a, tool, b]
    assert merge_dicts([a, said]) == [a, said]
    assert merge_dicts([{"role": "user", "content": "u"}, a]) == [
        {"role": "user", "content": "u"},
        a,
    ]


@pytest.mark.parametrize("page_bytes", [1, 40, export.PAGE_BYTES])
async def test_openai_export_merges_parallel_tool_calls_across_pages(
    store: ChatStore, user_id: str, page_bytes: int
) -> None:
    conversation = await new_conversation(store, user_id)
    await store.add_items(user_id, conversation, PARALLEL_TURN)
    body = b"".join(
        [
            chunk
            async for chunk in export.openai(store, user_id, conversation, page_bytes=page_bytes)
        ]
    )
    messages = json.loads(body)["messages"]
    assert messages == PARALLEL_CHAT
    assert answers_follow_calls(messages)
    # The messages list stays one row per seq.
    page = await store.list_messages(user_id, conversation)
    assert [m.seq for m in page.data] == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12]
    # What it exports imports back, as chat completions accept it.
    imported = await store.import_conversation(user_id, messages)
    again = b"".join([chunk async for chunk in store.export_openai(user_id, str(imported.id))])
    assert json.loads(again)["messages"] == PARALLEL_CHAT


async def test_search_finds_item_messages_and_never_items_without_a_chat_form(
    store: ChatStore, user_id: str
) -> None:
    conversation = await mixed_conversation(store, user_id)
    hits = await store.search(user_id, "sunny", conversation_id=conversation)
    assert sorted((h.seq, h.role) for h in hits.data) == [(4, "tool"), (6, "assistant")]
    # The reasoning summary's words are not searchable text.
    assert (await store.search(user_id, "thinking", conversation_id=conversation)).data == []


async def test_message_get_delete_and_siblings_do_not_find_items_without_a_chat_form(
    store: ChatStore, user_id: str
) -> None:
    conversation = await new_conversation(store, user_id)
    await store.add_items(user_id, conversation, [EASY, REASONING])
    # A sibling of the reasoning item (same parent, the user message).
    answer = await store.append_messages(
        user_id, conversation, [{"role": "assistant", "content": "A"}], parent_seq=1
    )
    assert [s.seq for s in await store.list_siblings(user_id, conversation, answer[0].seq)] == [3]
    for attempt in (
        store.get_message(user_id, conversation, 2),
        store.delete_message(user_id, conversation, 2),
        store.list_siblings(user_id, conversation, 2),
    ):
        with pytest.raises(NotFound):
            await attempt
    # Switching back to the reasoning branch: the items view shows it, the
    # chat view shows the user message alone.
    assert await store.switch_branch(user_id, conversation, 2) == 2
    assert [i.id for i in (await store.list_items(user_id, conversation)).items] == [
        "msg_1",
        "rs_68ab",
    ]
    assert [m.seq for m in (await store.list_messages(user_id, conversation)).data] == [1]


async def test_truncate_from_an_item_deletes_it_and_what_follows(
    store: ChatStore, user_id: str
) -> None:
    conversation = await mixed_conversation(store, user_id)
    assert await store.truncate_messages(user_id, conversation, 2) == len(TURN) - 1
    assert [i.seq for i in (await store.list_items(user_id, conversation)).items] == [1]
    added = await store.add_items(user_id, conversation, [REASONING])
    assert added[0].seq == len(TURN) + 1


async def test_a_follower_replays_and_receives_only_chat_messages(
    store: ChatStore, user_id: str
) -> None:
    conversation = await mixed_conversation(store, user_id)
    hub = store.message_events()
    try:
        follower = store.follow(hub, user_id, conversation, after=0, idle_seconds=0.2)
        seen: list[int] = []
        async with asyncio.timeout(10):
            async for message in follower:
                if message is None:
                    if len(seen) == 4:
                        await store.add_items(user_id, conversation, [REASONING, EASY])
                    continue
                seen.append(message.seq)
                if len(seen) == 5:
                    break
        assert seen == [1, 3, 4, 6, 9]
    finally:
        await hub.stop()


async def test_erasure_and_retention_take_items_with_their_conversations(
    store: ChatStore, user_id: str
) -> None:
    conversation = await mixed_conversation(store, user_id)
    erased = await store.erase_user_data(user_id)
    assert erased.deleted.conversations == 1
    assert erased.deleted.messages == len(TURN)
    with pytest.raises(NotFound):
        await store.list_items(user_id, conversation)


# -- rules of an item ------------------------------------------------------------


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


BAD_ITEMS: dict[str, tuple[Any, list[str | int]]] = {
    "not an object": ("hello", ["items", 0]),
    "no type and no role": ({"content": "x"}, ["items", 0, "type"]),
    "type not a string": ({"type": 1}, ["items", 0, "type"]),
    "message with an unknown role": ({"role": "robot", "content": "x"}, ["items", 0, "role"]),
    "message without content": ({"type": "message", "role": "user"}, ["items", 0, "content"]),
    "message content a number": ({"role": "user", "content": 3}, ["items", 0, "content"]),
    "content part without a type": (
        {"role": "user", "content": [{"text": "x"}]},
        ["items", 0, "content", 0],
    ),
    "text part without text": (
        {"role": "user", "content": [{"type": "input_text"}]},
        ["items", 0, "content", 0, "text"],
    ),
    "function_call without call_id": (
        {"type": "function_call", "name": "f", "arguments": "{}"},
        ["items", 0, "call_id"],
    ),
    "function_call without name": (
        {"type": "function_call", "call_id": "c", "arguments": "{}"},
        ["items", 0, "name"],
    ),
    "function_call arguments not a string": (
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": {}},
        ["items", 0, "arguments"],
    ),
    "function_call name not an identifier": (
        {"type": "function_call", "call_id": "c", "name": "a b", "arguments": "{}"},
        ["items", 0, "tool_calls", 0, "function", "name"],
    ),
    "function_call_output without output": (
        {"type": "function_call_output", "call_id": "c"},
        ["items", 0, "output"],
    ),
    "a NUL character": ({"type": "x", "v": "a\x00b"}, ["items", 0, "v"]),
    "a lone surrogate": ({"type": "x", "v": "\ud800"}, ["items", 0, "v"]),
    "a NaN": ({"type": "x", "v": float("nan")}, ["items", 0, "v"]),
    "an infinity": ({"type": "x", "v": float("inf")}, ["items", 0, "v"]),
    "an integer of 5,000 digits": ({"type": "x", "v": 10**4999}, ["items", 0, "v"]),
    "nested 100 levels deep": (
        {"type": "x", "v": nested(100)},
        ["items", 0, "v", *[0] * 64],
    ),
    "a key not a string": ({"type": "x", 1: "v"}, ["items", 0]),
    "a value not JSON": ({"type": "x", "v": object()}, ["items", 0, "v"]),
    # An id is an index key: bounded (a huge one would not fit a btree entry).
    "an id longer than 255 characters": ({"type": "x", "id": "i" * 256}, ["items", 0, "id"]),
    "an id not a string": ({"type": "x", "id": {"a": "b" * 10_000}}, ["items", 0, "id"]),
}


@pytest.mark.parametrize("case", BAD_ITEMS.values(), ids=BAD_ITEMS.keys())
async def test_an_invalid_item_is_refused_at_its_place_and_nothing_is_stored(
    store: ChatStore, user_id: str, case: tuple[Any, list[str | int]]
) -> None:
    conversation = await new_conversation(store, user_id)
    item, loc = case
    with pytest.raises(ValidationError) as refused:
        await store.add_items(user_id, conversation, [item])
    assert refused.value.details[0]["loc"] == loc
    assert (await store.list_items(user_id, conversation)).items == []


async def test_an_add_carries_1_to_100_items(store: ChatStore, user_id: str) -> None:
    conversation = await new_conversation(store, user_id)
    for batch in ([], [EASY] * 101):
        with pytest.raises(ValidationError):
            await store.add_items(user_id, conversation, batch)
    assert len(await store.add_items(user_id, conversation, [EASY] * 100)) == 100


async def test_an_item_larger_than_the_content_cap_is_refused(
    store: ChatStore, user_id: str
) -> None:
    conversation = await new_conversation(store, user_id)
    cap = store.settings.max_content_chars
    big = {"type": "reasoning", "encrypted_content": "x" * cap}
    with pytest.raises(ValidationError) as refused:
        await store.add_items(user_id, conversation, [big])
    assert "characters as JSON" in str(refused.value)
    fits = {"type": "reasoning", "encrypted_content": "x" * (cap - 100)}
    assert (await store.add_items(user_id, conversation, [fits]))[0].item == fits


async def test_a_call_id_is_used_once_per_conversation(store: ChatStore, user_id: str) -> None:
    conversation = await new_conversation(store, user_id)
    with pytest.raises(ValidationError):
        await store.add_items(user_id, conversation, [FUNCTION_CALL, FUNCTION_CALL])
    await store.add_items(user_id, conversation, [FUNCTION_CALL])
    with pytest.raises(ValidationError):
        await store.add_items(user_id, conversation, [FUNCTION_CALL])
    assert len((await store.list_items(user_id, conversation)).items) == 1


async def test_a_message_without_text_parts_is_kept_as_an_item_only(
    store: ChatStore, user_id: str
) -> None:
    conversation = await new_conversation(store, user_id)
    image = {"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}
    both = {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "data:,"},
            {"type": "input_text", "text": "here"},
        ],
    }
    await store.add_items(user_id, conversation, [image, both])
    assert [i.item for i in (await store.list_items(user_id, conversation)).items] == [image, both]
    page = await store.list_messages(user_id, conversation)
    assert [(m.seq, m.content) for m in page.data] == [(2, "look\nhere")]


async def test_add_items_with_an_idempotency_key_stores_once(
    store: ChatStore, user_id: str
) -> None:
    conversation = await new_conversation(store, user_id)
    first = await store.add_items(user_id, conversation, TURN, idempotency_key="k-items")
    again = await store.add_items(user_id, conversation, TURN, idempotency_key="k-items")
    assert again == first
    assert len((await store.list_items(user_id, conversation)).items) == len(TURN)
    with pytest.raises(IdempotencyConflict):
        await store.add_items(user_id, conversation, [EASY], idempotency_key="k-items")


async def test_delete_item_of_a_chat_row_with_several_items_is_refused(
    store: ChatStore, user_id: str
) -> None:
    conversation = await new_conversation(store, user_id)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    await store.append_message(
        user_id, conversation, {"role": "assistant", "content": "a", "tool_calls": [call]}
    )
    with pytest.raises(ValidationError):
        await store.delete_item(user_id, conversation, "fc_1_0")
    assert len((await store.list_items(user_id, conversation)).items) == 2
    # Popping it returns its last item and keeps the other.
    popped = await store.pop_item(user_id, conversation)
    assert popped is not None and popped.item["type"] == "function_call"
    left = (await store.list_items(user_id, conversation)).items
    assert [i.item["type"] for i in left] == ["message"]


async def test_a_deleted_function_call_leaves_its_output_out_of_the_openai_export(
    store: ChatStore, user_id: str
) -> None:
    conversation = await new_conversation(store, user_id)
    await store.add_items(user_id, conversation, [EASY, FUNCTION_CALL, FUNCTION_OUTPUT])
    await store.delete_item(user_id, conversation, "fc_a")
    exported = json.loads(
        b"".join([chunk async for chunk in store.export_openai(user_id, conversation)])
    )
    assert [m["role"] for m in exported["messages"]] == ["user"]
    assert [i.id for i in (await store.list_items(user_id, conversation)).items] == [
        "msg_1",
        "fco_3",
    ]


async def test_the_http_api_serves_the_chat_view_of_a_conversation_with_items(
    store: ChatStore, client: httpx.AsyncClient, user: User
) -> None:
    conversation = await mixed_conversation(store, user.user_id)
    base = f"/api/conversations/{conversation}"
    listed = await client.get(f"{base}/messages", headers=user.headers)
    assert listed.status_code == 200, listed.text
    assert [m["seq"] for m in listed.json()["data"]] == [1, 3, 4, 6]
    for seq in (2, 5, 7):
        missing = await client.get(f"{base}/messages/{seq}", headers=user.headers)
        assert missing.status_code == 404, missing.text
    exported = await client.get(f"{base}/export?format=openai", headers=user.headers)
    assert exported.status_code == 200, exported.text
    assert [m["role"] for m in exported.json()["messages"]] == [
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    conversation_row = await client.get(base, headers=user.headers)
    assert conversation_row.status_code == 200, conversation_row.text


async def test_an_export_crosses_spans_holding_only_items_without_a_chat_form(
    store: ChatStore, user_id: str
) -> None:
    conversation = await new_conversation(store, user_id)
    await store.add_items(user_id, conversation, [EASY])
    for _ in range(25):  # 2,500 rows: more than two export spans (export.MAX_PAGE_ROWS)
        await store.add_items(user_id, conversation, [REASONING] * 100)
    await store.add_items(user_id, conversation, [ASSISTANT])
    assert [m.seq async for m in store.export_messages(user_id, conversation)] == [1, 2502]
    history = await store.history(user_id, conversation, limit=2)
    assert [m.seq for m in history.messages] == [1, 2502]
    assert not history.has_more


async def test_a_function_call_output_must_answer_a_call_of_its_own_path(
    store: ChatStore, user_id: str
) -> None:
    conversation = await new_conversation(store, user_id)
    await store.add_items(user_id, conversation, [EASY, FUNCTION_CALL])
    # A new first message: the call is on another branch now.
    await store.append_messages(
        user_id, conversation, [{"role": "user", "content": "x"}], parent_seq=0
    )
    with pytest.raises(ValidationError) as refused:
        await store.add_items(user_id, conversation, [FUNCTION_OUTPUT])
    assert refused.value.details[0]["loc"] == ["items", 0, "call_id"]
    assert await store.switch_branch(user_id, conversation, 2) == 2
    added = await store.add_items(user_id, conversation, [FUNCTION_OUTPUT])
    assert added[0].id == f"fco_{added[0].seq}"


async def test_retention_deletes_an_idle_conversation_with_its_items(
    store: ChatStore, user_id: str
) -> None:
    conversation = await mixed_conversation(store, user_id)
    async with store.pool.acquire() as connection:
        await connection.execute(
            "UPDATE conversations SET updated_at = now() - interval '4000 days' WHERE id = $1",
            uuid.UUID(conversation),
        )
    purged = await store.purge_idle(3650)
    assert uuid.UUID(conversation) in purged.ids[user_id]
    assert purged.messages[user_id] == len(TURN)
    with pytest.raises(NotFound):
        await store.list_items(user_id, conversation)
