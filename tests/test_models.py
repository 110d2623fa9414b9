"""Every input rule of the contract (spec/http-api.md, "Objects"), one test per rule.

Rules a single object can judge are checked on the pydantic models; rules that
need the store (batch size, the configured content cap, tool call ids across a
batch or a conversation) are checked through ChatStore, which raises
chatstore.errors.ValidationError whose details locate the offending field.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pydantic
import pytest

from chatstore.config import Settings
from chatstore.errors import ValidationError
from chatstore.models import (
    ConversationInput,
    ConversationPatch,
    MessageBatch,
    MessageInput,
)
from chatstore.store import ChatStore
from chatstore.validation import validate_model

Loc = tuple[str | int, ...]
Model = type[pydantic.BaseModel]

ROLES = ("system", "developer", "user", "assistant", "tool")
NON_ASSISTANT_ROLES = ("system", "developer", "user", "tool")
NON_TOOL_ROLES = ("system", "developer", "user", "assistant")
SMALL_CAP = 10


def tool_call(
    call_id: str = "call_1", name: str = "lookup", arguments: str = '{"q": "x"}'
) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def message(role: str, **fields: Any) -> dict[str, Any]:
    """A valid message of ``role``, with ``fields`` replacing or adding fields."""
    data: dict[str, Any] = {"role": role, "content": "hello"}
    if role == "tool":
        data["tool_call_id"] = "call_1"
    data.update(fields)
    return data


def rejected(model: Model, data: object) -> list[Loc]:
    """Validate ``data``, expect a refusal, return the locations of every error."""
    with pytest.raises(pydantic.ValidationError) as info:
        model.model_validate(data)
    return [tuple(error["loc"]) for error in info.value.errors()]


def store_error_locs(error: ValidationError) -> list[list[str | int]]:
    return [list(detail["loc"]) for detail in error.details]


async def conversation_id(store: ChatStore, user_id: str) -> uuid.UUID:
    return (await store.create_conversation(user_id)).id


@pytest.fixture(scope="module")
def small_cap_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, max_content_chars=SMALL_CAP)


@pytest.fixture(scope="module")
async def small_cap_store(database: str, small_cap_settings: Settings) -> AsyncIterator[ChatStore]:
    async with ChatStore(database, settings=small_cap_settings) as opened:
        yield opened


# --- role ---------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_role_may_be_any_of_the_five_roles(role: str) -> None:
    assert MessageInput.model_validate(message(role)).role == role


@pytest.mark.parametrize("role", ["moderator", "User", "ASSISTANT", "", "function"])
def test_role_outside_the_five_roles_is_rejected(role: str) -> None:
    assert rejected(MessageInput, {"role": role, "content": "hello"}) == [("role",)]


def test_role_is_required() -> None:
    assert rejected(MessageInput, {"content": "hello"}) == [("role",)]


# --- content ------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_content_is_required_when_absent(role: str) -> None:
    data = message(role)
    del data["content"]
    assert rejected(MessageInput, data)


@pytest.mark.parametrize("role", ROLES)
def test_content_is_required_when_null(role: str) -> None:
    assert rejected(MessageInput, message(role, content=None))


def test_content_may_be_absent_for_assistant_with_tool_calls() -> None:
    parsed = MessageInput.model_validate({"role": "assistant", "tool_calls": [tool_call()]})
    assert parsed.content is None
    assert parsed.tool_calls is not None


def test_content_may_be_null_for_assistant_with_tool_calls() -> None:
    parsed = MessageInput.model_validate(
        {"role": "assistant", "content": None, "tool_calls": [tool_call()]}
    )
    assert parsed.content is None


def test_content_may_accompany_tool_calls_on_assistant() -> None:
    parsed = MessageInput.model_validate(message("assistant", tool_calls=[tool_call()]))
    assert parsed.content == "hello"


def test_empty_content_is_accepted() -> None:
    assert MessageInput.model_validate(message("user", content="")).content == ""


# --- name ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "Z", "0", "_", "-", "tool_user-42", "x" * 64])
def test_name_of_1_to_64_allowed_chars_is_accepted(name: str) -> None:
    assert MessageInput.model_validate(message("user", name=name)).name == name


def test_empty_name_is_rejected() -> None:
    assert rejected(MessageInput, message("user", name="")) == [("name",)]


def test_name_longer_than_64_chars_is_rejected() -> None:
    assert rejected(MessageInput, message("user", name="x" * 65)) == [("name",)]


@pytest.mark.parametrize(
    "name",
    ["a b", "a.b", "a/b", "é", "名前", "a\n", "\nA", "a\t", "a:b", "a@b", "\u0661", "\uff21"],
)
def test_name_with_a_char_outside_letters_digits_underscore_dash_is_rejected(name: str) -> None:
    assert rejected(MessageInput, message("user", name=name)) == [("name",)]


# --- tool_calls ---------------------------------------------------------------


@pytest.mark.parametrize("role", NON_ASSISTANT_ROLES)
def test_tool_calls_are_only_allowed_on_assistant(role: str) -> None:
    assert rejected(MessageInput, message(role, tool_calls=[tool_call()]))


def test_tool_calls_are_accepted_on_assistant() -> None:
    calls = [tool_call("call_a"), tool_call("call_b", name="other", arguments="{}")]
    parsed = MessageInput.model_validate(message("assistant", tool_calls=calls))
    assert parsed.tool_calls is not None
    assert [call.model_dump() for call in parsed.tool_calls] == calls


def test_tool_calls_must_not_be_empty() -> None:
    assert rejected(MessageInput, message("assistant", tool_calls=[])) == [("tool_calls",)]


def _without(data: dict[str, Any], *path: str) -> dict[str, Any]:
    target = data
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return data


def _with(data: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


BAD_TOOL_CALLS: dict[str, Any] = {
    "id missing": _without(tool_call(), "id"),
    "id not a string": _with(tool_call(), 7, "id"),
    "id empty": _with(tool_call(), "", "id"),
    "type missing": _without(tool_call(), "type"),
    "type not function": _with(tool_call(), "tool", "type"),
    "type null": _with(tool_call(), None, "type"),
    "function missing": _without(tool_call(), "function"),
    "function a string": _with(tool_call(), "lookup", "function"),
    "function null": _with(tool_call(), None, "function"),
    "function.name missing": _without(tool_call(), "function", "name"),
    "function.name not a string": _with(tool_call(), 1, "function", "name"),
    "function.arguments missing": _without(tool_call(), "function", "arguments"),
    "function.arguments an object": _with(tool_call(), {"q": "x"}, "function", "arguments"),
    "function.arguments null": _with(tool_call(), None, "function", "arguments"),
    "extra key on the call": _with(tool_call(), "x", "index"),
    "extra key on the function": _with(tool_call(), "x", "function", "description"),
    "call is a string": "call_1",
    "call is a list": [tool_call()],
}


@pytest.mark.parametrize("call", BAD_TOOL_CALLS.values(), ids=BAD_TOOL_CALLS.keys())
def test_tool_call_not_shaped_id_type_function_name_arguments_is_rejected(call: Any) -> None:
    locs = rejected(MessageInput, message("assistant", tool_calls=[call]))
    assert locs
    assert all(loc[:2] == ("tool_calls", 0) for loc in locs), locs


def test_tool_call_ids_must_be_unique_within_a_message() -> None:
    calls = [tool_call("call_1"), tool_call("call_1", name="other")]
    assert rejected(MessageInput, message("assistant", tool_calls=calls))


# --- tool_call_id ---------------------------------------------------------------


def test_tool_call_id_is_required_on_tool_messages() -> None:
    assert rejected(MessageInput, {"role": "tool", "content": "42"})


def test_tool_call_id_null_on_tool_message_is_rejected() -> None:
    assert rejected(MessageInput, {"role": "tool", "content": "42", "tool_call_id": None})


@pytest.mark.parametrize("role", NON_TOOL_ROLES)
def test_tool_call_id_is_forbidden_on_other_roles(role: str) -> None:
    assert rejected(MessageInput, message(role, tool_call_id="call_1"))


def test_empty_tool_call_id_is_rejected() -> None:
    assert rejected(MessageInput, message("tool", tool_call_id="")) == [("tool_call_id",)]


# --- metadata (messages and conversations alike) ---------------------------------

# (model, a valid body without metadata)
METADATA_OWNERS: dict[str, tuple[Model, dict[str, Any]]] = {
    "message": (MessageInput, {"role": "user", "content": "hello"}),
    "conversation": (ConversationInput, {"title": "t"}),
    "conversation patch": (ConversationPatch, {}),
}
metadata_owners = pytest.mark.parametrize(
    ("model", "body"), METADATA_OWNERS.values(), ids=METADATA_OWNERS.keys()
)


def _metadata(model: Model, body: dict[str, Any], metadata: object) -> object:
    return model.model_validate({**body, "metadata": metadata})


@metadata_owners
def test_metadata_with_16_keys_is_accepted(model: Model, body: dict[str, Any]) -> None:
    metadata = {f"k{i}": "v" for i in range(16)}
    parsed = _metadata(model, body, metadata)
    assert getattr(parsed, "metadata") == metadata  # noqa: B009


@metadata_owners
def test_metadata_with_17_keys_is_rejected(model: Model, body: dict[str, Any]) -> None:
    metadata = {f"k{i}": "v" for i in range(17)}
    assert rejected(model, {**body, "metadata": metadata}) == [("metadata",)]


@metadata_owners
def test_metadata_key_of_64_chars_is_accepted(model: Model, body: dict[str, Any]) -> None:
    _metadata(model, body, {"k" * 64: "v"})


@metadata_owners
def test_metadata_key_longer_than_64_chars_is_rejected(model: Model, body: dict[str, Any]) -> None:
    locs = rejected(model, {**body, "metadata": {"k" * 65: "v"}})
    assert locs and all(loc[0] == "metadata" for loc in locs), locs


@metadata_owners
def test_metadata_value_of_512_chars_is_accepted(model: Model, body: dict[str, Any]) -> None:
    _metadata(model, body, {"k": "v" * 512})


@metadata_owners
def test_metadata_value_longer_than_512_chars_is_rejected(
    model: Model, body: dict[str, Any]
) -> None:
    assert rejected(model, {**body, "metadata": {"k": "v" * 513}}) == [("metadata", "k")]


@metadata_owners
@pytest.mark.parametrize("value", [1, 1.5, True, None, ["v"], {"v": "w"}], ids=repr)
def test_metadata_values_must_be_strings(model: Model, body: dict[str, Any], value: object) -> None:
    assert rejected(model, {**body, "metadata": {"k": value}}) == [("metadata", "k")]


@metadata_owners
@pytest.mark.parametrize("metadata", [[], [["k", "v"]], "k=v", 1, True, None], ids=repr)
def test_metadata_must_be_an_object(model: Model, body: dict[str, Any], metadata: object) -> None:
    assert rejected(model, {**body, "metadata": metadata}) == [("metadata",)]


def test_metadata_defaults_to_an_empty_object() -> None:
    assert MessageInput.model_validate({"role": "user", "content": "x"}).metadata == {}
    assert ConversationInput.model_validate({}).metadata == {}


# --- U+0000 -------------------------------------------------------------------

NUL = "a\x00b"
NUL_CASES: dict[str, tuple[Model, dict[str, Any]]] = {
    "content": (MessageInput, message("user", content=NUL)),
    "name": (MessageInput, message("user", name=NUL)),
    "metadata key": (MessageInput, message("user", metadata={NUL: "v"})),
    "metadata value": (MessageInput, message("user", metadata={"k": NUL})),
    "tool arguments": (
        MessageInput,
        message("assistant", tool_calls=[tool_call(arguments='{"q": "a\x00b"}')]),
    ),
    "tool call id": (MessageInput, message("assistant", tool_calls=[tool_call(NUL)])),
    "tool_call_id": (MessageInput, message("tool", tool_call_id=NUL)),
    "title": (ConversationInput, {"title": NUL}),
    "patched title": (ConversationPatch, {"title": NUL}),
    "conversation metadata value": (ConversationInput, {"metadata": {"k": NUL}}),
}


@pytest.mark.parametrize(("model", "data"), NUL_CASES.values(), ids=NUL_CASES.keys())
def test_nul_character_is_rejected(model: Model, data: dict[str, Any]) -> None:
    assert rejected(model, data)


async def test_nul_character_is_rejected_by_the_store_as_a_validation_error(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_id(store, user_id)
    with pytest.raises(ValidationError) as info:
        await store.append_message(user_id, conversation, message("user", content=NUL))
    assert store_error_locs(info.value) == [["messages", 0, "content"]]
    with pytest.raises(ValidationError) as title_info:
        await store.create_conversation(user_id, title=NUL)
    assert store_error_locs(title_info.value) == [["title"]]


LONE_SURROGATE_CASES: dict[str, tuple[Model, dict[str, Any]]] = {
    "content": (MessageInput, message("user", content="a\ud800")),
    "metadata key": (MessageInput, message("user", metadata={"\udfff": "v"})),
    "metadata value": (MessageInput, message("user", metadata={"k": "\udc80"})),
    "tool arguments": (
        MessageInput,
        message("assistant", tool_calls=[tool_call(arguments="\ud83d")]),
    ),
    "title": (ConversationInput, {"title": "\ud800"}),
}


@pytest.mark.parametrize(
    ("model", "data"), LONE_SURROGATE_CASES.values(), ids=LONE_SURROGATE_CASES.keys()
)
def test_lone_surrogate_is_rejected(model: Model, data: dict[str, Any]) -> None:
    assert rejected(model, data)


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "\udc80"], ids=repr)
async def test_lone_surrogate_in_content_is_rejected_as_a_validation_error(
    store: ChatStore, user_id: str, text: str
) -> None:
    # Not UTF-8-encodable, so PostgreSQL cannot store it, like U+0000; JSON
    # bodies can carry it ("\ud800"), and no input may produce a 500.
    conversation = await conversation_id(store, user_id)
    with pytest.raises(ValidationError):
        await store.append_message(user_id, conversation, message("user", content=text))


# --- unknown fields -----------------------------------------------------------

UNKNOWN_FIELD_CASES: dict[str, tuple[Model, dict[str, Any], Loc]] = {
    "message": (MessageInput, message("user", temperature=1), ("temperature",)),
    "tool call": (
        MessageInput,
        message("assistant", tool_calls=[{**tool_call(), "index": 0}]),
        ("tool_calls", 0, "index"),
    ),
    "tool function": (
        MessageInput,
        message(
            "assistant",
            tool_calls=[_with(tool_call(), "x", "function", "description")],
        ),
        ("tool_calls", 0, "function", "description"),
    ),
    "batch": (MessageBatch, {"messages": [message("user")], "atomic": True}, ("atomic",)),
    "message in a batch": (
        MessageBatch,
        {"messages": [message("user"), message("user", extra="x")]},
        ("messages", 1, "extra"),
    ),
    "conversation": (ConversationInput, {"title": "t", "owner": "me"}, ("owner",)),
    "conversation patch": (ConversationPatch, {"message_count": 3}, ("message_count",)),
}


@pytest.mark.parametrize(
    ("model", "data", "loc"), UNKNOWN_FIELD_CASES.values(), ids=UNKNOWN_FIELD_CASES.keys()
)
def test_unknown_fields_are_rejected(model: Model, data: dict[str, Any], loc: Loc) -> None:
    assert rejected(model, data) == [loc]


async def test_unknown_field_is_rejected_by_the_store_with_its_loc(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_id(store, user_id)
    with pytest.raises(ValidationError) as info:
        await store.append_messages(
            user_id, conversation, [message("user"), message("user", seq=5)]
        )
    assert store_error_locs(info.value) == [["messages", 1, "seq"]]


# --- strictness: no coercion ----------------------------------------------------

STRICT_CASES: dict[str, tuple[Model, dict[str, Any], Loc]] = {
    "content 5": (MessageInput, message("user", content=5), ("content",)),
    "content true": (MessageInput, message("user", content=True), ("content",)),
    "content list": (MessageInput, message("user", content=["hi"]), ("content",)),
    "role 1": (MessageInput, {"role": 1, "content": "x"}, ("role",)),
    "name 5": (MessageInput, message("user", name=5), ("name",)),
    "tool_call_id 5": (MessageInput, message("tool", tool_call_id=5), ("tool_call_id",)),
    "title 5": (ConversationInput, {"title": 5}, ("title",)),
    "expected_last_seq '3'": (
        MessageBatch,
        {"messages": [message("user")], "expected_last_seq": "3"},
        ("expected_last_seq",),
    ),
    "expected_last_seq true": (
        MessageBatch,
        {"messages": [message("user")], "expected_last_seq": True},
        ("expected_last_seq",),
    ),
    "expected_last_seq 3.0": (
        MessageBatch,
        {"messages": [message("user")], "expected_last_seq": 3.0},
        ("expected_last_seq",),
    ),
    "messages an object": (MessageBatch, {"messages": message("user")}, ("messages",)),
}


@pytest.mark.parametrize(("model", "data", "loc"), STRICT_CASES.values(), ids=STRICT_CASES.keys())
def test_values_of_the_wrong_type_are_not_coerced(
    model: Model, data: dict[str, Any], loc: Loc
) -> None:
    assert rejected(model, data)[0][: len(loc)] == loc


def test_expected_last_seq_of_0_is_accepted() -> None:
    batch = MessageBatch.model_validate({"messages": [message("user")], "expected_last_seq": 0})
    assert batch.expected_last_seq == 0


def test_negative_expected_last_seq_is_rejected() -> None:
    data = {"messages": [message("user")], "expected_last_seq": -1}
    assert rejected(MessageBatch, data) == [("expected_last_seq",)]


async def test_negative_expected_last_seq_is_rejected_by_the_store(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_id(store, user_id)
    with pytest.raises(ValidationError) as info:
        await store.append_messages(user_id, conversation, [message("user")], expected_last_seq=-1)
    assert store_error_locs(info.value) == [["expected_last_seq"]]


# --- content cap --------------------------------------------------------------


def test_content_longer_than_the_cap_is_rejected(small_cap_settings: Settings) -> None:
    data = message("user", content="x" * (SMALL_CAP + 1))
    with pytest.raises(ValidationError) as info:
        validate_model(MessageInput, data, small_cap_settings)
    assert store_error_locs(info.value) == [["content"]]


def test_content_of_exactly_the_cap_is_accepted(small_cap_settings: Settings) -> None:
    data = message("user", content="é" * SMALL_CAP)
    assert validate_model(MessageInput, data, small_cap_settings).content == "é" * SMALL_CAP


def test_default_content_cap_is_one_million_characters() -> None:
    at_cap = "x" * 1_000_000
    assert MessageInput.model_validate(message("user", content=at_cap)).content == at_cap
    assert rejected(MessageInput, message("user", content=at_cap + "x")) == [("content",)]


async def test_store_content_cap_applies_to_an_already_validated_message(
    small_cap_store: ChatStore,
) -> None:
    # Built in Python against the default cap: the store's smaller cap still holds.
    parsed = MessageInput.model_validate(message("user", content="x" * (SMALL_CAP + 1)))
    with pytest.raises(ValidationError) as info:
        small_cap_store.validate_messages([message("user"), parsed])
    assert store_error_locs(info.value) == [["messages", 1, "content"]]


async def test_store_rejects_content_longer_than_its_configured_cap(
    small_cap_store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_id(small_cap_store, user_id)
    with pytest.raises(ValidationError) as info:
        await small_cap_store.append_messages(
            user_id, conversation, [message("user"), message("user", content="x" * (SMALL_CAP + 1))]
        )
    assert store_error_locs(info.value) == [["messages", 1, "content"]]
    assert (await small_cap_store.get_conversation(user_id, conversation)).message_count == 0


async def test_store_accepts_content_of_exactly_its_configured_cap(
    small_cap_store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_id(small_cap_store, user_id)
    stored = await small_cap_store.append_message(
        user_id, conversation, message("user", content="y" * SMALL_CAP)
    )
    assert stored.content == "y" * SMALL_CAP


# --- conversation title -------------------------------------------------------


@pytest.mark.parametrize("model", [ConversationInput, ConversationPatch])
def test_title_of_200_chars_is_accepted(model: Model) -> None:
    assert getattr(model.model_validate({"title": "t" * 200}), "title") == "t" * 200  # noqa: B009


@pytest.mark.parametrize("model", [ConversationInput, ConversationPatch])
def test_title_longer_than_200_chars_is_rejected(model: Model) -> None:
    assert rejected(model, {"title": "t" * 201}) == [("title",)]


@pytest.mark.parametrize("model", [ConversationInput, ConversationPatch])
def test_title_may_be_null(model: Model) -> None:
    assert getattr(model.model_validate({"title": None}), "title") is None  # noqa: B009


async def test_store_rejects_a_title_longer_than_200_chars(store: ChatStore, user_id: str) -> None:
    with pytest.raises(ValidationError) as info:
        await store.create_conversation(user_id, title="t" * 201)
    assert store_error_locs(info.value) == [["title"]]
    conversation = await store.create_conversation(user_id, title="t" * 200)
    with pytest.raises(ValidationError) as patch_info:
        await store.update_conversation(user_id, conversation.id, title="t" * 201)
    assert store_error_locs(patch_info.value) == [["title"]]
    assert (await store.get_conversation(user_id, conversation.id)).title == "t" * 200


def test_patch_metadata_null_is_rejected() -> None:
    assert rejected(ConversationPatch, {"metadata": None}) == [("metadata",)]


def test_patch_remembers_which_fields_were_sent() -> None:
    assert ConversationPatch.model_validate({}).model_fields_set == set()
    assert ConversationPatch.model_validate({"title": None}).model_fields_set == {"title"}


# --- batch size ---------------------------------------------------------------


def test_batch_of_0_messages_is_rejected() -> None:
    assert rejected(MessageBatch, {"messages": []}) == [("messages",)]


def test_batch_of_101_messages_is_rejected() -> None:
    data = {"messages": [message("user")] * 101}
    assert rejected(MessageBatch, data) == [("messages",)]


def test_batch_of_100_messages_is_accepted() -> None:
    assert len(MessageBatch.model_validate({"messages": [message("user")] * 100}).messages) == 100


def test_batch_without_messages_is_rejected() -> None:
    assert rejected(MessageBatch, {"expected_last_seq": 0}) == [("messages",)]


@pytest.mark.parametrize("count", [0, 101])
async def test_store_rejects_a_batch_outside_1_to_100_messages(
    store: ChatStore, user_id: str, count: int
) -> None:
    conversation = await conversation_id(store, user_id)
    batch = [message("user", content=str(i)) for i in range(count)]
    with pytest.raises(ValidationError) as info:
        store.validate_messages(batch)
    assert store_error_locs(info.value) == [["messages"]]
    with pytest.raises(ValidationError):
        await store.append_messages(user_id, conversation, batch)
    assert (await store.get_conversation(user_id, conversation)).message_count == 0


async def test_batch_of_100_messages_is_stored_with_seqs_1_to_100(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_id(store, user_id)
    batch = [message("user", content=str(i)) for i in range(100)]
    stored = await store.append_messages(user_id, conversation, batch)
    assert [m.seq for m in stored] == list(range(1, 101))
    assert [m.content for m in stored] == [str(i) for i in range(100)]
    page = await store.list_messages(user_id, conversation, limit=1000)
    assert [m.seq for m in page.data] == list(range(1, 101))
    assert (await store.get_conversation(user_id, conversation)).message_count == 100


# --- tool call ids across a batch and a conversation ------------------------------


def test_tool_call_ids_must_be_unique_across_a_batch(store: ChatStore) -> None:
    batch = [
        message("assistant", tool_calls=[tool_call("call_1")]),
        message("assistant", tool_calls=[tool_call("call_2"), tool_call("call_1")]),
    ]
    with pytest.raises(ValidationError) as info:
        store.validate_messages(batch)
    assert store_error_locs(info.value) == [["messages", 1, "tool_calls"]]


async def test_tool_message_may_answer_a_tool_call_earlier_in_the_batch(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_id(store, user_id)
    stored = await store.append_messages(
        user_id,
        conversation,
        [
            message("user", content="weather?"),
            message("assistant", content=None, tool_calls=[tool_call("call_w")]),
            message("tool", content="sunny", tool_call_id="call_w"),
            message("assistant", content="It is sunny."),
        ],
    )
    assert [m.seq for m in stored] == [1, 2, 3, 4]
    assert stored[2].tool_call_id == "call_w"


async def test_tool_message_may_answer_a_tool_call_of_an_earlier_stored_message(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_id(store, user_id)
    await store.append_message(
        user_id, conversation, message("assistant", tool_calls=[tool_call()])
    )
    answer = await store.append_message(
        user_id, conversation, message("tool", tool_call_id="call_1")
    )
    assert (answer.seq, answer.tool_call_id) == (2, "call_1")


async def test_tool_message_answering_an_unknown_tool_call_id_is_rejected(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_id(store, user_id)
    await store.append_message(
        user_id, conversation, message("assistant", tool_calls=[tool_call()])
    )
    with pytest.raises(ValidationError) as info:
        await store.append_messages(
            user_id,
            conversation,
            [
                message("user"),
                message("tool", tool_call_id="call_1"),
                message("tool", tool_call_id="nope"),
            ],
        )
    assert store_error_locs(info.value) == [["messages", 2, "tool_call_id"]]
    assert (await store.get_conversation(user_id, conversation)).message_count == 1


async def test_tool_message_answering_a_later_tool_call_of_the_batch_is_rejected(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_id(store, user_id)
    with pytest.raises(ValidationError) as info:
        await store.append_messages(
            user_id,
            conversation,
            [
                message("tool", tool_call_id="call_1"),
                message("assistant", tool_calls=[tool_call("call_1")]),
            ],
        )
    assert store_error_locs(info.value) == [["messages", 0, "tool_call_id"]]
    assert (await store.get_conversation(user_id, conversation)).message_count == 0


async def test_tool_message_answering_a_tool_call_of_another_conversation_is_rejected(
    store: ChatStore, user_id: str
) -> None:
    first = await conversation_id(store, user_id)
    second = await conversation_id(store, user_id)
    await store.append_message(user_id, first, message("assistant", tool_calls=[tool_call("c_x")]))
    with pytest.raises(ValidationError) as info:
        await store.append_message(user_id, second, message("tool", tool_call_id="c_x"))
    assert store_error_locs(info.value) == [["messages", 0, "tool_call_id"]]
    assert (await store.get_conversation(user_id, second)).message_count == 0


async def test_tool_call_id_already_used_earlier_in_the_conversation_is_rejected(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_id(store, user_id)
    await store.append_messages(
        user_id,
        conversation,
        [
            message("assistant", tool_calls=[tool_call("call_1")]),
            message("tool", tool_call_id="call_1"),
        ],
    )
    with pytest.raises(ValidationError) as info:
        await store.append_messages(
            user_id,
            conversation,
            [message("user"), message("assistant", tool_calls=[tool_call("call_1")])],
        )
    assert all(loc[0] == "messages" for loc in store_error_locs(info.value))
    after = await store.get_conversation(user_id, conversation)
    assert after.message_count == 2
    # Nothing of the refused batch stored, and no seq consumed by it.
    assert (await store.append_message(user_id, conversation, message("user"))).seq == 3


async def test_tool_call_id_may_be_reused_in_another_conversation(
    store: ChatStore, user_id: str
) -> None:
    for _ in range(2):
        conversation = await conversation_id(store, user_id)
        stored = await store.append_message(
            user_id, conversation, message("assistant", tool_calls=[tool_call("call_same")])
        )
        assert stored.seq == 1


# --- unicode ------------------------------------------------------------------

UNICODE_TEXTS = {
    "emoji": "hi 👋🏽 👩‍👩‍👧‍👦 🇫🇷 ✅",
    "cjk": "你好，世界。こんにちは 안녕하세요",  # noqa: RUF001
    "rtl": "مرحبا بالعالم \u202eשלום\u202c",  # noqa: RUF001
    "combining": "e\u0301 vs é, Å vs A\u030a",
    "astral": "\U0001d518\U0001d52b\U0001d526 \U0001f600 \U0010fffd",
    "invisible and control": "\u200b\ufeff\u00a0 tab\tnl\nend\r\x7f\x01",
}


@pytest.mark.parametrize("text", UNICODE_TEXTS.values(), ids=UNICODE_TEXTS.keys())
async def test_unicode_content_round_trips_exactly(
    store: ChatStore, user_id: str, text: str
) -> None:
    conversation = await store.create_conversation(user_id, title=text, metadata={text: text})
    stored = await store.append_message(
        user_id,
        conversation.id,
        message(
            "assistant",
            content=text,
            metadata={text: text},
            tool_calls=[tool_call(f"call {text}", arguments=text)],
        ),
    )
    fetched = await store.get_message(user_id, conversation.id, stored.seq)
    assert fetched.content == text
    assert fetched.metadata == {text: text}
    assert fetched.tool_calls is not None
    assert fetched.tool_calls[0].id == f"call {text}"
    assert fetched.tool_calls[0].function.arguments == text
    again = await store.get_conversation(user_id, conversation.id)
    assert again.title == text
    assert again.metadata == {text: text}


def test_a_conversation_stored_before_archived_existed_still_replays() -> None:
    # An Idempotency-Key's stored response from before migration 0010 has no
    # "archived": replaying it must not fail (it was not archived then).
    from pydantic import TypeAdapter

    from chatstore.models import Conversation

    stored = (
        '{"id": "9f1c0f7e-5d0c-4a59-9a57-3c1f6a1f0c11", "title": null, "metadata": {},'
        ' "message_count": 0, "created_at": "2026-01-01T00:00:00Z",'
        ' "updated_at": "2026-01-01T00:00:00Z"}'
    )
    assert TypeAdapter(Conversation).validate_json(stored).archived is False


def test_a_message_built_from_a_row_is_the_message_validation_would_build() -> None:
    # Outputs skip validation (chatstore/models.py, _trusted sets the
    # model's slots directly): the instance must still be an ordinary model,
    # equal to the validated one, dumping, copying and accepting assignment.
    import datetime as dt

    from chatstore.models import Message

    row = {
        "conversation_id": uuid.uuid4(),
        "seq": 2,
        "parent_seq": 1,
        "role": "assistant",
        "content": None,
        "name": "helper",
        "tool_calls": [tool_call()],
        "tool_call_id": None,
        "metadata": {"k": "v"},
        "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    }
    built = Message.from_row(row)
    validated = Message.model_validate(row)
    assert built == validated
    assert built.model_fields_set == validated.model_fields_set
    # Each instance has a fields-set of its own (a copy of the model's).
    assert Message.from_row(row).model_fields_set is not built.model_fields_set
    assert built.model_dump() == validated.model_dump()
    assert built.model_dump_json() == validated.model_dump_json()
    assert built.tool_calls is not None
    assert built.tool_calls[0].function.name == "lookup"
    assert built.model_copy(update={"seq": 3}).seq == 3
    built.content = "edited"
    assert built.content == "edited"
    assert built.model_extra is None


def test_every_model_built_from_a_row_is_given_every_field() -> None:
    # _trusted records the model's every field as set: a from_row that left
    # one out would build an instance missing an attribute that says it
    # has it.
    import datetime as dt

    from chatstore.models import Conversation, Message, Sibling

    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    message: dict[str, object] = {
        "conversation_id": uuid.uuid4(),
        "seq": 1,
        "parent_seq": None,
        "role": "user",
        "content": "hi",
        "name": None,
        "tool_calls": None,
        "tool_call_id": None,
        "metadata": {},
        "created_at": now,
        "on_path": True,
    }
    conversation: dict[str, object] = {
        "id": uuid.uuid4(),
        "title": None,
        "metadata": {},
        "archived": False,
        "message_count": 0,
        "created_at": now,
        "updated_at": now,
    }
    for built in (
        Message.from_row(message),
        Sibling.from_row(message),
        Conversation.from_row(conversation),
    ):
        assert set(vars(built)) == set(type(built).model_fields) == built.model_fields_set
