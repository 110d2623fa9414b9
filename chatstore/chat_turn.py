"""One chat turn: the user's message stored first, the model asked with
nothing held, its reply streamed and stored when it completes.

The contract (README "Chat with a model", docs/http-api.md): the user's
message is committed before the responder is asked, and no pooled
connection or transaction is held while it thinks. A reply that fails keeps
the user's message and, when it has text, the partial reply with
``metadata["incomplete"]`` (``responder_error``, ``timeout``,
``disconnected``; no tool calls), then raises ResponderError (502) or
ResponderTimeout (504), or lets the client's cancellation go on. With an
Idempotency-Key (chatstore/turn_claim.py), a retry of a failed turn asks the
model again for the stored message, and a completed turn is replayed. What
the responder is shown: chatstore/chat.py's responder_history. A reply the
store refuses (a rule only the database checks) is a ResponderError too.

Long because: a turn's endings (stored, failed, cut off, refused by the
store) share its reply and its claim, and must agree on what is kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import AsyncGenerator

from pydantic import TypeAdapter

from chatstore import idempotency, messages
from chatstore.chat import INCOMPLETE, responder_history
from chatstore.config import Settings
from chatstore.database import Database, Source, database_of
from chatstore.errors import (
    ChatStoreError,
    NotFound,
    ResponderError,
    ResponderTimeout,
    ValidationError,
)
from chatstore.ids import ConversationId, conversation_uuid
from chatstore.models import ChatExchange, ChatMessageInput, Message, MessageInput, ToolCall
from chatstore.responder import Responder, stream_reply
from chatstore.turn_claim import ClaimLost, TurnClaim
from chatstore.validation import validate_model

log = logging.getLogger("chatstore.chat")

EXCHANGE = TypeAdapter(ChatExchange)
CREATED = 201
# metadata["incomplete"] of a reply cut short, by cause.
RESPONDER_FAILED = "responder_error"
TIMED_OUT = "timeout"
DISCONNECTED = "disconnected"


@dataclasses.dataclass(slots=True)
class _Reply:
    """The reply as it streams in."""

    parts: list[str] = dataclasses.field(default_factory=list)
    tool_calls: list[ToolCall] | None = None
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)

    def text(self) -> str:
        return "".join(self.parts)


class Turn:
    """A chat turn under way: its user message is stored and committed; the
    reply is asked for by ``deltas()`` (or ``finish()``), holding nothing but
    the key's claim, if any. Call ``close()`` however it ends."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        responder: Responder,
        user_id: str,
        user_message: Message,
        shown: list[Message],
        claim: TurnClaim | None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.timeout = settings.responder_timeout_seconds
        self.responder = responder
        self.user_id = user_id
        self.user_message = user_message
        self.shown = shown
        self._claim = claim
        # Stored or failed: the claim is completed or let go.
        self._settled = False
        self.exchange: ChatExchange | None = None

    async def deltas(self) -> AsyncGenerator[str, None]:
        """The reply's text as it comes. Once it is exhausted, ``exchange``
        holds the stored pair. A failure stores what the module says, then
        raises; closing it early counts as the client gone."""
        reply = _Reply()
        deadline = asyncio.get_running_loop().time() + self.timeout
        asked = MessageInput(role="user", content=self.user_message.content)
        chunks = stream_reply(self.responder, self.shown, asked)
        try:
            try:
                while True:
                    # The deadline bounds the model, not this stream's reader
                    # (the send timeout bounds that).
                    async with asyncio.timeout_at(deadline):
                        try:
                            chunk = await anext(chunks)
                        except StopAsyncIteration:
                            break
                    if chunk.tool_calls is not None:
                        reply.tool_calls = chunk.tool_calls
                    if chunk.metadata is not None:
                        reply.metadata = dict(chunk.metadata)
                    if chunk.text:
                        reply.parts.append(chunk.text)
                        yield chunk.text
            finally:
                await chunks.aclose()
            # A reply that breaks the message rules (a NUL character, over
            # CHATSTORE_MAX_CONTENT_CHARS) is the responder's failure.
            answer = self._answer(reply)
        except (TimeoutError, ResponderTimeout) as error:
            kept = await self._failed(reply, TIMED_OUT)
            raise ResponderTimeout(
                f"the reply was not complete within {self.timeout:g} s; {kept}"
            ) from error
        except Exception as error:
            log.warning("responder failed: %r", error, exc_info=error)
            kept = await self._failed(reply, RESPONDER_FAILED)
            said = f"{error}; " if isinstance(error, ChatStoreError) else ""
            raise ResponderError(f"the responder failed: {said}{kept}") from error
        except BaseException:
            # GeneratorExit (the reader stopped) or a cancellation: the client
            # is gone, or the server is shutting down.
            await asyncio.shield(self._failed(reply, DISCONNECTED))
            raise
        try:
            self.exchange = await self._store(answer)
        except ValidationError as error:
            # A rule only the database checks (a tool call id this
            # conversation already used): still the responder's failure.
            log.warning("reply refused by the store: %r", error)
            kept = await self._failed(reply, RESPONDER_FAILED)
            raise ResponderError(f"the responder failed: {error}; {kept}") from error

    async def finish(self) -> ChatExchange:
        """The whole reply, stored."""
        async for _ in self.deltas():
            pass
        assert self.exchange is not None
        return self.exchange

    async def close(self) -> None:
        """The turn's end, however it went. A turn never asked (its stream
        closed before it began) lets its key go at once, keeping the stored
        user message for a retry, rather than leaving it to its lease."""
        if self._claim is not None:
            await self._claim.stop_renewing()
            if not self._settled:
                self._settled = True
                await asyncio.shield(self._claim.let_go())

    def _answer(self, reply: _Reply) -> MessageInput:
        text = reply.text()
        data = {
            "role": "assistant",
            "content": text if text or reply.tool_calls is None else None,
            "tool_calls": None
            if reply.tool_calls is None
            else [call.model_dump() for call in reply.tool_calls],
            "metadata": reply.metadata,
        }
        return validate_model(MessageInput, data, self.settings, loc=("reply",))

    async def _failed(self, reply: _Reply, why: str) -> str:
        """Store the partial reply, if any, and let the key go; says what
        is stored."""
        self._settled = True
        kept = f"the user's message is stored (seq {self.user_message.seq})"
        try:
            text = reply.text()
            if not text:
                return kept + "; no reply was stored"
            partial = {
                "role": "assistant",
                "content": text,
                "metadata": {**reply.metadata, INCOMPLETE: why},
            }
            await messages.append(
                self.db,
                self.user_id,
                self.user_message.conversation_id,
                [validate_model(MessageInput, partial, self.settings)],
                parent_seq=self.user_message.seq,
            )
            return kept + ", and the partial reply after it, marked incomplete"
        except ChatStoreError as error:
            log.warning("partial reply not stored: %r", error)
            return kept + "; the partial reply could not be stored"
        finally:
            if self._claim is not None:
                await self._claim.stop_renewing()
                await self._claim.let_go()

    async def _store(self, answer: MessageInput) -> ChatExchange:
        conversation = self.user_message.conversation_id
        # The reply answers its question: it is that message's child, even if
        # the user switched branches meanwhile (then the append is refused,
        # as a reply to a message off the active path: a visible failure,
        # never a reply attached to another branch's leaf).
        parent = self.user_message.seq
        claim = self._claim
        self._settled = True
        try:
            if claim is None:
                (stored,) = await messages.append(
                    self.db, self.user_id, conversation, [answer], parent_seq=parent
                )
                return ChatExchange(user_message=self.user_message, reply=stored)
            await claim.stop_renewing()
            async with self.db.transaction(writes=(self.user_id, conversation)):
                # The conversation's row lock first, as every writer takes it
                # (sql/messages.sql), then the key's: a message or
                # conversation delete takes them in that order too.
                if not await messages.lock(self.db, self.user_id, conversation):
                    raise NotFound("conversation")
                if not await claim.hold():
                    # The key went: its user message or conversation was
                    # deleted meanwhile (a lease that ran out while renewing
                    # is the rare other cause).
                    raise NotFound("message")
                (stored,) = await messages.append(
                    self.db, self.user_id, conversation, [answer], parent_seq=parent
                )
                exchange = ChatExchange(user_message=self.user_message, reply=stored)
                await claim.complete(
                    exchange,
                    EXCHANGE,
                    CREATED,
                    lambda done: idempotency.Holds.messages(
                        conversation, [done.user_message.seq, done.reply.seq]
                    ),
                )
                return exchange
        except BaseException as error:
            # A refused reply goes on to _failed, which lets the key go
            # after storing what it can.
            if claim is not None and not isinstance(error, ValidationError):
                await asyncio.shield(claim.let_go())
            raise


@dataclasses.dataclass(frozen=True, slots=True)
class Replayed:
    """A completed key's turn, answered again."""

    exchange: ChatExchange


async def begin(
    source: Source,
    responder: Responder,
    user_id: str,
    conversation_id: ConversationId,
    data: ChatMessageInput,
    *,
    key: str | None = None,
    request: bytes = b"",
    settings: Settings | None = None,
) -> Turn | Replayed:
    """Store the user's message (committed) and return the turn, ready to
    ask the responder; with an Idempotency-Key (``request`` the request's
    fingerprint), a completed turn is replayed instead, and a pending one
    waited for (idempotency.WAIT_SECONDS, then IdempotencyInProgress).
    ``source`` is the store (or its Database); ``settings`` (default: its
    own) give the budgets and the timeout."""
    db = database_of(source)
    settings = settings or db.settings
    conversation = conversation_uuid(conversation_id)
    user_input = MessageInput(role="user", content=data.content)
    if key is None:
        return await _plain_turn(db, settings, responder, user_id, conversation, user_input)
    claim = TurnClaim(db, user_id, key, request)
    wait = idempotency._Wait()
    while True:
        try:
            claimed, user_seq = await claim.claim_turn()
        except idempotency._UserGone:
            # As idempotency.run_once: the user's data went with the user.
            return await _plain_turn(db, settings, responder, user_id, conversation, user_input)
        if not claimed:
            held = await claim.held(EXCHANGE)
            if isinstance(held, tuple):
                return Replayed(held[0])
            if held:
                await wait.next_poll()
            continue
        try:
            user_message = await claim.user_message(conversation, user_input, user_seq)
            shown = await responder_history(db, settings, user_id, user_message)
        except ClaimLost:
            continue
        except BaseException:
            await asyncio.shield(claim.let_go())
            raise
        claim.start_renewing()
        return Turn(db, settings, responder, user_id, user_message, shown, claim)


async def _plain_turn(
    db: Database,
    settings: Settings,
    responder: Responder,
    user_id: str,
    conversation: uuid.UUID,
    user_input: MessageInput,
) -> Turn:
    (user_message,) = await messages.append(db, user_id, conversation, [user_input])
    shown = await responder_history(db, settings, user_id, user_message)
    return Turn(db, settings, responder, user_id, user_message, shown, None)


__all__ = ["Replayed", "Turn", "begin"]
