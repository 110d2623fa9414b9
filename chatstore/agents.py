"""A chatstore conversation as the OpenAI Agents SDK's Session.

``ChatStoreSession`` implements the SDK's ``Session`` protocol over one
conversation's Responses items (chatstore/items.py), so that
``Runner.run(agent, input, session=session)`` keeps an agent's history in
chatstore: ``await ChatStoreSession.create(store, user_id, title=None)``
starts a conversation, ``ChatStoreSession(conversation_id, store=store,
user_id=user_id)`` opens an existing one. ``session_id`` is the
conversation id. It needs the ``agents`` extra (``pip install
'chatstore[agents]'``); nothing else in chatstore imports it.

Items are stored verbatim and come back JSON-equal, in the order added;
those with a chat-completions form (messages, function calls and their
outputs) are also the conversation's messages, so the chat page, search and
the exports see an agent's conversation too. Every call checks ownership
(another user's conversation raises NotFound). ``add_items`` is one
transaction, however many items; writers through separate session objects
queue on the conversation's row lock and lose nothing; ``pop_item`` returns
each item once; ``clear_session`` deletes the items and keeps the
conversation.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, cast

try:
    from agents.items import TResponseInputItem
    from agents.memory import SessionSettings
    from agents.memory.session_settings import coerce_session_settings, resolve_session_limit
except ImportError as error:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "chatstore.agents needs the OpenAI Agents SDK: pip install 'chatstore[agents]'"
    ) from error

from chatstore.ids import ConversationId, conversation_uuid
from chatstore.models import MAX_BATCH
from chatstore.store import ChatStore

__all__ = ["ChatStoreSession"]


class ChatStoreSession:
    """The Agents SDK's Session over one chatstore conversation."""

    session_id: str
    session_settings: SessionSettings | None

    def __init__(
        self,
        conversation_id: ConversationId,
        *,
        store: ChatStore,
        user_id: str,
        session_settings: SessionSettings | Mapping[str, Any] | None = None,
    ) -> None:
        # A malformed id names no conversation: NotFound, as an unknown one.
        self.conversation_id: uuid.UUID = conversation_uuid(conversation_id)
        self.session_id = str(self.conversation_id)
        self.store = store
        self.user_id = user_id
        # A mapping ({"limit": 10}) is coerced, as the SDK's own sessions do.
        if session_settings is None or isinstance(session_settings, SessionSettings):
            self.session_settings = session_settings
        else:
            self.session_settings = coerce_session_settings(dict(session_settings))

    @classmethod
    async def create(
        cls,
        store: ChatStore,
        user_id: str,
        title: str | None = None,
        *,
        session_settings: SessionSettings | Mapping[str, Any] | None = None,
    ) -> ChatStoreSession:
        """A session over a new conversation of ``user_id``."""
        conversation = await store.create_conversation(user_id, title=title)
        return cls(conversation.id, store=store, user_id=user_id, session_settings=session_settings)

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """Every item, oldest first; with ``limit`` (or the settings' limit
        when it is None) the newest ``limit``, oldest first."""
        wanted = resolve_session_limit(limit, self.session_settings)
        if wanted is None:
            page = await self.store.list_items(self.user_id, self.conversation_id)
            return [_input_item(i.item) for i in page.items]
        if wanted <= 0:
            return []
        page = await self.store.list_items(
            self.user_id, self.conversation_id, limit=wanted, order="desc"
        )
        return [_input_item(i.item) for i in reversed(page.items)]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` in one transaction (all or nothing)."""
        if not items:
            return
        given = [cast(Mapping[str, Any], item) for item in items]
        async with self.store.transaction():
            for start in range(0, len(given), MAX_BATCH):
                await self.store.add_items(
                    self.user_id, self.conversation_id, given[start : start + MAX_BATCH]
                )

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the newest item; None when there is none."""
        popped = await self.store.pop_item(self.user_id, self.conversation_id)
        return None if popped is None else _input_item(popped.item)

    async def clear_session(self) -> None:
        """Delete every item; the conversation stays."""
        await self.store.clear_items(self.user_id, self.conversation_id)


def _input_item(item: dict[str, Any]) -> TResponseInputItem:
    # Stored as it was added: a dict of the SDK's TypedDict union.
    return cast(TResponseInputItem, item)
