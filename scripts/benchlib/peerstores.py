"""The stores measured side by side on the Python API, each as a user would write it.

Every store gets the same data and the same two operations, in a process and
a database of its own (``peerworker`` runs one; ``peers`` drives them):

- ``append``: one ~90-character user message onto one of the append
  conversations (worker w of c writes to conversations w, w+c, ...);
- ``newest``: the newest 50 messages of a conversation of 100 or of 10k
  messages, as the store's API gives them (langchain-postgres and
  llama-index can only read a whole history, so they read it all and keep
  the last 50: that is what their users do).

Each store uses a pool of 16 connections. The stores:

- ``floor``: hand-written asyncpg on the minimal schema that stores a chat
  (below): one statement per append, ``ORDER BY seq DESC LIMIT n`` per read;
- ``chatstore``: chatstore's Python API (``ChatStore``);
- ``langchain``: langchain-postgres ``PostgresChatMessageHistory`` (psycopg 3,
  a psycopg_pool ``AsyncConnectionPool``);
- ``llamaindex``: llama-index ``PostgresChatStore`` (SQLAlchemy on asyncpg;
  run from ``.venv-llama``, see scripts/benchpeers/llama-index.in);
- ``agents``: the OpenAI Agents SDK's ``SQLAlchemySession`` on asyncpg.

Imports of each library happen inside its class, so a worker process loads
only its own peer (the llama-index venv has none of the others).

Long because: five stores, each a small class written the way its library's docs show;
splitting them apart would only scatter one comparison over five files.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

USER = "bench-user"
NAMESPACE = uuid.UUID("6d1f3b7e-5b1a-4c55-9a43-0c6f2f3c9b11")
POOL = 16
NEWEST = 50


def conversation_id(name: str) -> uuid.UUID:
    """The same conversation name gives the same id in every store."""
    return uuid.uuid5(NAMESPACE, name)


def text_of(worker: int, iteration: int) -> str:
    """A ~90-character message (the issue's size), different every time."""
    return (
        f"Message {iteration:07d} from worker {worker:02d}: "
        "the quick brown fox jumps over the lazy dog again."
    )


def sqlalchemy_url(dsn: str) -> str:
    """``postgresql://...`` as SQLAlchemy's asyncpg dialect wants it."""
    return "postgresql+asyncpg://" + dsn.split("://", 1)[1]


class Store(Protocol):
    def load(self) -> None:
        """Import the library (done first, while the other processes start too)."""

    async def open(self, dsn: str) -> None: ...

    async def seed(self, name: str, count: int) -> None:
        """Create conversation ``name`` holding ``count`` messages (0: empty)."""

    async def append(self, name: str, content: str) -> None: ...

    async def newest(self, name: str) -> int:
        """Read the newest 50 messages of ``name``; return how many were read."""

    async def close(self) -> None: ...


MINIMAL_SCHEMA = """
CREATE TABLE conversations (
    id uuid PRIMARY KEY,
    user_id text NOT NULL,
    title text,
    last_seq bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_user_idx ON conversations (user_id, updated_at DESC);
CREATE TABLE messages (
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    role text NOT NULL,
    content text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, seq)
);
"""

# One statement: the conversation row is the lock that orders seq.
MINIMAL_APPEND = """
WITH c AS (
    UPDATE conversations
    SET last_seq = last_seq + 1, updated_at = now()
    WHERE id = $1 AND user_id = $2
    RETURNING id, last_seq
)
INSERT INTO messages (conversation_id, seq, role, content)
SELECT c.id, c.last_seq, $3, $4 FROM c
RETURNING seq, created_at
"""

# The owner is checked as every store of a multi-user service must.
MINIMAL_NEWEST = """
SELECT m.seq, m.role, m.content, m.created_at
FROM messages AS m
WHERE m.conversation_id = $1
  AND EXISTS (SELECT 1 FROM conversations AS c WHERE c.id = $1 AND c.user_id = $2)
ORDER BY m.seq DESC
LIMIT $3
"""


class Floor:
    """Hand-written asyncpg on the minimal schema."""

    pool: Any

    def load(self) -> None:
        import asyncpg  # noqa: F401

    async def open(self, dsn: str) -> None:
        import asyncpg

        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(MINIMAL_SCHEMA)
        finally:
            await connection.close()
        self.pool = await asyncpg.create_pool(dsn, min_size=POOL, max_size=POOL)

    async def seed(self, name: str, count: int) -> None:
        cid = conversation_id(name)
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "INSERT INTO conversations (id, user_id, last_seq) VALUES ($1, $2, $3)",
                cid,
                USER,
                count,
            )
            await connection.execute(
                "INSERT INTO messages (conversation_id, seq, role, content)"
                " SELECT $1, s, CASE WHEN s % 2 = 1 THEN 'user' ELSE 'assistant' END,"
                " $2 || s FROM generate_series(1, $3::bigint) AS s",
                cid,
                text_of(0, 0)[:80],
                count,
            )

    async def append(self, name: str, content: str) -> None:
        row = await self.pool.fetchrow(MINIMAL_APPEND, conversation_id(name), USER, "user", content)
        if row is None:
            raise RuntimeError("append refused")

    async def newest(self, name: str) -> int:
        return len(await self.pool.fetch(MINIMAL_NEWEST, conversation_id(name), USER, NEWEST))

    async def close(self) -> None:
        await self.pool.close()


class Chatstore:
    """chatstore's Python API, pool of 16."""

    store: Any

    def load(self) -> None:
        import chatstore.store  # noqa: F401

    async def open(self, dsn: str) -> None:
        import asyncpg

        from chatstore import migrations
        from chatstore.config import Settings
        from chatstore.store import ChatStore

        migrations.apply(dsn)
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(
                'INSERT INTO "user" (id, name, email, "emailVerified", "createdAt", "updatedAt")'
                " VALUES ($1, $1, $1 || '@bench.example', true, now(), now())",
                USER,
            )
        finally:
            await connection.close()
        settings = Settings(database_url=dsn, pool_min_size=POOL, pool_max_size=POOL)
        self.store = ChatStore(dsn, settings=settings)
        await self.store.open()
        self.ids: dict[str, uuid.UUID] = {}

    async def seed(self, name: str, count: int) -> None:
        created = await self.store.create_conversation(USER, title=name)
        self.ids[name] = created.id
        for start in range(0, count, 100):
            batch = [
                {"role": "user" if k % 2 == 0 else "assistant", "content": text_of(0, k)}
                for k in range(start, min(count, start + 100))
            ]
            await self.store.append_messages(USER, created.id, batch)

    async def append(self, name: str, content: str) -> None:
        await self.store.append_message(USER, self.ids[name], {"role": "user", "content": content})

    async def newest(self, name: str) -> int:
        page = await self.store.list_messages(USER, self.ids[name], limit=NEWEST, order="desc")
        return len(page.data)

    async def close(self) -> None:
        await self.store.close()


class Langchain:
    """langchain-postgres ``PostgresChatMessageHistory`` over a psycopg_pool pool of 16."""

    TABLE = "chat_history"
    pool: Any

    def load(self) -> None:
        import langchain_postgres  # noqa: F401
        import psycopg_pool  # noqa: F401

    async def open(self, dsn: str) -> None:
        from langchain_postgres import PostgresChatMessageHistory
        from psycopg_pool import AsyncConnectionPool

        self.pool = AsyncConnectionPool(dsn, min_size=POOL, max_size=POOL, open=False)
        await self.pool.open(wait=True)
        async with self.pool.connection() as connection:
            await PostgresChatMessageHistory.acreate_tables(connection, self.TABLE)

    def _history(self, name: str, connection: Any) -> Any:
        from langchain_postgres import PostgresChatMessageHistory

        return PostgresChatMessageHistory(
            self.TABLE, str(conversation_id(name)), async_connection=connection
        )

    async def seed(self, name: str, count: int) -> None:
        from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

        messages: list[BaseMessage] = [
            HumanMessage(content=text_of(0, k)) if k % 2 == 0 else AIMessage(content=text_of(0, k))
            for k in range(count)
        ]
        if messages:
            async with self.pool.connection() as connection:
                await self._history(name, connection).aadd_messages(messages)

    async def append(self, name: str, content: str) -> None:
        from langchain_core.messages import HumanMessage

        async with self.pool.connection() as connection:
            await self._history(name, connection).aadd_messages([HumanMessage(content=content)])

    async def newest(self, name: str) -> int:
        async with self.pool.connection() as connection:
            messages = await self._history(name, connection).aget_messages()
        return len(messages[-NEWEST:])

    async def close(self) -> None:
        await self.pool.close()


class LlamaIndex:
    """llama-index ``PostgresChatStore``: SQLAlchemy on asyncpg, pool of 16 (its
    default engine is 5 + 10 overflow; given the same 16 as the others)."""

    chat: Any
    engines: list[Any]

    def load(self) -> None:
        import llama_index.core.llms
        import llama_index.storage.chat_store.postgres  # noqa: F401

    async def open(self, dsn: str) -> None:
        from llama_index.storage.chat_store.postgres import (
            PostgresChatStore,
        )
        from sqlalchemy import create_engine
        from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
        from sqlalchemy.orm import sessionmaker

        sync_engine = create_engine("postgresql+psycopg://" + dsn.split("://", 1)[1])
        async_engine = create_async_engine(sqlalchemy_url(dsn), pool_size=POOL, max_overflow=0)
        self.engines = [sync_engine, async_engine]
        # What PostgresChatStore._connect itself makes, with a pool of 16 (the stubs type
        # sessionmaker for sync engines only; llama-index passes it an async one).
        async_session: Any = sessionmaker(async_engine, class_=AsyncSession)  # type: ignore[call-overload]
        self.chat = PostgresChatStore(
            session=sessionmaker(sync_engine),
            async_session=async_session,
            table_name="chatstore",
        )

    async def seed(self, name: str, count: int) -> None:
        from llama_index.core.llms import ChatMessage

        if count:
            await self.chat.aset_messages(
                name,
                [
                    ChatMessage(role="user" if k % 2 == 0 else "assistant", content=text_of(0, k))
                    for k in range(count)
                ],
            )

    async def append(self, name: str, content: str) -> None:
        from llama_index.core.llms import ChatMessage

        await self.chat.async_add_message(name, ChatMessage(role="user", content=content))

    async def newest(self, name: str) -> int:
        messages = await self.chat.aget_messages(name)
        return len(messages[-NEWEST:])

    async def close(self) -> None:
        self.engines[0].dispose()
        await self.engines[1].dispose()


class Agents:
    """The OpenAI Agents SDK's ``SQLAlchemySession`` on asyncpg, pool of 16; one
    session object per conversation, kept (as an agent keeps its session)."""

    engine: Any

    def load(self) -> None:
        import agents.extensions.memory.sqlalchemy_session  # noqa: F401

    async def open(self, dsn: str) -> None:
        from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession
        from sqlalchemy.ext.asyncio import create_async_engine

        self.engine = create_async_engine(sqlalchemy_url(dsn), pool_size=POOL, max_overflow=0)
        self.sessions: dict[str, Any] = {}
        # The tables, once (a session made with create_tables=True checks them on its first use).
        await SQLAlchemySession("setup", engine=self.engine, create_tables=True).get_items(limit=1)

    def _session(self, name: str) -> Any:
        from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession

        found = self.sessions.get(name)
        if found is None:
            found = SQLAlchemySession(str(conversation_id(name)), engine=self.engine)
            self.sessions[name] = found
        return found

    async def seed(self, name: str, count: int) -> None:
        items: list[Any] = [
            {"role": "user" if k % 2 == 0 else "assistant", "content": text_of(0, k)}
            for k in range(count)
        ]
        session = self._session(name)
        if items:
            await session.add_items(items)

    async def append(self, name: str, content: str) -> None:
        await self._session(name).add_items([{"role": "user", "content": content}])

    async def newest(self, name: str) -> int:
        return len(await self._session(name).get_items(limit=NEWEST))

    async def close(self) -> None:
        await self.engine.dispose()


# Name -> (class, display name). The order is the report's column order.
STORES: dict[str, tuple[type[Store], str]] = {
    "floor": (Floor, "floor (asyncpg, minimal schema)"),
    "langchain": (Langchain, "langchain-postgres"),
    "llamaindex": (LlamaIndex, "llama-index PG"),
    "agents": (Agents, "Agents SDK SQLAlchemy"),
    "chatstore": (Chatstore, "chatstore"),
}
PEERS = ("langchain", "llamaindex", "agents")
