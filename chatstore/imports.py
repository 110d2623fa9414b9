"""Import: a whole conversation created from a list of messages, atomically.

POST /api/conversations/import takes either chat-completions' shape
(``{"title"?, "metadata"?, "messages": [...]}``, what ``export?format=openai``
writes) or chatstore's JSONL export (one Message per line, what
``export?format=jsonl`` writes). The messages get seqs 1, 2, 3... in their
order: an export's seqs, ids and timestamps are not kept (an export of a
conversation some of whose messages were deleted has gaps; the import has
none).

The rules are an append's (chatstore/messages.py): every message valid, tool
call ids unique, every tool message answering a tool call of an earlier
message. They are checked here over the whole import before anything is
stored, so a refusal names the message by its index in the import, and
nothing is stored: the conversation and its messages are written in one
transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chatstore import conversations, idempotency
from chatstore.config import Settings
from chatstore.database import Source, database_of
from chatstore.errors import ValidationError
from chatstore.messages import MessageLike
from chatstore.messages import append as append_messages
from chatstore.models import (
    MAX_BATCH,
    MAX_IMPORT_MESSAGES,
    Conversation,
    ConversationInput,
    ImportInput,
    MessageInput,
)
from chatstore.pool import dumps
from chatstore.validation import check_content_cap, validate_model

# The fields of an exported Message (JSONL) that the import does not keep:
# the new conversation gives its own. (An export is the active path, so each
# parent_seq is the line before: the import's own append chains them again.)
EXPORT_ONLY_FIELDS = ("conversation_id", "seq", "parent_seq", "created_at")

__all__ = [
    "MAX_IMPORT_MESSAGES",
    "ImportInput",
    "from_jsonl_line",
    "import_conversation",
    "store_import",
    "validate_import",
]


def from_jsonl_line(line: Any) -> Any:
    """A line of a JSONL export as an import's message: the export-only
    fields dropped, the rest validated like any message."""
    if isinstance(line, dict):
        return {k: v for k, v in line.items() if k not in EXPORT_ONLY_FIELDS}
    return line


def validate_import(
    messages: Sequence[MessageLike], settings: Settings, loc: Sequence[str | int] = ("messages",)
) -> list[MessageInput]:
    """Every message valid, and the history they make valid: at most
    MAX_IMPORT_MESSAGES, tool call ids unique, every tool message answering
    an earlier tool call. An error's loc is ``[*loc, index, ...]``."""
    if len(messages) > MAX_IMPORT_MESSAGES:
        raise ValidationError.at(
            list(loc), f"an import carries at most {MAX_IMPORT_MESSAGES} messages"
        )
    checked: list[MessageInput] = []
    calls: set[str] = set()
    for index, message in enumerate(messages):
        where = (*loc, index)
        if isinstance(message, MessageInput):
            check_content_cap(message, settings.max_content_chars, where)
        else:
            message = validate_model(MessageInput, message, settings, loc=where)
        if message.tool_call_id is not None and message.tool_call_id not in calls:
            raise ValidationError.at(
                [*where, "tool_call_id"],
                f"tool_call_id {message.tool_call_id!r} does not answer a tool call "
                "of an earlier assistant message",
            )
        for call in message.tool_calls or ():
            if call.id in calls:
                raise ValidationError.at(
                    [*where, "tool_calls"], f"tool call id {call.id!r} is used twice"
                )
            calls.add(call.id)
        checked.append(message)
    return checked


async def import_conversation(
    source: Source,
    user_id: str,
    messages: Sequence[MessageLike],
    *,
    title: str | None = None,
    metadata: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
) -> Conversation:
    """A new conversation holding ``messages`` (seqs from 1), or nothing."""
    db = database_of(source)
    data = validate_model(
        ConversationInput, {"title": title, "metadata": dict(metadata or {})}, db.settings
    )
    checked = validate_import(messages, db.settings)

    async def create() -> Conversation:
        return await store_import(db, user_id, data, checked)

    if idempotency_key is None:
        return await create()
    request = idempotency.fingerprint(
        "import_conversation",
        data.model_dump(),
        dumps([m.model_dump(exclude_unset=True) for m in checked]),
    )
    return await conversations.create_once(db, user_id, idempotency_key, request, create)


async def store_import(
    source: Source, user_id: str, data: ConversationInput, checked: Sequence[MessageInput]
) -> Conversation:
    """Write a validated import in one transaction (a savepoint inside an
    Idempotency-Key's): appends of MAX_BATCH messages each, as the append
    statement takes them."""
    db = database_of(source)
    async with db.transaction():
        created = await conversations.create(db, user_id, title=data.title, metadata=data.metadata)
        for start in range(0, len(checked), MAX_BATCH):
            await append_messages(db, user_id, created.id, checked[start : start + MAX_BATCH])
        if not checked:
            return created
        return await conversations.get(db, user_id, created.id)
