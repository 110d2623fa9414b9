"""The database layer: the pools, the current task's transaction, and named
queries run with chatstore's error translation (encode/databases' shape).

Every feature module (conversations, messages, idempotency, search, export,
chat, sessions, events) takes a :class:`Database` and runs its queries by
name::

    row = await db.one("get_conversation", user_id=user_id, id=conversation)
    async with db.transaction():      # nested: a savepoint
        await db.exec("...", ...)     # runs on the transaction's connection

A query runs on the connection of the transaction open in this task, if
any, else on a connection of the main pool (chatstore/pool.py bounds every
wait). ``db.on(connection)`` runs them on a given connection instead (an
export's snapshot, on a connection of the stream pool).

With read replicas configured (chatstore/replicas.py), ``db.read(work)``
runs ``work`` with its queries on a replica when one may serve it (else,
and again after the replica fails, on the primary), and every write records
its commit LSN in the current consistency scope.

Database failures become chatstore's errors here and nowhere else
(chatstore/dberrors.py holds the mapping): every query, connection and
transaction of this module is translated, so no feature module handles
asyncpg's connection errors itself.

Long because: where a query runs (the task's transaction, a replica, the
primary) and what a write records are decided in one place, here.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from typing import Any, Literal, Protocol, TypeVar

import asyncpg

from chatstore import replicas as replication
from chatstore.announcer import Announcer
from chatstore.appends import Appends
from chatstore.config import Settings
from chatstore.dberrors import translate_errors
from chatstore.errors import ChatStoreError, Unavailable
from chatstore.pool import Pool, PoolConnection, PoolExecutor, create_pool
from chatstore.queries import Executor, Queries, QueryKind
from chatstore.replicas import Replica, Replicas
from chatstore.resources import sql_dir
from chatstore.writers import Writers

T = TypeVar("T")

Isolation = Literal["read_committed", "repeatable_read", "serializable"]
AfterCommit = Callable[[], Awaitable[None]]

log = logging.getLogger("chatstore.database")

# The connection of the transaction open in this task, if any (transaction()).
_transaction_connection: ContextVar[PoolConnection | None] = ContextVar(
    "chatstore_transaction", default=None
)
# The replica that db.read() chose for the work running in this task, if any.
_read_replica: ContextVar[Replica | None] = ContextVar("chatstore_read_replica", default=None)

# What only a primary can run: a write, a row lock, a sequence step, a
# notification. Such a query never runs on a replica (a safety net under
# db.read()), and outside a transaction it records its commit LSN.
_PRIMARY_ONLY = re.compile(
    r"\b(insert|update|delete|merge|nextval|setval|pg_notify|pg_advisory\w*"
    r"|for\s+(no\s+key\s+)?update|for\s+(key\s+)?share)\b",
    re.IGNORECASE,
)


def _primary_only(sql: str) -> bool:
    return _PRIMARY_ONLY.search(re.sub(r"--[^\n]*", "", sql)) is not None


# What to do once that transaction has committed (after_commit()), by key.
_after_commit: ContextVar[dict[Hashable, AfterCommit] | None] = ContextVar(
    "chatstore_after_commit", default=None
)


class Runner:
    """Named queries on one executor (a connection or the pool), translated."""

    __slots__ = ("_executor", "_queries")

    def __init__(self, queries: Queries, executor: Executor) -> None:
        self._queries = queries
        self._executor = executor

    async def one(self, name: str, /, **params: object) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._run("one", name, params)
        return row

    async def many(self, name: str, /, **params: object) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._run("many", name, params)
        return rows

    async def scalar(self, name: str, /, **params: object) -> Any:
        return await self._run("scalar", name, params)

    async def exec(self, name: str, /, **params: object) -> None:
        await self._run("exec", name, params)

    async def execrows(self, name: str, /, **params: object) -> int:
        count: int = await self._run("execrows", name, params)
        return count

    async def _run(self, kind: QueryKind, name: str, params: dict[str, object]) -> Any:
        # The one place where queries execute: their failures become
        # chatstore's errors here (chatstore/dberrors.py).
        run = getattr(self._queries, kind)
        with translate_errors():
            return await run(self._executor, name, **params)


class ConnectionRunner(Runner):
    """Named queries on one connection, and transactions of that connection."""

    __slots__ = ("connection",)

    def __init__(self, queries: Queries, connection: PoolConnection) -> None:
        super().__init__(queries, connection)
        self.connection = connection

    @asynccontextmanager
    async def transaction(
        self, *, isolation: Isolation | None = None, readonly: bool = False
    ) -> AsyncIterator[None]:
        """A transaction of this connection (not the task's: queries run
        through the Database do not join it)."""
        with translate_errors():
            async with self.connection.transaction(isolation=isolation, readonly=readonly):
                yield


class Database:
    """The main pool, the stream pool, the task's transaction, named queries.

    ``Database(dsn, settings=...)`` opens its own pools; ``pool=`` lends it
    one (then it has no stream pool unless it has a dsn too).
    """

    queries = Queries.load(sql_dir())

    def __init__(self, dsn: str | None, *, settings: Settings, pool: Pool | None = None) -> None:
        self.settings = settings
        self._dsn = dsn
        self._pool = pool
        self._owns_pool = pool is None
        self._pool_executor: PoolExecutor | None = None
        # Streamed responses' own pool (see connection(stream=True)).
        self._stream_pool: Pool | None = None
        self._stream_executor: PoolExecutor | None = None
        self.replicas: Replicas | None = (
            Replicas(settings.replica_urls, settings, self.queries)
            if settings.replica_urls
            else None
        )
        self._writes = {name: _primary_only(q.sql) for name, q in self.queries.items()}
        # Live-update announcements, sent after their commits in batches
        # (chatstore/announcer.py; messages.announce adds to it).
        self.announcer = Announcer(self._announce)
        # Plain appends, gathered into one statement while this process's
        # append statements are all busy (chatstore/appends.py).
        self.appends = Appends(
            self._primary_many,
            statements=settings.append_statements,
            search_config=settings.search_config,
        )
        # Each conversation's writers of this process, in line for their
        # turn without a connection (chatstore/writers.py).
        self.writers = Writers()

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
        if self.replicas is not None and not self.replicas.replicas:
            await self.replicas.open(self._pool_executor)

    async def close(self) -> None:
        # Gathered appends under way, and announcements still to go out,
        # get their chance on the open pool.
        await self.appends.close()
        await self.announcer.close()
        if self.replicas is not None:
            await self.replicas.close()
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
        replica = _read_replica.get()
        if replica is not None and replica.executor is not None:
            return replica.executor
        assert self._pool_executor is not None, "ChatStore is not open"
        return self._pool_executor

    def connection(self, *, stream: bool = False) -> AbstractAsyncContextManager[PoolConnection]:
        """A connection for a block (bounded wait; heals the pool when the
        connection turns out dead), its errors as asyncpg raises them (see
        lease() for the translated one). ``stream``: from the stream pool,
        for a streamed response (an export): however many streams are open,
        stalled or not, they never take the connections ordinary requests
        need. A Database lent a pool and no dsn has no stream pool: its
        streams share the pool."""
        executor = self._stream_executor if stream else self._pool_executor
        assert executor is not None, "ChatStore is not open"
        return executor.connection()

    @asynccontextmanager
    async def lease(
        self, *, stream: bool = False, read: bool = False
    ) -> AsyncIterator[PoolConnection]:
        """connection(), with its failures translated (no connection in time
        is Unavailable). ``read``: for a read (an export), on a replica when
        one may serve it; a replica that gives no connection falls back to
        the primary (a failure once the block runs cannot: it is the
        caller's, a stream already under way)."""
        replica = await self._choose() if read else None
        executor = (
            None if replica is None else (replica.stream_executor if stream else replica.executor)
        )
        if replica is not None and executor is not None:
            held = AsyncExitStack()
            try:
                with translate_errors():
                    connection = await held.enter_async_context(executor.connection())
            except Unavailable as error:
                self._replica_failed(replica, error)
            else:
                Replicas.served("replica")
                with translate_errors():  # as on the primary, below
                    async with held:
                        yield connection
                return
        with translate_errors():
            async with self.connection(stream=stream) as connection:
                yield connection

    async def _choose(self) -> Replica | None:
        """The replica for a read starting now, or None (the primary)."""
        if (
            self.replicas is None
            or _transaction_connection.get() is not None
            or _read_replica.get() is not None
        ):
            return None
        scope = replication.current()
        replica = await self.replicas.choose(scope.floor)
        if replica is not None:
            # Monotonic reads: what this scope read next shows at least this.
            scope.floor = max(scope.floor, replica.replay_lsn)
        return replica

    def _replica_failed(self, replica: Replica, error: Unavailable) -> None:
        assert self.replicas is not None
        self.replicas.failed(replica, error)
        self.replicas.served("primary")

    async def read(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work()`` (queries through this Database, nothing else) with its
        queries on a replica when one may serve it: caught up, and past
        this scope's floor (its writes, the LSN a client presented).
        Without replicas, in a transaction, or when the replica fails, on
        the primary: a read may run twice, never fail for a replica."""
        replica = await self._choose()
        if replica is None:
            return await work()
        token = _read_replica.set(replica)
        try:
            result = await work()
        except Unavailable as error:
            self._replica_failed(replica, error)
        else:
            Replicas.served("replica")
            return result
        finally:
            _read_replica.reset(token)
        return await work()

    @property
    def in_transaction(self) -> bool:
        """Whether this task has a transaction open (transaction())."""
        return _transaction_connection.get() is not None

    async def wrote(self) -> None:
        """Record the LSN of a write that just committed (replicas only):
        for a write run outside this task's queries (a gathered append,
        chatstore/appends.py); one() and the rest record theirs."""
        if self.replicas is None:
            return
        scope = replication.current()
        assert self._pool_executor is not None
        try:
            text = await self.queries.scalar(self._pool_executor, "wal_insert_lsn")
        except replication.PROBE_ERRORS:
            # The write is committed: failing its request now would invite a
            # retry that writes twice. Its reads go to the primary instead.
            scope.write_unknown()
            return
        scope.wrote(replication.parse_lsn(text))

    def on(self, connection: PoolConnection) -> ConnectionRunner:
        """Named queries (and transactions) on ``connection``."""
        return ConnectionRunner(self.queries, connection)

    @asynccontextmanager
    async def transaction(
        self, *, writes: tuple[str, uuid.UUID] | None = None
    ) -> AsyncIterator[PoolConnection]:
        """The task's transaction: queries run through this Database inside
        the block (in this task) share its connection; a nested block
        becomes a savepoint.

        ``writes``: (user_id, conversation) for a transaction that begins
        by taking that conversation's row lock: it waits for its turn among
        this process's writers of the conversation before it takes a
        connection (chatstore/writers.py)."""
        current = _transaction_connection.get()
        if current is not None:
            async with current.transaction():
                yield current
            return
        assert self._pool_executor is not None, "ChatStore is not open"
        actions: dict[Hashable, AfterCommit] = {}
        with translate_errors():
            async with self._begin(writes) as connection:
                token = _transaction_connection.set(connection)
                actions_token = _after_commit.set(actions)
                try:
                    yield connection
                finally:
                    _after_commit.reset(actions_token)
                    _transaction_connection.reset(token)
        await self.wrote()  # committed
        # Committed (an exception skips this: a rolled-back transaction has
        # nothing to announce).
        for action in actions.values():
            await _run_after_commit(action)

    @asynccontextmanager
    async def _begin(self, writes: tuple[str, uuid.UUID] | None) -> AsyncIterator[PoolConnection]:
        assert self._pool_executor is not None, "ChatStore is not open"
        if writes is None:
            async with self._pool_executor.transaction() as connection:
                yield connection
            return
        # A writer waits in all (in line, for the pool, for the row) no
        # longer than it could without the line: the acquire timeout and
        # the statement timeout (none without one).
        user_id, conversation = writes
        acquire = self.settings.acquire_timeout_seconds
        statement = self.settings.statement_timeout_ms / 1000
        patience = acquire + statement if statement else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (patience or 0.0)
        async with self.writers.turn(user_id, conversation, patience) as waited:
            # One that waited in line gets only what is left of its patience.
            limited = waited and patience is not None
            if limited:
                acquire = min(acquire, max(deadline - loop.time(), 0.0))
            async with self._pool_executor.transaction(acquire) as connection:
                if limited:
                    left_ms = max(int((deadline - loop.time()) * 1000), 1)
                    await self.on(connection).scalar("limit_lock_wait", lock_timeout=f"{left_ms}ms")
                yield connection

    async def after_commit(self, key: Hashable, action: AfterCommit) -> None:
        """Run ``action`` once what this task has written is committed: at
        once outside a transaction (a statement commits by itself), else
        after the task's transaction commits, outside it, and never if it
        rolls back. A later action with the same ``key`` in the same
        transaction replaces the earlier one (the newest seq of a
        conversation is the only one worth announcing).

        For what may be late or lost without harm (live-update
        announcements: followers read the table and re-read it on their own
        tick): a failure is logged, never raised, since what it follows has
        committed and a caller told "failed" would retry it. An action
        registered inside a savepoint that rolls back still runs; it must be
        harmless then too."""
        pending = _after_commit.get()
        if pending is not None:
            pending.pop(key, None)  # re-inserted last: actions run in order
            pending[key] = action
        else:
            await _run_after_commit(action)

    async def _primary_many(self, name: str, params: dict[str, Any]) -> list[asyncpg.Record]:
        # On the primary's pool directly: never a transaction, and the
        # commit LSN recorded by each caller (wrote()), not here.
        assert self._pool_executor is not None, "ChatStore is not open"
        return await Runner(self.queries, self._pool_executor).many(name, **params)

    async def _announce(self, conversation_ids: list[uuid.UUID], seqs: list[int]) -> None:
        # On the primary's pool directly: never a replica (NOTIFY is the
        # primary's), never a transaction, and no commit LSN to record.
        await self._primary_many(
            "announce_messages", {"conversation_ids": conversation_ids, "seqs": seqs}
        )

    def _runner(self, name: str) -> Runner:
        if self._writes.get(name) and _transaction_connection.get() is None:
            assert self._pool_executor is not None, "ChatStore is not open"
            return Runner(self.queries, self._pool_executor)
        return Runner(self.queries, self.executor)

    async def _after(self, name: str) -> None:
        """A write outside a transaction has committed: record its LSN."""
        if self._writes.get(name) and _transaction_connection.get() is None:
            await self.wrote()

    async def one(self, name: str, /, **params: object) -> asyncpg.Record | None:
        row = await self._runner(name).one(name, **params)
        await self._after(name)
        return row

    async def many(self, name: str, /, **params: object) -> list[asyncpg.Record]:
        rows = await self._runner(name).many(name, **params)
        await self._after(name)
        return rows

    async def scalar(self, name: str, /, **params: object) -> Any:
        value = await self._runner(name).scalar(name, **params)
        await self._after(name)
        return value

    async def exec(self, name: str, /, **params: object) -> None:
        await self._runner(name).exec(name, **params)
        await self._after(name)

    async def execrows(self, name: str, /, **params: object) -> int:
        count = await self._runner(name).execrows(name, **params)
        await self._after(name)
        return count


async def _run_after_commit(action: AfterCommit) -> None:
    try:
        await action()
    except ChatStoreError as failure:
        log.warning("an after-commit action failed: %s", failure)


class HasDatabase(Protocol):
    """Whatever carries a Database (a ChatStore): feature functions accept
    one where they accept a Database, so ``search(store, ...)`` works."""

    @property
    def db(self) -> Database: ...


Source = Database | HasDatabase


def database_of(source: Source) -> Database:
    return source if isinstance(source, Database) else source.db


__all__ = [
    "ConnectionRunner",
    "Database",
    "HasDatabase",
    "Isolation",
    "Runner",
    "Source",
    "database_of",
]
