"""An Idempotency-Key's claim on a chat turn (chatstore/chat_turn.py).

idempotency.py's pending claim with a lease, and more (sql/chat_turns.sql):
claimed, it says which user message an earlier attempt of the same request
stored; it remembers the turn's user message in the transaction that stores
it; a failed turn lets it go but keeps that message for the retry; and its
lease is renewed for as long as the turn's reply streams, past the request
that began it.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import suppress

import asyncpg

from chatstore import idempotency, messages
from chatstore.database import Database
from chatstore.errors import ChatStoreError
from chatstore.models import Message, MessageInput


class ClaimLost(Exception):
    """The claim's lease ran out and another request took the key over."""


class TurnClaim(idempotency._Claim):
    """An Idempotency-Key's pending claim on a chat turn: it remembers the
    turn's stored user message, and outlives the request that made it while
    the reply streams (its lease renewed until the turn ends)."""

    __slots__ = ("renewer",)

    def __init__(self, db: Database, user_id: str, key: str, request: bytes) -> None:
        super().__init__(db, user_id, key, request)
        self.renewer: asyncio.Task[None] | None = None

    async def claim_turn(self) -> tuple[bool, int | None]:
        """(True, the seq of the user message an earlier attempt stored, if
        any) when this caller now holds the key; (False, None) when not."""
        self.token = uuid.uuid4()
        try:
            row = await self.db.one(
                "claim_chat_idempotency_key",
                user_id=self.user_id,
                key=self.key,
                fingerprint=self.request,
                token=self.token,
                lease_seconds=idempotency.LEASE_SECONDS,
            )
        except asyncpg.ForeignKeyViolationError as error:
            if error.constraint_name == "idempotency_keys_user_fkey":
                raise idempotency._UserGone() from None
            raise
        if row is None:
            return False, None
        return True, row["user_seq"]

    async def user_message(
        self, conversation: uuid.UUID, user_input: MessageInput, user_seq: int | None
    ) -> Message:
        """The turn's user message: read back when an earlier attempt stored
        it (``user_seq``), else stored now, in one transaction with its seq
        on the claim."""
        if user_seq is not None:
            return await messages.get(self.db, self.user_id, conversation, user_seq)
        async with self.db.transaction(writes=(self.user_id, conversation)):
            # The conversation's row lock before the key's, as in every
            # writer (chat_turn.Turn._store says why); a missing one is
            # append's NotFound below.
            await messages.lock(self.db, self.user_id, conversation)
            if not await self.hold():
                raise ClaimLost()
            (message,) = await messages.append(self.db, self.user_id, conversation, [user_input])
            if not await self.remember(conversation, message.seq):
                raise ClaimLost()  # pragma: no cover - hold locked it
            return message

    async def remember(self, conversation: uuid.UUID, seq: int) -> bool:
        done = await self.db.scalar(
            "remember_chat_user_message",
            user_id=self.user_id,
            key=self.key,
            token=self.token,
            conversation_id=conversation,
            seq=seq,
        )
        return bool(done)

    async def let_go(self) -> None:
        """The turn failed: keep the stored user message's seq for a retry
        (or release the claim when none was stored). Best effort: when the
        database cannot be told, the lease runs out and a retry takes over."""
        with suppress(ChatStoreError, OSError, asyncio.TimeoutError):
            kept = await self.db.execrows(
                "let_go_chat_idempotency_key",
                user_id=self.user_id,
                key=self.key,
                token=self.token,
                ttl_seconds=idempotency.TTL_SECONDS,
            )
            if not kept:
                await self.release()

    def start_renewing(self) -> None:
        async def renew_forever() -> None:
            while True:
                await asyncio.sleep(idempotency.RENEW_SECONDS)
                with suppress(ChatStoreError, OSError, asyncio.TimeoutError):
                    await self.renew()

        self.renewer = asyncio.create_task(renew_forever(), name="chatstore-turn-lease")

    async def stop_renewing(self) -> None:
        renewer, self.renewer = self.renewer, None
        if renewer is not None:
            renewer.cancel()
            with suppress(asyncio.CancelledError):
                await renewer
