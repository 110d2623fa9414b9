"""Idempotency keys: do the work once, replay its response afterwards.

A key is claimed, the work is done, and the claim is completed with the
response to replay (sql/idempotency.sql). Two ways to run the work:

* ``run_once``: short work (a create, an append) runs inside the claim's
  transaction, so the response is recorded if and only if the work commits;
  a concurrent repeat waits on the claimed row for the moment the first
  takes, then replays it.
* A chat turn (chatstore/chat_turn.py, chatstore/turn_claim.py) waits on
  something slow, the model, and must hold no pooled connection and no open
  transaction meanwhile. Its claim commits alone as *pending*, with a lease
  of ``LEASE_SECONDS`` that its holder renews while it is alive; one short
  transaction stores the user's message and remembers its seq on the claim;
  the model runs with nothing held; then one transaction re-takes the claim,
  stores the reply and completes the key. A failure lets the key go but
  keeps the stored message for the retry (sql/chat_turns.sql).

A repeat that finds the key pending polls for it (no connection held
between polls, backoff up to ``POLL_MAX_SECONDS``) for up to
``WAIT_SECONDS``, then replays the finished response or raises
IdempotencyInProgress (HTTP 409 ``idempotency_in_progress``). A claim whose
holder died (its process killed) is free again once its lease runs out.
Short work that fails leaves no trace: its claim goes with its
transaction, and a retry does the work afresh. A chat turn that fails
keeps its stored user message, and the key remembers it: a retry asks the
model again for that message rather than storing it twice.

Long because: the two ways to run work once share the claim, its lease and
the bounded wait; apart, each would re-explain them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

import asyncpg
from pydantic import TypeAdapter

from chatstore import metrics
from chatstore.database import Database, Source, database_of
from chatstore.errors import (
    ChatStoreError,
    IdempotencyConflict,
    IdempotencyInProgress,
    Unavailable,
    ValidationError,
)

TTL_SECONDS = 24 * 60 * 60
MAX_KEY_LENGTH = 255
PURGE_BATCH = 1000

# A pending claim's lease: how long after its holder was last heard of (a
# claim or a renewal) a claim is taken to be dead and may be taken over.
LEASE_SECONDS = 30.0
# The holder renews its lease this often while its slow part runs.
RENEW_SECONDS = LEASE_SECONDS / 3
# How long a repeat waits for a pending claim before answering
# IdempotencyInProgress, and how it polls meanwhile.
WAIT_SECONDS = 20.0
POLL_FIRST_SECONDS = 0.05
POLL_MAX_SECONDS = 1.0

T = TypeVar("T")
P = TypeVar("P")


@dataclasses.dataclass(frozen=True, slots=True)
class Holds:
    """What a stored response holds copies of: its conversation (title,
    metadata) and the seqs of the messages in it, if any. Deleting the
    conversation, or one of those messages, deletes the response."""

    conversation_id: uuid.UUID | None
    first_seq: int | None = None
    last_seq: int | None = None

    @classmethod
    def messages(cls, conversation_id: uuid.UUID, seqs: Sequence[int]) -> Holds:
        return cls(conversation_id, min(seqs), max(seqs))


_NOTHING = Holds(None)

# What a result holds (recorded with its key).
HoldsOf = Callable[[T], Holds | None]


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


class _Claim:
    """One user's key for one request, and the claim this caller holds on it."""

    __slots__ = ("db", "key", "request", "token", "user_id")

    def __init__(self, db: Database, user_id: str, key: str, request: bytes) -> None:
        self.db = db
        self.user_id = user_id
        self.key = check_key(key)
        self.request = request
        self.token = uuid.uuid4()

    async def claim(self) -> bool:
        """True when this caller now holds the key and must do the work."""
        self.token = uuid.uuid4()
        try:
            claimed = await self.db.scalar(
                "claim_idempotency_key",
                user_id=self.user_id,
                key=self.key,
                fingerprint=self.request,
                token=self.token,
                lease_seconds=LEASE_SECONDS,
            )
        except asyncpg.ForeignKeyViolationError as error:
            if error.constraint_name == "idempotency_keys_user_fkey":
                raise _UserGone() from None
            raise
        return bool(claimed)

    async def held(self, adapter: TypeAdapter[T]) -> tuple[T] | bool:
        """Someone else's claim: ``(response,)`` when it is complete (a
        replay), True while it is pending, False when it is gone (expired or
        released: claim again). Another request's key is a conflict."""
        row = await self.db.one("get_idempotency_key", user_id=self.user_id, key=self.key)
        if row is None:
            return False
        if bytes(row["fingerprint"]) != self.request:
            raise IdempotencyConflict()
        if row["status"] is None:
            return True
        metrics.IDEMPOTENT_REPLAYS.inc()
        return (adapter.validate_json(row["response"]),)

    async def complete(
        self,
        result: T,
        adapter: TypeAdapter[T],
        status: int,
        holds_of: HoldsOf[T],
    ) -> bool:
        holds = holds_of(result) or _NOTHING
        done = await self.db.scalar(
            "record_idempotency_response",
            user_id=self.user_id,
            key=self.key,
            token=self.token,
            status=status,
            response=adapter.dump_json(result).decode(),
            conversation_id=holds.conversation_id,
            first_seq=holds.first_seq,
            last_seq=holds.last_seq,
            ttl_seconds=TTL_SECONDS,
        )
        return bool(done)

    async def hold(self) -> bool:
        held = await self.db.scalar(
            "hold_idempotency_claim", user_id=self.user_id, key=self.key, token=self.token
        )
        return bool(held)

    async def renew(self) -> None:
        await self.db.execrows(
            "renew_idempotency_claim",
            user_id=self.user_id,
            key=self.key,
            token=self.token,
            lease_seconds=LEASE_SECONDS,
        )

    async def release(self) -> None:
        """Best effort: if the database cannot be told, the lease runs out."""
        with suppress(ChatStoreError, OSError, asyncio.TimeoutError):
            await self.db.exec(
                "release_idempotency_claim", user_id=self.user_id, key=self.key, token=self.token
            )


class _Wait:
    """A repeat's bounded wait for a pending claim: polls with backoff."""

    __slots__ = ("deadline", "pause")

    def __init__(self) -> None:
        self.deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        self.pause = POLL_FIRST_SECONDS

    async def next_poll(self) -> None:
        remaining = self.deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise IdempotencyInProgress()
        await asyncio.sleep(min(self.pause, remaining))
        self.pause = min(self.pause * 2, POLL_MAX_SECONDS)


class _UserGone(Exception):
    """The user was deleted (a session may outlive it for the auth cache's
    few seconds): there is no one to keep a key for."""


def _holds_nothing(_result: object) -> None:
    return None


async def run_once(
    db: Database,
    user_id: str,
    key: str,
    request: bytes,
    work: Callable[[], Awaitable[T]],
    adapter: TypeAdapter[T],
    *,
    status: int = 201,
    holds_of: HoldsOf[T] = _holds_nothing,
    conversation_id: uuid.UUID | None = None,
) -> tuple[T, bool]:
    """``work()``'s result and False, or the first result for this key and
    True (a replay). ``request`` is the fingerprint of what is asked. The
    work runs inside the claim's transaction: keep it short. Work that
    writes to an existing conversation names it (``conversation_id``): its
    row lock is taken before the key's."""
    claim = _Claim(db, user_id, key, request)
    wait = _Wait()
    # Its place in the conversation's line (chatstore/writers.py).
    writes = None if conversation_id is None else (user_id, conversation_id)
    while True:
        try:
            async with db.transaction(writes=writes):
                if conversation_id is not None:
                    # Every writer takes the conversation's row first
                    # (sql/messages.sql). A claim that takes over an expired
                    # key locks a row that may hold this conversation's
                    # messages, which a message or conversation delete
                    # locks after the conversation: the other order would
                    # deadlock with it. Not the caller's: the work says so.
                    await db.scalar(
                        "lock_conversation", user_id=user_id, conversation_id=conversation_id
                    )
                if await claim.claim():
                    result = await work()
                    await claim.complete(result, adapter, status, holds_of)
                    return result, False
                held = await claim.held(adapter)
        except _UserGone:
            # Answer as the request without a key does (the user's data went
            # with the user): nothing is kept, nothing is replayed.
            return await work(), False
        # The transaction is over: a wait for a pending claim holds nothing.
        if isinstance(held, tuple):
            return held[0], True
        if held:
            await wait.next_poll()


async def purge_expired(source: Source, batch: int = PURGE_BATCH) -> int:
    """Delete up to ``batch`` expired keys; returns how many went."""
    return await database_of(source).execrows("purge_expired_idempotency_keys", batch=batch)


PURGE_EVERY_SECONDS = 60.0

# The purge runs in the HTTP server's lifespan: its warning is the server's.
log = logging.getLogger("chatstore.http")


async def purge_forever(db: Database) -> None:
    """Expired idempotency keys, a bounded batch at a time, off the request
    path. Every process runs one; SKIP LOCKED keeps them out of each
    other's way."""
    while True:
        await asyncio.sleep(PURGE_EVERY_SECONDS)
        try:
            purged = PURGE_BATCH
            while purged == PURGE_BATCH:
                purged = await purge_expired(db)
        except Unavailable:
            log.warning("idempotency key purge skipped: database unavailable")
        except Exception:
            # Anything else is a bug, but the loop is the process's only
            # purger: say so loudly and try again next time.
            log.exception("idempotency key purge failed")
