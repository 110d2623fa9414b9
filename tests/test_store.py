"""The Python API (chatstore.store.ChatStore) against a real PostgreSQL.

Every test acts as fresh users (the ``user`` / ``other_user`` fixtures), so
tests share one migrated database without seeing each other's data.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from support.users import MakeUser

from chatstore.errors import NotFound, SeqConflict, ValidationError
from chatstore.models import Conversation, Message, MessagePage
from chatstore.store import ChatStore, Order

UTC = dt.UTC


def user_message(content: str = "hello") -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant_calling(*call_ids: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}
            for call_id in call_ids
        ],
    }


def tool_answer(call_id: str, content: str = "result") -> dict[str, Any]:
    return {"role": "tool", "content": content, "tool_call_id": call_id}


def seqs(page: MessagePage | list[Message]) -> list[int]:
    return [m.seq for m in (page.data if isinstance(page, MessagePage) else page)]


def encode_cursor(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


async def conversation_with(store: ChatStore, user_id: str, count: int) -> uuid.UUID:
    """A new conversation of ``user`` holding ``count`` user messages, seq 1..count."""
    conversation = await store.create_conversation(user_id)
    if count:
        await store.append_messages(
            user_id, conversation.id, [user_message(f"m{i}") for i in range(1, count + 1)]
        )
    return conversation.id


async def count_rows(store: ChatStore, sql: str, *args: object) -> int:
    value: int = await store.pool.fetchval(sql, *args)
    return value


async def last_seq(store: ChatStore, conversation: uuid.UUID) -> int:
    return await count_rows(store, "SELECT last_seq FROM conversations WHERE id = $1", conversation)


def assert_utc(moment: dt.datetime) -> None:
    assert moment.tzinfo is not None
    assert moment.utcoffset() == dt.timedelta(0)


# --- conversations ------------------------------------------------------------


async def test_new_conversation_has_defaults(store: ChatStore, user_id: str) -> None:
    before = dt.datetime.now(UTC)
    conversation = await store.create_conversation(user_id)
    assert isinstance(conversation.id, uuid.UUID)
    assert conversation.title is None
    assert conversation.metadata == {}
    assert conversation.message_count == 0
    assert_utc(conversation.created_at)
    assert_utc(conversation.updated_at)
    assert conversation.created_at == conversation.updated_at
    assert abs(conversation.created_at - before) < dt.timedelta(seconds=30)


async def test_new_conversation_keeps_title_and_metadata(store: ChatStore, user_id: str) -> None:
    conversation = await store.create_conversation(user_id, title="Trip", metadata={"a": "1"})
    assert (conversation.title, conversation.metadata) == ("Trip", {"a": "1"})


async def test_get_conversation_returns_what_create_returned(
    store: ChatStore, user_id: str
) -> None:
    created = await store.create_conversation(user_id, title="t", metadata={"k": "v"})
    assert await store.get_conversation(user_id, created.id) == created
    assert await store.get_conversation(user_id, str(created.id)) == created


async def test_update_changes_only_the_given_fields(store: ChatStore, user_id: str) -> None:
    created = await store.create_conversation(user_id, title="old", metadata={"k": "v", "x": "y"})

    titled = await store.update_conversation(user_id, created.id, title="new")
    assert (titled.title, titled.metadata) == ("new", {"k": "v", "x": "y"})
    assert titled.updated_at > created.updated_at
    assert titled.created_at == created.created_at

    replaced = await store.update_conversation(user_id, created.id, metadata={"n": "1"})
    assert (replaced.title, replaced.metadata) == ("new", {"n": "1"})
    assert replaced.updated_at > titled.updated_at

    cleared = await store.update_conversation(user_id, created.id, title=None)
    assert (cleared.title, cleared.metadata) == (None, {"n": "1"})
    assert cleared.updated_at > replaced.updated_at

    emptied = await store.update_conversation(user_id, created.id, metadata={})
    assert (emptied.title, emptied.metadata) == (None, {})

    assert await store.get_conversation(user_id, created.id) == emptied
    assert emptied.created_at == created.created_at
    assert emptied.message_count == 0


async def test_update_keeps_message_count(store: ChatStore, user_id: str) -> None:
    conversation = await conversation_with(store, user_id, 3)
    updated = await store.update_conversation(user_id, conversation, title="x")
    assert updated.message_count == 3


async def test_deleted_conversation_is_gone_with_its_messages(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_with(store, user_id, 2)
    await store.append_messages(user_id, conversation, [assistant_calling("c1"), tool_answer("c1")])
    await store.delete_conversation(user_id, conversation)
    with pytest.raises(NotFound):
        await store.get_conversation(user_id, conversation)
    with pytest.raises(NotFound):
        await store.delete_conversation(user_id, conversation)
    with pytest.raises(NotFound):
        await store.list_messages(user_id, conversation)
    for table in ("messages", "message_tool_calls"):
        sql = f"SELECT count(*) FROM {table} WHERE conversation_id = $1"
        assert await count_rows(store, sql, conversation) == 0


async def test_conversations_are_listed_newest_activity_first(
    store: ChatStore, user_id: str
) -> None:
    a = (await store.create_conversation(user_id, title="a")).id
    b = (await store.create_conversation(user_id, title="b")).id
    c = (await store.create_conversation(user_id, title="c")).id

    async def order() -> list[uuid.UUID]:
        return [conv.id for conv in (await store.list_conversations(user_id)).data]

    assert await order() == [c, b, a]
    await store.append_message(user_id, a, user_message())
    assert await order() == [a, c, b]
    await store.update_conversation(user_id, b, title="b2")
    assert await order() == [b, a, c]
    await store.delete_message(user_id, a, 1)
    assert await order() == [a, b, c]


async def _walk(store: ChatStore, user_id: str, limit: int) -> list[list[Conversation]]:
    pages: list[list[Conversation]] = []
    cursor: str | None = None
    while True:
        page = await store.list_conversations(user_id, limit=limit, cursor=cursor)
        pages.append(page.data)
        if page.next_cursor is None:
            return pages
        assert len(pages) < 100, "paging does not end"
        cursor = page.next_cursor


@pytest.mark.parametrize(("total", "limit"), [(57, 10), (20, 10), (1, 1), (3, 100)])
async def test_conversation_pages_walk_end_to_end_without_gap_or_duplicate(
    store: ChatStore, new_user: MakeUser, total: int, limit: int
) -> None:
    owner = (await new_user()).user_id
    created = await asyncio.gather(
        *(store.create_conversation(owner, title=str(i)) for i in range(total))
    )
    everything = (await store.list_conversations(owner, limit=100)).data
    pages = await _walk(store, owner, limit)
    walked = [conv.id for page in pages for conv in page]
    assert walked == [conv.id for conv in everything]
    assert len(walked) == len(set(walked)) == total
    assert set(walked) == {conv.id for conv in created}
    assert [len(page) for page in pages] == [limit] * (total // limit) + (
        [total % limit] if total % limit else []
    )
    keys = [(conv.updated_at, conv.id) for page in pages for conv in page]
    assert keys == sorted(keys, reverse=True)


async def test_conversation_pages_hold_when_updated_at_ties(
    store: ChatStore, new_user: MakeUser
) -> None:
    owner = (await new_user()).user_id
    await asyncio.gather(*(store.create_conversation(owner) for _ in range(25)))
    await store.pool.execute(
        "UPDATE conversations SET updated_at = '2024-01-01T00:00:00Z' WHERE user_id = $1", owner
    )
    walked = [conv.id for page in await _walk(store, owner, 7) for conv in page]
    assert len(walked) == len(set(walked)) == 25
    assert walked == sorted(walked, reverse=True)


async def test_a_conversation_page_reads_empty_and_set_metadata_back_as_written(
    store: ChatStore, user_id: str
) -> None:
    # The list's SQL sends empty metadata as NULL (sql/conversations.sql):
    # read back, it is {} again, on the model and the JSON path, first
    # page and next.
    written: dict[uuid.UUID, dict[str, str]] = {}
    for metadata in ({}, {"k": "v"}, {}, {"{}": "{}"}):
        created = await store.create_conversation(user_id, metadata=metadata)
        written[created.id] = metadata
    first = await store.list_conversations(user_id, limit=2)
    assert first.next_cursor is not None
    rest = await store.list_conversations(user_id, limit=2, cursor=first.next_cursor)
    pages = [*first.data, *rest.data]
    assert {c.id: c.metadata for c in pages} == written
    assert len({id(c.metadata) for c in pages}) == len(pages)
    body = json.loads(await store.list_conversations_json(user_id, limit=4))
    assert {uuid.UUID(c["id"]): c["metadata"] for c in body["data"]} == written
    for conversation in pages:
        assert conversation == await store.get_conversation(user_id, conversation.id)


async def test_conversation_page_excludes_other_users(
    store: ChatStore, user_id: str, other_user_id: str
) -> None:
    mine = await store.create_conversation(user_id)
    theirs = await store.create_conversation(other_user_id)
    listed = [conv.id for conv in (await store.list_conversations(other_user_id, limit=100)).data]
    assert listed == [theirs.id]
    assert mine.id not in listed


async def test_user_without_conversations_gets_an_empty_page(
    store: ChatStore, user_id: str
) -> None:
    page = await store.list_conversations(user_id)
    assert (page.data, page.next_cursor) == ([], None)


BAD_CURSORS: dict[str, str] = {
    "garbage": "garbage!!",
    "empty": "",
    "not base64": "%%%%",
    "base64 of non-JSON": base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
    "JSON object": encode_cursor({"updated_at": "2024-01-01T00:00:00+00:00"}),
    "JSON string": encode_cursor("ab"),
    "JSON null": encode_cursor(None),
    "JSON number": encode_cursor(5),
    "three items": encode_cursor(["2024-01-01T00:00:00+00:00", str(uuid.uuid4()), 1]),
    "numbers": encode_cursor([1, 2]),
    "not a date": encode_cursor(["yesterday", str(uuid.uuid4())]),
    "naive date": encode_cursor(["2024-01-01T00:00:00", str(uuid.uuid4())]),
    "not a uuid": encode_cursor(["2024-01-01T00:00:00+00:00", "not-a-uuid"]),
    "id a number": encode_cursor(["2024-01-01T00:00:00+00:00", 5]),
    "id a list": encode_cursor(["2024-01-01T00:00:00+00:00", ["x"]]),
    "date a list": encode_cursor([["2024"], str(uuid.uuid4())]),
    "date at the edge of the calendar": encode_cursor(
        ["0001-01-01T00:00:00+14:00", str(uuid.uuid4())]
    ),
    "date far in the future": encode_cursor(["9999-12-31T23:59:59-14:00", str(uuid.uuid4())]),
    "too long": "A" * 10_000,
}


@pytest.mark.parametrize("cursor", BAD_CURSORS.values(), ids=BAD_CURSORS.keys())
async def test_bad_cursor_is_rejected(store: ChatStore, user_id: str, cursor: str) -> None:
    with pytest.raises(ValidationError) as info:
        await store.list_conversations(user_id, cursor=cursor)
    assert info.value.details[0]["loc"] == ["query", "cursor"]


async def test_tampered_cursor_is_rejected(store: ChatStore, new_user: MakeUser) -> None:
    owner = (await new_user()).user_id
    for _ in range(3):
        await store.create_conversation(owner)
    cursor = (await store.list_conversations(owner, limit=1)).next_cursor
    assert cursor is not None
    for tampered in ("X" + cursor[1:], cursor[:-3], cursor[: len(cursor) // 2]):
        with pytest.raises(ValidationError):
            await store.list_conversations(owner, cursor=tampered)


@pytest.mark.parametrize("limit", [0, -1, 101, 1000])
async def test_conversation_limit_outside_1_to_100_is_rejected(
    store: ChatStore, user_id: str, limit: int
) -> None:
    with pytest.raises(ValidationError) as info:
        await store.list_conversations(user_id, limit=limit)
    assert info.value.details[0]["loc"] == ["query", "limit"]


@pytest.mark.parametrize("limit", [1, 100])
async def test_conversation_limit_of_1_and_100_is_accepted(
    store: ChatStore, user_id: str, limit: int
) -> None:
    await store.create_conversation(user_id)
    assert len((await store.list_conversations(user_id, limit=limit)).data) == 1


# --- messages -----------------------------------------------------------------


async def test_first_message_gets_seq_1_and_moves_count_and_updated_at(
    store: ChatStore, user_id: str
) -> None:
    conversation = await store.create_conversation(user_id)
    stored = await store.append_message(user_id, conversation.id, user_message("hi"))
    assert stored.seq == 1
    assert stored.conversation_id == conversation.id
    assert (stored.role, stored.content, stored.name) == ("user", "hi", None)
    assert (stored.tool_calls, stored.tool_call_id, stored.metadata) == (None, None, {})
    assert_utc(stored.created_at)
    after = await store.get_conversation(user_id, conversation.id)
    assert after.message_count == 1
    assert after.updated_at > conversation.updated_at
    assert after.created_at == conversation.created_at


async def test_batch_gets_consecutive_seqs_in_order(store: ChatStore, user_id: str) -> None:
    conversation = await conversation_with(store, user_id, 2)
    batch = [user_message(f"b{i}") for i in range(5)]
    stored = await store.append_messages(user_id, conversation, batch)
    assert seqs(stored) == [3, 4, 5, 6, 7]
    assert [m.content for m in stored] == [f"b{i}" for i in range(5)]
    assert (await store.get_conversation(user_id, conversation)).message_count == 7


async def test_get_message_returns_the_stored_message(store: ChatStore, user_id: str) -> None:
    conversation = await store.create_conversation(user_id)
    call = {"id": "call_9", "type": "function", "function": {"name": "get", "arguments": '{"a":1}'}}
    stored = await store.append_messages(
        user_id,
        conversation.id,
        [
            {"role": "user", "content": "q", "name": "alice", "metadata": {"m": "1"}},
            {"role": "assistant", "content": "thinking", "tool_calls": [call]},
            tool_answer("call_9", "42"),
        ],
    )
    for message in stored:
        assert await store.get_message(user_id, conversation.id, message.seq) == message
    assistant = await store.get_message(user_id, conversation.id, 2)
    assert assistant.tool_calls is not None
    assert [c.model_dump() for c in assistant.tool_calls] == [call]
    first = await store.get_message(user_id, str(conversation.id), 1)
    assert (first.name, first.metadata) == ("alice", {"m": "1"})
    assert (await store.get_message(user_id, conversation.id, 3)).tool_call_id == "call_9"


@pytest.mark.parametrize("seq", [0, -1, 4, 2**63 - 1, 2**63, 10**30])
async def test_get_missing_message_is_not_found(store: ChatStore, user_id: str, seq: int) -> None:
    conversation = await conversation_with(store, user_id, 3)
    with pytest.raises(NotFound):
        await store.get_message(user_id, conversation, seq)


# list_messages over seqs 1..10: (kwargs, seqs of the page, has_more)
LIST_CASES: list[tuple[dict[str, Any], list[int], bool]] = [
    ({}, list(range(1, 11)), False),
    ({"limit": 10}, list(range(1, 11)), False),
    ({"limit": 3}, [1, 2, 3], True),
    ({"limit": 3, "after": 3}, [4, 5, 6], True),
    ({"limit": 3, "after": 7}, [8, 9, 10], False),
    ({"after": 10}, [], False),
    ({"before": 4}, [1, 2, 3], False),
    ({"after": 2, "before": 9, "limit": 3}, [3, 4, 5], True),
    ({"order": "desc"}, list(range(10, 0, -1)), False),
    ({"order": "desc", "limit": 3}, [10, 9, 8], True),
    ({"order": "desc", "limit": 3, "before": 8}, [7, 6, 5], True),
    ({"order": "desc", "limit": 3, "before": 4}, [3, 2, 1], False),
    ({"order": "desc", "after": 6}, [10, 9, 8, 7], False),
    ({"order": "desc", "before": 1}, [], False),
    ({"order": "desc", "after": 2, "before": 9, "limit": 3}, [8, 7, 6], True),
]


@pytest.mark.parametrize(("kwargs", "expected", "has_more"), LIST_CASES, ids=repr)
async def test_list_messages_pages_by_order_bounds_and_limit(
    store: ChatStore, user_id: str, kwargs: dict[str, Any], expected: list[int], has_more: bool
) -> None:
    conversation = await conversation_with(store, user_id, 10)
    page = await store.list_messages(user_id, conversation, **kwargs)
    assert seqs(page) == expected
    assert page.has_more is has_more
    assert page.first_seq == (expected[0] if expected else None)
    assert page.last_seq == (expected[-1] if expected else None)


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_list_messages_walks_every_message_once_in_either_order(
    store: ChatStore, user_id: str, order: Order
) -> None:
    conversation = await conversation_with(store, user_id, 23)
    await store.delete_message(user_id, conversation, 5)
    await store.delete_message(user_id, conversation, 20)
    walked: list[int] = []
    bound: dict[str, Any] = {}
    while True:
        page = await store.list_messages(user_id, conversation, order=order, limit=4, **bound)
        walked.extend(seqs(page))
        if not page.has_more:
            break
        assert page.last_seq is not None
        bound = {"after": page.last_seq} if order == "asc" else {"before": page.last_seq}
    expected = [s for s in range(1, 24) if s not in (5, 20)]
    assert walked == (expected if order == "asc" else expected[::-1])


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_a_page_reads_empty_and_set_metadata_back_as_written(
    store: ChatStore, user_id: str, order: Order
) -> None:
    # The page's SQL sends empty metadata as NULL (sql/messages.sql): read
    # back, it is {} again, a dict of each message's own, beside the set ones.
    conversation = (await store.create_conversation(user_id)).id
    written = [{}, {"k": "v"}, {}, {"{}": "{}"}]
    await store.append_messages(
        user_id, conversation, [{**user_message(), "metadata": m} for m in written]
    )
    page = await store.list_messages(user_id, conversation, order=order)
    read = [m.metadata for m in page.data]
    assert read == (written if order == "asc" else written[::-1])
    assert len({id(m) for m in read}) == len(read)
    body = json.loads(await store.list_messages_json(user_id, conversation, order=order))
    assert [m["metadata"] for m in body["data"]] == read
    for message in page.data:
        assert message == await store.get_message(user_id, conversation, message.seq)


async def test_empty_conversation_lists_no_messages(store: ChatStore, user_id: str) -> None:
    conversation = await conversation_with(store, user_id, 0)
    orders: tuple[Order, ...] = ("asc", "desc")
    for order in orders:
        page = await store.list_messages(user_id, conversation, order=order)
        assert page == MessagePage(data=[], has_more=False, first_seq=None, last_seq=None)


BAD_LIST_ARGS: dict[str, dict[str, Any]] = {
    "limit 0": {"limit": 0},
    "limit 1001": {"limit": 1001},
    "order up": {"order": "up"},
    "after -1": {"after": -1},
    "before -1": {"before": -1},
    "after past bigint": {"after": 2**63},
}


@pytest.mark.parametrize("kwargs", BAD_LIST_ARGS.values(), ids=BAD_LIST_ARGS.keys())
async def test_list_messages_rejects_bad_parameters(
    store: ChatStore, user_id: str, kwargs: dict[str, Any]
) -> None:
    conversation = await conversation_with(store, user_id, 1)
    with pytest.raises(ValidationError):
        await store.list_messages(user_id, conversation, **kwargs)


async def test_list_messages_accepts_limit_1000(store: ChatStore, user_id: str) -> None:
    conversation = await conversation_with(store, user_id, 2)
    assert seqs(await store.list_messages(user_id, conversation, limit=1000)) == [1, 2]


async def test_deleted_message_leaves_a_gap_and_its_seq_is_never_reused(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_with(store, user_id, 3)
    before = await store.get_conversation(user_id, conversation)
    await store.delete_message(user_id, conversation, 3)
    after_delete = await store.get_conversation(user_id, conversation)
    assert after_delete.message_count == 2
    assert after_delete.updated_at > before.updated_at
    with pytest.raises(NotFound):
        await store.get_message(user_id, conversation, 3)
    assert (await store.append_message(user_id, conversation, user_message())).seq == 4
    await store.delete_message(user_id, conversation, 2)
    assert seqs(await store.list_messages(user_id, conversation)) == [1, 4]
    assert (await store.get_conversation(user_id, conversation)).message_count == 2
    assert (await store.append_message(user_id, conversation, user_message())).seq == 5


async def test_deleting_every_message_still_never_reuses_seqs(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_with(store, user_id, 2)
    await store.delete_message(user_id, conversation, 1)
    await store.delete_message(user_id, conversation, 2)
    assert (await store.get_conversation(user_id, conversation)).message_count == 0
    assert (await store.append_message(user_id, conversation, user_message())).seq == 3


@pytest.mark.parametrize("seq", [0, -5, 4, 2**63, 10**30])
async def test_deleting_a_missing_message_is_not_found(
    store: ChatStore, user_id: str, seq: int
) -> None:
    conversation = await conversation_with(store, user_id, 3)
    before = await store.get_conversation(user_id, conversation)
    with pytest.raises(NotFound):
        await store.delete_message(user_id, conversation, seq)
    assert await store.get_conversation(user_id, conversation) == before


async def test_deleting_a_message_twice_is_not_found_and_counts_once(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_with(store, user_id, 3)
    await store.delete_message(user_id, conversation, 2)
    with pytest.raises(NotFound):
        await store.delete_message(user_id, conversation, 2)
    assert (await store.get_conversation(user_id, conversation)).message_count == 2


async def test_concurrent_deletes_of_one_message_count_it_once(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_with(store, user_id, 3)
    results = await asyncio.gather(
        *(store.delete_message(user_id, conversation, 2) for _ in range(6)), return_exceptions=True
    )
    assert sum(result is None for result in results) == 1
    assert all(result is None or isinstance(result, NotFound) for result in results)
    assert (await store.get_conversation(user_id, conversation)).message_count == 2


async def test_truncate_deletes_from_seq_on_and_returns_how_many(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_with(store, user_id, 6)
    await store.delete_message(user_id, conversation, 5)
    before = await store.get_conversation(user_id, conversation)
    assert await store.truncate_messages(user_id, conversation, 4) == 2
    after = await store.get_conversation(user_id, conversation)
    assert seqs(await store.list_messages(user_id, conversation)) == [1, 2, 3]
    assert after.message_count == 3
    assert after.updated_at > before.updated_at
    assert (await store.append_message(user_id, conversation, user_message())).seq == 7


async def test_truncate_past_the_end_deletes_nothing(store: ChatStore, user_id: str) -> None:
    conversation = await conversation_with(store, user_id, 3)
    assert await store.truncate_messages(user_id, conversation, 4) == 0
    assert await store.truncate_messages(user_id, conversation, 2**70) == 0
    assert (await store.get_conversation(user_id, conversation)).message_count == 3


async def test_truncate_from_1_empties_the_conversation(store: ChatStore, user_id: str) -> None:
    conversation = await conversation_with(store, user_id, 4)
    assert await store.truncate_messages(user_id, conversation, 1) == 4
    assert (await store.get_conversation(user_id, conversation)).message_count == 0
    assert (await store.list_messages(user_id, conversation)).data == []
    assert await store.truncate_messages(user_id, conversation, 1) == 0
    assert (await store.append_message(user_id, conversation, user_message())).seq == 5


async def test_truncate_removes_the_tool_calls_of_deleted_messages(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_with(store, user_id, 1)
    await store.append_messages(user_id, conversation, [assistant_calling("c1"), tool_answer("c1")])
    assert await store.truncate_messages(user_id, conversation, 2) == 2
    sql = "SELECT count(*) FROM message_tool_calls WHERE conversation_id = $1"
    assert await count_rows(store, sql, conversation) == 0
    # Regenerating after the edit may use the same call id again.
    regenerated = await store.append_messages(
        user_id, conversation, [assistant_calling("c1"), tool_answer("c1")]
    )
    assert seqs(regenerated) == [4, 5]


@pytest.mark.parametrize("from_seq", [0, -1])
async def test_truncate_from_seq_below_1_is_rejected(
    store: ChatStore, user_id: str, from_seq: int
) -> None:
    conversation = await conversation_with(store, user_id, 2)
    with pytest.raises(ValidationError):
        await store.truncate_messages(user_id, conversation, from_seq)
    assert (await store.get_conversation(user_id, conversation)).message_count == 2


# --- expected_last_seq --------------------------------------------------------


async def test_expected_last_seq_0_on_an_empty_conversation_appends(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_with(store, user_id, 0)
    stored = await store.append_messages(
        user_id, conversation, [user_message()], expected_last_seq=0
    )
    assert seqs(stored) == [1]


async def test_matching_expected_last_seq_appends(store: ChatStore, user_id: str) -> None:
    conversation = await conversation_with(store, user_id, 2)
    stored = await store.append_messages(
        user_id, conversation, [user_message(), user_message()], expected_last_seq=2
    )
    assert seqs(stored) == [3, 4]


@pytest.mark.parametrize("expected", [0, 1, 3, 100])
async def test_stale_expected_last_seq_is_a_seq_conflict_and_stores_nothing(
    store: ChatStore, user_id: str, expected: int
) -> None:
    conversation = await conversation_with(store, user_id, 2)
    before = await store.get_conversation(user_id, conversation)
    with pytest.raises(SeqConflict) as info:
        await store.append_messages(
            user_id, conversation, [user_message("late")], expected_last_seq=expected
        )
    assert (info.value.expected, info.value.actual) == (expected, 2)
    assert info.value.code == "seq_conflict"
    assert await store.get_conversation(user_id, conversation) == before
    assert seqs(await store.list_messages(user_id, conversation)) == [1, 2]
    assert await last_seq(store, conversation) == 2


async def test_concurrent_writers_with_one_expected_last_seq_append_once(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_with(store, user_id, 1)
    results = await asyncio.gather(
        *(
            store.append_messages(
                user_id, conversation, [user_message(str(i))], expected_last_seq=1
            )
            for i in range(12)
        ),
        return_exceptions=True,
    )
    winners = [result for result in results if isinstance(result, list)]
    assert len(winners) == 1
    assert seqs(winners[0]) == [2]
    assert all(isinstance(r, SeqConflict) for r in results if not isinstance(r, list))
    assert (await store.get_conversation(user_id, conversation)).message_count == 2


# --- a refused batch stores nothing ----------------------------------------------


async def test_batch_with_an_invalid_message_at_index_3_stores_nothing(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_with(store, user_id, 2)
    before = await store.get_conversation(user_id, conversation)
    batch = [user_message(str(i)) for i in range(5)]
    batch[3] = {"role": "user", "content": 5}
    with pytest.raises(ValidationError) as info:
        await store.append_messages(user_id, conversation, batch)
    assert info.value.details[0]["loc"] == ["messages", 3, "content"]
    assert await store.get_conversation(user_id, conversation) == before
    assert [m.content for m in (await store.list_messages(user_id, conversation)).data] == [
        "m1",
        "m2",
    ]


async def test_batch_ending_with_an_unanswerable_tool_message_stores_nothing(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_with(store, user_id, 2)
    before = await store.get_conversation(user_id, conversation)
    batch = [
        user_message("a"),
        assistant_calling("call_a"),
        tool_answer("call_a"),
        user_message("b"),
        tool_answer("call_unknown"),
    ]
    with pytest.raises(ValidationError) as info:
        await store.append_messages(user_id, conversation, batch)
    assert info.value.details[0]["loc"] == ["messages", 4, "tool_call_id"]
    assert await store.get_conversation(user_id, conversation) == before
    assert seqs(await store.list_messages(user_id, conversation)) == [1, 2]
    sql = "SELECT count(*) FROM message_tool_calls WHERE conversation_id = $1"
    assert await count_rows(store, sql, conversation) == 0
    # No seq was consumed, and call_a was not remembered.
    assert (await store.append_message(user_id, conversation, user_message())).seq == 3
    with pytest.raises(ValidationError):
        await store.append_message(user_id, conversation, tool_answer("call_a"))


# --- ownership ----------------------------------------------------------------

Operation = Callable[[ChatStore, str, str], Awaitable[object]]

OPERATIONS: dict[str, Operation] = {
    "get_conversation": lambda s, u, c: s.get_conversation(u, c),
    "update_title": lambda s, u, c: s.update_conversation(u, c, title="hijacked"),
    "update_metadata": lambda s, u, c: s.update_conversation(u, c, metadata={"x": "y"}),
    "update_nothing": lambda s, u, c: s.update_conversation(u, c),
    "delete_conversation": lambda s, u, c: s.delete_conversation(u, c),
    "list_messages": lambda s, u, c: s.list_messages(u, c),
    "list_messages_desc": lambda s, u, c: s.list_messages(u, c, order="desc", limit=1),
    "append_message": lambda s, u, c: s.append_message(u, c, user_message("intruder")),
    "append_batch": lambda s, u, c: s.append_messages(u, c, [user_message("a"), user_message("b")]),
    "append_with_expected_last_seq": lambda s, u, c: s.append_messages(
        u, c, [user_message("intruder")], expected_last_seq=3
    ),
    "append_tool_answer": lambda s, u, c: s.append_message(u, c, tool_answer("call_own")),
    "get_message": lambda s, u, c: s.get_message(u, c, 1),
    "delete_message": lambda s, u, c: s.delete_message(u, c, 1),
    "truncate_messages": lambda s, u, c: s.truncate_messages(u, c, 1),
}

# Who acts, on which id: another user on the owner's conversation, the owner
# on an id that exists nowhere, anyone on an id that is not a uuid.
TARGETS = ["other user, owner's id", "owner, unknown id", "owner, malformed id", "other, malformed"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
async def test_another_users_conversation_is_not_found_for_every_operation(
    store: ChatStore, user_id: str, other_user_id: str, operation: Operation, target: str
) -> None:
    conversation = await store.create_conversation(user_id, title="mine", metadata={"k": "v"})
    await store.append_messages(
        user_id,
        conversation.id,
        [user_message("q"), assistant_calling("call_own"), tool_answer("call_own")],
    )
    snapshot = await store.get_conversation(user_id, conversation.id)
    messages = await store.list_messages(user_id, conversation.id)

    actor, target_id = {
        "other user, owner's id": (other_user_id, str(conversation.id)),
        "owner, unknown id": (user_id, str(uuid.uuid4())),
        "owner, malformed id": (user_id, "not-a-uuid"),
        "other, malformed": (other_user_id, "not-a-uuid"),
    }[target]
    with pytest.raises(NotFound) as info:
        await operation(store, actor, target_id)

    # Indistinguishable from an id that exists nowhere.
    with pytest.raises(NotFound) as nowhere:
        await operation(store, other_user_id, str(uuid.uuid4()))
    assert info.value.code == nowhere.value.code == "not_found"
    if "malformed" not in target:
        assert str(info.value) == str(nowhere.value)

    assert await store.get_conversation(user_id, conversation.id) == snapshot
    assert await store.list_messages(user_id, conversation.id) == messages
    assert await last_seq(store, conversation.id) == 3


async def test_another_users_conversation_is_not_found_through_a_uuid_object(
    store: ChatStore, user_id: str, other_user_id: str
) -> None:
    conversation = await conversation_with(store, user_id, 1)
    with pytest.raises(NotFound):
        await store.get_conversation(other_user_id, conversation)
    with pytest.raises(NotFound):
        await store.get_message(other_user_id, conversation, 1)


# --- cascades -----------------------------------------------------------------


async def test_deleting_a_user_removes_their_conversations_messages_and_tool_calls(
    store: ChatStore, new_user: MakeUser
) -> None:
    doomed, survivor = (await new_user()).user_id, (await new_user()).user_id
    doomed_ids: list[uuid.UUID] = []
    for owner in (doomed, survivor):
        for _ in range(2):
            conversation = await conversation_with(store, owner, 2)
            await store.append_messages(
                owner, conversation, [assistant_calling("c1", "c2"), tool_answer("c1")]
            )
            if owner == doomed:
                doomed_ids.append(conversation)

    await store.pool.execute('DELETE FROM "user" WHERE id = $1', doomed)

    assert (
        await count_rows(store, "SELECT count(*) FROM conversations WHERE user_id = $1", doomed)
        == 0
    )
    assert await count_rows(store, "SELECT count(*) FROM messages WHERE user_id = $1", doomed) == 0
    assert (
        await count_rows(
            store,
            "SELECT count(*) FROM message_tool_calls WHERE conversation_id = ANY($1::uuid[])",
            doomed_ids,
        )
        == 0
    )
    assert (await store.list_conversations(doomed)).data == []
    survivors = (await store.list_conversations(survivor)).data
    assert [conv.message_count for conv in survivors] == [4, 4]
    assert (
        await count_rows(store, "SELECT count(*) FROM messages WHERE user_id = $1", survivor) == 8
    )


async def test_deleting_a_conversation_leaves_the_users_other_conversations(
    store: ChatStore, user_id: str
) -> None:
    doomed = await conversation_with(store, user_id, 3)
    kept = await conversation_with(store, user_id, 2)
    await store.append_messages(user_id, kept, [assistant_calling("c1"), tool_answer("c1")])
    await store.delete_conversation(user_id, doomed)
    assert (
        await count_rows(store, "SELECT count(*) FROM messages WHERE conversation_id = $1", doomed)
        == 0
    )
    assert seqs(await store.list_messages(user_id, kept)) == [1, 2, 3, 4]
    assert (
        await count_rows(
            store, "SELECT count(*) FROM message_tool_calls WHERE conversation_id = $1", kept
        )
        == 1
    )


# --- concurrency --------------------------------------------------------------


async def test_concurrent_appenders_get_gap_free_unique_seqs(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_with(store, user_id, 0)
    writers, singles, batch_size = 32, 5, 3

    async def writer(index: int) -> list[Message]:
        stored: list[Message] = []
        for i in range(singles):
            stored.append(
                await store.append_message(user_id, conversation, user_message(f"{index}:{i}"))
            )
        if index % 4 == 0:
            batch = [user_message(f"{index}:b{i}") for i in range(batch_size)]
            stored.extend(await store.append_messages(user_id, conversation, batch))
        return stored

    results = await asyncio.gather(*(writer(index) for index in range(writers)))
    total = writers * singles + (writers // 4) * batch_size

    page = await store.list_messages(user_id, conversation, limit=1000)
    assert seqs(page) == list(range(1, total + 1))
    assert (await store.get_conversation(user_id, conversation)).message_count == total
    assert await last_seq(store, conversation) == total
    by_seq = {m.seq: m.content for m in page.data}
    for index, stored in enumerate(results):
        assert seqs(stored) == sorted(seqs(stored))
        assert [m.content for m in stored][:singles] == [f"{index}:{i}" for i in range(singles)]
        for m in stored:
            assert by_seq[m.seq] == m.content
        if index % 4 == 0:
            batch_seqs = seqs(stored)[singles:]
            assert batch_seqs == list(range(batch_seqs[0], batch_seqs[0] + batch_size))


async def test_seq_is_never_reused_under_concurrent_delete_and_append(
    store: ChatStore, user_id: str
) -> None:
    conversation = await conversation_with(store, user_id, 10)
    appended: list[int] = []

    async def appender(index: int) -> None:
        for i in range(5):
            stored = await store.append_message(user_id, conversation, user_message(f"{index}:{i}"))
            appended.append(stored.seq)

    async def deleter() -> None:
        for _ in range(5):
            newest = await store.list_messages(user_id, conversation, order="desc", limit=1)
            if newest.first_seq is not None:
                # NotFound: another deleter got it first.
                with contextlib.suppress(NotFound):
                    await store.delete_message(user_id, conversation, newest.first_seq)

    async def truncator() -> None:
        for _ in range(3):
            newest = await store.list_messages(user_id, conversation, order="desc", limit=2)
            if newest.last_seq is not None:
                await store.truncate_messages(user_id, conversation, newest.last_seq)

    await asyncio.gather(
        *(appender(i) for i in range(16)),
        *(deleter() for _ in range(6)),
        *(truncator() for _ in range(2)),
    )
    assert len(appended) == len(set(appended)) == 80
    assert sorted(appended) == list(range(11, 91))
    assert await last_seq(store, conversation) == 90
    remaining = seqs(await store.list_messages(user_id, conversation, limit=1000))
    assert remaining == sorted(set(remaining))
    assert (await store.get_conversation(user_id, conversation)).message_count == len(remaining)
    assert (await store.append_message(user_id, conversation, user_message())).seq == 91


# -- the HTTP API's page bodies, written from rows (issue 11) ----------------

AWKWARD = "".join(chr(i) for i in range(1, 32)) + '\u2028\u2029\x7f é 😀 "\\/ <b>'


async def test_a_message_page_body_is_byte_for_byte_what_its_model_renders(
    store: ChatStore, user_id: str
) -> None:
    conversation = await store.create_conversation(user_id)
    await store.append_messages(
        user_id,
        conversation.id,
        [
            {"role": "system", "content": AWKWARD, "metadata": {"z": "1", "é": AWKWARD, "a": ""}},
            assistant_calling("call_1", "call_2"),
            {"role": "tool", "content": "42", "tool_call_id": "call_1", "name": "f"},
            {"role": "tool", "content": "", "tool_call_id": "call_2"},
            user_message(),
        ],
    )
    await store.append_message(user_id, conversation.id, user_message("a branch"), parent_seq=1)
    asked: list[dict[str, Any]] = [
        {},
        {"order": "desc"},
        {"limit": 2},
        {"limit": 2, "order": "desc", "before": 4},
        {"after": 2, "limit": 1},
        {"after": 99},
    ]
    for params in asked:
        page = await store.list_messages(user_id, conversation.id, **params)
        body = await store.list_messages_json(user_id, conversation.id, **params)
        assert body == page.model_dump_json().encode(), params
    empty = await store.create_conversation(user_id)
    page = await store.list_messages(user_id, empty.id)
    assert await store.list_messages_json(user_id, empty.id) == page.model_dump_json().encode()
    with pytest.raises(NotFound):
        await store.list_messages_json(user_id, uuid.uuid4())


async def test_a_conversation_page_body_is_byte_for_byte_what_its_model_renders(
    store: ChatStore, new_user: MakeUser
) -> None:
    user_id = (await new_user()).user_id
    await store.create_conversation(user_id)
    await store.create_conversation(user_id, title=AWKWARD, metadata={"b": AWKWARD, "a": "1"})
    third = await store.create_conversation(user_id, title="archived")
    await store.update_conversation(user_id, third.id, archived=True)
    for archived in (False, True):
        cursor = None
        while True:
            page = await store.list_conversations(
                user_id, limit=1, cursor=cursor, archived=archived
            )
            body = await store.list_conversations_json(
                user_id, limit=1, cursor=cursor, archived=archived
            )
            assert body == page.model_dump_json().encode(), (archived, cursor)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor


async def test_json_numbers_beyond_64_bits_come_back_exactly(
    store: ChatStore, user_id: str
) -> None:
    """jsonb is decoded with orjson for speed, which would read 2**70 as a
    float: such documents are read by json instead (chatstore/pool.py)."""
    numbers = {
        "type": "x_numbers",
        "big": 2**70,
        "negative": -(2**65) - 3,
        "edge": 2**63,
        "fraction": 0.1234567890123456789,
        "small": 7,
    }
    conversation = await store.create_conversation(user_id)
    await store.add_items(user_id, conversation.id, [numbers])
    (stored,) = (await store.list_items(user_id, conversation.id)).items
    assert stored.item == numbers
    assert all(type(stored.item[key]) is type(value) for key, value in numbers.items())
