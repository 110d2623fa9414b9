"""The data set, written with COPY.

Users and sessions go into better-auth's "user" and "session" tables,
conversations straight into ``conversations`` with consistent ``last_seq`` /
``message_count``, and messages through a staging table: COPY into a
temporary table, then one INSERT ... SELECT that computes ``search_vector``
with ``to_tsvector('simple', chatstore_search_text(content))`` exactly as
``append_messages`` does.

The seeding session alone runs with ``synchronous_commit = off`` and, when it
may (superuser), ``session_replication_role = replica``, which skips the
foreign-key checks and the NOTIFY trigger: the rows are consistent by
construction. The GIN search index is dropped before the bulk insert and
re-created from its own definition afterwards (one sorted build instead of a
million incremental inserts). Then VACUUM ANALYZE and a CHECKPOINT, so that
neither hint-bit writes nor a checkpoint land inside a measurement.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import asyncpg

from chatstore.auth import new_id, new_token

from .plan import Plan

Connection: TypeAlias = "asyncpg.Connection[Any]"

SYLLABLE_TEXT = (
    "ka lo mi ne ru sa ti vo ze po qua del rin tor mas pel "
    "bru cha dex fin gol hap jun kel mor nix oth pra sel tum vir wen"
)
SYLLABLES = tuple(SYLLABLE_TEXT.split())
VOCABULARY_SIZE = 4096
MESSAGE_POOL = 20_000
BASE_TIME = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def vocabulary(rng: random.Random) -> list[str]:
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < VOCABULARY_SIZE:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3, 3, 4))))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def message_pool(rng: random.Random, words: Sequence[str]) -> list[str]:
    """Message texts whose words follow a Zipf law (rank r has weight 1/r)."""
    cumulative = list(itertools.accumulate(1 / rank for rank in range(1, len(words) + 1)))
    pool = []
    for _ in range(MESSAGE_POOL):
        chosen = rng.choices(words, cum_weights=cumulative, k=rng.randint(6, 40))
        text = " ".join(chosen)
        pool.append(text[0].upper() + text[1:] + ".")
    return pool


@dataclass
class Fixture:
    """Who owns what: the ids the workloads read and write."""

    append_user: str
    append_conversations: list[uuid.UUID]
    reader_user: str
    conversations: dict[int, uuid.UUID]  # size in messages -> conversation
    list_users: dict[int, str]  # number of conversations -> user
    search_users: list[str]
    search_terms: list[str]
    tokens: dict[str, str]  # user id -> bearer token
    seconds: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def small(self) -> uuid.UUID:
        return self.conversations[min(self.conversations)]

    @property
    def big(self) -> uuid.UUID:
        return self.conversations[max(self.conversations)]

    @property
    def big_list_user(self) -> str:
        return self.list_users[max(self.list_users)]


class _Timer:
    def __init__(self, into: dict[str, float]) -> None:
        self.into = into

    def step(self, name: str, started: float) -> None:
        self.into[name] = round(time.perf_counter() - started, 2)


async def _try(connection: Connection, sql: str) -> bool:
    try:
        await connection.execute(sql)
    except asyncpg.PostgresError:
        return False
    return True


async def _session(dsn: str, log: list[str] | None = None) -> Connection:
    connection = await asyncpg.connect(dsn)
    await connection.execute("SET synchronous_commit = off")
    await connection.execute("SET maintenance_work_mem = '512MB'")
    if await _try(connection, "SET session_replication_role = replica") and log is not None:
        log.append("seed: session_replication_role = replica (no FK checks, no trigger)")
    return connection


async def _load_messages(dsn: str, records: Iterator[tuple[Any, ...]]) -> None:
    connection = await _session(dsn)
    try:
        await connection.execute(
            "CREATE TEMP TABLE seed_messages ("
            " conversation_id uuid, seq bigint, user_id text, role text,"
            " content text, created_at timestamptz)"
        )
        await connection.copy_records_to_table(
            "seed_messages",
            columns=["conversation_id", "seq", "user_id", "role", "content", "created_at"],
            records=records,
        )
        await connection.execute(
            "INSERT INTO messages (conversation_id, seq, user_id, role, content, metadata,"
            " created_at, search_vector)"
            " SELECT conversation_id, seq, user_id, role, content, '{}'::jsonb, created_at,"
            " to_tsvector('simple'::regconfig, chatstore_search_text(content))"
            " FROM seed_messages"
        )
    finally:
        await connection.close()


async def seed(dsn: str, plan: Plan, log: list[str]) -> Fixture:
    rng = random.Random(20261123)
    words = vocabulary(rng)
    pool = message_pool(rng, words)
    # Search terms of middling frequency: ranks 10 to 300 of the Zipf law, so
    # a user's 1,000 messages hold a few to a few hundred matches.
    terms = [words[rank] for rank in range(10, 300, 10)]
    seconds: dict[str, float] = {}
    timer = _Timer(seconds)
    rows: dict[str, int] = {}

    append_user = "bench-append"
    reader_user = "bench-reader"
    list_users = {size: f"bench-list-{size}" for size in plan.list_sizes}
    search_users = [f"bench-search-{i:04d}" for i in range(plan.search_users)]
    users = [append_user, reader_user, *list_users.values(), *search_users]
    tokens = {user: new_token() for user in users}

    connection = await _session(dsn, log)
    try:
        started = time.perf_counter()
        now = dt.datetime.now(dt.UTC)
        await connection.copy_records_to_table(
            "user",
            columns=["id", "name", "email", "emailVerified", "createdAt", "updatedAt"],
            records=[(u, u, f"{u}@bench.example", True, now, now) for u in users],
        )
        await connection.copy_records_to_table(
            "session",
            columns=["id", "token", "userId", "expiresAt", "createdAt", "updatedAt"],
            records=[(new_id(), tokens[u], u, now + dt.timedelta(days=7), now, now) for u in users],
        )
        rows["users"] = len(users)
        timer.step("users and sessions", started)

        # Conversations: (id, user_id, title, last_seq, message_count, created_at, updated_at).
        started = time.perf_counter()
        conversations: list[tuple[uuid.UUID, str, str, int, int, dt.datetime, dt.datetime]] = []

        def conversation(user: str, messages: int, age_seconds: int) -> uuid.UUID:
            cid = uuid.uuid4()
            at = BASE_TIME - dt.timedelta(seconds=age_seconds)
            conversations.append(
                (cid, user, f"Bench {len(conversations)}", messages, messages, at, at)
            )
            return cid

        append_conversations = [
            conversation(append_user, 0, i) for i in range(plan.append_conversations)
        ]
        sizes = sorted({plan.small_conversation, plan.mid_conversation, plan.big_conversation})
        sized = {size: conversation(reader_user, size, i) for i, size in enumerate(sizes)}
        for count, user in list_users.items():
            for i in range(count):
                conversation(user, 0, i)
        per_conversation = plan.search_messages_per_user // plan.search_conversations_per_user
        search_conversations = {
            user: [
                conversation(user, per_conversation, k)
                for k in range(plan.search_conversations_per_user)
            ]
            for user in search_users
        }
        await connection.copy_records_to_table(
            "conversations",
            columns=[
                "id",
                "user_id",
                "title",
                "last_seq",
                "message_count",
                "created_at",
                "updated_at",
            ],
            records=conversations,
        )
        rows["conversations"] = len(conversations)
        timer.step("conversations", started)

        started = time.perf_counter()
        index_definition = await connection.fetchval(
            "SELECT pg_get_indexdef('messages_search_idx'::regclass)"
        )
        await connection.execute("DROP INDEX messages_search_idx")

        def conversation_rows(
            pick: random.Random, cid: uuid.UUID, count: int
        ) -> Iterator[tuple[Any, ...]]:
            for seq in range(1, count + 1):
                yield (
                    cid,
                    seq,
                    reader_user,
                    "user" if seq % 2 else "assistant",
                    pool[pick.randrange(MESSAGE_POOL)],
                    BASE_TIME + dt.timedelta(milliseconds=seq),
                )

        def reader_rows() -> Iterator[tuple[Any, ...]]:
            pick = random.Random(1)
            for size, cid in sized.items():
                yield from conversation_rows(pick, cid, size)

        def search_rows() -> Iterator[tuple[Any, ...]]:
            # Users write at the same time: each user's messages are spread
            # over the whole table, as in a live system, not packed together.
            pick = random.Random(2)
            for step in range(plan.search_messages_per_user):
                k, seq = divmod(step, per_conversation)
                at = BASE_TIME + dt.timedelta(seconds=step)
                for user in search_users:
                    yield (
                        search_conversations[user][k],
                        seq + 1,
                        user,
                        "user" if seq % 2 == 0 else "assistant",
                        pool[pick.randrange(MESSAGE_POOL)],
                        at,
                    )

        # The two halves load on two connections at once: to_tsvector and
        # the index inserts are the server's work, and there are two cores.
        await asyncio.gather(_load_messages(dsn, reader_rows()), _load_messages(dsn, search_rows()))
        rows["reader messages"] = sum(sized)
        rows["search messages"] = plan.search_users * plan.search_messages_per_user
        timer.step("messages (COPY + INSERT ... SELECT, two connections)", started)

        started = time.perf_counter()
        await connection.execute(index_definition)
        timer.step("search index rebuild", started)

        started = time.perf_counter()
        await connection.execute('VACUUM (ANALYZE) messages, conversations, "user", "session"')
        if not await _try(connection, "CHECKPOINT"):
            log.append("seed: CHECKPOINT not allowed (not a superuser)")
        timer.step("vacuum analyze, checkpoint", started)
    finally:
        await connection.close()

    return Fixture(
        append_user=append_user,
        append_conversations=append_conversations,
        reader_user=reader_user,
        conversations=sized,
        list_users=list_users,
        search_users=search_users,
        search_terms=terms,
        tokens=tokens,
        seconds=seconds,
        rows=rows,
    )
