"""An export holds a budget of bytes at a time, not a count of rows.

Before, the export read 1,000 rows per FETCH whatever their size: 1,000
messages of a million characters were a gigabyte in the process at once.
Now a page is at most ``page_bytes`` of message data, or one row when that
row alone is larger; these tests read real conversations of very large
messages through export.pages and export.jsonl, nothing mocked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from support.users import User

from chatstore import export
from chatstore.models import Row
from chatstore.store import ChatStore

# Two bytes a character in UTF-8, so byte and character counts differ.
HUGE_CHARS = 300_000
HUGE = "é" * HUGE_CHARS


def content_bytes(page: Sequence[Row]) -> int:
    return sum(len((row["content"] or "").encode()) for row in page)


async def read_pages(
    store: ChatStore, user: User, conversation_id: object, page_bytes: int
) -> list[Sequence[Row]]:
    return [
        page
        async for page in export.pages(
            store, user.user_id, str(conversation_id), page_bytes=page_bytes
        )
    ]


async def test_an_export_holds_at_most_its_byte_budget_of_rows_at_once(
    store: ChatStore, user: User
) -> None:
    conversation = await store.create_conversation(user.user_id)
    # Small ones, then huge ones, then small ones again: a page must not
    # size itself on the rows before it.
    contents = [f"small {i}" for i in range(300)]
    contents += [f"{i}{HUGE}" for i in range(6)]
    contents += [f"small again {i}" for i in range(40)]
    for start in range(0, len(contents), 50):
        await store.append_messages(
            user.user_id,
            conversation.id,
            [{"role": "user", "content": content} for content in contents[start : start + 50]],
        )

    pages = await read_pages(store, user, conversation.id, export.PAGE_BYTES)

    sizes = [(len(page), content_bytes(page)) for page in pages]
    assert [row["content"] for page in pages for row in page] == contents, sizes
    for page in pages:
        # row_bytes is what the database charged: at least the content's bytes.
        assert all(row["row_bytes"] >= len(row["content"].encode()) for row in page), sizes
        assert len(page) == 1 or sum(row["row_bytes"] for row in page) <= export.PAGE_BYTES, sizes
    # Every huge row (600 KB, over the budget) came alone.
    assert sum(1 for rows, _ in sizes if rows == 1) >= 6, sizes
    assert max(size for _, size in sizes) == len(f"0{HUGE}".encode()), sizes


async def test_an_export_page_is_cut_at_the_budget_not_at_a_row_count(
    store: ChatStore, user: User
) -> None:
    conversation = await store.create_conversation(user.user_id)
    medium = "m" * 30_000
    await store.append_messages(
        user.user_id, conversation.id, [{"role": "user", "content": medium}] * 40
    )

    pages = await read_pages(store, user, conversation.id, 100_000)

    # 30,000 bytes and the row's fixed share each: three fit in 100,000.
    assert [len(page) for page in pages] == [3] * 13 + [1], [len(page) for page in pages]
    assert all(content_bytes(page) <= 100_000 for page in pages)


async def test_an_export_leaves_in_chunks_of_one_page(store: ChatStore, user: User) -> None:
    conversation = await store.create_conversation(user.user_id)
    await store.append_messages(
        user.user_id,
        conversation.id,
        [{"role": "user", "content": f"{i}{HUGE}"} for i in range(3)],
    )
    for _ in range(6):
        await store.append_messages(
            user.user_id, conversation.id, [{"role": "assistant", "content": "x" * 1000}] * 100
        )

    chunks = [chunk async for chunk in export.jsonl(store, user.user_id, conversation.id)]

    lines = b"".join(chunks).decode().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, 604))
    # A chunk is one huge line, or about a page of small ones.
    sizes = [(chunk.count(b"\n"), len(chunk)) for chunk in chunks]
    assert all(count == 1 or size <= 2 * export.PAGE_BYTES for count, size in sizes), sizes
    assert sum(1 for count, _ in sizes if count == 1) == 3, sizes


async def test_an_export_reads_past_long_runs_of_deleted_messages(
    store: ChatStore, user: User
) -> None:
    # Pages read ranges of seqs: a range with nothing left in it must not
    # end the export.
    conversation = await store.create_conversation(user.user_id)
    for _ in range(30):
        await store.append_messages(
            user.user_id, conversation.id, [{"role": "user", "content": "gone"}] * 100
        )
    await store.truncate_messages(user.user_id, conversation.id, 11)
    await store.append_messages(
        user.user_id, conversation.id, [{"role": "user", "content": "kept"}] * 5
    )
    await store.delete_message(user.user_id, conversation.id, 3)

    pages = await read_pages(store, user, conversation.id, export.PAGE_BYTES)

    seqs = [row["seq"] for page in pages for row in page]
    assert seqs == [1, 2, *range(4, 11), *range(3001, 3006)], seqs
