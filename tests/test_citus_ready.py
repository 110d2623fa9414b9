"""The schema stays distributable by Citus: a check of the migrated catalog (issue 16).

Every table of the public schema is one of three kinds (docs/scaling.md):

* distributed by ``user_id``, all co-located: the default. Citus can only
  enforce, on one shard, a primary key or unique constraint that includes the
  distribution column, and a foreign key between distributed tables whose two
  sides include it (the rows it compares are then on the same shard);
* a reference table (a copy on every node): ``REFERENCE_TABLES``;
* a table that stays on the coordinator (a Citus local table, or no Citus
  table at all): ``LOCAL_TABLES``.

``citus_violations`` reads pg_catalog and names every way a schema breaks
that. The first test runs it on the migrated schema: a migration that adds a
table holding a user's data without ``user_id``, a key without it, or a
foreign key between user tables without it, fails here until the table or
key is fixed, or the table is listed below with the reason it need not be
distributed. The other tests show that each rule can fail, on tables made
in a scratch database.

No Citus here (Debian's own repositories do not package it, and only they
are reachable): the rules are Citus's documented ones, checked on plain
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from support.databases import create_database

from chatstore import migrations
from chatstore.auth import new_id
from chatstore.store import ChatStore

ROOT = Path(__file__).resolve().parent.parent

DISTRIBUTION_COLUMN = "user_id"

# Tables with a copy on every Citus node, and why.
REFERENCE_TABLES: dict[str, str] = {
    "user": (
        "better-auth's; its UNIQUE (email) cannot include the distribution column, "
        "and every distributed table's foreign key to it must reach a copy on its own node"
    ),
}

# Tables that stay on the coordinator, and why.
LOCAL_TABLES: dict[str, str] = {
    "session": (
        "better-auth's, keyed by id and token (session_user looks a token up, not a user), "
        'and not chatstore\'s to re-key; references "user" (a reference table)'
    ),
    "account": "better-auth's sign-in methods; chatstore never reads them",
    "verification": "better-auth's short-lived codes, keyed by an email, not a user",
    "chatstore_owned_tables": "migration bookkeeping (migrations/0001), no user data",
    "_yoyo_migration": "yoyo's record of applied migrations",
    "_yoyo_log": "yoyo's log",
    "_yoyo_version": "yoyo's schema version",
    "yoyo_lock": "yoyo's lock row",
}


# Foreign keys Citus allows between kinds of table, besides distributed to distributed.
ALLOWED_REFERENCES = {
    ("distributed", "reference"),
    ("reference", "reference"),
    ("local", "local"),
    ("local", "reference"),
}

TABLES_SQL = """
SELECT c.oid, c.relname
FROM pg_class AS c
WHERE c.relnamespace = $1::regnamespace
    AND c.relkind IN ('r', 'p')
    AND NOT c.relispartition
ORDER BY c.relname
"""

COLUMNS_SQL = """
SELECT a.attrelid, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type,
       a.attnotnull
FROM pg_attribute AS a
WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
"""

# Unique indexes (primary keys and unique constraints have one) and exclusion constraints:
# everything that makes a row unique across the table.
UNIQUENESS_SQL = """
SELECT i.indrelid AS table_oid, ic.relname AS name, i.indkey::int2[] AS columns,
       i.indisprimary AS is_primary, i.indexprs IS NOT NULL AS has_expressions
FROM pg_index AS i
INNER JOIN pg_class AS ic ON ic.oid = i.indexrelid
WHERE i.indrelid = ANY($1::oid[]) AND i.indisunique
UNION ALL
SELECT con.conrelid, con.conname, con.conkey, FALSE, FALSE
FROM pg_constraint AS con
WHERE con.conrelid = ANY($1::oid[]) AND con.contype = 'x'
"""

FOREIGN_KEYS_SQL = """
SELECT con.conname AS name, con.conrelid AS table_oid, con.conkey AS columns,
       con.confrelid AS target_oid, con.confkey AS target_columns
FROM pg_constraint AS con
WHERE con.conrelid = ANY($1::oid[]) AND con.contype = 'f'
"""


async def citus_violations(
    conn: asyncpg.Connection[asyncpg.Record],
    schema: str,
    *,
    reference: Mapping[str, str],
    local: Mapping[str, str],
    owner_table: str = "user",
) -> list[str]:
    """Every way the tables of ``schema`` break Citus's rules, one sentence each.

    Tables not in ``reference`` or ``local`` are distributed by ``user_id``,
    co-located, so each needs a NOT NULL ``user_id`` of the owner table's id
    type, a primary key (shard moves copy by logical replication, which needs
    a replica identity), ``user_id`` in every primary key, unique index and
    exclusion constraint, and ``user_id`` on both sides, paired, of every
    foreign key to another distributed table. A distributed table may
    reference a reference table; a reference table only a reference table;
    a local table a local or reference table.
    """
    tables = {r["oid"]: r["relname"] for r in await conn.fetch(TABLES_SQL, schema)}
    oids = list(tables)
    problems: list[str] = []
    for name in sorted((set(reference) | set(local)) - set(tables.values())):
        problems.append(f'"{name}" is listed as reference or local but is not a table')

    def kind(oid: int) -> str:
        name = tables.get(oid)
        if name is None:
            return "outside"
        if name in reference:
            return "reference"
        if name in local:
            return "local"
        return "distributed"

    columns: dict[tuple[int, int], str] = {}
    distribution: dict[int, int] = {}  # table oid -> attnum of user_id
    owner_id_type = None
    column_rows = await conn.fetch(COLUMNS_SQL, oids)
    for row in column_rows:
        columns[(row["attrelid"], row["attnum"])] = row["attname"]
        if tables[row["attrelid"]] == owner_table and row["attname"] == "id":
            owner_id_type = row["type"]
    for row in column_rows:
        if kind(row["attrelid"]) != "distributed" or row["attname"] != DISTRIBUTION_COLUMN:
            continue
        table = tables[row["attrelid"]]
        distribution[row["attrelid"]] = row["attnum"]
        if not row["attnotnull"]:
            problems.append(f'"{table}".{DISTRIBUTION_COLUMN} may be NULL')
        if owner_id_type is not None and row["type"] != owner_id_type:
            problems.append(
                f'"{table}".{DISTRIBUTION_COLUMN} is {row["type"]}, not {owner_id_type} '
                f'like "{owner_table}".id: it could not be co-located'
            )
    for oid, table in tables.items():
        if kind(oid) == "distributed" and oid not in distribution:
            problems.append(
                f'"{table}" has no {DISTRIBUTION_COLUMN} column: it cannot be distributed '
                "(list it in REFERENCE_TABLES or LOCAL_TABLES, with the reason, if it holds "
                "no user's data)"
            )

    has_primary_key: set[int] = set()
    for row in await conn.fetch(UNIQUENESS_SQL, oids):
        oid = row["table_oid"]
        if row["is_primary"]:
            has_primary_key.add(oid)
        if oid not in distribution:
            continue
        if distribution[oid] not in row["columns"] or row["has_expressions"]:
            problems.append(
                f'"{tables[oid]}": {row["name"]} makes rows unique without '
                f"{DISTRIBUTION_COLUMN}: a shard cannot enforce it"
            )
    for oid in distribution:
        if oid not in has_primary_key:
            problems.append(f'"{tables[oid]}" has no primary key: a shard move needs one')

    for row in await conn.fetch(FOREIGN_KEYS_SQL, oids):
        source, target = row["table_oid"], row["target_oid"]
        pair = (kind(source), kind(target))
        where = f'"{tables[source]}": {row["name"]} (to "{tables.get(target, target)}")'
        if pair == ("distributed", "distributed"):
            if source not in distribution or target not in distribution:
                continue  # no user_id at all: said above
            paired = list(zip(row["columns"], row["target_columns"], strict=True))
            if (distribution[source], distribution[target]) not in paired:
                problems.append(
                    f"{where} does not pair {DISTRIBUTION_COLUMN} with "
                    f"{DISTRIBUTION_COLUMN}: the row it checks may be on another shard"
                )
        elif pair not in ALLOWED_REFERENCES:
            problems.append(f"{where}: a {pair[0]} table cannot reference a {pair[1]} one")
    return problems


# --- the migrated schema ----------------------------------------------------------


async def test_migrated_schema_is_ready_for_citus(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        problems = await citus_violations(
            conn, "public", reference=REFERENCE_TABLES, local=LOCAL_TABLES
        )
        distributed = await conn.fetch(TABLES_SQL, "public")
    finally:
        await conn.close()
    assert problems == []
    # The tables the rule covers today: a table that moved to a list by mistake shows here.
    names = {r["relname"] for r in distributed} - set(REFERENCE_TABLES) - set(LOCAL_TABLES)
    assert names >= {"conversations", "messages", "message_tool_calls", "idempotency_keys"}


# --- every query reaches each distributed table by user_id --------------------------

DISTRIBUTED_TABLES = {"conversations", "messages", "message_tool_calls", "idempotency_keys"}
# Queries that read every user's rows on purpose (docs/scaling.md, "What does not
# route to one shard"): tests/test_sql.py's OWNER_FILTER_EXCEPTIONS.
MULTI_SHARD = {
    "delete_idle_conversations",
    "idle_conversations",
    "purge_expired_idempotency_keys",
    # Several callers' appends, gathered (chatstore/appends.py): on Citus,
    # CHATSTORE_APPEND_STATEMENTS=0 sends each alone, routed.
    "append_messages_together",
}
CONDITIONS = ("Index Cond", "Recheck Cond", "Filter", "Join Filter", "Hash Cond", "Merge Cond")


JOINS = {"Nested Loop", "Hash Join", "Merge Join"}


def plan_nodes(
    node: dict[str, Any], ancestors: tuple[dict[str, Any], ...] = ()
) -> Iterator[tuple[dict[str, Any], tuple[dict[str, Any], ...]]]:
    yield node, ancestors
    for child in node.get("Plans", []):
        yield from plan_nodes(child, (node, *ancestors))


def scans_without_user_id(root: dict[str, Any]) -> list[str]:
    """Scans of a distributed table with no condition on user_id: on the scan, its
    bitmap index scans, or the nearest join above it (through Hash, Sort, Materialize);
    for a scan in a hashed SubPlan, which the outer row is compared with on its output
    columns ("(a, b) IN (hashed SubPlan 4)"), user_id among those columns."""
    found = []
    whole = json.dumps(root)
    for node, ancestors in plan_nodes(root):
        if (
            node.get("Relation Name") not in DISTRIBUTED_TABLES
            or node["Node Type"] == "ModifyTable"
        ):
            continue
        near = [node, *node.get("Plans", [])]
        for ancestor in ancestors:
            near.append(ancestor)
            if ancestor["Node Type"] in JOINS:
                break
        text = " ".join(str(n.get(key, "")) for n in near for key in CONDITIONS)
        subplans = [n["Subplan Name"] for n in (node, *ancestors) if "Subplan Name" in n]
        if subplans and f"hashed {subplans[0]})" in whole:
            text += " " + " ".join(node.get("Output", []))
        if not re.search(r"\buser_id\b", text):
            found.append(f"{node['Node Type']} on {node['Relation Name']} ({node.get('Alias')})")
    return found


@pytest.mark.parametrize("name", sorted(set(ChatStore.queries) - MULTI_SHARD))
async def test_every_scan_of_a_distributed_table_has_a_user_id_condition(
    store: ChatStore, name: str
) -> None:
    # What lets Citus route a query to one shard: every distributed table it reads
    # is restricted by user_id (or joined on it to one that is). Read off the
    # query's generic plan (parameters as $n), so no value is needed.
    query = ChatStore.queries[name]
    async with store.pool.acquire() as conn:
        statement = await conn.prepare(query.sql)
        types = [
            await conn.fetchval("SELECT format_type($1, NULL)", p.oid)
            for p in statement.get_parameters()
        ]
        await conn.execute(f"PREPARE citus_routing AS {query.sql}")
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                # Whatever the tables' statistics (this database's tables are small,
                # and other tests fill them): with sequential scans priced out, each
                # correlated condition shows on the scan it restricts, rather than a
                # small table being hashed whole into a SubPlan whose filter hides it.
                await conn.execute("SET LOCAL enable_seqscan = off")
                nulls = ", ".join(f"NULL::{t}" for t in types)
                execute = f"EXECUTE citus_routing({nulls})" if types else "EXECUTE citus_routing"
                text = await conn.fetchval(f"EXPLAIN (VERBOSE, FORMAT JSON) {execute}")
        finally:
            await conn.execute("DEALLOCATE citus_routing")
    plan = json.loads(text) if isinstance(text, str) else text
    root = plan[0]["Plan"]
    assert scans_without_user_id(root) == [], json.dumps(root, indent=1)


def test_the_user_id_condition_check_finds_a_scan_without_one() -> None:
    plan = {
        "Node Type": "Nested Loop",
        "Plans": [
            {
                "Node Type": "Index Scan",
                "Relation Name": "conversations",
                "Alias": "c",
                "Index Cond": "((id = $1) AND (user_id = $2))",
            },
            {
                "Node Type": "Index Scan",
                "Relation Name": "message_tool_calls",
                "Alias": "calls",
                "Index Cond": "((conversation_id = c.id) AND (call_id = $3))",
            },
        ],
    }
    assert scans_without_user_id(plan) == ["Index Scan on message_tool_calls (calls)"]
    # A join's condition counts for the scans below it, through a Hash.
    hashed = {
        "Node Type": "Hash Join",
        "Hash Cond": "((m.conversation_id = c.id) AND (m.user_id = c.user_id))",
        "Plans": [
            plan["Plans"][0],
            {
                "Node Type": "Hash",
                "Plans": [{"Node Type": "Seq Scan", "Relation Name": "messages", "Alias": "m"}],
            },
        ],
    }
    assert scans_without_user_id(hashed) == []
    hashed["Hash Cond"] = "(m.conversation_id = c.id)"
    assert scans_without_user_id(hashed) == ["Seq Scan on messages (m)"]
    # A hashed SubPlan: compared with the outer row on its output columns.
    subplan = {
        "Node Type": "Seq Scan",
        "Relation Name": "messages",
        "Alias": "parent",
        "Parent Relationship": "SubPlan",
        "Subplan Name": "SubPlan 4",
        "Output": ["parent.conversation_id", "parent.user_id", "parent.seq"],
    }
    outer = {
        "Node Type": "CTE Scan",
        "Filter": "((locked.id, locked.user_id, locked.parent_seq) IN (hashed SubPlan 4))",
        "Plans": [subplan],
    }
    assert scans_without_user_id(outer) == []
    subplan["Output"] = ["parent.conversation_id", "parent.seq"]
    outer["Filter"] = "((locked.id, locked.parent_seq) IN (hashed SubPlan 4))"
    assert scans_without_user_id(outer) == ["Seq Scan on messages (parent)"]


def test_scaling_doc_names_every_query() -> None:
    # docs/scaling.md says where each named query runs on Citus: a new query must
    # be placed there too.
    doc = (ROOT / "docs" / "scaling.md").read_text()
    missing = [name for name in ChatStore.queries if f"`{name}`" not in doc]
    assert missing == []


# --- 0015: the schema before it breaks the rule, after it follows it -----------------

CITUS_READY_KEYS = "0015.citus-ready-keys"

KEYS_SQL = """
SELECT conrelid::regclass::text || '.' || conname AS name, pg_get_constraintdef(oid) AS definition
FROM pg_constraint
WHERE conname IN ('conversations_pkey', 'conversations_id_user_id_key', 'messages_pkey',
                  'messages_conversation_fkey', 'message_tool_calls_pkey',
                  'message_tool_calls_message_fkey', 'idempotency_keys_conversation_fkey')
ORDER BY 1
"""

KEYS_BEFORE_0015 = {
    "conversations.conversations_pkey": "PRIMARY KEY (id)",
    "conversations.conversations_id_user_id_key": "UNIQUE (id, user_id)",
    "messages.messages_pkey": "PRIMARY KEY (conversation_id, seq)",
    "messages.messages_conversation_fkey": (
        "FOREIGN KEY (conversation_id, user_id) REFERENCES conversations(id, user_id) "
        "ON DELETE CASCADE"
    ),
    "message_tool_calls.message_tool_calls_pkey": "PRIMARY KEY (conversation_id, call_id)",
    "message_tool_calls.message_tool_calls_message_fkey": (
        "FOREIGN KEY (conversation_id, seq) REFERENCES messages(conversation_id, seq) "
        "ON DELETE CASCADE"
    ),
    "idempotency_keys.idempotency_keys_conversation_fkey": (
        "FOREIGN KEY (conversation_id) REFERENCES conversations(id) ON DELETE CASCADE"
    ),
}

KEYS_AFTER_0015 = {
    "conversations.conversations_pkey": "PRIMARY KEY (id, user_id)",
    "messages.messages_pkey": "PRIMARY KEY (conversation_id, seq, user_id)",
    "messages.messages_conversation_fkey": KEYS_BEFORE_0015["messages.messages_conversation_fkey"],
    "message_tool_calls.message_tool_calls_pkey": (
        "PRIMARY KEY (conversation_id, call_id, user_id)"
    ),
    "message_tool_calls.message_tool_calls_message_fkey": (
        "FOREIGN KEY (conversation_id, seq, user_id) "
        "REFERENCES messages(conversation_id, seq, user_id) ON DELETE CASCADE"
    ),
    "idempotency_keys.idempotency_keys_conversation_fkey": (
        "FOREIGN KEY (conversation_id, user_id) REFERENCES conversations(id, user_id) "
        "ON DELETE CASCADE"
    ),
}

# Rows written by the code before 0015: a tool call without user_id, a key of a conversation.
OLD_ROWS: list[tuple[str, tuple[str, ...]]] = [
    (
        """INSERT INTO "user" (id, name, email, "emailVerified", "createdAt", "updatedAt")
           VALUES ($1, 'U', $1 || '@example.test', TRUE, now(), now())""",
        ("user",),
    ),
    (
        """INSERT INTO conversations (id, user_id, last_seq, tail_seq, message_count)
           VALUES ($1, $2, 2, 2, 2)""",
        ("conversation", "user"),
    ),
    (
        """INSERT INTO messages (conversation_id, seq, user_id, role, content, tool_calls)
           VALUES ($1, 1, $2, 'assistant', NULL, $3::jsonb)""",
        ("conversation", "user", "calls"),
    ),
    (
        """INSERT INTO messages
               (conversation_id, seq, user_id, role, content, tool_call_id, parent_seq)
           VALUES ($1, 2, $2, 'tool', 'sunny', 'call_1', 1)""",
        ("conversation", "user"),
    ),
    (
        "INSERT INTO message_tool_calls (conversation_id, call_id, seq) VALUES ($1, 'call_1', 1)",
        ("conversation",),
    ),
    (
        """INSERT INTO idempotency_keys (user_id, key, fingerprint, status, response,
                                         expires_at, conversation_id, first_seq, last_seq)
           VALUES ($1, 'k', sha256('x'), 200, '{}', now() + interval '1 day', $2, 1, 2)""",
        ("user", "conversation"),
    ),
]


async def keys(conn: asyncpg.Connection[asyncpg.Record]) -> dict[str, str]:
    return {r["name"]: r["definition"] for r in await conn.fetch(KEYS_SQL)}


async def test_0015_makes_the_schema_ready_and_its_rollback_restores_the_old_keys(
    server_url: str,
) -> None:
    url = await create_database(server_url, "chatstore_citus")
    try:
        ids = migrations.known_ids()
        await asyncio.to_thread(migrations.apply, url)
        from_0015 = len(ids) - ids.index(CITUS_READY_KEYS)
        await asyncio.to_thread(migrations.rollback, url, from_0015)
        conn = await asyncpg.connect(url)
        try:
            assert await keys(conn) == KEYS_BEFORE_0015
            before = await citus_violations(
                conn, "public", reference=REFERENCE_TABLES, local=LOCAL_TABLES
            )
            user_id, conversation = new_id(), uuid.uuid4()
            calls = json.dumps(
                [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
            )
            values = {"user": user_id, "conversation": conversation, "calls": calls}
            for statement, names in OLD_ROWS:
                await conn.execute(statement, *(values[name] for name in names))
        finally:
            await conn.close()
        # What the check says of the schema before 0015: every key 0015 changes.
        assert sorted(before) == sorted(
            [
                '"conversations": conversations_pkey makes rows unique without user_id: '
                "a shard cannot enforce it",
                '"idempotency_keys": idempotency_keys_conversation_fkey (to "conversations") '
                "does not pair user_id with user_id: the row it checks may be on another shard",
                '"message_tool_calls" has no user_id column: it cannot be distributed '
                "(list it in REFERENCE_TABLES or LOCAL_TABLES, with the reason, if it holds "
                "no user's data)",
                '"messages": messages_pkey makes rows unique without user_id: '
                "a shard cannot enforce it",
            ]
        )

        await asyncio.to_thread(migrations.apply, url)
        conn = await asyncpg.connect(url)
        try:
            assert await keys(conn) == KEYS_AFTER_0015
            assert (
                await citus_violations(
                    conn, "public", reference=REFERENCE_TABLES, local=LOCAL_TABLES
                )
                == []
            )
            # The old rows are kept, the tool call backfilled with its message's owner.
            backfilled = await conn.fetchval(
                "SELECT user_id FROM message_tool_calls WHERE conversation_id = $1",
                conversation,
            )
            assert backfilled == user_id
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM idempotency_keys WHERE conversation_id = $1", conversation
                )
                == 1
            )
            # Every table constraint 0015 made NOT VALID was validated (the
            # domains' constraints of 0017 stay NOT VALID on purpose: see it);
            # no index is left INVALID.
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM pg_constraint WHERE conrelid <> 0 AND NOT convalidated"
                )
                == 0
            )
            assert await conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0
        finally:
            await conn.close()
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            name = urlsplit(url).path.lstrip("/")
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# The unique indexes 0015 and its rollback build before swapping them in as keys.
TEMPORARY_INDEXES = [
    "conversations_id_user_id_pkey",
    "messages_conversation_seq_user_pkey",
    "message_tool_calls_conversation_call_user_pkey",
    "conversations_id_pkey",
    "conversations_id_user_id_unique",
    "messages_conversation_seq_pkey",
    "message_tool_calls_conversation_call_pkey",
]


async def test_0015_stopped_by_a_lock_finishes_when_run_again(server_url: str) -> None:
    # A reader holding idempotency_keys makes the key swap give up after
    # lock_timeout (5 s), with the new indexes built and the tool calls
    # backfilled; the migration is not recorded, and running it again
    # finishes it: the same keys, no index left behind or INVALID.
    url = await create_database(server_url, "chatstore_citus")
    try:
        ids = migrations.known_ids()
        await asyncio.to_thread(migrations.apply, url)
        from_0015 = len(ids) - ids.index(CITUS_READY_KEYS)
        await asyncio.to_thread(migrations.rollback, url, from_0015)
        blocker = await asyncpg.connect(url)
        try:
            blocking = blocker.transaction()
            await blocking.start()
            await blocker.execute("LOCK TABLE idempotency_keys IN ACCESS SHARE MODE")
            with pytest.raises(Exception, match="lock timeout"):
                await asyncio.to_thread(migrations.apply, url)
            await blocking.rollback()
        finally:
            await blocker.close()
        states = {s.id: s.applied for s in await asyncio.to_thread(migrations.status, url)}
        assert states[CITUS_READY_KEYS] is False

        assert CITUS_READY_KEYS in await asyncio.to_thread(migrations.apply, url)
        conn = await asyncpg.connect(url)
        try:
            assert await keys(conn) == KEYS_AFTER_0015
            assert (
                await citus_violations(
                    conn, "public", reference=REFERENCE_TABLES, local=LOCAL_TABLES
                )
                == []
            )
            leftovers = await conn.fetch(
                """SELECT c.relname FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
                   WHERE NOT i.indisvalid OR c.relname = ANY($1::text[])
                      OR c.relname LIKE '%ccnew%' OR c.relname LIKE '%ccold%'""",
                TEMPORARY_INDEXES,
            )
            assert [r["relname"] for r in leftovers] == []
        finally:
            await conn.close()
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            name = urlsplit(url).path.lstrip("/")
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# --- the check fails on schemas that break the rule ---------------------------------


@pytest.fixture
async def scratch(server_url: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    """A connection to a new, empty database with an owner table "user" (id text)."""
    url = await create_database(server_url, "chatstore_citus")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute('CREATE TABLE "user" (id text PRIMARY KEY, email text UNIQUE)')
        yield conn
    finally:
        await conn.close()
        admin = await asyncpg.connect(server_url)
        try:
            name = urlsplit(url).path.lstrip("/")
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


SCRATCH_REFERENCE = {"user": "the owner table"}
SCRATCH_LOCAL = {"settings": "a local table"}

GOOD_SCHEMA = """
CREATE TABLE settings (name text PRIMARY KEY, value text);
CREATE TABLE threads (
    id uuid NOT NULL,
    user_id text NOT NULL REFERENCES "user" (id) ON DELETE CASCADE,
    PRIMARY KEY (id, user_id)
);
CREATE TABLE posts (
    thread_id uuid NOT NULL,
    n bigint NOT NULL,
    user_id text NOT NULL,
    PRIMARY KEY (thread_id, n, user_id),
    FOREIGN KEY (thread_id, user_id) REFERENCES threads (id, user_id) ON DELETE CASCADE
);
"""


async def scratch_violations(conn: asyncpg.Connection[asyncpg.Record], ddl: str) -> list[str]:
    await conn.execute(GOOD_SCHEMA + ddl)
    return await citus_violations(conn, "public", reference=SCRATCH_REFERENCE, local=SCRATCH_LOCAL)


async def test_a_schema_that_follows_the_rules_passes(
    scratch: asyncpg.Connection[asyncpg.Record],
) -> None:
    assert await scratch_violations(scratch, "") == []


BAD_SCHEMAS = {
    "table_without_user_id": (
        "CREATE TABLE notes (id uuid PRIMARY KEY, body text)",
        ['"notes" has no user_id column'],
    ),
    "primary_key_without_user_id": (
        "CREATE TABLE notes (id uuid PRIMARY KEY, user_id text NOT NULL)",
        ['"notes": notes_pkey makes rows unique without user_id'],
    ),
    "unique_constraint_without_user_id": (
        """CREATE TABLE notes (id uuid, user_id text NOT NULL, slug text UNIQUE,
                               PRIMARY KEY (id, user_id))""",
        ['"notes": notes_slug_key makes rows unique without user_id'],
    ),
    "unique_index_without_user_id": (
        """CREATE TABLE notes (id uuid, user_id text NOT NULL, PRIMARY KEY (id, user_id));
           CREATE UNIQUE INDEX notes_lower_id ON notes (id) WHERE id IS NOT NULL""",
        ['"notes": notes_lower_id makes rows unique without user_id'],
    ),
    "foreign_key_between_user_tables_without_user_id": (
        """ALTER TABLE threads ADD CONSTRAINT threads_id_key UNIQUE (id);
           CREATE TABLE notes (id uuid, user_id text NOT NULL, thread_id uuid
                                   REFERENCES threads (id) ON DELETE CASCADE,
                               PRIMARY KEY (id, user_id))""",
        [
            '"threads": threads_id_key makes rows unique without user_id',
            '"notes": notes_thread_id_fkey (to "threads") does not pair user_id with user_id',
        ],
    ),
    "foreign_key_pairing_user_id_with_another_column": (
        """CREATE TABLE notes (id uuid, user_id text NOT NULL, author text NOT NULL,
                               thread_id uuid,
                               PRIMARY KEY (id, user_id),
                               FOREIGN KEY (thread_id, author) REFERENCES threads (id, user_id))""",
        ['"notes": notes_thread_id_author_fkey (to "threads") does not pair user_id'],
    ),
    "distributed_table_referencing_a_local_one": (
        """CREATE TABLE notes (id uuid, user_id text NOT NULL, setting text
                               REFERENCES settings (name), PRIMARY KEY (id, user_id))""",
        ['"notes": notes_setting_fkey (to "settings"): a distributed table cannot reference'],
    ),
    "nullable_user_id": (
        "CREATE TABLE notes (id uuid, user_id text, UNIQUE (id, user_id))",
        ['"notes".user_id may be NULL', '"notes" has no primary key'],
    ),
    "user_id_of_another_type": (
        "CREATE TABLE notes (id uuid, user_id uuid NOT NULL, PRIMARY KEY (id, user_id))",
        ['"notes".user_id is uuid, not text'],
    ),
    "listed_table_that_does_not_exist": (
        "ALTER TABLE settings RENAME TO preferences",
        ['"settings" is listed as reference or local but is not a table'],
    ),
}


@pytest.mark.parametrize(("ddl", "expected"), BAD_SCHEMAS.values(), ids=BAD_SCHEMAS.keys())
async def test_the_check_names_each_broken_rule(
    scratch: asyncpg.Connection[asyncpg.Record], ddl: str, expected: list[str]
) -> None:
    problems = await scratch_violations(scratch, ddl)
    for start in expected:
        assert any(p.startswith(start) for p in problems), (start, problems)
    assert len(problems) >= len(expected)
