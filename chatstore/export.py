"""Export a whole conversation, a page of at most PAGE_BYTES at a time.

Memory per export is bounded in bytes whatever the messages: a page holds at
most ``page_bytes`` of rows (the database sizes them, sql/export.sql), or one
row when that row alone is larger, and each page leaves as one encoded chunk
before the next is read. All pages come from one snapshot (a read-only
REPEATABLE READ transaction).

The caller checks ownership first (``conversations.get``) so that a
stranger gets a 404 before any streaming starts; every page filters by the
owner as well.

Over HTTP the export runs on a connection of the stream pool taken before
the response starts (``connection=``), and with ``idle_seconds`` set: each
chunk is one write to the client, so between two statements of the
transaction there is exactly one write, which the response bounds by the send
timeout (chatstore/http/streaming.py); PostgreSQL ends a transaction left idle
longer than ``idle_seconds`` all the same, as a backstop.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from chatstore.database import Database, Source, database_of
from chatstore.ids import ConversationId, conversation_uuid
from chatstore.models import Message, Row
from chatstore.pool import PoolConnection
from chatstore.tool_turns import merge_dicts

# The most message data a page holds (sql/export.sql's row_bytes).
PAGE_BYTES = 256 * 1024
# The most seqs a page may read (sql/export.sql's :span); the next page
# reads twice what the last one returned (at least MIN_PAGE_ROWS), so pages
# of huge rows do not each size up MAX_PAGE_ROWS to return one.
MAX_PAGE_ROWS = 1000
MIN_PAGE_ROWS = 16


def idle_backstop_seconds(send_timeout: float) -> float:
    """idle_in_transaction_session_timeout for an export whose writes are
    bounded by ``send_timeout``: twice that, and at least 5 s more, so that
    it only ever catches what the send timeout did not."""
    return max(2 * send_timeout, send_timeout + 5)


@asynccontextmanager
async def _connection(db: Database, given: PoolConnection | None) -> AsyncIterator[PoolConnection]:
    if given is not None:
        yield given
        return
    async with db.lease(read=True) as connection:  # a replica's when one may serve
        yield connection


async def pages(
    source: Source,
    user_id: str,
    conversation_id: ConversationId,
    *,
    connection: PoolConnection | None = None,
    idle_seconds: float | None = None,
    page_bytes: int = PAGE_BYTES,
) -> AsyncGenerator[Sequence[Row], None]:
    """The conversation's active path (what it shows) in seq order, a page
    at a time.

    ``connection``: run there (else on a connection of the main pool).
    ``idle_seconds``: the transaction's idle_in_transaction_session_timeout
    (else the server's, usually none: a Python caller may take its time).
    """
    conversation = conversation_uuid(conversation_id)
    db = database_of(source)
    async with _connection(db, connection) as leased:
        snapshot = db.on(leased)
        async with snapshot.transaction(isolation="repeatable_read", readonly=True):
            if idle_seconds is not None:
                await snapshot.scalar(
                    "limit_export_idle", timeout_ms=str(round(idle_seconds * 1000))
                )
            last_seq = await snapshot.scalar(
                "export_last_seq", conversation_id=conversation, user_id=user_id
            )
            if last_seq is None:
                return  # deleted since the caller's ownership check
            after, span = 0, MAX_PAGE_ROWS
            while after < last_seq:
                rows = await snapshot.many(
                    "export_page",
                    conversation_id=conversation,
                    user_id=user_id,
                    after=after,
                    span=span,
                    max_bytes=page_bytes,
                )
                if rows:
                    yield rows
                    after = rows[-1]["seq"]
                    span = min(MAX_PAGE_ROWS, max(MIN_PAGE_ROWS, 2 * len(rows)))
                else:
                    # Deleted messages across the whole span: skip it, and
                    # look further next time.
                    after += span
                    span = min(MAX_PAGE_ROWS, 2 * span)


async def iter_messages(
    source: Source, user_id: str, conversation_id: ConversationId
) -> AsyncIterator[Message]:
    """The messages of the conversation's active path, in seq order."""
    async for page in pages(source, user_id, conversation_id):
        for row in page:
            yield Message.from_row(row)


async def jsonl(
    source: Source,
    user_id: str,
    conversation_id: ConversationId,
    *,
    connection: PoolConnection | None = None,
    idle_seconds: float | None = None,
) -> AsyncIterator[bytes]:
    """One Message per line, the active path in seq order; one chunk per
    page."""
    async for page in pages(
        source, user_id, conversation_id, connection=connection, idle_seconds=idle_seconds
    ):
        yield "".join([Message.from_row(row).model_dump_json() + "\n" for row in page]).encode()


def openai_message(row: Row) -> dict[str, Any]:
    """A chat-completions message: role and content, the rest when set."""
    item: dict[str, Any] = {"role": row["role"], "content": row["content"]}
    for field in ("name", "tool_calls", "tool_call_id"):
        if row[field] is not None:
            item[field] = row[field]
    return item


async def openai(
    source: Source,
    user_id: str,
    conversation_id: ConversationId,
    *,
    connection: PoolConnection | None = None,
    idle_seconds: float | None = None,
    page_bytes: int = PAGE_BYTES,
) -> AsyncIterator[bytes]:
    """``{"messages": [...]}`` ready for a chat-completions request. Tool
    messages whose assistant tool call is no longer stored (deleted) are
    left out: such a history would be refused. Parallel tool calls stored
    as one assistant message each (function_call items) are one assistant
    message (chatstore/tool_turns.py), across pages too: a page's last
    assistant message waits for the next page, which may add to it. One
    chunk per page (none for a page with nothing to write yet). The active
    path only: the conversation as a model is shown it."""
    yield b'{"messages":['
    first = True
    held: list[dict[str, Any]] = []  # the last assistant message, maybe not whole yet

    def encoded(messages: list[dict[str, Any]]) -> bytes:
        nonlocal first
        chunk: list[str] = []
        for message in messages:
            text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
            chunk.append(text if first else "," + text)
            first = False
        return "".join(chunk).encode()

    async for page in pages(
        source,
        user_id,
        conversation_id,
        connection=connection,
        idle_seconds=idle_seconds,
        page_bytes=page_bytes,
    ):
        merged = merge_dicts([*held, *(openai_message(row) for row in page if row["answerable"])])
        held = [merged.pop()] if merged and merged[-1]["role"] == "assistant" else []
        if merged:
            yield encoded(merged)
    if held:
        yield encoded(held)
    yield b"]}"
