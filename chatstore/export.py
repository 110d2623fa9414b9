"""Export a whole conversation, streamed from a server-side cursor.

Memory stays flat however long the conversation: rows arrive ``prefetch`` at
a time and leave as encoded chunks. The caller checks ownership first
(``ChatStore.get_conversation``) so that a stranger gets a 404 before any
streaming starts; the cursor query filters by the owner as well.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from chatstore.dberrors import translate_errors
from chatstore.models import Message, Row
from chatstore.store import ChatStore, ConversationId, conversation_uuid

# Rows per FETCH (sql/export.sql): how much is in memory at once.
PREFETCH = 1000


async def _rows(store: ChatStore, user_id: str, conversation: uuid.UUID) -> AsyncIterator[Row]:
    with translate_errors():
        async with store.connection() as connection, connection.transaction():
            await store.queries.exec(
                connection,
                "declare_export_cursor",
                user_id=user_id,
                conversation_id=conversation,
            )
            while True:
                rows = await store.queries.many(connection, "fetch_export_cursor")
                for row in rows:
                    yield row
                if len(rows) < PREFETCH:
                    return


async def iter_messages(
    store: ChatStore, user_id: str, conversation_id: ConversationId
) -> AsyncIterator[Message]:
    """Every message of the conversation in seq order."""
    async for row in _rows(store, user_id, conversation_uuid(conversation_id)):
        yield Message.from_row(row)


async def jsonl(
    store: ChatStore, user_id: str, conversation_id: ConversationId
) -> AsyncIterator[bytes]:
    """One Message per line, in seq order."""
    lines: list[str] = []
    async for row in _rows(store, user_id, conversation_uuid(conversation_id)):
        lines.append(Message.from_row(row).model_dump_json())
        if len(lines) == PREFETCH:
            yield ("\n".join(lines) + "\n").encode()
            lines.clear()
    if lines:
        yield ("\n".join(lines) + "\n").encode()


def openai_message(row: Row) -> dict[str, Any]:
    """A chat-completions message: role and content, the rest when set."""
    item: dict[str, Any] = {"role": row["role"], "content": row["content"]}
    for field in ("name", "tool_calls", "tool_call_id"):
        if row[field] is not None:
            item[field] = row[field]
    return item


async def openai(
    store: ChatStore, user_id: str, conversation_id: ConversationId
) -> AsyncIterator[bytes]:
    """``{"messages": [...]}`` ready for a chat-completions request. Tool
    messages whose assistant tool call is no longer stored (deleted) are
    left out: such a history would be refused."""
    yield b'{"messages":['
    first = True
    chunk: list[str] = []
    async for row in _rows(store, user_id, conversation_uuid(conversation_id)):
        if not row["answerable"]:
            continue
        encoded = json.dumps(openai_message(row), ensure_ascii=False, separators=(",", ":"))
        chunk.append(encoded if first else "," + encoded)
        first = False
        if len(chunk) == PREFETCH:
            yield "".join(chunk).encode()
            chunk.clear()
    yield ("".join(chunk) + "]}").encode()
