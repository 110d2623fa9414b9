"""The Python API workloads, each through ChatStore and through the floor.

The floor is hand-written asyncpg doing the same SQL work: the very
statements ChatStore runs (``ChatStore.queries[name].sql``, byte for byte),
with the arguments written positionally by hand, on an ``asyncpg`` pool of
the same size, with the same server settings and the same jsonb/json codecs,
and asyncpg's statement cache: every statement is prepared once per
connection and then only bound and executed. It resets a connection on
release exactly when chatstore's pool does (asyncpg's default reset is a
round trip of RESET ALL, CLOSE ALL, UNLISTEN * per operation; chatstore's
pool skips it since ac54d89, and so does the floor). It returns asyncpg's
records. No validation, no models, no error translation, no ``executor``
look-up, no timeouts.
Both run in this process, on this event loop, against the same database,
and the server's ``synchronous_commit`` applies to both.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg

from chatstore.config import Settings
from chatstore.pool import dumps, loads, server_settings
from chatstore.search import search
from chatstore.store import ChatStore

from .seed import Fixture
from .stats import Op

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"

QUERIES = ChatStore.queries
NO_BEFORE = 2**63 - 1

# The statements the floor runs and the parameter order it writes by hand;
# checked once against the query's own parameter list (check_floor_order).
FLOOR_ORDER: dict[str, tuple[str, ...]] = {
    "append_messages": (
        "roles",
        "contents",
        "names",
        "tool_calls",
        "tool_call_ids",
        "metadatas",
        "items",
        "item_keys",
        "parent_seq",
        "conversation_id",
        "user_id",
        "expected_last_seq",
        "search_config",
    ),
    "list_messages_desc": ("conversation_id", "user_id", "after", "before", "limit"),
    "list_conversations_first": ("user_id", "archived", "limit"),
    "search_messages": ("search_config", "q", "user_id", "conversation_id", "archived", "limit"),
}


def check_floor_order() -> None:
    for name, order in FLOOR_ORDER.items():
        if QUERIES[name].params != order:
            raise RuntimeError(
                f"the floor passes {name}'s parameters as {order}, "
                f"but the query takes {QUERIES[name].params}"
            )


async def _codecs(connection: Connection) -> None:
    # The same codecs as chatstore's pool (orjson, json where orjson would
    # change a value): jsonb/json as Python objects.
    for name in ("jsonb", "json"):
        await connection.set_type_codec(name, encoder=dumps, decoder=loads, schema="pg_catalog")


class _NoReset(asyncpg.Connection):
    """Returned to the pool as it is: the floor leaves no session state behind."""

    def get_reset_query(self) -> str:
        return ""


async def chatstore_resets(store: ChatStore) -> bool:
    """Whether chatstore's pool resets a connection on release (a round trip)."""
    async with store.pool.acquire() as connection:
        return bool(connection.get_reset_query())


async def floor_pool(dsn: str, settings: Settings, *, reset: bool = False) -> Pool:
    """The floor's pool, configured as chatstore's: size, statement cache,
    server settings, codecs, and reset on release only if chatstore resets."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min(settings.pool_min_size, settings.pool_max_size),
        max_size=settings.pool_max_size,
        statement_cache_size=settings.statement_cache_size,
        server_settings={**server_settings(settings), "application_name": "chatstore-floor"},
        init=_codecs,
        connection_class=asyncpg.Connection if reset else _NoReset,
    )
    assert pool is not None
    return pool


class Floor:
    """Each operation as the least Python that does the same SQL work."""

    def __init__(self, pool: Pool, search_config: str) -> None:
        self.pool = pool
        self.search_config = search_config
        self.append_sql = QUERIES["append_messages"].sql
        self.page_sql = QUERIES["list_messages_desc"].sql
        self.list_sql = QUERIES["list_conversations_first"].sql
        self.search_sql = QUERIES["search_messages"].sql

    async def append(
        self, user_id: str, conversation_id: uuid.UUID, messages: Sequence[tuple[str, str]]
    ) -> list[asyncpg.Record]:
        n = len(messages)
        rows = await self.pool.fetch(
            self.append_sql,
            [role for role, _ in messages],
            [content for _, content in messages],
            [None] * n,
            [None] * n,
            [None] * n,
            ["{}"] * n,
            [None] * n,  # items: chat-completions messages
            [None] * n,  # item_keys: none without items
            None,  # parent_seq: continue the active branch
            conversation_id,
            user_id,
            None,
            self.search_config,
        )
        if not rows:
            raise RuntimeError("append refused")
        return rows

    async def page(
        self, user_id: str, conversation_id: uuid.UUID, limit: int
    ) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            self.page_sql, conversation_id, user_id, 0, NO_BEFORE, limit + 1
        )

    async def conversations(self, user_id: str, limit: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(self.list_sql, user_id, False, limit + 1)

    async def search(self, user_id: str, q: str, limit: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            self.search_sql, self.search_config, q, user_id, None, "include", limit
        )


@dataclass(frozen=True, slots=True)
class Workload:
    key: str
    title: str
    concurrency: int
    chatstore: Op
    floor: Op
    statement: str  # the query whose server time pg_stat_statements reports
    target: float | None = 0.9  # chatstore / floor throughput, at least


def text_of(worker: int, iteration: int) -> str:
    return f"Benchmark message {iteration} from worker {worker}: the quick brown fox."


def spread(items: Sequence[Any], concurrency: int) -> Callable[[int, int], Any]:
    """Worker w uses items w, w+c, w+2c, ...: no two workers share one."""
    shares = [list(items[w::concurrency]) or list(items) for w in range(concurrency)]

    def pick(worker: int, iteration: int) -> Any:
        share = shares[worker]
        return share[iteration % len(share)]

    return pick


def workloads(
    store: ChatStore, floor: Floor, fixture: Fixture, *, big_label: str, list_label: str
) -> list[Workload]:
    found: list[Workload] = []
    append_user = fixture.append_user

    for concurrency in (1, 16):
        conversation = spread(fixture.append_conversations, concurrency)

        def cs_append(
            w: int, i: int, conversation: Callable[[int, int], Any] = conversation
        ) -> Awaitable[object]:
            return store.append_message(
                append_user, conversation(w, i), {"role": "user", "content": text_of(w, i)}
            )

        def fl_append(
            w: int, i: int, conversation: Callable[[int, int], Any] = conversation
        ) -> Awaitable[object]:
            return floor.append(append_user, conversation(w, i), [("user", text_of(w, i))])

        found.append(
            Workload(
                f"append_c{concurrency}",
                "append 1 message",
                concurrency,
                cs_append,
                fl_append,
                "append_messages",
            )
        )

    for concurrency in (1, 16):
        conversation = spread(fixture.append_conversations, concurrency)

        def batch(w: int, i: int) -> list[tuple[str, str]]:
            return [
                ("user" if k % 2 == 0 else "assistant", text_of(w, i * 10 + k)) for k in range(10)
            ]

        def cs_batch(
            w: int, i: int, conversation: Callable[[int, int], Any] = conversation
        ) -> Awaitable[object]:
            return store.append_messages(
                append_user,
                conversation(w, i),
                [{"role": role, "content": content} for role, content in batch(w, i)],
            )

        def fl_batch(
            w: int, i: int, conversation: Callable[[int, int], Any] = conversation
        ) -> Awaitable[object]:
            return floor.append(append_user, conversation(w, i), batch(w, i))

        found.append(
            Workload(
                f"batch10_c{concurrency}",
                "append a batch of 10",
                concurrency,
                cs_batch,
                fl_batch,
                "append_messages",
            )
        )

    reader = fixture.reader_user
    for label, conversation_id, concurrencies in (
        (f"{len_label(fixture, fixture.small)}", fixture.small, (1,)),
        (big_label, fixture.big, (1, 16)),
    ):
        for concurrency in concurrencies:

            def cs_page(w: int, i: int, cid: uuid.UUID = conversation_id) -> Awaitable[object]:
                return store.list_messages(reader, cid, limit=50, order="desc")

            def fl_page(w: int, i: int, cid: uuid.UUID = conversation_id) -> Awaitable[object]:
                return floor.page(reader, cid, 50)

            found.append(
                Workload(
                    f"page50_{label}_c{concurrency}",
                    f"newest 50 of a {label}-message conversation",
                    concurrency,
                    cs_page,
                    fl_page,
                    "list_messages_desc",
                )
            )

    list_user = fixture.big_list_user
    for concurrency in (1, 16):

        def cs_list(w: int, i: int) -> Awaitable[object]:
            return store.list_conversations(list_user, limit=20)

        def fl_list(w: int, i: int) -> Awaitable[object]:
            return floor.conversations(list_user, 20)

        found.append(
            Workload(
                f"list20_c{concurrency}",
                f"page of 20 conversations (user with {list_label})",
                concurrency,
                cs_list,
                fl_list,
                "list_conversations_first",
            )
        )

    users, terms = fixture.search_users, fixture.search_terms

    def query(w: int, i: int) -> tuple[str, str]:
        n = w * 1_000_003 + i
        return users[(n * 7919) % len(users)], terms[(n * 31) % len(terms)]

    for concurrency in (1, 16):

        def cs_search(w: int, i: int) -> Awaitable[object]:
            user, term = query(w, i)
            return search(store, user, term, limit=20)

        def fl_search(w: int, i: int) -> Awaitable[object]:
            user, term = query(w, i)
            return floor.search(user, term, 20)

        found.append(
            Workload(
                f"search_c{concurrency}",
                f"search, {len(users):,} users' messages",
                concurrency,
                cs_search,
                fl_search,
                "search_messages",
            )
        )
    return found


def len_label(fixture: Fixture, conversation_id: uuid.UUID) -> str:
    size = next(s for s, c in fixture.conversations.items() if c == conversation_id)
    return size_label(size)


def size_label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


async def check_same_work(store: ChatStore, floor: Floor, fixture: Fixture) -> None:
    """Before timing anything: both sides read the same rows."""
    page = await store.list_messages(fixture.reader_user, fixture.big, limit=50, order="desc")
    rows = await floor.page(fixture.reader_user, fixture.big, 50)
    if [m.seq for m in page.data] != [r["seq"] for r in rows][:50] or len(rows) != 51:
        raise RuntimeError("chatstore and the floor read different pages")
    listed = await store.list_conversations(fixture.big_list_user, limit=20)
    conversations = await floor.conversations(fixture.big_list_user, 20)
    if [c.id for c in listed.data] != [r["id"] for r in conversations][:20]:
        raise RuntimeError("chatstore and the floor list different conversations")
    user, term = fixture.search_users[0], fixture.search_terms[0]
    hits = await search(store, user, term, limit=20)
    found = await floor.search(user, term, 20)
    if [(h.conversation_id, h.seq) for h in hits.data] != [
        (r["conversation_id"], r["seq"]) for r in found
    ] or not found:
        raise RuntimeError("chatstore and the floor find different messages")
