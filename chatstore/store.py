"""ChatStore: every operation of the contract as a plain async call.

Every operation takes the acting user's id first and filters by it in SQL:
another user's conversation raises NotFound, exactly like a missing one.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Literal, Self

from pydantic import TypeAdapter

from chatstore import cursor as cursor_module
from chatstore import idempotency
from chatstore.batch import MessageLike, answered_call_ids, batch_params, refusal, validate_batch
from chatstore.config import Settings
from chatstore.dberrors import translate_errors
from chatstore.errors import NotFound, SeqConflict, ValidationError
from chatstore.models import (
    MAX_SEQ,
    Conversation,
    ConversationInput,
    ConversationPage,
    ConversationPatch,
    Message,
    MessageInput,
    MessagePage,
)
from chatstore.pool import Pool, PoolConnection, PoolExecutor, create_pool
from chatstore.queries import Executor, Queries
from chatstore.resources import sql_dir
from chatstore.validation import check_limit, validate_model

# The connection of the transaction open in this task, if any (transaction()).
_transaction_connection: ContextVar[PoolConnection | None] = ContextVar(
    "chatstore_transaction", default=None
)

_CONVERSATION = TypeAdapter(Conversation)
_MESSAGES = TypeAdapter(list[Message])

# Exclusive seq bounds meaning "no bound": seq is a positive bigint.
_NO_AFTER = 0
_NO_BEFORE = MAX_SEQ

Order = Literal["asc", "desc"]
ConversationId = uuid.UUID | str


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def conversation_uuid(value: ConversationId, what: str = "conversation") -> uuid.UUID:
    """A malformed id names nothing: it is NotFound (of ``what`` was asked
    for), exactly like an unknown one."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise NotFound(what) from None


class ChatStore:
    """The Python API. Use as ``async with ChatStore(dsn) as store: ...``."""

    queries = Queries.load(sql_dir())

    def __init__(
        self,
        dsn: str | None = None,
        *,
        settings: Settings | None = None,
        pool: Pool | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self._dsn = dsn or self.settings.database_url
        self._pool = pool
        self._owns_pool = pool is None
        self._pool_executor: PoolExecutor | None = None
        # Streamed responses' own pool (see stream_connection).
        self._stream_pool: Pool | None = None
        self._stream_executor: PoolExecutor | None = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        if self._pool is None:
            assert self._dsn is not None, "ChatStore needs a dsn, a pool or a database URL"
            with translate_errors():
                self._pool = await create_pool(self._dsn, self.settings)
        self._pool_executor = PoolExecutor(self.pool, self.settings.acquire_timeout_seconds)
        self._stream_executor = self._pool_executor
        if self._dsn is not None:
            if self._stream_pool is None:
                with translate_errors():
                    # Empty until a stream needs it: an idle process holds
                    # no connection more than before.
                    self._stream_pool = await create_pool(
                        self._dsn,
                        self.settings,
                        min_size=0,
                        max_size=self.settings.stream_pool_size,
                    )
            self._stream_executor = PoolExecutor(
                self._stream_pool, self.settings.acquire_timeout_seconds, name="streams"
            )

    async def close(self) -> None:
        if self._stream_pool is not None:
            await self._stream_pool.close()
            self._stream_pool = None
        if self._pool is not None and self._owns_pool:
            await self._pool.close()
            self._pool = None

    @property
    def dsn(self) -> str:
        assert self._dsn is not None, "ChatStore was given a pool, not a dsn"
        return self._dsn

    @property
    def pool(self) -> Pool:
        assert self._pool is not None, "ChatStore is not open"
        return self._pool

    @property
    def executor(self) -> Executor:
        """Where queries run: the open transaction's connection, else the pool."""
        connection = _transaction_connection.get()
        if connection is not None:
            return connection
        assert self._pool_executor is not None, "ChatStore is not open"
        return self._pool_executor

    def connection(self) -> AbstractAsyncContextManager[PoolConnection]:
        """A connection of the pool for a block (bounded wait; heals the pool
        when the connection turns out dead)."""
        assert self._pool_executor is not None, "ChatStore is not open"
        return self._pool_executor.connection()

    def stream_connection(self) -> AbstractAsyncContextManager[PoolConnection]:
        """A connection for a streamed response (an export), from the stream
        pool: however many streams are open, stalled or not, they never take
        the connections ordinary requests need. Bounded wait, like
        connection(). A store given a pool and no dsn has no stream pool:
        its streams share the given pool."""
        assert self._stream_executor is not None, "ChatStore is not open"
        return self._stream_executor.connection()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        """Run the store's operations inside one transaction::

            async with store.transaction():
                await store.append_message(...)
                await store.update_conversation(...)

        Operations called inside the block (in this task) share its
        connection; a nested block becomes a savepoint.
        """
        current = _transaction_connection.get()
        if current is not None:
            async with current.transaction():
                yield current
            return
        assert self._pool_executor is not None, "ChatStore is not open"
        with translate_errors():
            async with self._pool_executor.transaction() as connection:
                token = _transaction_connection.set(connection)
                try:
                    yield connection
                finally:
                    _transaction_connection.reset(token)

    # -- conversations -------------------------------------------------------

    async def create_conversation(
        self,
        user_id: str,
        *,
        title: str | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Conversation:
        data = validate_model(
            ConversationInput, {"title": title, "metadata": dict(metadata or {})}, self.settings
        )

        async def create() -> Conversation:
            with translate_errors():
                row = await self.queries.one(
                    self.executor,
                    "create_conversation",
                    user_id=user_id,
                    title=data.title,
                    metadata=data.metadata,
                )
            assert row is not None
            return Conversation.from_row(row)

        if idempotency_key is None:
            return await create()
        request = idempotency.fingerprint("create_conversation", data.model_dump())
        created, _ = await idempotency.run_once(
            self,
            user_id,
            idempotency_key,
            request,
            create,
            _CONVERSATION,
            holds_of=lambda created: idempotency.Holds(created.id),
        )
        return created

    async def get_conversation(self, user_id: str, conversation_id: ConversationId) -> Conversation:
        with translate_errors():
            row = await self.queries.one(
                self.executor,
                "get_conversation",
                user_id=user_id,
                id=conversation_uuid(conversation_id),
            )
        if row is None:
            raise NotFound("conversation")
        return Conversation.from_row(row)

    async def list_conversations(
        self, user_id: str, *, limit: int = 20, cursor: str | None = None
    ) -> ConversationPage:
        check_limit(limit, 100)
        with translate_errors():
            if cursor is None:
                rows = await self.queries.many(
                    self.executor, "list_conversations_first", user_id=user_id, limit=limit + 1
                )
            else:
                updated_at, id = cursor_module.decode(cursor)
                rows = await self.queries.many(
                    self.executor,
                    "list_conversations_after",
                    user_id=user_id,
                    cursor_updated_at=updated_at,
                    cursor_id=id,
                    limit=limit + 1,
                )
        page = [Conversation.from_row(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = page[-1]
            next_cursor = cursor_module.encode(last.updated_at, last.id)
        return ConversationPage(data=page, next_cursor=next_cursor)

    async def update_conversation(
        self,
        user_id: str,
        conversation_id: ConversationId,
        *,
        title: str | None = UNSET,
        metadata: Mapping[str, str] = UNSET,
    ) -> Conversation:
        """Change only what is passed; ``title=None`` clears the title."""
        given: dict[str, Any] = {}
        if title is not UNSET:
            given["title"] = title
        if metadata is not UNSET:
            given["metadata"] = dict(metadata)
        patch = validate_model(ConversationPatch, given, self.settings)
        return await self.patch_conversation(user_id, conversation_id, patch)

    async def patch_conversation(
        self, user_id: str, conversation_id: ConversationId, patch: ConversationPatch
    ) -> Conversation:
        """Apply a validated PATCH body: only its fields_set change."""
        fields = patch.model_fields_set
        with translate_errors():
            row = await self.queries.one(
                self.executor,
                "update_conversation",
                user_id=user_id,
                id=conversation_uuid(conversation_id),
                set_title="title" in fields,
                title=patch.title,
                set_metadata="metadata" in fields,
                metadata=patch.metadata,
            )
        if row is None:
            raise NotFound("conversation")
        return Conversation.from_row(row)

    async def delete_conversation(self, user_id: str, conversation_id: ConversationId) -> None:
        with translate_errors():
            deleted = await self.queries.execrows(
                self.executor,
                "delete_conversation",
                user_id=user_id,
                id=conversation_uuid(conversation_id),
            )
        if deleted == 0:
            raise NotFound("conversation")

    # -- messages ------------------------------------------------------------

    async def append_message(
        self,
        user_id: str,
        conversation_id: ConversationId,
        message: MessageLike,
        *,
        idempotency_key: str | None = None,
    ) -> Message:
        (stored,) = await self.append_messages(
            user_id, conversation_id, [message], idempotency_key=idempotency_key
        )
        return stored

    async def append_messages(
        self,
        user_id: str,
        conversation_id: ConversationId,
        messages: Sequence[MessageLike],
        *,
        expected_last_seq: int | None = None,
        idempotency_key: str | None = None,
    ) -> list[Message]:
        """Append atomically: consecutive seqs in the given order, or nothing."""
        conversation = conversation_uuid(conversation_id)
        batch = self.validate_messages(messages)
        if expected_last_seq is not None and expected_last_seq < 0:
            raise ValidationError.at(["expected_last_seq"], "must be 0 or more")

        async def append() -> list[Message]:
            return await self._append(user_id, conversation, batch, expected_last_seq)

        if idempotency_key is None:
            return await append()
        request = idempotency.fingerprint(
            "append_messages",
            str(conversation),
            [m.model_dump(exclude_unset=True) for m in batch],
            expected_last_seq,
        )
        stored, _ = await idempotency.run_once(
            self,
            user_id,
            idempotency_key,
            request,
            append,
            _MESSAGES,
            holds_of=lambda stored: idempotency.Holds.messages(
                conversation, [m.seq for m in stored]
            ),
        )
        return stored

    async def _append(
        self,
        user_id: str,
        conversation: uuid.UUID,
        batch: list[MessageInput],
        expected_last_seq: int | None,
    ) -> list[Message]:
        params = batch_params(batch)
        with translate_errors():
            # A second attempt only when nothing explains the first refusal:
            # a tool call it needed was appended concurrently in between.
            for _attempt in range(2):
                rows = await self.queries.many(
                    self.executor,
                    "append_messages",
                    user_id=user_id,
                    conversation_id=conversation,
                    expected_last_seq=expected_last_seq,
                    search_config=self.settings.search_config,
                    **params,
                )
                if rows:
                    return [Message.from_row(row) for row in rows]
                diagnosis = await self.queries.one(
                    self.executor,
                    "diagnose_append",
                    user_id=user_id,
                    conversation_id=conversation,
                    tool_call_ids=answered_call_ids(batch),
                )
                refused = refusal(diagnosis, batch, expected_last_seq)
                if refused is not None:
                    raise refused
        raise SeqConflict(expected_last_seq or 0, -1)  # pragma: no cover - needs a third race

    def validate_messages(self, messages: Sequence[MessageLike]) -> list[MessageInput]:
        return validate_batch(messages, self.settings)

    async def get_message(self, user_id: str, conversation_id: ConversationId, seq: int) -> Message:
        with translate_errors():
            row = await self.queries.one(
                self.executor,
                "get_message",
                user_id=user_id,
                conversation_id=conversation_uuid(conversation_id, "message"),
                seq=_seq(seq),
            )
        if row is None:
            raise NotFound("message")
        return Message.from_row(row)

    async def list_messages(
        self,
        user_id: str,
        conversation_id: ConversationId,
        *,
        limit: int = 100,
        order: Order = "asc",
        after: int | None = None,
        before: int | None = None,
    ) -> MessagePage:
        check_limit(limit, 1000)
        if order not in ("asc", "desc"):
            raise ValidationError.at(["query", "order"], "order must be 'asc' or 'desc'")
        for name, bound in (("after", after), ("before", before)):
            if bound is not None and not 0 <= bound <= _NO_BEFORE:
                raise ValidationError.at(["query", name], f"{name} must be a seq (0 or more)")
        with translate_errors():
            rows = await self.queries.many(
                self.executor,
                f"list_messages_{order}",
                user_id=user_id,
                conversation_id=conversation_uuid(conversation_id),
                after=_NO_AFTER if after is None else after,
                before=_NO_BEFORE if before is None else before,
                limit=limit + 1,
            )
        if not rows:
            raise NotFound("conversation")
        found = [Message.from_row(row) for row in rows if row["seq"] is not None]
        page = found[:limit]
        return MessagePage(
            data=page,
            has_more=len(found) > limit,
            first_seq=page[0].seq if page else None,
            last_seq=page[-1].seq if page else None,
        )

    async def delete_message(self, user_id: str, conversation_id: ConversationId, seq: int) -> None:
        conversation = conversation_uuid(conversation_id, "message")
        async with self.transaction() as connection:
            with translate_errors():
                if not await self._lock(connection, user_id, conversation):
                    raise NotFound("message")
                deleted = await self.queries.execrows(
                    connection,
                    "delete_message",
                    user_id=user_id,
                    conversation_id=conversation,
                    seq=_seq(seq),
                )
                if deleted:
                    await self._forget_responses(connection, user_id, conversation, seq, seq)
        if deleted == 0:
            raise NotFound("message")

    async def truncate_messages(
        self, user_id: str, conversation_id: ConversationId, from_seq: int
    ) -> int:
        """Delete every message with ``seq >= from_seq``; return how many went."""
        if from_seq < 1:
            raise ValidationError.at(["query", "from_seq"], "from_seq must be 1 or more")
        conversation = conversation_uuid(conversation_id)
        async with self.transaction() as connection:
            with translate_errors():
                if not await self._lock(connection, user_id, conversation):
                    raise NotFound("conversation")
                deleted: int = await self.queries.scalar(
                    connection,
                    "truncate_messages",
                    user_id=user_id,
                    conversation_id=conversation,
                    from_seq=min(from_seq, _NO_BEFORE),
                )
                if deleted:
                    await self._forget_responses(
                        connection, user_id, conversation, from_seq, _NO_BEFORE
                    )
        return deleted

    async def _forget_responses(
        self,
        connection: Executor,
        user_id: str,
        conversation: uuid.UUID,
        first_seq: int,
        last_seq: int,
    ) -> None:
        """In a message delete's transaction: the idempotency keys whose
        stored responses hold any of the deleted messages go too, so no copy
        of them is left to replay. (A conversation's delete takes its keys
        by ON DELETE CASCADE, a user's delete takes the user's.)"""
        await self.queries.exec(
            connection,
            "delete_idempotency_keys_holding_messages",
            user_id=user_id,
            conversation_id=conversation,
            first_seq=first_seq,
            last_seq=last_seq,
        )

    async def _lock(self, connection: Executor, user_id: str, conversation: uuid.UUID) -> bool:
        """Take the conversation's row lock, as every writer does first."""
        found = await self.queries.scalar(
            connection, "lock_conversation", user_id=user_id, conversation_id=conversation
        )
        return found is not None


def _seq(seq: int) -> int:
    # A seq outside bigint names no message; keep it from overflowing the
    # parameter encoder.
    return seq if 0 <= seq <= _NO_BEFORE else 0
