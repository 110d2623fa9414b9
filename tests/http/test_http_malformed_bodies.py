"""Hundreds of malformed bodies against every endpoint that takes one: each is
a 4xx with the contract's error body (400 unparseable, 409 stale
expected_last_seq, 422 anything else), never a 500, and none of them changes
anything: at the end the target conversation holds exactly the messages
stored on purpose, and no conversation was created."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support.contract import assert_error
from support.requests import all_messages, append, create_conversation, tool_call
from support.users import User, make_user

from chatstore.store import ChatStore

ENDPOINTS = {
    "create_conversation": ("POST", "/api/conversations"),
    "append_messages": ("POST", "/api/conversations/{id}/messages"),
    "patch_conversation": ("PATCH", "/api/conversations/{id}"),
    "chat_start": ("POST", "/api/chat/start"),
    "chat_message": ("POST", "/api/chat/{id}/message"),
}
CONVERSATION_BODIES = ("create_conversation", "patch_conversation", "chat_start")


@dataclasses.dataclass(frozen=True, slots=True)
class Case:
    endpoint: str
    label: str
    body: bytes
    status: int

    @property
    def code(self) -> str:
        return {400: "invalid_json", 409: "seq_conflict", 422: "validation_error"}[self.status]


def encode(value: Any) -> bytes:
    # ensure_ascii: NUL and lone surrogates travel as JSON escapes (\u0000, \ud800).
    return json.dumps(value, ensure_ascii=True).encode("ascii")


# -- what is wrong, field by field ----------------------------------------------

INVALID_JSON: dict[str, bytes] = {
    "open_brace": b"{",
    "truncated_member": b'{"content":',
    "truncated_string": b'{"content": "abc',
    "single_quotes": b"{'content': 'x'}",
    "trailing_comma": b'{"content": "x",}',
    "missing_comma": b'{"role": "user" "content": "x"}',
    "missing_colon": b'{"content" "x"}',
    "unquoted_key": b'{content: "x"}',
    "array_trailing_comma": b"[1,]",
    "partial_true": b"tru",
    "partial_null": b"nul",
    "two_documents": b'{"a": 1}{"b": 2}',
    "comment": b'// comment\n{"content": "x"}',
    "hex_number": b'{"content": 0x10}',
    "leading_zero": b'{"title": 01}',
    "plus_number": b'{"title": +1}',
    "bare_fraction": b'{"title": .5}',
    "nan": b'{"title": NaN}',
    "infinity": b'{"title": Infinity}',
    "duplicate_key": b'{"content": "a", "content": "b"}',
    "invalid_utf8": b'{"content": "\xff"}',
    "bom": b'\xef\xbb\xbf{"content": "x"}',
    "nul_byte": b"\x00",
    "raw_control_char": b'{"content": "a\nb"}',
    "bad_escape": b'{"content": "\\q"}',
    "short_unicode_escape": b'{"content": "\\u12"}',
    "whitespace_then_garbage": b"   x",
}
NON_OBJECT: dict[str, Any] = {
    "array": [],
    "array_of_object": [{"title": "x"}],
    "string": "x",
    "empty_string": "",
    "int": 1,
    "float": 1.5,
    "null": None,
    "true": True,
    "false": False,
}
WRONG_TYPES: dict[str, Any] = {
    "null": None,
    "int": 7,
    "float": 1.5,
    "true": True,
    "false": False,
    "array": [],
    "array_of_string": ["x"],
    "object": {},
    "object_with_key": {"x": "y"},
    "string": "x",
}


def without(values: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in names}


BAD_METADATA: dict[str, Any] = {
    **without(WRONG_TYPES, "object", "object_with_key"),
    "int_value": {"k": 1},
    "null_value": {"k": None},
    "bool_value": {"k": True},
    "float_value": {"k": 1.5},
    "object_value": {"k": {}},
    "array_value": {"k": ["v"]},
    "17_keys": {f"k{i}": "v" for i in range(17)},
    "key_65_chars": {"k" * 65: "v"},
    "empty_key": {"": "v"},
    "value_513_chars": {"k": "v" * 513},
    "nul_in_key": {"a\u0000": "v"},
    "nul_in_value": {"k": "v\u0000"},
    "surrogate_in_key": {"\ud800": "v"},
    "surrogate_in_value": {"k": "\udfff"},
}
BAD_TITLES: dict[str, Any] = {
    **without(WRONG_TYPES, "null", "string"),
    "201_chars": "t" * 201,
    "nul": "a\u0000b",
    "lone_surrogate": "\ud800",
}
CONVERSATION_EXTRAS: dict[str, Any] = {
    "id": "00000000-0000-4000-8000-000000000000",
    "message_count": 0,
    "created_at": "2026-01-01T00:00:00Z",
    "user_id": "someone",
    "Title": "x",
    "messages": [],
}

USER = {"role": "user", "content": "hi"}
ASSISTANT_CALL = {"role": "assistant", "content": None, "tool_calls": [tool_call("c_new")]}
GOOD_CALL = tool_call("c_new")


def call_with(**changes: Any) -> dict[str, Any]:
    call = dict(GOOD_CALL)
    call.update(changes)
    return {k: v for k, v in call.items() if v is not dataclasses.MISSING}


def function_with(**changes: Any) -> dict[str, Any]:
    function = dict(GOOD_CALL["function"])
    function.update(changes)
    return call_with(function={k: v for k, v in function.items() if v is not dataclasses.MISSING})


GONE = dataclasses.MISSING

BAD_TOOL_CALLS: dict[str, Any] = {
    **without(WRONG_TYPES, "null"),
    "empty_list": [],
    "list_of_null": [None],
    "list_of_int": [1],
    "list_of_string": ["c1"],
    "list_of_empty_object": [{}],
    "missing_id": [call_with(id=GONE)],
    "missing_type": [call_with(type=GONE)],
    "missing_function": [call_with(function=GONE)],
    "type_tool": [call_with(type="tool")],
    "type_null": [call_with(type=None)],
    "type_int": [call_with(type=1)],
    "id_int": [call_with(id=1)],
    "id_null": [call_with(id=None)],
    "id_empty": [call_with(id="")],
    "id_256_chars": [call_with(id="c" * 256)],
    "id_nul": [call_with(id="c\u0000")],
    "function_string": [call_with(function="f")],
    "function_null": [call_with(function=None)],
    "function_empty": [call_with(function={})],
    "function_name_missing": [function_with(name=GONE)],
    "function_name_space": [function_with(name="get weather")],
    "function_name_empty": [function_with(name="")],
    "function_name_65_chars": [function_with(name="f" * 65)],
    "function_name_int": [function_with(name=1)],
    "arguments_missing": [function_with(arguments=GONE)],
    "arguments_object": [function_with(arguments={"city": "Paris"})],
    "arguments_null": [function_with(arguments=None)],
    "arguments_int": [function_with(arguments=1)],
    "arguments_nul": [function_with(arguments="{\u0000}")],
    "arguments_surrogate": [function_with(arguments="\ud800")],
    "extra_key_in_call": [call_with(index=0)],
    "extra_key_in_function": [function_with(description="x")],
    "duplicate_ids": [tool_call("same"), tool_call("same")],
    "id_already_used_in_conversation": [tool_call("call_keep")],
}


def message_cases() -> Iterator[tuple[str, Any, int]]:
    """(label, body, status) for POST /api/conversations/{id}/messages."""
    for label, value in {**WRONG_TYPES, "empty": "", "upper": "USER", "function": "function",
                         "padded": " user", "unknown": "robot"}.items():  # fmt: skip
        yield f"role_{label}", {**USER, "role": value}, 422
    yield "role_missing", {"content": "hi"}, 422
    yield "empty_object", {}, 422
    for label, value in without(WRONG_TYPES, "string").items():
        yield f"content_{label}", {**USER, "content": value}, 422
    yield "content_parts", {**USER, "content": [{"type": "text", "text": "hi"}]}, 422
    yield "content_missing_on_user", {"role": "user"}, 422
    yield "content_null_on_system", {"role": "system", "content": None}, 422
    yield "content_null_on_tool", {"role": "tool", "tool_call_id": "call_keep"}, 422
    yield "content_over_cap", {**USER, "content": "x" * 1_000_001}, 422
    yield "content_nul", {**USER, "content": "\u0000"}, 422
    yield "content_surrogate", {**USER, "content": "x\udc00"}, 422
    for label, value in {
        **without(WRONG_TYPES, "null", "string"),
        "empty": "",
        "space": "a b",
        "65_chars": "n" * 65,
        "accent": "caf\u00e9",
        "dot": "a.b",
        "trailing_newline": "abc\n",
        "nul": "a\u0000",
    }.items():
        yield f"name_{label}", {**USER, "name": value}, 422
    for label, value in BAD_TOOL_CALLS.items():
        yield (
            f"tool_calls_{label}",
            {"role": "assistant", "content": None, "tool_calls": value},
            422,
        )
    yield "tool_calls_on_user", {**USER, "tool_calls": [GOOD_CALL]}, 422
    yield (
        "tool_calls_on_tool",
        {
            "role": "tool",
            "tool_call_id": "call_keep",
            "content": "x",
            "tool_calls": [GOOD_CALL],
        },
        422,
    )
    yield "tool_calls_null_without_content", {"role": "assistant", "tool_calls": None}, 422
    yield "tool_call_id_on_user", {**USER, "tool_call_id": "call_keep"}, 422
    yield "tool_call_id_on_assistant", {**ASSISTANT_CALL, "tool_call_id": "call_keep"}, 422
    for label, value in {
        **without(WRONG_TYPES, "string"),
        "empty": "",
        "256_chars": "c" * 256,
        "nul": "call\u0000",
        "unknown": "call_never_made",
    }.items():
        yield f"tool_call_id_{label}", {"role": "tool", "content": "x", "tool_call_id": value}, 422
    yield "tool_call_id_missing", {"role": "tool", "content": "x"}, 422
    for label, value in BAD_METADATA.items():
        yield f"metadata_{label}", {**USER, "metadata": value}, 422
    for field in ("seq", "conversation_id", "created_at", "function_call", "refusal", "Role"):
        yield f"extra_{field}", {**USER, field: 1}, 422
    # The list form.
    for label, value in {
        **without(WRONG_TYPES, "array"),
        "empty": [],
        "of_null": [None],
        "of_int": [1],
        "of_string": ["hi"],
        "of_bad_message": [USER, {"role": "user"}],
        "101_messages": [USER] * 101,
        "unanswerable_tool": [USER, {"role": "tool", "content": "x", "tool_call_id": "nope"}],
        "repeated_call_id": [ASSISTANT_CALL, ASSISTANT_CALL],
    }.items():
        yield f"messages_{label}", {"messages": value}, 422
    for label, value in {
        **without(WRONG_TYPES, "null", "int"),
        "negative": -1,
        "string_number": "4",
        "bigint_overflow": 2**63,
        "huge": 10**30,
        "negative_huge": -(10**30),
    }.items():
        yield f"expected_last_seq_{label}", {"messages": [USER], "expected_last_seq": value}, 422
    yield "expected_last_seq_stale", {"messages": [USER], "expected_last_seq": 3}, 409
    yield "expected_last_seq_ahead", {"messages": [USER], "expected_last_seq": 5}, 409
    yield (
        "expected_last_seq_max_bigint",
        {
            "messages": [USER],
            "expected_last_seq": 2**63 - 1,
        },
        409,
    )
    yield "list_form_extra_field", {"messages": [USER], "expected_seq": 4}, 422
    yield "list_form_mixed_with_message", {"messages": [USER], "role": "user"}, 422


def conversation_cases() -> Iterator[tuple[str, Any, int]]:
    """(label, body, status) for the {"title"?, "metadata"?} bodies."""
    for label, value in BAD_TITLES.items():
        yield f"title_{label}", {"title": value}, 422
    for label, value in {**BAD_METADATA, "null": None}.items():
        yield f"metadata_{label}", {"metadata": value}, 422
    for field, value in CONVERSATION_EXTRAS.items():
        yield f"extra_{field}", {"title": "x", field: value}, 422
    yield "good_title_bad_metadata", {"title": "fine", "metadata": {"k": 2}}, 422
    yield "bad_title_good_metadata", {"title": 2, "metadata": {"k": "v"}}, 422


def chat_message_cases() -> Iterator[tuple[str, Any, int]]:
    for label, value in without(WRONG_TYPES, "string").items():
        yield f"content_{label}", {"content": value}, 422
    yield "content_missing", {}, 422
    yield "content_over_cap", {"content": "x" * 1_000_001}, 422
    yield "content_nul", {"content": "a\u0000"}, 422
    yield "content_surrogate", {"content": "\ud800"}, 422
    for field, value in (("role", "user"), ("name", "alice"), ("metadata", {}), ("seq", 1)):
        yield f"extra_{field}", {"content": "x", field: value}, 422
    yield "message_shape", {"role": "user", "content": "x"}, 422


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for endpoint in ENDPOINTS:
        for label, raw in INVALID_JSON.items():
            cases.append(Case(endpoint, f"invalid_json_{label}", raw, 400))
        for label, value in NON_OBJECT.items():
            cases.append(Case(endpoint, f"top_level_{label}", encode(value), 422))
    for endpoint in CONVERSATION_BODIES:
        for label, value, status in conversation_cases():
            cases.append(Case(endpoint, label, encode(value), status))
    for label, value, status in message_cases():
        cases.append(Case("append_messages", label, encode(value), status))
    for label, value, status in chat_message_cases():
        cases.append(Case("chat_message", label, encode(value), status))
    return cases


CASES = all_cases()


def test_there_are_at_least_200_malformed_bodies() -> None:
    assert len(CASES) >= 200
    assert {case.endpoint for case in CASES} == set(ENDPOINTS)
    ids = [f"{case.endpoint}-{case.label}" for case in CASES]
    assert len(ids) == len(set(ids))


# -- the target and the run -------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    user: User
    conversation: dict[str, Any]
    messages: list[dict[str, Any]]

    @property
    def conversation_id(self) -> str:
        conversation_id: str = self.conversation["id"]
        return conversation_id


@pytest.fixture(scope="module")
async def target(client: httpx.AsyncClient, store: ChatStore) -> Target:
    """One user with one conversation holding four messages, stored on purpose."""
    user = await make_user(store)
    conversation = await create_conversation(
        client, user, {"title": "target", "metadata": {"keep": "me"}}
    )
    await append(
        client,
        user,
        conversation["id"],
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call("call_keep")]},
        {"role": "tool", "tool_call_id": "call_keep", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny."},
    )
    fresh = await client.get(f"/api/conversations/{conversation['id']}", headers=user.headers)
    assert fresh.status_code == 200, fresh.text
    messages = await all_messages(client, user, conversation["id"])
    assert [m["seq"] for m in messages] == [1, 2, 3, 4]
    return Target(user=user, conversation=fresh.json(), messages=messages)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.endpoint}-{c.label}" for c in CASES])
async def test_malformed_body_is_4xx_with_error_body(
    client: httpx.AsyncClient, target: Target, case: Case
) -> None:
    method, template = ENDPOINTS[case.endpoint]
    response = await client.request(
        method,
        template.format(id=target.conversation_id),
        content=case.body,
        headers=target.user.json_headers(),
    )
    assert 400 <= response.status_code < 500, response.text[:500]
    assert_error(response, case.status, case.code)


async def test_malformed_bodies_changed_nothing(client: httpx.AsyncClient, target: Target) -> None:
    # Runs after the cases above (file order); holds on its own too.
    assert await all_messages(client, target.user, target.conversation_id) == target.messages
    listing = await client.get("/api/conversations", headers=target.user.headers)
    assert listing.status_code == 200, listing.text
    assert listing.json() == {"data": [target.conversation], "next_cursor": None}
