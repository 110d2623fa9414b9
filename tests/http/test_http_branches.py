"""Branches (issue 14, http-api.md "Branches"): edit and regenerate keep the
old answer. Every message has a parent; the conversation shows its active
path, from the first message to the active leaf. Each test is named after
the rule it shows."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import httpx
from support.contract import assert_error, assert_message, assert_validation_error
from support.requests import all_messages, append, create_conversation, tool_call, user_message
from support.users import User


def assistant(content: str) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


async def new_conversation(client: httpx.AsyncClient, user: User) -> str:
    conversation_id: str = (await create_conversation(client, user))["id"]
    return conversation_id


async def post(
    client: httpx.AsyncClient, user: User, conversation_id: str, body: dict[str, Any]
) -> httpx.Response:
    return await client.post(
        f"/api/conversations/{conversation_id}/messages", json=body, headers=user.headers
    )


async def branch(
    client: httpx.AsyncClient,
    user: User,
    conversation_id: str,
    parent_seq: int,
    *messages: dict[str, Any],
) -> list[dict[str, Any]]:
    response = await post(
        client,
        user,
        conversation_id,
        {"messages": list(messages), "parent_seq": parent_seq},
    )
    assert response.status_code == 201, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def path(client: httpx.AsyncClient, user: User, conversation_id: str) -> list[int]:
    return [m["seq"] for m in await all_messages(client, user, conversation_id)]


async def siblings(
    client: httpx.AsyncClient, user: User, conversation_id: str, seq: int
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/api/conversations/{conversation_id}/messages/{seq}/siblings", headers=user.headers
    )
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def switch(
    client: httpx.AsyncClient, user: User, conversation_id: str, seq: int
) -> httpx.Response:
    return await client.put(
        f"/api/conversations/{conversation_id}/active",
        json={"leaf_seq": seq},
        headers=user.headers,
    )


async def regenerated(client: httpx.AsyncClient, user: User) -> str:
    """1 user, 2 assistant (old answer); 3 assistant regenerated (sibling of 2)."""
    conversation_id = await new_conversation(client, user)
    await append(client, user, conversation_id, user_message("q"), assistant("old answer"))
    await branch(client, user, conversation_id, 1, assistant("new answer"))
    return conversation_id


async def test_every_message_has_its_parent_and_the_first_none(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await new_conversation(client, user)
    stored = await append(client, user, conversation_id, user_message("a"), assistant("b"))
    single = await post(client, user, conversation_id, user_message("c"))
    assert single.status_code == 201, single.text
    assert [m["parent_seq"] for m in stored] == [None, 1]
    assert assert_message(single.json())["parent_seq"] == 2


async def test_regenerate_is_a_sibling_of_the_reply_and_keeps_the_old_answer(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await regenerated(client, user)
    assert await path(client, user, conversation_id) == [1, 3]
    found = await siblings(client, user, conversation_id, 3)
    assert [(s["seq"], s["content"], s["on_active_path"]) for s in found] == [
        (2, "old answer", False),
        (3, "new answer", True),
    ]


async def test_edit_is_a_sibling_of_the_user_message_and_continues_from_it(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await new_conversation(client, user)
    await append(
        client, user, conversation_id, user_message("q1"), assistant("a1"), user_message("q2")
    )
    await append(client, user, conversation_id, assistant("a2"))
    # Edit message 3 (q2): a new sibling of it, with its answer, in one batch.
    stored = await branch(
        client, user, conversation_id, 2, user_message("q2 edited"), assistant("a2'")
    )
    assert [(m["seq"], m["parent_seq"]) for m in stored] == [(5, 2), (6, 5)]
    assert await path(client, user, conversation_id) == [1, 2, 5, 6]
    # A plain append continues the active branch.
    more = await append(client, user, conversation_id, user_message("q3"))
    assert more[0]["parent_seq"] == 6


async def test_single_append_takes_parent_seq_too(client: httpx.AsyncClient, user: User) -> None:
    conversation_id = await new_conversation(client, user)
    await append(client, user, conversation_id, user_message("q"), assistant("a"))
    response = await post(client, user, conversation_id, {**assistant("again"), "parent_seq": 1})
    assert response.status_code == 201, response.text
    assert response.json()["parent_seq"] == 1
    assert await path(client, user, conversation_id) == [1, 3]


async def test_parent_seq_zero_starts_a_new_first_message(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await new_conversation(client, user)
    await append(client, user, conversation_id, user_message("first"), assistant("a"))
    stored = await branch(client, user, conversation_id, 0, user_message("first, edited"))
    assert stored[0]["parent_seq"] is None
    assert await path(client, user, conversation_id) == [3]
    found = await siblings(client, user, conversation_id, 1)
    assert [(s["seq"], s["on_active_path"]) for s in found] == [(1, False), (3, True)]


async def test_reads_follow_the_active_path_in_both_orders_and_with_bounds(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await regenerated(client, user)
    await append(client, user, conversation_id, user_message("next"))
    base = f"/api/conversations/{conversation_id}/messages"
    desc = await client.get(base, params={"order": "desc"}, headers=user.headers)
    assert [m["seq"] for m in desc.json()["data"]] == [4, 3, 1]
    bounded = await client.get(base, params={"after": 1, "before": 4}, headers=user.headers)
    assert [m["seq"] for m in bounded.json()["data"]] == [3]


async def test_chat_history_follows_the_active_path(client: httpx.AsyncClient, user: User) -> None:
    conversation_id = await regenerated(client, user)
    response = await client.get(f"/api/chat/{conversation_id}/history", headers=user.headers)
    assert response.status_code == 200, response.text
    assert [m["content"] for m in response.json()["messages"]] == ["q", "new answer"]


async def test_exports_are_the_active_path_and_an_import_rebuilds_it(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await regenerated(client, user)
    export = f"/api/conversations/{conversation_id}/export"
    openai = await client.get(export, headers=user.headers)
    assert [m["content"] for m in openai.json()["messages"]] == ["q", "new answer"]
    jsonl = await client.get(export, params={"format": "jsonl"}, headers=user.headers)
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [(m["seq"], m["parent_seq"]) for m in lines] == [(1, None), (3, 1)]
    imported = await client.post(
        "/api/conversations/import",
        content=jsonl.content,
        headers={**user.headers, "content-type": "application/x-ndjson"},
    )
    assert imported.status_code == 201, imported.text
    rebuilt = await all_messages(client, user, imported.json()["id"])
    assert [(m["seq"], m["parent_seq"], m["content"]) for m in rebuilt] == [
        (1, None, "q"),
        (2, 1, "new answer"),
    ]


async def test_switching_to_a_message_makes_its_newest_descendant_the_active_leaf(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await regenerated(client, user)  # 1 -> 2 | 3
    await branch(client, user, conversation_id, 1, assistant("third answer"))  # 4
    response = await switch(client, user, conversation_id, 2)
    assert response.status_code == 200, response.text
    assert response.json() == {"leaf_seq": 2}
    await append(client, user, conversation_id, user_message("on 2"))  # 5, child of 2
    await switch(client, user, conversation_id, 4)
    assert await path(client, user, conversation_id) == [1, 4]
    # Switching to a message with descendants shows its newest one.
    response = await switch(client, user, conversation_id, 2)
    assert response.json() == {"leaf_seq": 5}
    assert await path(client, user, conversation_id) == [1, 2, 5]
    found = await siblings(client, user, conversation_id, 2)
    flags = {s["seq"]: s["on_active_path"] for s in found}
    assert flags == {2: True, 3: False, 4: False}


async def test_appending_after_a_switch_continues_the_switched_branch(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await regenerated(client, user)
    await switch(client, user, conversation_id, 2)
    stored = await append(client, user, conversation_id, user_message("follow-up"))
    assert stored[0]["parent_seq"] == 2
    assert await path(client, user, conversation_id) == [1, 2, 4]


async def test_expected_last_seq_compares_with_the_active_leaf(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await regenerated(client, user)  # last seq 3, leaf 3
    await switch(client, user, conversation_id, 2)  # leaf 2
    stale = await post(
        client, user, conversation_id, {"messages": [user_message()], "expected_last_seq": 3}
    )
    assert_error(stale, 409, "seq_conflict")
    ok = await post(
        client, user, conversation_id, {"messages": [user_message()], "expected_last_seq": 2}
    )
    assert ok.status_code == 201, ok.text


async def test_parent_seq_must_be_on_the_active_path(client: httpx.AsyncClient, user: User) -> None:
    conversation_id = await regenerated(client, user)  # 2 is off the path
    for parent in (2, 99):
        response = await post(
            client, user, conversation_id, {"messages": [user_message()], "parent_seq": parent}
        )
        assert_validation_error(response, "parent_seq")
    assert await path(client, user, conversation_id) == [1, 3]


async def test_a_tool_message_answers_a_tool_call_on_its_own_path(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await new_conversation(client, user)
    await append(
        client,
        user,
        conversation_id,
        user_message("q"),
        {"role": "assistant", "content": None, "tool_calls": [tool_call("call_a")]},
    )
    # Regenerated without the tool call: call_a is on another branch now.
    await branch(client, user, conversation_id, 1, assistant("no tools"))
    answer = {"role": "tool", "content": "42", "tool_call_id": "call_a"}
    refused = await post(client, user, conversation_id, {"messages": [answer]})
    assert_validation_error(refused, "messages", 0, "tool_call_id")
    # On the branch that made the call, it is answered.
    await switch(client, user, conversation_id, 2)
    ok = await post(client, user, conversation_id, {"messages": [answer]})
    assert ok.status_code == 201, ok.text


async def test_deleting_a_message_gives_its_children_to_its_parent(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await regenerated(client, user)  # 1 -> 2 | 3
    gone = await client.delete(
        f"/api/conversations/{conversation_id}/messages/1", headers=user.headers
    )
    assert gone.status_code == 204, gone.text
    found = await siblings(client, user, conversation_id, 3)
    assert [(s["seq"], s["parent_seq"]) for s in found] == [(2, None), (3, None)]
    assert await path(client, user, conversation_id) == [3]


async def test_deleting_the_active_leaf_makes_its_parent_the_leaf(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await regenerated(client, user)
    await client.delete(f"/api/conversations/{conversation_id}/messages/3", headers=user.headers)
    assert await path(client, user, conversation_id) == [1]
    stored = await append(client, user, conversation_id, assistant("after"))
    assert stored[0]["parent_seq"] == 1


async def test_truncate_deletes_the_active_suffix_with_its_branches_and_keeps_earlier_ones(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await new_conversation(client, user)
    await append(
        client, user, conversation_id, user_message("q1"), assistant("a1"), user_message("q2")
    )  # 1, 2, 3
    await branch(client, user, conversation_id, 1, assistant("a1 again"))  # 4 (sibling of 2)
    await append(client, user, conversation_id, user_message("q2'"))  # 5, child of 4
    await branch(client, user, conversation_id, 4, user_message("q2''"))  # 6 (sibling of 5)
    response = await client.delete(
        f"/api/conversations/{conversation_id}/messages",
        params={"from_seq": 4},
        headers=user.headers,
    )
    assert response.json() == {"deleted": 3}  # 4 and below it: 5, 6
    assert await path(client, user, conversation_id) == [1]
    # The branch from 1 that was not on the active path (2, 3) is kept.
    assert [s["seq"] for s in await siblings(client, user, conversation_id, 2)] == [2]
    conversation = await client.get(f"/api/conversations/{conversation_id}", headers=user.headers)
    assert conversation.json()["message_count"] == 3


async def test_branch_endpoints_of_an_unknown_message_are_404(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await regenerated(client, user)
    for seq in (99, 0):
        listed = await client.get(
            f"/api/conversations/{conversation_id}/messages/{seq}/siblings",
            headers=user.headers,
        )
        assert_error(listed, 404, "not_found")
    assert_error(await switch(client, user, conversation_id, 99), 404, "not_found")


async def test_switch_body_is_validated(client: httpx.AsyncClient, user: User) -> None:
    conversation_id = await regenerated(client, user)
    for body in ({}, {"leaf_seq": 0}, {"leaf_seq": "x"}, {"leaf_seq": 1, "other": 1}):
        response = await client.put(
            f"/api/conversations/{conversation_id}/active", json=body, headers=user.headers
        )
        assert response.status_code == 422, (body, response.text)


async def test_concurrent_appends_and_switches_keep_one_active_path(
    client: httpx.AsyncClient, user: User
) -> None:
    # Plain appends chain (none becomes an accidental branch), branching
    # appends and switches run under the row lock: whatever their order, the
    # messages marked active are exactly the chain from the leaf to the root.
    conversation_id = await regenerated(client, user)  # 1 -> 2 | 3
    jobs = []
    for i in range(6):
        jobs.append(post(client, user, conversation_id, user_message(f"plain {i}")))
        jobs.append(
            post(client, user, conversation_id, {**assistant(f"again {i}"), "parent_seq": 1})
        )
        jobs.append(switch(client, user, conversation_id, 2 + i % 2))
    responses = await asyncio.gather(*jobs)
    assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses]
    shown = await all_messages(client, user, conversation_id)
    assert shown[0]["parent_seq"] is None
    for parent, child in itertools.pairwise(shown):
        assert child["parent_seq"] == parent["seq"], shown
    every = await client.get(
        f"/api/conversations/{conversation_id}/export",
        params={"format": "jsonl"},
        headers=user.headers,
    )
    assert len(every.text.splitlines()) == len(shown)
    # Each message of the path says so among its siblings, and only it.
    for message in shown:
        found = await siblings(client, user, conversation_id, message["seq"])
        assert [s["seq"] for s in found if s["on_active_path"]] == [message["seq"]]


async def test_a_switch_leaves_updated_at_alone(client: httpx.AsyncClient, user: User) -> None:
    conversation_id = await regenerated(client, user)
    url = f"/api/conversations/{conversation_id}"
    before = (await client.get(url, headers=user.headers)).json()["updated_at"]
    assert (await switch(client, user, conversation_id, 2)).status_code == 200
    assert (await client.get(url, headers=user.headers)).json()["updated_at"] == before
