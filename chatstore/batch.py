"""A batch of messages to append: its rules, its SQL parameters, and what a
refused append means (the pure half of ChatStore.append_messages)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chatstore.config import Settings
from chatstore.errors import NotFound, SeqConflict, ValidationError
from chatstore.models import MAX_BATCH, MessageInput, Row
from chatstore.pool import dumps
from chatstore.validation import check_content_cap, validate_model

MessageLike = MessageInput | Mapping[str, Any]


def validate_batch(messages: Sequence[MessageLike], settings: Settings) -> list[MessageInput]:
    """1 to MAX_BATCH valid messages whose tool call ids are all distinct."""
    if not 1 <= len(messages) <= MAX_BATCH:
        raise ValidationError.at(["messages"], f"an append carries 1 to {MAX_BATCH} messages")
    batch = []
    for index, message in enumerate(messages):
        if isinstance(message, MessageInput):
            check_content_cap(message, settings.max_content_chars, ("messages", index))
        else:
            message = validate_model(MessageInput, message, settings, loc=("messages", index))
        batch.append(message)
    seen: set[str] = set()
    for index, message in enumerate(batch):
        for call in message.tool_calls or ():
            if call.id in seen:
                raise ValidationError.at(
                    ["messages", index, "tool_calls"],
                    f"tool call id {call.id!r} is used twice in this batch",
                )
            seen.add(call.id)
    return batch


def batch_params(batch: Sequence[MessageInput]) -> dict[str, list[Any]]:
    """One array per column (append_messages in sql/messages.sql); JSON
    columns travel as JSON text."""
    return {
        "roles": [m.role for m in batch],
        "contents": [m.content for m in batch],
        "names": [m.name for m in batch],
        "tool_calls": [
            None if m.tool_calls is None else dumps([c.model_dump() for c in m.tool_calls])
            for m in batch
        ],
        "tool_call_ids": [m.tool_call_id for m in batch],
        "metadatas": [dumps(m.metadata) for m in batch],
    }


def answered_call_ids(batch: Sequence[MessageInput]) -> list[str]:
    return [m.tool_call_id for m in batch if m.tool_call_id is not None]


def refusal(
    diagnosis: Row | None, batch: Sequence[MessageInput], expected_last_seq: int | None
) -> Exception | None:
    """Why append_messages stored nothing, from diagnose_append's row; None
    when nothing explains it (a tool call appended concurrently: retry)."""
    if diagnosis is None:
        return NotFound("conversation")
    tail_seq: int = diagnosis["tail_seq"]
    if expected_last_seq is not None and tail_seq != expected_last_seq:
        return SeqConflict(expected_last_seq, tail_seq)
    known = set(diagnosis["known_call_ids"])
    for index, message in enumerate(batch):
        if message.tool_call_id is not None and message.tool_call_id not in known:
            return ValidationError.at(
                ["messages", index, "tool_call_id"],
                f"tool_call_id {message.tool_call_id!r} does not answer a tool call "
                "of an earlier assistant message in this conversation",
            )
        known.update(call.id for call in message.tool_calls or ())
    return None
