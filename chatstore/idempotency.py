"""Idempotency keys: do the work once, replay its response afterwards.

The key is claimed in the same transaction as the work (sql/idempotency.sql),
so the response is recorded if and only if the work commits, and a
concurrent repeat of the key, on this process or another, waits for the
first to finish and then replays it. A request that fails (a 4xx) leaves no
trace: retrying it does the work afresh.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import TypeAdapter

from chatstore.dberrors import translate_errors
from chatstore.errors import IdempotencyConflict, ValidationError

if TYPE_CHECKING:
    from chatstore.store import ChatStore

TTL_SECONDS = 24 * 60 * 60
MAX_KEY_LENGTH = 255
PURGE_BATCH = 1000

T = TypeVar("T")


def check_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
        raise ValidationError.at(
            ["header", "Idempotency-Key"],
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
        )
    return key


def fingerprint(*parts: Any) -> bytes:
    """SHA-256 of what was asked, in a canonical JSON form."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).digest()


async def run_once(
    store: ChatStore,
    user_id: str,
    key: str,
    request: bytes,
    work: Callable[[], Awaitable[T]],
    adapter: TypeAdapter[T],
    *,
    status: int = 201,
) -> tuple[T, bool]:
    """``work()``'s result and False, or the first result for this key and
    True (a replay). ``request`` is the fingerprint of what is asked."""
    check_key(key)
    # Twice at most: only a key that expires between the claim and the
    # read of the holder's response needs a second claim.
    for _attempt in range(2):
        async with store.transaction() as connection:
            with translate_errors():
                claimed = await store.queries.scalar(
                    connection,
                    "claim_idempotency_key",
                    user_id=user_id,
                    key=key,
                    fingerprint=request,
                    ttl_seconds=TTL_SECONDS,
                )
            if claimed:
                result = await work()
                with translate_errors():
                    await store.queries.exec(
                        connection,
                        "record_idempotency_response",
                        user_id=user_id,
                        key=key,
                        status=status,
                        response=adapter.dump_json(result).decode(),
                    )
                return result, False
            with translate_errors():
                held = await store.queries.one(
                    connection, "get_idempotency_key", user_id=user_id, key=key
                )
        if held is None:
            continue
        if bytes(held["fingerprint"]) != request:
            raise IdempotencyConflict()
        return adapter.validate_json(held["response"]), True
    raise IdempotencyConflict()  # pragma: no cover - needs the key to expire twice


async def purge_expired(store: ChatStore, batch: int = PURGE_BATCH) -> int:
    """Delete up to ``batch`` expired keys; returns how many went."""
    with translate_errors():
        return await store.queries.execrows(
            store.executor, "purge_expired_idempotency_keys", batch=batch
        )
