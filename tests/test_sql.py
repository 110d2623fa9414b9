"""The hand-written SQL against the real schema: every query prepares, and the hot ones use
their indexes on a seeded database.

Part 1 prepares every named query of ``ChatStore.queries`` against the migrated
schema and checks the rules of the SQL files that can be read off the text.

Part 2 seeds a database of its own (200 users, 2,000 conversations, one user
with 1,000 of them, one conversation of 100,000 messages, ~220,000 messages in
all) and reads the plans of the hot queries, twice:

* custom plans: ``EXPLAIN`` over the extended protocol with the values bound,
  which is what asyncpg's first executions of a prepared statement get;
* generic plans: what a prepared statement switches to after five executions
  when PostgreSQL judges it no dearer. ``conn.prepare("EXPLAIN ...")`` cannot
  show one: EXPLAIN is a utility statement, so the parameters of a
  protocol-level prepared EXPLAIN are bound as constants into the inner query
  whatever ``plan_cache_mode`` says (PostgreSQL 15). So the query is
  ``PREPARE``d in SQL and ``EXPLAIN EXECUTE``d under
  ``plan_cache_mode = force_generic_plan``, its arguments as literals.

Each plan must use the intended index and read no table sequentially; and
(EXPLAIN ANALYZE, in a transaction rolled back) a page of N rows must touch
about N rows of ``messages``, not the whole conversation.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeAlias

import asyncpg
import pytest
from asyncpg.pool import PoolConnectionProxy
from support.databases import create_database, drop_database

from chatstore import migrations
from chatstore.config import Settings
from chatstore.messages import batch_params
from chatstore.models import MessageInput
from chatstore.queries import Query
from chatstore.store import ChatStore

QUERIES = ChatStore.queries

# --- part 1: every query against the schema ---------------------------------------------


# Queries that read a cursor another query declares: described only where
# the cursor exists, in the declaring transaction.
CURSOR_DECLARED_BY: dict[str, str] = {}


@pytest.mark.parametrize("name", list(QUERIES))
async def test_query_prepares_against_migrated_schema(store: ChatStore, name: str) -> None:
    query = QUERIES[name]
    async with store.pool.acquire() as conn, conn.transaction():
        if name in CURSOR_DECLARED_BY:
            declare = QUERIES[CURSOR_DECLARED_BY[name]]
            placeholder = {"conversation_id": uuid.uuid4(), "user_id": "nobody"}
            await conn.execute(declare.sql, *declare.args(placeholder))
        statement = await conn.prepare(query.sql)
        parameters = statement.get_parameters()
        columns = statement.get_attributes()
    assert len(parameters) == len(query.params)
    if query.kind == "scalar":
        assert len(columns) == 1, f"{name} is :scalar but returns {len(columns)} columns"
    elif query.kind in ("one", "many"):
        assert columns, f"{name} is :{query.kind} but returns no columns"
    else:  # exec, execrows: the caller reads a command status, not rows
        assert not columns, f"{name} is :{query.kind} but returns columns"


def code_only(sql: str) -> str:
    """The SQL with comments and string literals blanked out."""
    return re.sub(r"'(?:[^']|'')*'|--[^\n]*|/\*.*?\*/", " ", sql, flags=re.DOTALL)


# `*` meaning "every column": SELECT *, alias.*, RETURNING *. count(*) and a * b are fine.
STAR_COLUMNS = re.compile(
    r"\bSELECT\s+(?:ALL\s+|DISTINCT\s+)?\*|\b\w+\s*\.\s*\*|\bRETURNING\s+\*", re.IGNORECASE
)


def test_star_detector_flags_star_lists_only() -> None:
    for bad in ("SELECT * FROM t", "select distinct *", "SELECT c.* FROM c", "RETURNING *"):
        assert STAR_COLUMNS.search(code_only(bad)), bad
    for good in ("SELECT count(*) FROM t", "SELECT a * b", "SELECT 1 -- SELECT *", "'SELECT *'"):
        assert not STAR_COLUMNS.search(code_only(good)), good


@pytest.mark.parametrize("name", list(QUERIES))
def test_query_names_every_column(name: str) -> None:
    match = STAR_COLUMNS.search(code_only(QUERIES[name].sql))
    assert match is None, f"{name}: {match and match.group()!r}"


# The tables holding a user's data (each has a user_id column, or is reached through one).
OWNED_TABLES = re.compile(
    r"\b(conversations|messages|message_tool_calls|idempotency_keys)\b", re.IGNORECASE
)
# Queries that touch those tables without an owner filter, and why. (Auth queries
# touch better-auth's "user" and "session" only, which are the owners themselves.)
OWNER_FILTER_EXCEPTIONS: dict[str, str] = {
    "purge_expired_idempotency_keys": "maintenance: deletes expired keys of every user",
    "delete_idle_conversations": "retention: deletes idle conversations of every user",
    "idle_conversations": "retention's dry run: lists idle conversations of every user",
}


def touches_chat_data(query: Query) -> bool:
    return OWNED_TABLES.search(code_only(query.sql)) is not None


def test_owner_filter_rule_covers_the_chat_queries() -> None:
    # The rule below is derived from the text; make sure it does apply.
    touching = {name for name, q in QUERIES.items() if touches_chat_data(q)}
    assert {"append_messages", "list_messages_asc", "get_conversation", "chat_history"} <= touching
    assert not {"session_user", "upsert_user_by_email", "create_session"} & touching
    assert set(OWNER_FILTER_EXCEPTIONS) <= set(QUERIES)


@pytest.mark.parametrize(
    "name",
    [n for n, q in QUERIES.items() if touches_chat_data(q) and n not in OWNER_FILTER_EXCEPTIONS],
)
def test_chat_query_filters_by_owner(name: str) -> None:
    query = QUERIES[name]
    # The caller's identity is a parameter (:user_ids in a statement that
    # carries several callers' writes, one owner for each: append_messages_together,
    # tests/features/test_gathered_appends.py), and the text uses the owner column.
    assert {"user_id", "user_ids"} & set(query.params), f"{name} takes no :user_id"
    assert re.search(r"\buser_id\b", code_only(query.sql)), f"{name} never names user_id"


@pytest.mark.parametrize("name", list(OWNER_FILTER_EXCEPTIONS))
def test_owner_filter_exception_is_still_needed(name: str) -> None:
    # A stale exception would hide a query that later loses its owner filter.
    query = QUERIES[name]
    assert touches_chat_data(query)
    assert "user_id" not in query.params


# --- part 2: the hot queries' plans on a seeded database ---------------------------------

USERS = 200
CONVERSATIONS = 2_000
BUSY_USER_CONVERSATIONS = 1_000  # conversations 1..1000 belong to the busy user
BIG_CONVERSATION_MESSAGES = 100_000  # conversation 1
OTHER_CONVERSATION_MESSAGES = 60
TOTAL_MESSAGES = BIG_CONVERSATION_MESSAGES + (CONVERSATIONS - 1) * OTHER_CONVERSATION_MESSAGES
NO_BEFORE = 2**63 - 1


def user_id(n: int) -> str:
    # Distinctive, so a plan's text shows whether the value was folded in.
    return f"seeduser_{n:04d}"


def conversation_id(n: int) -> uuid.UUID:
    return uuid.UUID(hashlib.md5(f"conversation {n}".encode()).hexdigest())


def conversation_owner(n: int) -> str:
    return user_id(1) if n <= BUSY_USER_CONVERSATIONS else user_id(2 + n % (USERS - 1))


# Set-based, one INSERT ... SELECT per table. Messages cycle user, assistant
# with a tool call, tool answer, assistant text; every tool call is indexed in
# message_tool_calls as append_messages does. Conversation n was last active
# n minutes ago; its created_at is 30 days back.
SEED_SQL = f"""
SET synchronous_commit = off;

INSERT INTO "user" (id, name, email, "emailVerified", "createdAt", "updatedAt")
SELECT format('seeduser_%s', lpad(i::text, 4, '0')), 'Seed user ' || i,
       'seed' || i || '@example.test', true, now(), now()
FROM generate_series(1, {USERS}) AS i;

INSERT INTO conversations
    (id, user_id, title, metadata, last_seq, tail_seq, message_count, created_at, updated_at)
SELECT md5('conversation ' || i)::uuid,
       CASE WHEN i <= {BUSY_USER_CONVERSATIONS} THEN 'seeduser_0001'
            ELSE format('seeduser_%s', lpad((2 + i % {USERS - 1})::text, 4, '0')) END,
       'Conversation ' || i,
       '{{}}'::jsonb,
       n.messages,
       n.messages,
       n.messages,
       now() - interval '30 days',
       now() - make_interval(mins => i)
FROM generate_series(1, {CONVERSATIONS}) AS i
CROSS JOIN LATERAL (
    SELECT CASE WHEN i = 1 THEN {BIG_CONVERSATION_MESSAGES}
                ELSE {OTHER_CONVERSATION_MESSAGES} END AS messages
) AS n;

INSERT INTO messages
    (conversation_id, seq, user_id, role, content, tool_calls, tool_call_id, created_at,
     search_vector, parent_seq)
SELECT c.id, s, c.user_id,
       (ARRAY['assistant', 'user', 'assistant', 'tool'])[s % 4 + 1],
       t.content,
       CASE WHEN s % 4 = 2 THEN jsonb_build_array(jsonb_build_object(
           'id', 'call_' || s, 'type', 'function',
           'function', jsonb_build_object('name', 'lookup', 'arguments', '{{}}'))) END,
       CASE WHEN s % 4 = 3 THEN 'call_' || (s - 1) END,
       c.created_at + make_interval(secs => s),
       to_tsvector('simple', coalesce(t.content, '')),
       nullif(s - 1, 0)
FROM conversations AS c
CROSS JOIN LATERAL generate_series(1, c.last_seq) AS s
CROSS JOIN LATERAL (
    SELECT CASE WHEN s % 4 = 2 THEN NULL ELSE 'message ' || s END AS content
) AS t;

INSERT INTO message_tool_calls (conversation_id, call_id, seq, user_id)
SELECT conversation_id, tool_calls -> 0 ->> 'id', seq, user_id
FROM messages
WHERE tool_calls IS NOT NULL;

ANALYZE;
"""


@pytest.fixture(scope="module")
async def seeded_database(server_url: str) -> AsyncIterator[str]:
    url = await create_database(server_url, "chatstore_plans")
    try:
        await asyncio.to_thread(migrations.apply, url)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(SEED_SQL)
            counts = await conn.fetchrow(
                """SELECT (SELECT count(*) FROM "user") AS users,
                          (SELECT count(*) FROM conversations) AS conversations,
                          (SELECT count(*) FROM messages) AS messages,
                          (SELECT count(*) FROM conversations
                           WHERE message_count <> (SELECT count(*) FROM messages AS m
                                                   WHERE m.conversation_id = conversations.id)
                           ) AS miscounted"""
            )
        finally:
            await conn.close()
        assert counts is not None
        assert dict(counts) == {
            "users": USERS,
            "conversations": CONVERSATIONS,
            "messages": TOTAL_MESSAGES,
            "miscounted": 0,
        }
        yield url
    finally:
        await drop_database(server_url, url)


@pytest.fixture(scope="module")
async def seeded(seeded_database: str, settings: Settings) -> AsyncIterator[ChatStore]:
    async with ChatStore(seeded_database, settings=settings) as opened:
        yield opened


def test_seed_is_big_enough() -> None:
    assert TOTAL_MESSAGES >= 200_000


# --- the cases -------------------------------------------------------------------

PlanMode = Literal["custom", "generic"]
# A conversation row is found by id through its primary key, (id, user_id) since
# migrations/0015: one index probe that also covers the owner filter.
BY_CONVERSATION_ID = frozenset({"conversations_pkey"})
MESSAGE_PKEY = frozenset({"messages_pkey"})
# The active path's messages only (migrations/0012): what every read of a
# conversation walks.
ACTIVE_PATH = frozenset({"messages_active_path_idx"})
USER_ACTIVITY = frozenset({"conversations_user_archived_activity_idx"})
# A tool call by (conversation_id, call_id): message_tool_calls' primary key,
# (conversation_id, call_id, user_id) since migrations/0015.
TOOL_CALL = frozenset({"message_tool_calls_pkey"})
# A message's children (migrations/0012).
CHILDREN = frozenset({"messages_parent_idx"})
IDLE_FIRST = frozenset({"conversations_activity_idx"})
# An item by its key, its client-given id (migrations/0013).
ITEM_KEY = frozenset({"messages_item_key_idx"})


@dataclass(frozen=True)
class HotQuery:
    name: str
    # Index sets of which the plan must use at least one member each.
    indexes: tuple[frozenset[str], ...]
    # The page size, for queries that read a page of messages.
    page: int | None = None
    # The shapes (SHAPES) whose plans are checked.
    shapes: tuple[str, ...] = ("big", "small")


HOT_QUERIES = {
    q.name: q
    for q in [
        HotQuery("append_messages", (BY_CONVERSATION_ID,)),
        HotQuery("list_messages_asc", (BY_CONVERSATION_ID, ACTIVE_PATH), page=101),
        HotQuery("list_messages_desc", (BY_CONVERSATION_ID, ACTIVE_PATH), page=101),
        HotQuery("get_message", (MESSAGE_PKEY,)),
        # The items view of the active path (migrations/0013).
        HotQuery("list_item_rows_asc", (BY_CONVERSATION_ID, ACTIVE_PATH), page=101),
        HotQuery("list_item_rows_desc", (BY_CONVERSATION_ID, ACTIVE_PATH), page=101),
        HotQuery("find_item_by_key", (ITEM_KEY,)),
        HotQuery("taken_item_keys", (ITEM_KEY,)),
        HotQuery("chat_history", (BY_CONVERSATION_ID, ACTIVE_PATH), page=50),
        HotQuery("list_conversations_first", (USER_ACTIVITY,)),
        HotQuery("list_conversations_after", (USER_ACTIVITY,)),
        HotQuery("get_conversation", (BY_CONVERSATION_ID,)),
        # The queries whose keys migrations/0015 widened with user_id (and
        # that now name user_id for every table they read, for Citus): each
        # still finds its rows by the same index.
        HotQuery("diagnose_append", (BY_CONVERSATION_ID, TOOL_CALL)),
        HotQuery("export_page", (ACTIVE_PATH, TOOL_CALL)),
        # Small only: switching the big conversation's leaf to its middle takes
        # 50,000 messages off the path, and a sequential scan of messages is the
        # right plan for updating a quarter of the table.
        HotQuery(
            "switch_active_leaf", (MESSAGE_PKEY, CHILDREN, BY_CONVERSATION_ID), shapes=("small",)
        ),
        HotQuery("truncate_messages", (ACTIVE_PATH, CHILDREN, MESSAGE_PKEY)),
        # After a branching append (small only, as switch_active_leaf: taking
        # half of the big conversation off the path is a scan's work).
        HotQuery("leave_active_path", (ACTIVE_PATH,), shapes=("small",)),
        # Not on a request's path, but it runs every minute on every process:
        # the idle conversations are found by index, never by a scan.
        HotQuery("delete_idle_conversations", (IDLE_FIRST,)),
    ]
}


@dataclass(frozen=True)
class Shape:
    """Whose data the query is run on."""

    conversation: int
    owner: str

    @property
    def id(self) -> uuid.UUID:
        return conversation_id(self.conversation)


SHAPES = {
    # 100,000 messages; the owner has 1,000 conversations.
    "big": Shape(1, user_id(1)),
    # 60 messages; the owner has about 5 conversations.
    "small": Shape(1500, conversation_owner(1500)),
}


def arguments(name: str, shape: Shape) -> dict[str, object]:
    page = HOT_QUERIES[name].page
    midpoint = BIG_CONVERSATION_MESSAGES // 2 if shape.conversation == 1 else 30
    values: dict[str, dict[str, object]] = {
        "append_messages": {
            **batch_params([MessageInput(role="user", content="hello")]),
            "conversation_id": shape.id,
            "user_id": shape.owner,
            "expected_last_seq": None,
            "parent_seq": None,
        },
        "list_messages_asc": {
            "conversation_id": shape.id,
            "user_id": shape.owner,
            "after": 0,
            "before": NO_BEFORE,
            "limit": page,
        },
        "list_messages_desc": {
            "conversation_id": shape.id,
            "user_id": shape.owner,
            "after": 0,
            "before": NO_BEFORE,
            "limit": page,
        },
        "get_message": {"conversation_id": shape.id, "user_id": shape.owner, "seq": midpoint},
        "list_item_rows_asc": {
            "conversation_id": shape.id,
            "user_id": shape.owner,
            "after": 0,
            "limit": page,
        },
        "list_item_rows_desc": {
            "conversation_id": shape.id,
            "user_id": shape.owner,
            "before": NO_BEFORE,
            "limit": page,
        },
        "taken_item_keys": {
            "conversation_id": shape.id,
            "user_id": shape.owner,
            "item_keys": ["client-id-1", "client-id-2"],
        },
        "find_item_by_key": {
            "conversation_id": shape.id,
            "user_id": shape.owner,
            "item_id": "client-id-1",
        },
        "chat_history": {
            "conversation_id": shape.id,
            "user_id": shape.owner,
            "before": NO_BEFORE,
            "limit": page,
        },
        "list_conversations_first": {"user_id": shape.owner, "archived": False, "limit": 21},
        "list_conversations_after": {
            "user_id": shape.owner,
            # The cursor of a page ending at the shape's conversation.
            "cursor_updated_at": datetime.now(UTC) - timedelta(minutes=shape.conversation),
            "cursor_id": shape.id,
            "archived": False,
            "limit": 21,
        },
        "get_conversation": {"id": shape.id, "user_id": shape.owner},
        # The seed's tool calls are call_<seq> on every seq = 2 (mod 4).
        "diagnose_append": {
            "conversation_id": shape.id,
            "user_id": shape.owner,
            "parent_seq": None,
            "tool_call_ids": [f"call_{midpoint - midpoint % 4 + 2}", "call_none"],
        },
        "export_page": {
            "conversation_id": shape.id,
            "user_id": shape.owner,
            "after": midpoint,
            "span": 100,
            "max_bytes": 1_000_000,
        },
        "switch_active_leaf": {
            "conversation_id": shape.id,
            "user_id": shape.owner,
            "seq": midpoint,
        },
        "truncate_messages": {
            "conversation_id": shape.id,
            "user_id": shape.owner,
            "from_seq": midpoint,
        },
        "leave_active_path": {
            "conversation_id": shape.id,
            "user_id": shape.owner,
            "parent_seq": midpoint,
            "first_new_seq": NO_BEFORE,
        },
        # Idle for an hour: a cut-off inside the seed's range of activity.
        "delete_idle_conversations": {
            "cutoff": datetime.now(UTC) - timedelta(hours=1),
            "batch": 100,
        },
    }
    chosen = values[name]
    if "search_config" in QUERIES[name].params:  # append_messages computes search_vector
        chosen["search_config"] = "simple"
    return chosen


CASES = [
    pytest.param(name, shape, mode, id=f"{name}-{shape}-{mode}")
    for name, hot in HOT_QUERIES.items()
    for shape in hot.shapes
    for mode in ("custom", "generic")
]
READ_CASES = [
    pytest.param(name, shape, mode, id=f"{name}-{shape}-{mode}")
    for name, hot in HOT_QUERIES.items()
    if hot.page is not None
    for shape in SHAPES
    for mode in ("custom", "generic")
]


# --- explaining ----------------------------------------------------------------------

Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"


async def literals(conn: Conn, query: Query, args: tuple[object, ...]) -> list[str]:
    """``args`` as SQL literals of the statement's parameter types, quoted by the server."""
    statement = await conn.prepare(query.sql)
    out = []
    for parameter, value in zip(statement.get_parameters(), args, strict=True):
        type_name = await conn.fetchval("SELECT format_type($1, NULL)", parameter.oid)
        text = await conn.fetchval(f"SELECT quote_nullable(($1::{type_name})::text)", value)
        out.append(f"{text}::{type_name}")
    return out


async def explain(
    conn: Conn, query: Query, values: Mapping[str, object], mode: PlanMode, *, analyze: bool
) -> dict[str, Any]:
    """The plan's root node; with ``analyze``, run inside a transaction rolled back."""
    options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
    args = query.args(values)
    if mode == "generic":
        rendered = await literals(conn, query, args)
        await conn.execute(f"PREPARE chatstore_hot AS {query.sql}")
    try:
        transaction = conn.transaction()
        await transaction.start()
        try:
            if mode == "custom":
                await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
                text = await conn.fetchval(f"EXPLAIN ({options}) {query.sql}", *args)
            else:
                await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                text = await conn.fetchval(
                    f"EXPLAIN ({options}) EXECUTE chatstore_hot({', '.join(rendered)})"
                )
        finally:
            await transaction.rollback()
    finally:
        if mode == "generic":
            await conn.execute("DEALLOCATE chatstore_hot")
    plan = json.loads(text) if isinstance(text, str) else text
    root: dict[str, Any] = plan[0]["Plan"]
    return root


def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from nodes(child)


def outline(node: dict[str, Any], depth: int = 0) -> str:
    """The plan as indented lines, for assertion messages."""
    keys = ("Relation Name", "Index Name", "Scan Direction", "Actual Rows", "Actual Loops")
    detail = ", ".join(f"{k}={node[k]}" for k in keys if k in node)
    lines = ["  " * depth + f"{node['Node Type']} ({detail})"]
    lines += [outline(child, depth + 1) for child in node.get("Plans", [])]
    return "\n".join(lines)


async def test_generic_plans_really_are_generic(seeded: ChatStore) -> None:
    # The custom plan folds the owner's id into the plan; the generic one keeps $n.
    query = QUERIES["list_conversations_first"]
    values = arguments(query.name, SHAPES["big"])
    async with seeded.pool.acquire() as conn:
        custom = await explain(conn, query, values, "custom", analyze=False)
        generic = await explain(conn, query, values, "generic", analyze=False)
    assert user_id(1) in json.dumps(custom)
    assert user_id(1) not in json.dumps(generic)
    assert "$1" in json.dumps(generic)


@pytest.mark.parametrize(("name", "shape", "mode"), CASES)
async def test_hot_query_uses_its_index_without_sequential_scans(
    seeded: ChatStore, name: str, shape: str, mode: PlanMode
) -> None:
    query = QUERIES[name]
    async with seeded.pool.acquire() as conn:
        root = await explain(conn, query, arguments(name, SHAPES[shape]), mode, analyze=False)
    plan = list(nodes(root))
    seq_scanned = {n.get("Relation Name") for n in plan if n["Node Type"] == "Seq Scan"}
    assert not seq_scanned & {"conversations", "messages", "message_tool_calls"}, outline(root)
    used = {n["Index Name"] for n in plan if "Index Name" in n}
    for wanted in HOT_QUERIES[name].indexes:
        assert used & wanted, f"none of {sorted(wanted)} used:\n{outline(root)}"


MESSAGE_INDEXES = {"messages_pkey", "messages_active_path_idx", "messages_parent_idx"}
INDEX_NODES = {"Index Scan", "Index Only Scan", "Bitmap Index Scan", "Seq Scan"}


def messages_rows_visited(root: dict[str, Any]) -> int:
    """Entries of ``messages``' indexes, or rows of its heap when scanned directly, visited.

    A Bitmap Heap Scan is counted through its Bitmap Index Scan child, which
    collects every matching entry before the first row is returned.
    """
    visited = 0
    for node in nodes(root):
        on_messages = node.get("Relation Name") == "messages" or (
            node.get("Index Name") in MESSAGE_INDEXES
        )
        if on_messages and node["Node Type"] in INDEX_NODES:
            rows = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
            visited += rows * node.get("Actual Loops", 1)
    return visited


@pytest.mark.parametrize(("name", "shape", "mode"), READ_CASES)
async def test_message_page_reads_about_a_page_not_the_conversation(
    seeded: ChatStore, name: str, shape: str, mode: PlanMode
) -> None:
    # An index in the plan is not enough: a bitmap scan of messages_pkey followed by a
    # sort reads every message of the conversation to return a page. The rows touched
    # must stay within a few pages, however long the conversation.
    query = QUERIES[name]
    page = HOT_QUERIES[name].page
    assert page is not None
    async with seeded.pool.acquire() as conn:
        root = await explain(conn, query, arguments(name, SHAPES[shape]), mode, analyze=True)
    budget = 4 * page + 16
    visited = messages_rows_visited(root)
    assert visited <= budget, (
        f"{name} visited {visited} messages for a page of {page}:\n{outline(root)}"
    )


# --- branches: paging the active path of a conversation with many branches -----------

# A conversation of BRANCH_STEPS * REGENERATIONS messages: at every step of its
# active path, REGENERATIONS alternatives share a parent, and the newest of them
# is the one on the path (the others were regenerated away). Its active path is
# one message in REGENERATIONS: a read that walked the conversation in seq order
# and filtered would visit REGENERATIONS times the page.
BRANCH_STEPS = 2_000
REGENERATIONS = 10
BRANCHY = Shape(-1, user_id(3))
BRANCHY_SQL = f"""
INSERT INTO conversations
    (id, user_id, title, metadata, last_seq, tail_seq, message_count, created_at, updated_at)
VALUES ($1, $2, 'Branchy', '{{}}'::jsonb, {BRANCH_STEPS * REGENERATIONS},
        {BRANCH_STEPS * REGENERATIONS}, {BRANCH_STEPS * REGENERATIONS}, now(), now());

INSERT INTO messages
    (conversation_id, seq, user_id, role, content, search_vector, parent_seq, on_path)
SELECT $1, s, $2, 'user', 'message ' || s, to_tsvector('simple', 'message ' || s),
       nullif((s - 1) / {REGENERATIONS} * {REGENERATIONS}, 0),
       s % {REGENERATIONS} = 0
FROM generate_series(1, {BRANCH_STEPS * REGENERATIONS}) AS s;

ANALYZE messages;
"""


@pytest.fixture(scope="module")
async def branchy(seeded: ChatStore) -> ChatStore:
    async with seeded.pool.acquire() as conn:
        for statement in BRANCHY_SQL.split(";\n"):
            if statement.strip():
                args = (BRANCHY.id, BRANCHY.owner) if "$1" in statement else ()
                await conn.execute(statement, *args)
    return seeded


def branchy_arguments(name: str, bounds: dict[str, int]) -> dict[str, object]:
    values = arguments(name, BRANCHY)
    values.update(bounds)
    return values


MIDDLE = BRANCH_STEPS * REGENERATIONS // 2
PATH_PAGES = [
    pytest.param(name, bounds, mode, id=f"{name}-{'-'.join(bounds) or 'unbounded'}-{mode}")
    for name, bounds in [
        ("list_messages_asc", {}),
        ("list_messages_asc", {"after": MIDDLE}),
        ("list_messages_asc", {"after": MIDDLE, "before": MIDDLE + 50_000}),
        ("list_messages_desc", {}),
        ("list_messages_desc", {"before": MIDDLE}),
        ("list_messages_desc", {"after": 3, "before": MIDDLE}),
        ("chat_history", {}),
        ("chat_history", {"before": MIDDLE}),
    ]
    for mode in ("custom", "generic")
]


@pytest.mark.parametrize(("name", "bounds", "mode"), PATH_PAGES)
async def test_active_path_page_reads_about_a_page_not_the_branches(
    branchy: ChatStore, name: str, bounds: dict[str, int], mode: PlanMode
) -> None:
    # The rule: paging along the active path is O(page), in either order,
    # with after and before, however many branches the conversation has.
    query = QUERIES[name]
    page = HOT_QUERIES[name].page
    assert page is not None
    async with branchy.pool.acquire() as conn:
        root = await explain(conn, query, branchy_arguments(name, bounds), mode, analyze=True)
    returned = sum(
        n.get("Actual Rows", 0) for n in nodes(root) if n.get("Relation Name") == "conversations"
    )
    assert returned == 1, outline(root)
    visited = messages_rows_visited(root)
    print(f"{name} {bounds} {mode}: {visited} index entries for a page of {page}")
    # A walk in seq order that filtered the other branches out would visit
    # REGENERATIONS (10) times the page.
    assert visited <= 2 * page + 16, (
        f"{name} {bounds} visited {visited} messages for a page of {page}:\n{outline(root)}"
    )
    assert {n.get("Index Name") for n in nodes(root)} & ACTIVE_PATH, outline(root)
