"""The errors chatstore raises, typed where they arise.

Each carries the machine ``code`` of the HTTP contract; the HTTP layer turns
them into the error body in one place (chatstore/http/errors.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ChatStoreError(Exception):
    code = "error"


class NotFound(ChatStoreError):
    """Unknown id, another user's id or a malformed id: all look the same."""

    code = "not_found"

    def __init__(self, what: str = "resource") -> None:
        super().__init__(f"{what} not found")


class SeqConflict(ChatStoreError):
    code = "seq_conflict"

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(
            f"expected_last_seq is {expected} but the conversation's last seq is {actual}"
        )
        self.expected = expected
        self.actual = actual


class IdempotencyConflict(ChatStoreError):
    code = "idempotency_conflict"

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was already used with a different request")


class IdempotencyInProgress(ChatStoreError):
    """The Idempotency-Key's first request is still being worked on (a chat
    message waiting for its responder) after a repeat waited for it; retry
    later to get its response replayed."""

    code = "idempotency_in_progress"

    def __init__(self) -> None:
        super().__init__(
            "the first request with this Idempotency-Key is still in progress, retry shortly"
        )


class ValidationError(ChatStoreError):
    """Well-formed input that breaks a rule; details locate each problem."""

    code = "validation_error"

    def __init__(self, message: str, details: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(message)
        self.details = list(details)

    @classmethod
    def at(cls, loc: Sequence[str | int], msg: str) -> ValidationError:
        return cls(msg, [{"loc": list(loc), "msg": msg}])


class ResponderError(ChatStoreError):
    """The responder (the model) failed before its reply was complete. The
    user's message is stored; a partial reply, if any, is stored marked
    incomplete (chatstore/chat_turn.py)."""

    code = "responder_error"


class ResponderTimeout(ChatStoreError):
    """The responder's reply was not complete within
    CHATSTORE_RESPONDER_TIMEOUT_SECONDS; stored as for ResponderError."""

    code = "responder_timeout"


class Unavailable(ChatStoreError):
    """The database cannot be reached; the caller may retry later."""

    code = "unavailable"

    def __init__(self, message: str = "the database is unavailable, retry shortly") -> None:
        super().__init__(message)
