"""Conversation ids and seqs as callers pass them, checked before any query."""

from __future__ import annotations

import uuid

from chatstore.errors import NotFound
from chatstore.models import MAX_SEQ

ConversationId = uuid.UUID | str

# Exclusive seq bounds meaning "no bound": seq is a positive bigint.
NO_AFTER = 0
NO_BEFORE = MAX_SEQ


def conversation_uuid(value: ConversationId, what: str = "conversation") -> uuid.UUID:
    """A malformed id names nothing: it is NotFound (of ``what`` was asked
    for), exactly like an unknown one."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise NotFound(what) from None


def seq_param(seq: int) -> int:
    """A seq outside bigint names no message; keep it from overflowing the
    parameter encoder."""
    return seq if 0 <= seq <= NO_BEFORE else 0
