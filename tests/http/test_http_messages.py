"""Messages (http-api.md): append one or a batch, list in both orders, get,
delete one, truncate; seq rules; the tool-call rules over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from support.contract import assert_error, assert_message, assert_validation_error
from support.requests import all_messages, append, create_conversation, tool_call, user_message
from support.users import User


def messages_path(conversation_id: str) -> str:
    return f"/api/conversations/{conversation_id}/messages"


async def new_conversation(client: httpx.AsyncClient, user: User) -> str:
    conversation_id: str = (await create_conversation(client, user))["id"]
    return conversation_id


async def filled(client: httpx.AsyncClient, user: User, count: int) -> str:
    conversation_id = await new_conversation(client, user)
    await append(
        client, user, conversation_id, *(user_message(f"m{i}") for i in range(1, count + 1))
    )
    return conversation_id


async def page(
    client: httpx.AsyncClient, user: User, conversation_id: str, **params: str | int
) -> dict[str, Any]:
    response = await client.get(messages_path(conversation_id), params=params, headers=user.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"data", "has_more", "first_seq", "last_seq"}, body
    for message in body["data"]:
        assert_message(message)
    seqs = [m["seq"] for m in body["data"]]
    assert body["first_seq"] == (seqs[0] if seqs else None), body
    assert body["last_seq"] == (seqs[-1] if seqs else None), body
    assert isinstance(body["has_more"], bool)
    return body


# -- append ---------------------------------------------------------------------


async def test_single_append_is_201_message(client: httpx.AsyncClient, user: User) -> None:
    conversation_id = await new_conversation(client, user)
    sent = {"role": "user", "content": "hi", "name": "alice_1", "metadata": {"client": "web"}}
    response = await client.post(messages_path(conversation_id), json=sent, headers=user.headers)
    assert response.status_code == 201, response.text
    message = assert_message(response.json())
    assert message == {
        "conversation_id": conversation_id,
        "seq": 1,
        "parent_seq": None,
        "role": "user",
        "content": "hi",
        "name": "alice_1",
        "tool_calls": None,
        "tool_call_id": None,
        "metadata": {"client": "web"},
        "created_at": message["created_at"],
    }
    second = await client.post(
        messages_path(conversation_id), json=user_message("again"), headers=user.headers
    )
    assert second.status_code == 201 and second.json()["seq"] == 2


@pytest.mark.parametrize("role", ["system", "developer", "user", "assistant"])
async def test_every_plain_role_is_accepted(
    client: httpx.AsyncClient, user: User, role: str
) -> None:
    conversation_id = await new_conversation(client, user)
    response = await client.post(
        messages_path(conversation_id), json={"role": role, "content": "x"}, headers=user.headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["role"] == role


async def test_list_append_is_201_data_with_consecutive_seqs(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await new_conversation(client, user)
    await append(client, user, conversation_id, user_message("zero"))
    batch: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call("c1")]},
        {"role": "tool", "tool_call_id": "c1", "content": "result"},
        {"role": "assistant", "content": "a"},
    ]
    response = await client.post(
        messages_path(conversation_id), json={"messages": batch}, headers=user.headers
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"data"}
    stored = [assert_message(m) for m in body["data"]]
    assert [m["seq"] for m in stored] == [2, 3, 4, 5, 6]
    assert [m["role"] for m in stored] == [m["role"] for m in batch]
    assert stored[2]["tool_calls"] == [tool_call("c1")]
    assert stored[2]["content"] is None
    assert stored[3]["tool_call_id"] == "c1"
    assert [m["seq"] for m in await all_messages(client, user, conversation_id)] == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]


async def test_list_append_is_atomic(client: httpx.AsyncClient, user: User) -> None:
    conversation_id = await filled(client, user, 2)
    before = await all_messages(client, user, conversation_id)
    batch: list[Any] = [user_message(f"b{i}") for i in range(5)]
    batch[3] = {"role": "user", "content": 3}
    response = await client.post(
        messages_path(conversation_id), json={"messages": batch}, headers=user.headers
    )
    assert_validation_error(response, "messages", 3, "content")
    assert await all_messages(client, user, conversation_id) == before


async def test_list_append_refused_by_the_database_stores_nothing(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await filled(client, user, 1)
    before = await all_messages(client, user, conversation_id)
    batch: list[Any] = [user_message(f"b{i}") for i in range(4)]
    batch.append({"role": "tool", "tool_call_id": "never_made", "content": "x"})
    response = await client.post(
        messages_path(conversation_id), json={"messages": batch}, headers=user.headers
    )
    assert_validation_error(response, "tool_call_id")
    assert await all_messages(client, user, conversation_id) == before
    # The failed batch reserved no seq.
    again = await append(client, user, conversation_id, user_message("next"))
    assert again[0]["seq"] == 2


@pytest.mark.parametrize("count", [0, 101])
async def test_list_append_size_out_of_range_is_422(
    client: httpx.AsyncClient, user: User, count: int
) -> None:
    conversation_id = await new_conversation(client, user)
    body = {"messages": [user_message() for _ in range(count)]}
    response = await client.post(messages_path(conversation_id), json=body, headers=user.headers)
    assert_validation_error(response, "messages")
    assert await all_messages(client, user, conversation_id) == []


async def test_list_append_of_100_is_accepted(client: httpx.AsyncClient, user: User) -> None:
    conversation_id = await new_conversation(client, user)
    stored = await append(client, user, conversation_id, *(user_message() for _ in range(100)))
    assert [m["seq"] for m in stored] == list(range(1, 101))


# -- expected_last_seq ------------------------------------------------------------


async def guarded(
    client: httpx.AsyncClient, user: User, conversation_id: str, expected: int, content: str
) -> httpx.Response:
    body = {"messages": [user_message(content)], "expected_last_seq": expected}
    return await client.post(messages_path(conversation_id), json=body, headers=user.headers)


async def test_expected_last_seq_zero_on_empty_conversation_is_201(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await new_conversation(client, user)
    response = await guarded(client, user, conversation_id, 0, "first")
    assert response.status_code == 201, response.text
    assert response.json()["data"][0]["seq"] == 1
    following = await guarded(client, user, conversation_id, 1, "second")
    assert following.status_code == 201, following.text
    assert following.json()["data"][0]["seq"] == 2


@pytest.mark.parametrize("expected", [0, 2, 4, 2**63 - 1])
async def test_stale_expected_last_seq_is_409_and_stores_nothing(
    client: httpx.AsyncClient, user: User, expected: int
) -> None:
    conversation_id = await filled(client, user, 3)
    before = await all_messages(client, user, conversation_id)
    response = await guarded(client, user, conversation_id, expected, "late")
    assert_error(response, 409, "seq_conflict")
    assert await all_messages(client, user, conversation_id) == before


async def test_two_writers_with_the_same_expected_last_seq_one_wins(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await filled(client, user, 1)
    first = await guarded(client, user, conversation_id, 1, "agent")
    second = await guarded(client, user, conversation_id, 1, "user")
    assert first.status_code == 201, first.text
    assert_error(second, 409, "seq_conflict")
    assert [m["content"] for m in await all_messages(client, user, conversation_id)] == [
        "m1",
        "agent",
    ]


async def test_expected_last_seq_zero_after_truncating_everything(
    client: httpx.AsyncClient, user: User
) -> None:
    # "0 for an empty conversation": truncate every message, then append as
    # to an empty conversation.
    conversation_id = await filled(client, user, 3)
    response = await client.delete(
        messages_path(conversation_id), params={"from_seq": 1}, headers=user.headers
    )
    assert response.json() == {"deleted": 3}
    assert await all_messages(client, user, conversation_id) == []
    guarded_append = await guarded(client, user, conversation_id, 0, "fresh start")
    assert guarded_append.status_code == 201, guarded_append.text


async def test_expected_last_seq_after_edit_and_regenerate(
    client: httpx.AsyncClient, user: User
) -> None:
    # The edit-and-regenerate flow: delete from seq 3, then append the edited
    # message guarded by the last seq the client now sees (2).
    conversation_id = await filled(client, user, 4)
    truncated = await client.delete(
        messages_path(conversation_id), params={"from_seq": 3}, headers=user.headers
    )
    assert truncated.json() == {"deleted": 2}
    listing = await page(client, user, conversation_id)
    assert listing["last_seq"] == 2
    response = await guarded(client, user, conversation_id, listing["last_seq"], "edited")
    assert response.status_code == 201, response.text
    # seq is never reused: the edited message comes after the deleted ones.
    assert response.json()["data"][0]["seq"] == 5


# -- seq ------------------------------------------------------------------------


async def test_seq_is_never_reused_after_deleting_the_last_message(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await filled(client, user, 3)
    deleted = await client.delete(f"{messages_path(conversation_id)}/3", headers=user.headers)
    assert deleted.status_code == 204
    stored = await append(client, user, conversation_id, user_message("after"))
    assert stored[0]["seq"] == 4
    assert [m["seq"] for m in await all_messages(client, user, conversation_id)] == [1, 2, 4]


# -- list -------------------------------------------------------------------------


async def test_list_defaults_asc_all(client: httpx.AsyncClient, user: User) -> None:
    conversation_id = await filled(client, user, 5)
    body = await page(client, user, conversation_id)
    assert [m["seq"] for m in body["data"]] == [1, 2, 3, 4, 5]
    assert [m["content"] for m in body["data"]] == ["m1", "m2", "m3", "m4", "m5"]
    assert body["has_more"] is False


async def test_list_default_limit_is_100(client: httpx.AsyncClient, user: User) -> None:
    conversation_id = await filled(client, user, 100)
    await append(client, user, conversation_id, user_message("101"))
    body = await page(client, user, conversation_id)
    assert len(body["data"]) == 100 and body["has_more"] is True
    assert body["last_seq"] == 100


async def test_list_empty_conversation(client: httpx.AsyncClient, user: User) -> None:
    conversation_id = await new_conversation(client, user)
    body = await page(client, user, conversation_id)
    assert body == {"data": [], "has_more": False, "first_seq": None, "last_seq": None}


@pytest.mark.parametrize(
    ("params", "seqs", "has_more"),
    [
        ({"limit": 3}, [1, 2, 3], True),
        ({"limit": 10}, list(range(1, 11)), False),
        ({"limit": 11}, list(range(1, 11)), False),
        ({"after": 7}, [8, 9, 10], False),
        ({"after": 7, "limit": 2}, [8, 9], True),
        ({"after": 0}, list(range(1, 11)), False),
        ({"before": 4}, [1, 2, 3], False),
        ({"before": 4, "limit": 2}, [1, 2], True),
        ({"after": 2, "before": 8, "limit": 3}, [3, 4, 5], True),
        ({"after": 2, "before": 6, "limit": 3}, [3, 4, 5], False),
        ({"after": 10}, [], False),
        ({"after": 5, "before": 6}, [], False),
        ({"after": 9, "before": 2}, [], False),
        ({"order": "desc"}, list(range(10, 0, -1)), False),
        ({"order": "desc", "limit": 3}, [10, 9, 8], True),
        ({"order": "desc", "before": 4}, [3, 2, 1], False),
        ({"order": "desc", "before": 4, "limit": 2}, [3, 2], True),
        ({"order": "desc", "after": 7}, [10, 9, 8], False),
        ({"order": "desc", "after": 2, "before": 8, "limit": 3}, [7, 6, 5], True),
        ({"order": "desc", "after": 4, "before": 8, "limit": 3}, [7, 6, 5], False),
        ({"order": "desc", "before": 1}, [], False),
        ({"order": "asc", "after": 9_223_372_036_854_775_806}, [], False),
    ],
)
async def test_list_bounds_limit_and_has_more(
    client: httpx.AsyncClient,
    user: User,
    params: dict[str, str | int],
    seqs: list[int],
    has_more: bool,
) -> None:
    conversation_id = await filled(client, user, 10)
    body = await page(client, user, conversation_id, **params)
    assert [m["seq"] for m in body["data"]] == seqs
    assert body["has_more"] is has_more


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_walking_all_pages_has_no_duplicate_and_no_gap(
    client: httpx.AsyncClient, user: User, order: str
) -> None:
    conversation_id = await filled(client, user, 23)
    # A deleted message is the only hole the walk may show.
    assert (
        await client.delete(f"{messages_path(conversation_id)}/11", headers=user.headers)
    ).status_code == 204
    expected = [seq for seq in range(1, 24) if seq != 11]
    if order == "desc":
        expected.reverse()
    seen: list[int] = []
    params: dict[str, str | int] = {"order": order, "limit": 4}
    for _ in range(20):
        body = await page(client, user, conversation_id, **params)
        seen.extend(m["seq"] for m in body["data"])
        if not body["has_more"]:
            break
        # The next page starts past this page's last seq, in the page's direction.
        params["after" if order == "asc" else "before"] = body["last_seq"]
    assert seen == expected
    final = await page(client, user, conversation_id, **params)
    assert final["data"] == [] or final["has_more"] is False


async def test_desc_pages_report_first_and_last_seq(client: httpx.AsyncClient, user: User) -> None:
    conversation_id = await filled(client, user, 6)
    body = await page(client, user, conversation_id, order="desc", limit=2)
    assert (body["first_seq"], body["last_seq"]) == (6, 5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("limit", "0"),
        ("limit", "1001"),
        ("limit", "x"),
        ("limit", "-1"),
        ("limit", "1.5"),
        ("limit", ""),
        ("order", "sideways"),
        ("order", "ASC"),
        ("order", ""),
        ("after", "-1"),
        ("after", "x"),
        ("after", "1.5"),
        ("after", "99999999999999999999"),
        ("before", "-1"),
        ("before", "y"),
        ("before", "9223372036854775808"),
    ],
)
async def test_bad_list_parameter_is_422(
    client: httpx.AsyncClient, user: User, name: str, value: str
) -> None:
    conversation_id = await filled(client, user, 1)
    response = await client.get(
        messages_path(conversation_id), params={name: value}, headers=user.headers
    )
    assert_validation_error(response, "query", name)


@pytest.mark.parametrize("limit", ["1", "1000"])
async def test_list_limit_bounds_are_accepted(
    client: httpx.AsyncClient, user: User, limit: str
) -> None:
    conversation_id = await filled(client, user, 2)
    body = await page(client, user, conversation_id, limit=limit)
    assert len(body["data"]) == min(int(limit), 2)


# -- one message ------------------------------------------------------------------


async def test_get_message_by_seq(client: httpx.AsyncClient, user: User) -> None:
    conversation_id = await filled(client, user, 3)
    listed = await all_messages(client, user, conversation_id)
    for message in listed:
        response = await client.get(
            f"{messages_path(conversation_id)}/{message['seq']}", headers=user.headers
        )
        assert response.status_code == 200, response.text
        assert response.json() == message
    missing = await client.get(f"{messages_path(conversation_id)}/4", headers=user.headers)
    assert_error(missing, 404, "not_found")


async def test_delete_message_is_204_then_404(client: httpx.AsyncClient, user: User) -> None:
    conversation_id = await filled(client, user, 3)
    path = f"{messages_path(conversation_id)}/2"
    response = await client.delete(path, headers=user.headers)
    assert response.status_code == 204
    assert response.content == b""
    assert_error(await client.get(path, headers=user.headers), 404, "not_found")
    assert_error(await client.delete(path, headers=user.headers), 404, "not_found")
    assert [m["seq"] for m in await all_messages(client, user, conversation_id)] == [1, 3]


@pytest.mark.parametrize(
    "seq", ["abc", "-1", "1.5", "0", "99999999999999999999", "9223372036854775808", "1e3", "%201"]
)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_bad_seq_in_path_is_404(
    client: httpx.AsyncClient, user: User, method: str, seq: str
) -> None:
    conversation_id = await filled(client, user, 2)
    response = await client.request(
        method, f"{messages_path(conversation_id)}/{seq}", headers=user.headers
    )
    assert_error(response, 404, "not_found")
    assert len(await all_messages(client, user, conversation_id)) == 2


# -- truncate ---------------------------------------------------------------------


async def test_truncate_from_seq_deletes_the_tail(client: httpx.AsyncClient, user: User) -> None:
    conversation_id = await filled(client, user, 5)
    response = await client.delete(
        messages_path(conversation_id), params={"from_seq": 3}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"deleted": 3}
    assert [m["seq"] for m in await all_messages(client, user, conversation_id)] == [1, 2]
    again = await client.delete(
        messages_path(conversation_id), params={"from_seq": 3}, headers=user.headers
    )
    assert again.status_code == 200 and again.json() == {"deleted": 0}
    beyond = await client.delete(
        messages_path(conversation_id),
        params={"from_seq": "9223372036854775807"},
        headers=user.headers,
    )
    assert beyond.status_code == 200 and beyond.json() == {"deleted": 0}
    conversation = await client.get(f"/api/conversations/{conversation_id}", headers=user.headers)
    assert conversation.json()["message_count"] == 2


async def test_truncate_from_one_empties_the_conversation(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await filled(client, user, 4)
    response = await client.delete(
        messages_path(conversation_id), params={"from_seq": 1}, headers=user.headers
    )
    assert response.json() == {"deleted": 4}
    assert await all_messages(client, user, conversation_id) == []


@pytest.mark.parametrize("query", ["", "?from_seq=", "?from_seq=0", "?from_seq=x", "?from_seq=-2"])
async def test_truncate_without_a_valid_from_seq_is_422(
    client: httpx.AsyncClient, user: User, query: str
) -> None:
    conversation_id = await filled(client, user, 2)
    response = await client.delete(messages_path(conversation_id) + query, headers=user.headers)
    assert_validation_error(response, "from_seq")
    assert len(await all_messages(client, user, conversation_id)) == 2


# -- tool rules -------------------------------------------------------------------


async def test_tool_message_answering_an_earlier_tool_call_is_201(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await new_conversation(client, user)
    await append(
        client,
        user,
        conversation_id,
        user_message("weather?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [tool_call("call_a"), tool_call("call_b")],
        },
    )
    for call_id in ("call_a", "call_b"):
        response = await client.post(
            messages_path(conversation_id),
            json={"role": "tool", "tool_call_id": call_id, "content": "sunny"},
            headers=user.headers,
        )
        assert response.status_code == 201, response.text
        assert response.json()["tool_call_id"] == call_id


async def test_tool_message_with_unknown_tool_call_id_is_422(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await new_conversation(client, user)
    await append(
        client,
        user,
        conversation_id,
        {"role": "assistant", "content": None, "tool_calls": [tool_call("call_a")]},
    )
    response = await client.post(
        messages_path(conversation_id),
        json={"role": "tool", "tool_call_id": "call_zzz", "content": "x"},
        headers=user.headers,
    )
    error = assert_validation_error(response, "tool_call_id")
    assert any("tool_call_id" in item["loc"] for item in error["details"])
    assert len(await all_messages(client, user, conversation_id)) == 1


async def test_tool_call_of_another_conversation_does_not_count(
    client: httpx.AsyncClient, user: User
) -> None:
    elsewhere = await new_conversation(client, user)
    await append(
        client,
        user,
        elsewhere,
        {"role": "assistant", "content": None, "tool_calls": [tool_call("call_x")]},
    )
    conversation_id = await new_conversation(client, user)
    response = await client.post(
        messages_path(conversation_id),
        json={"role": "tool", "tool_call_id": "call_x", "content": "x"},
        headers=user.headers,
    )
    assert_validation_error(response, "tool_call_id")


async def test_tool_message_before_its_call_in_one_batch_is_422(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await new_conversation(client, user)
    body = {
        "messages": [
            {"role": "tool", "tool_call_id": "c1", "content": "x"},
            {"role": "assistant", "content": None, "tool_calls": [tool_call("c1")]},
        ]
    }
    response = await client.post(messages_path(conversation_id), json=body, headers=user.headers)
    assert_validation_error(response, "tool_call_id")
    assert await all_messages(client, user, conversation_id) == []


async def test_reused_tool_call_id_is_422(client: httpx.AsyncClient, user: User) -> None:
    conversation_id = await new_conversation(client, user)
    call = {"role": "assistant", "content": None, "tool_calls": [tool_call("dup")]}
    await append(client, user, conversation_id, call)
    response = await client.post(messages_path(conversation_id), json=call, headers=user.headers)
    assert_validation_error(response, "tool_calls")
    in_one_batch = await client.post(
        messages_path(conversation_id),
        json={"messages": [{**call, "tool_calls": [tool_call("d2")]}] * 2},
        headers=user.headers,
    )
    assert_validation_error(in_one_batch, "tool_calls")
    assert len(await all_messages(client, user, conversation_id)) == 1


@pytest.mark.parametrize(
    ("message", "loc"),
    [
        ({"role": "tool", "content": "x"}, "body"),
        ({"role": "user", "content": "x", "tool_call_id": "c1"}, "body"),
        ({"role": "user", "content": "x", "tool_calls": [tool_call("c1")]}, "body"),
        ({"role": "assistant"}, "body"),
        ({"role": "assistant", "content": None}, "body"),
        ({"role": "user", "content": None}, "body"),
        ({"role": "assistant", "content": None, "tool_calls": []}, "tool_calls"),
    ],
)
async def test_role_rules_are_422(
    client: httpx.AsyncClient, user: User, message: dict[str, Any], loc: str
) -> None:
    conversation_id = await new_conversation(client, user)
    response = await client.post(messages_path(conversation_id), json=message, headers=user.headers)
    assert_validation_error(response, loc)
    assert await all_messages(client, user, conversation_id) == []


async def test_assistant_with_content_and_tool_calls_is_accepted(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await new_conversation(client, user)
    message = {
        "role": "assistant",
        "content": "let me check",
        "tool_calls": [tool_call("c1", "get_weather", '{"city": "Paris"}')],
    }
    response = await client.post(messages_path(conversation_id), json=message, headers=user.headers)
    assert response.status_code == 201, response.text
    assert response.json()["tool_calls"] == message["tool_calls"]
    assert response.json()["content"] == "let me check"


# -- text that PostgreSQL cannot hold -------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"role": "user", "content": "a\\u0000b"}',
        b'{"role": "user", "content": "\\u0000"}',
        b'{"role": "user", "content": "x", "name": "a\\u0000"}',
        b'{"role": "user", "content": "x", "metadata": {"k": "\\u0000"}}',
        b'{"role": "user", "content": "x", "metadata": {"\\u0000": "v"}}',
        b'{"role": "user", "content": "\\ud800"}',
        b'{"role": "user", "content": "a\\udfffb"}',
        b'{"role": "user", "content": "\\ude00\\ud83d"}',
        b'{"role": "user", "content": "x", "metadata": {"k": "\\ud800"}}',
        b'{"role": "user", "content": "x", "metadata": {"\\udbff": "v"}}',
        b'{"role": "assistant", "tool_calls": [{"id": "c\\u0000", "type": "function",'
        b' "function": {"name": "f", "arguments": "{}"}}]}',
        b'{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",'
        b' "function": {"name": "f", "arguments": "\\u0000"}}]}',
        b'{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",'
        b' "function": {"name": "f", "arguments": "\\ud800"}}]}',
        b'{"messages": [{"role": "user", "content": "ok"},'
        b' {"role": "user", "content": "\\u0000"}]}',
    ],
)
async def test_nul_and_lone_surrogates_are_422_never_500(
    client: httpx.AsyncClient, user: User, raw: bytes
) -> None:
    conversation_id = await new_conversation(client, user)
    response = await client.post(
        messages_path(conversation_id), content=raw, headers=user.json_headers()
    )
    assert_validation_error(response)
    assert await all_messages(client, user, conversation_id) == []


async def test_escaped_surrogate_pair_and_non_ascii_are_stored_intact(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await new_conversation(client, user)
    raw = b'{"role": "user", "content": "\\ud83d\\ude00 caf\\u00e9 \xe6\x97\xa5\xe6\x9c\xac"}'
    response = await client.post(
        messages_path(conversation_id), content=raw, headers=user.json_headers()
    )
    assert response.status_code == 201, response.text
    assert response.json()["content"] == "\U0001f600 caf\u00e9 \u65e5\u672c"
    (stored,) = await all_messages(client, user, conversation_id)
    assert stored["content"] == "\U0001f600 caf\u00e9 \u65e5\u672c"


async def test_content_at_the_cap_is_accepted_and_over_it_is_422(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await new_conversation(client, user)
    at_cap = await client.post(
        messages_path(conversation_id), json=user_message("x" * 1_000_000), headers=user.headers
    )
    assert at_cap.status_code == 201, at_cap.text[:300]
    over = await client.post(
        messages_path(conversation_id), json=user_message("x" * 1_000_001), headers=user.headers
    )
    assert_validation_error(over, "content")


async def test_concurrent_appends_get_gap_free_distinct_seqs(
    client: httpx.AsyncClient, user: User
) -> None:
    conversation_id = await new_conversation(client, user)

    async def post(index: int) -> httpx.Response:
        body: dict[str, Any] = (
            user_message(f"single {index}")
            if index % 2
            else {"messages": [user_message(f"pair {index} a"), user_message(f"pair {index} b")]}
        )
        return await client.post(messages_path(conversation_id), json=body, headers=user.headers)

    responses = await asyncio.gather(*(post(index) for index in range(30)))
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    stored = await all_messages(client, user, conversation_id)
    assert [m["seq"] for m in stored] == list(range(1, 46))
    # Each list append got consecutive seqs, in its own order.
    for response in responses:
        body = response.json()
        if "data" in body:
            (first, second) = body["data"]
            assert second["seq"] == first["seq"] + 1
            assert first["content"].endswith(" a") and second["content"].endswith(" b")
