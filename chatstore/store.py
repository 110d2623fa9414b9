"""ChatStore: every operation of the contract as a plain async call.

The one face of the Python API. It composes the feature modules
(conversations, messages, chat, search, export, events, sessions,
idempotency) over one :class:`~chatstore.database.Database`, which owns the
pools, the task's transaction and the running of named queries. No SQL
here: each method hands its work to the module named after its noun.

Every operation takes the acting user's id first and filters by it in SQL:
another user's conversation raises NotFound, exactly like a missing one.

Long because: it is the whole Python API, one short delegating method per
operation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from types import TracebackType
from typing import Any, Self, TypeVar

from pydantic import TypeAdapter

from chatstore import (
    branches,
    chat,
    chat_turn,
    conversations,
    erasure,
    export,
    idempotency,
    imports,
    items,
    messages,
    replicas,
    retention,
    sessions,
)
from chatstore.auth import DEFAULT_SESSION_TTL, SessionUser
from chatstore.config import Settings
from chatstore.database import Database
from chatstore.events import MessageEvents, SessionGuard, follow
from chatstore.ids import ConversationId, conversation_uuid
from chatstore.messages import MessageLike, Order
from chatstore.models import (
    ChatExchange,
    ChatMessageInput,
    Conversation,
    ConversationInput,
    ConversationPage,
    ConversationPatch,
    Erased,
    Item,
    ItemPage,
    Message,
    MessageInput,
    MessagePage,
    Row,
    SearchResults,
    Sibling,
)
from chatstore.pool import Pool, PoolConnection
from chatstore.queries import Executor, Queries
from chatstore.readiness import unready_reason
from chatstore.replicas import Consistency
from chatstore.responder import Responder
from chatstore.search import Archived
from chatstore.search import search as search_messages
from chatstore.validation import validate_model

__all__ = ["UNSET", "ChatStore", "ConversationId", "Order", "conversation_uuid"]


T = TypeVar("T")


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


class ChatStore:
    """The Python API. Use as ``async with ChatStore(dsn) as store: ...``."""

    queries: Queries = Database.queries

    def __init__(
        self,
        dsn: str | None = None,
        *,
        settings: Settings | None = None,
        pool: Pool | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.db = Database(dsn or self.settings.database_url, settings=self.settings, pool=pool)

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
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    # -- the database layer, for callers that need it -------------------------

    @property
    def dsn(self) -> str:
        return self.db.dsn

    @property
    def pool(self) -> Pool:
        return self.db.pool

    @property
    def executor(self) -> Executor:
        """Where queries run: the open transaction's connection, else the pool."""
        return self.db.executor

    def connection(self) -> AbstractAsyncContextManager[PoolConnection]:
        """A connection of the pool for a block (bounded wait)."""
        return self.db.connection()

    def stream_connection(self) -> AbstractAsyncContextManager[PoolConnection]:
        """A connection of the stream pool, for a streamed response."""
        return self.db.connection(stream=True)

    def stream_lease(self) -> AbstractAsyncContextManager[PoolConnection]:
        """stream_connection(), its failures translated (none in time is
        Unavailable): what an export response holds while it streams; on
        a replica when one may serve it (chatstore/replicas.py)."""
        return self.db.lease(stream=True, read=True)

    def transaction(self) -> AbstractAsyncContextManager[PoolConnection]:
        """Run the store's operations inside one transaction::

            async with store.transaction():
                await store.append_message(...)
                await store.update_conversation(...)

        Operations called inside the block (in this task) share its
        connection; a nested block becomes a savepoint.
        """
        return self.db.transaction()

    # -- read replicas: read-your-writes ---------------------------------------

    @property
    def last_write_lsn(self) -> str | None:
        """The commit LSN of the latest write in the current consistency
        scope (this task, or the ``consistent()`` block), like ``16/B374D848``;
        None before any write, and always without replicas configured.
        Present it later (``consistent(lsn)``, the ``Chatstore-LSN`` header)
        to read that write from any process."""
        return replicas.current().lsn

    def consistent(self, lsn: str | int | None = None) -> AbstractContextManager[Consistency]:
        """A block whose reads show every write up to ``lsn`` (a
        ``last_write_lsn`` from anywhere) and every write made in the
        block: served by a replica that has replayed that far, else by the
        primary. Outside any block, each asyncio task has its own scope, so a
        task's reads always show its own writes."""
        return replicas.consistent(lsn)

    async def unready_reason(self) -> str | None:
        """None when the database answers and every migration is applied."""
        return await unready_reason(self.db)

    # -- conversations -------------------------------------------------------

    async def create_conversation(
        self,
        user_id: str,
        *,
        title: str | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Conversation:
        return await conversations.create(
            self.db, user_id, title=title, metadata=metadata, idempotency_key=idempotency_key
        )

    async def get_conversation(self, user_id: str, conversation_id: ConversationId) -> Conversation:
        return await self.db.read(lambda: conversations.get(self.db, user_id, conversation_id))

    async def list_conversations(
        self,
        user_id: str,
        *,
        limit: int = 20,
        cursor: str | None = None,
        archived: bool = False,
    ) -> ConversationPage:
        """The conversations not archived, newest activity first; with
        ``archived=True`` the archived ones only."""
        return await self.db.read(
            lambda: conversations.page(
                self.db, user_id, limit=limit, cursor=cursor, archived=archived
            )
        )

    async def list_conversations_json(
        self,
        user_id: str,
        *,
        limit: int = 20,
        cursor: str | None = None,
        archived: bool = False,
    ) -> bytes:
        """list_conversations(), as its page's JSON (what the HTTP API
        sends), written from the rows without building the models."""
        return await conversations.page_json(
            self.db, user_id, limit=limit, cursor=cursor, archived=archived
        )

    async def update_conversation(
        self,
        user_id: str,
        conversation_id: ConversationId,
        *,
        title: str | None = UNSET,
        metadata: Mapping[str, str] = UNSET,
        archived: bool = UNSET,
    ) -> Conversation:
        """Change only what is passed; ``title=None`` clears the title,
        ``archived=True`` archives, ``archived=False`` unarchives."""
        given: dict[str, Any] = {}
        if title is not UNSET:
            given["title"] = title
        if metadata is not UNSET:
            given["metadata"] = dict(metadata)
        if archived is not UNSET:
            given["archived"] = archived
        patch = validate_model(ConversationPatch, given, self.settings)
        return await self.patch_conversation(user_id, conversation_id, patch)

    async def patch_conversation(
        self, user_id: str, conversation_id: ConversationId, patch: ConversationPatch
    ) -> Conversation:
        """Apply a validated PATCH body: only its fields_set change."""
        return await conversations.patch(self.db, user_id, conversation_id, patch)

    async def delete_conversation(self, user_id: str, conversation_id: ConversationId) -> None:
        await conversations.delete(self.db, user_id, conversation_id)

    # -- the lifecycle: import, erasure, retention ----------------------------

    async def import_conversation(
        self,
        user_id: str,
        messages_: Sequence[MessageLike],
        *,
        title: str | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Conversation:
        """A new conversation holding ``messages_`` (seqs from 1), atomically
        (chatstore/imports.py)."""
        return await imports.import_conversation(
            self.db,
            user_id,
            messages_,
            title=title,
            metadata=metadata,
            idempotency_key=idempotency_key,
        )

    async def store_import(
        self, user_id: str, data: ConversationInput, checked: Sequence[MessageInput]
    ) -> Conversation:
        """Write an import already validated (imports.validate_import)."""
        return await imports.store_import(self.db, user_id, data, checked)

    async def erase_user_data(self, user_id: str) -> Erased:
        """Everything the user stored, deleted; the user and sessions stay."""
        return await erasure.erase_user_data(self.db, user_id)

    async def purge_idle(self, days: int, batch: int = retention.BATCH) -> retention.Purged:
        """Delete the conversations idle for ``days`` (chatstore/retention.py)."""
        return await retention.purge(self.db, days, batch)

    async def idle_conversations(self, days: int) -> retention.Purged:
        """What purge_idle would delete, deleting nothing."""
        return await retention.would_purge(self.db, days)

    async def retain_forever(self, days: int) -> None:
        """The retention loop a server runs in the background."""
        await retention.run_retention(self.db, days)

    # -- messages ------------------------------------------------------------

    async def append_message(
        self,
        user_id: str,
        conversation_id: ConversationId,
        message: MessageLike,
        *,
        parent_seq: int | None = None,
        idempotency_key: str | None = None,
    ) -> Message:
        (stored,) = await self.append_messages(
            user_id,
            conversation_id,
            [message],
            parent_seq=parent_seq,
            idempotency_key=idempotency_key,
        )
        return stored

    async def append_messages(
        self,
        user_id: str,
        conversation_id: ConversationId,
        messages_: Sequence[MessageLike],
        *,
        expected_last_seq: int | None = None,
        parent_seq: int | None = None,
        idempotency_key: str | None = None,
    ) -> list[Message]:
        """Append atomically: consecutive seqs in the given order, or nothing.
        ``parent_seq``: the first message's parent (a message on the active
        path, 0 for a new first message; None: the active leaf)."""
        return await messages.append(
            self.db,
            user_id,
            conversation_id,
            messages_,
            expected_last_seq=expected_last_seq,
            parent_seq=parent_seq,
            idempotency_key=idempotency_key,
        )

    def validate_messages(self, messages_: Sequence[MessageLike]) -> list[MessageInput]:
        return messages.validate_batch(messages_, self.settings)

    async def get_message(self, user_id: str, conversation_id: ConversationId, seq: int) -> Message:
        return await self.db.read(lambda: messages.get(self.db, user_id, conversation_id, seq))

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
        return await self.db.read(
            lambda: messages.page(
                self.db,
                user_id,
                conversation_id,
                limit=limit,
                order=order,
                after=after,
                before=before,
            )
        )

    async def list_messages_json(
        self,
        user_id: str,
        conversation_id: ConversationId,
        *,
        limit: int = 100,
        order: Order = "asc",
        after: int | None = None,
        before: int | None = None,
    ) -> bytes:
        """list_messages(), as its page's JSON (what the HTTP API sends),
        written from the rows without building the models."""
        return await messages.page_json(
            self.db, user_id, conversation_id, limit=limit, order=order, after=after, before=before
        )

    async def delete_message(self, user_id: str, conversation_id: ConversationId, seq: int) -> None:
        await messages.delete(self.db, user_id, conversation_id, seq)

    async def truncate_messages(
        self, user_id: str, conversation_id: ConversationId, from_seq: int
    ) -> int:
        """Delete the active path from its first message with ``seq >=
        from_seq``, and everything below it; return how many went."""
        return await messages.truncate(self.db, user_id, conversation_id, from_seq)

    async def list_siblings(
        self, user_id: str, conversation_id: ConversationId, seq: int
    ) -> list[Sibling]:
        """Message ``seq`` and its alternatives (same parent), oldest first."""
        return await self.db.read(lambda: branches.siblings(self.db, user_id, conversation_id, seq))

    async def switch_branch(self, user_id: str, conversation_id: ConversationId, seq: int) -> int:
        """Show message ``seq``'s branch; return the new active leaf (its
        newest descendant, or itself)."""
        return await branches.switch(self.db, user_id, conversation_id, seq)

    # -- Responses items (chatstore/items.py) ----------------------------------

    async def add_items(
        self,
        user_id: str,
        conversation_id: ConversationId,
        items_: Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> list[Item]:
        """Append Responses items atomically at the active leaf, stored
        verbatim; those with a chat-completions form are messages too."""
        return await items.add(
            self.db, user_id, conversation_id, items_, idempotency_key=idempotency_key
        )

    async def list_items(
        self,
        user_id: str,
        conversation_id: ConversationId,
        *,
        limit: int | None = None,
        order: items.Order = "asc",
        after: str | None = None,
    ) -> ItemPage:
        """The active path as items; ``after``: an item id (exclusive)."""
        return await items.page(
            self.db, user_id, conversation_id, limit=limit, order=order, after=after
        )

    async def get_item(self, user_id: str, conversation_id: ConversationId, item_id: str) -> Item:
        return await items.get(self.db, user_id, conversation_id, item_id)

    async def delete_item(
        self, user_id: str, conversation_id: ConversationId, item_id: str
    ) -> None:
        await items.delete(self.db, user_id, conversation_id, item_id)

    async def pop_item(self, user_id: str, conversation_id: ConversationId) -> Item | None:
        """Remove and return the newest item (each once); None when empty."""
        return await items.pop(self.db, user_id, conversation_id)

    async def clear_items(self, user_id: str, conversation_id: ConversationId) -> None:
        """Delete every item and message; the conversation stays."""
        await items.clear(self.db, user_id, conversation_id)

    # -- chat ----------------------------------------------------------------

    async def history(
        self,
        user_id: str,
        conversation_id: ConversationId,
        *,
        limit: int = 50,
        before: int | None = None,
    ) -> chat.History:
        """The latest messages before ``before``, oldest first (chat.history)."""
        return await self.db.read(
            lambda: chat.history(self.db, user_id, conversation_id, limit=limit, before=before)
        )

    async def exchange(
        self,
        responder: Responder,
        user_id: str,
        conversation_id: ConversationId,
        content: str | ChatMessageInput,
    ) -> ChatExchange:
        """Store the user's message (committed), then ask the responder,
        holding nothing, and store its reply (chatstore/chat_turn.py; a
        failure raises ResponderError or ResponderTimeout after keeping the
        user's message and any partial reply)."""
        given = {"content": content} if isinstance(content, str) else content
        data = validate_model(ChatMessageInput, given, self.settings)
        turn = await chat_turn.begin(self.db, responder, user_id, conversation_id, data)
        assert isinstance(turn, chat_turn.Turn)  # no key: never a replay
        try:
            return await turn.finish()
        finally:
            await turn.close()

    # -- search and export ---------------------------------------------------

    async def search(
        self,
        user_id: str,
        q: str,
        *,
        limit: int = 20,
        conversation_id: ConversationId | None = None,
        archived: Archived = "include",
    ) -> SearchResults:
        """Best matches first, in web-search syntax (chatstore/search.py);
        ``archived``: include, exclude or only archived conversations."""
        return await self.db.read(
            lambda: search_messages(
                self.db, user_id, q, limit=limit, conversation_id=conversation_id, archived=archived
            )
        )

    def export_pages(
        self,
        user_id: str,
        conversation_id: ConversationId,
        *,
        connection: PoolConnection | None = None,
        idle_seconds: float | None = None,
    ) -> AsyncGenerator[Sequence[Row], None]:
        """The conversation's rows from one snapshot, a page at a time."""
        return export.pages(
            self.db, user_id, conversation_id, connection=connection, idle_seconds=idle_seconds
        )

    def export_messages(
        self, user_id: str, conversation_id: ConversationId
    ) -> AsyncIterator[Message]:
        """Every message of the conversation in seq order, from one snapshot."""
        return export.iter_messages(self.db, user_id, conversation_id)

    def export_jsonl(
        self,
        user_id: str,
        conversation_id: ConversationId,
        *,
        connection: PoolConnection | None = None,
        idle_seconds: float | None = None,
    ) -> AsyncIterator[bytes]:
        """One Message per line, in seq order; one chunk per page."""
        return export.jsonl(
            self.db, user_id, conversation_id, connection=connection, idle_seconds=idle_seconds
        )

    def export_openai(
        self,
        user_id: str,
        conversation_id: ConversationId,
        *,
        connection: PoolConnection | None = None,
        idle_seconds: float | None = None,
    ) -> AsyncIterator[bytes]:
        """``{"messages": [...]}`` ready for a chat-completions request."""
        return export.openai(
            self.db, user_id, conversation_id, connection=connection, idle_seconds=idle_seconds
        )

    # -- live updates --------------------------------------------------------

    def message_events(self) -> MessageEvents:
        """A LISTEN hub for this store's database (one per process)."""
        return MessageEvents(self.db)

    def follow(
        self,
        hub: MessageEvents,
        user_id: str,
        conversation_id: ConversationId,
        *,
        after: int | None = None,
        idle_seconds: float = 15.0,
        guard: SessionGuard | None = None,
    ) -> AsyncIterator[Message | None]:
        """Messages of the conversation as they are appended (events.follow)."""
        return follow(
            self.db,
            hub,
            user_id,
            conversation_id,
            after=after,
            idle_seconds=idle_seconds,
            guard=guard,
        )

    # -- sessions and idempotency keys ----------------------------------------

    async def session_user(self, token: str) -> SessionUser | None:
        """The user behind a live better-auth session token."""
        return await sessions.session_user(self.db, token)

    async def create_session(
        self, email: str, *, name: str | None = None, ttl: dt.timedelta = DEFAULT_SESSION_TTL
    ) -> tuple[str, str]:
        """Find or create the user with ``email`` and open a session."""
        return await sessions.create_session(self.db, email, name=name, ttl=ttl)

    async def purge_expired_idempotency_keys(self, batch: int = idempotency.PURGE_BATCH) -> int:
        """Delete up to ``batch`` expired idempotency keys; returns how many went."""
        return await idempotency.purge_expired(self.db, batch)

    async def purge_idempotency_keys_forever(self) -> None:
        """The purge loop a server runs in the background (idempotency.purge_forever)."""
        await idempotency.purge_forever(self.db)

    async def run_once(
        self,
        user_id: str,
        key: str,
        request: bytes,
        work: Callable[[], Awaitable[T]],
        adapter: TypeAdapter[T],
        *,
        status: int = 201,
        holds_of: idempotency.HoldsOf[T],
        conversation_id: ConversationId | None = None,
    ) -> tuple[T, bool]:
        """``work()`` at most once per idempotency key (idempotency.run_once);
        ``conversation_id``: the existing conversation the work writes to."""
        return await idempotency.run_once(
            self.db,
            user_id,
            key,
            request,
            work,
            adapter,
            status=status,
            holds_of=holds_of,
            conversation_id=None if conversation_id is None else conversation_uuid(conversation_id),
        )
