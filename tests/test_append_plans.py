"""The plans an append runs on, in the two states a deployment's tables
pass through: nearly empty (a new deployment), and analyzed.

A prepared statement (asyncpg prepares each once per connection) gets five
custom plans, then switches to a generic plan if PostgreSQL prices it no
dearer, and keeps it until something invalidates it (an ANALYZE, DDL).

*Planned on empty tables.* That generic plan is made while ``messages`` is
nearly empty, so the planner prices a sequential scan of it below any index
probe; the table then grows for as long as autovacuum has not analyzed it.
An append planned that way once read the whole table on every call:
measured at ~10,000 rows, 4 ms an append, and falling with every message
(the benchmark's chatstore appends decayed from ~1,000 to ~200 a second
within 10,000 appends). So the plan is made on the empty, migrated schema,
the table is then filled without a fresh ANALYZE, and that same cached plan
is run (EXPLAIN ANALYZE EXECUTE, in a transaction rolled back): a plain
append must touch no row of ``messages`` but its own insert.

*Analyzed.* With real statistics of a conversation of 10,000 messages,
append_messages' generic plan was priced at ~890 against ~40 for its custom
plans (it counted leaving the active path of a whole conversation, and 100
tool calls a message), so PostgreSQL planned every append anew: about 0.5 ms
of server CPU each, the largest share of an append's (appends at c=1 went
from ~650 to ~1,400 a second once it stopped). The statement must switch to
its generic plan after the five custom ones.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from support.databases import create_database, drop_database

from chatstore import migrations
from chatstore.database import Database
from chatstore.messages import batch_params
from chatstore.models import MessageInput

APPEND = Database.queries["append_messages"]
USER = "plan-user"
FILLED = 5_000


@pytest.fixture
async def empty_database(server_url: str) -> AsyncIterator[str]:
    url = await create_database(server_url, "chatstore_append_plans")
    try:
        await asyncio.to_thread(migrations.apply, url)
        yield url
    finally:
        await drop_database(server_url, url)


def plain_append(conversation: uuid.UUID) -> dict[str, object]:
    # The arrays as the store builds them for one plain message.
    return {
        **batch_params([MessageInput(role="user", content="one more message")]),
        "parent_seq": None,
        "conversation_id": conversation,
        "user_id": USER,
        "expected_last_seq": None,
        "search_config": "simple",
    }


async def insert_user(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    await conn.execute(
        'INSERT INTO "user" (id, name, email, "emailVerified", "createdAt", "updatedAt")'
        " VALUES ($1, $1, $1 || '@plans.example', true, now(), now())",
        USER,
    )


async def insert_conversations(
    conn: asyncpg.Connection[asyncpg.Record], count: int
) -> list[uuid.UUID]:
    """``count`` empty conversations of USER, their ids in order."""
    rows = await conn.fetch(
        "INSERT INTO conversations (user_id)"
        " SELECT $1 FROM generate_series(1, $2::integer) RETURNING id",
        USER,
        count,
    )
    return [row["id"] for row in rows]


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in node.get("Plans", []):
        found += nodes(child)
    return found


async def test_a_plain_append_planned_on_empty_tables_reads_no_messages(
    empty_database: str,
) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        # No autovacuum ANALYZE may replan it while the test runs.
        await conn.execute("ALTER TABLE messages SET (autovacuum_enabled = false)")
        await insert_user(conn)
        (conversation,) = await insert_conversations(conn, 1)
        statement = await conn.prepare(APPEND.sql)
        literals = []
        for parameter, value in zip(
            statement.get_parameters(), APPEND.args(plain_append(conversation)), strict=True
        ):
            type_name = await conn.fetchval("SELECT format_type($1, NULL)", parameter.oid)
            text = await conn.fetchval(f"SELECT quote_nullable(($1::{type_name})::text)", value)
            literals.append(f"{text}::{type_name}")
        execute = f"EXECUTE chatstore_append({', '.join(literals)})"

        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE chatstore_append AS {APPEND.sql}")
        await conn.execute(f"EXPLAIN (FORMAT JSON) {execute}")  # planned now, tables empty

        await conn.execute(
            "INSERT INTO messages (conversation_id, seq, user_id, role, content)"
            " SELECT $1, s, $2, 'user', 'message ' || s FROM generate_series(1, $3::bigint) AS s",
            conversation,
            USER,
            FILLED,
        )
        await conn.execute(
            "UPDATE conversations SET last_seq = $2::bigint, tail_seq = $2::bigint,"
            " message_count = $2::integer"
            " WHERE id = $1",
            conversation,
            FILLED,
        )

        transaction = conn.transaction()
        await transaction.start()
        try:
            text = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {execute}")
        finally:
            await transaction.rollback()
    finally:
        await conn.close()

    plan = nodes(json.loads(text)[0]["Plan"])
    read = {
        (node["Node Type"], node.get("Index Name")): node.get("Actual Rows", 0)
        + node.get("Rows Removed by Filter", 0)
        for node in plan
        if node.get("Relation Name") == "messages" and "Scan" in node["Node Type"]
    }
    assert sum(read.values()) == 0, read
    # The append itself did happen in that plan (one row inserted).
    inserted = [n for n in plan if n["Node Type"] == "ModifyTable" and n["Operation"] == "Insert"]
    assert any(n.get("Relation Name") == "messages" and n["Actual Rows"] == 1 for n in inserted)


async def test_an_append_is_planned_once_per_connection_not_per_call(
    empty_database: str,
) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        await insert_user(conn)
        # The benchmark's shape: a few conversations, one of them long.
        conversations = await insert_conversations(conn, 20)
        long = conversations[0]
        await conn.execute(
            "INSERT INTO messages (conversation_id, seq, user_id, role, content, parent_seq)"
            " SELECT $1, s, $2, 'user', 'message ' || s, nullif(s - 1, 0)"
            " FROM generate_series(1, $3::bigint) AS s",
            long,
            USER,
            2 * FILLED,
        )
        await conn.execute(
            "UPDATE conversations SET last_seq = $2::bigint, tail_seq = $2::bigint,"
            " message_count = $2::integer WHERE id = $1",
            long,
            2 * FILLED,
        )
        await conn.execute("ANALYZE")

        transaction = conn.transaction()
        await transaction.start()
        try:
            statement = await conn.prepare(APPEND.sql)
            for n in range(12):
                values = {**plain_append(conversations[1 + n % 19]), "contents": [f"call {n}"]}
                assert await statement.fetch(*APPEND.args(values))
            counts = await conn.fetchrow(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement = $1",
                APPEND.sql,
            )
        finally:
            await transaction.rollback()
    finally:
        await conn.close()
    assert counts is not None
    assert (counts["custom_plans"], counts["generic_plans"]) == (5, 7)


@pytest.mark.parametrize("conversations", [1, 20, 2_000])
async def test_an_append_updates_its_conversation_by_key_not_by_a_join(
    empty_database: str, conversations: int
) -> None:
    # A new deployment (1 conversation, never analyzed), the benchmark's
    # shape (20, analyzed), and a bigger one (2,000, analyzed). Joined on
    # the locked row's columns, the update of the conversation was planned
    # on a small table as a hash join: a hash of the whole table built on
    # every append, whose work grows with the table's dead row versions
    # (BENCHMARKS.md: 8-25 µs an append at c=1 on the benchmark's 66
    # conversations, each variant on a database of its own).
    conn = await asyncpg.connect(empty_database)
    try:
        await insert_user(conn)
        conversation, *_ = await insert_conversations(conn, conversations)
        if conversations > 1:
            await conn.execute("ANALYZE")
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            statement = await conn.prepare(f"EXPLAIN (ANALYZE, FORMAT JSON) {APPEND.sql}")
            text = await statement.fetchval(*APPEND.args(plain_append(conversation)))
        finally:
            await transaction.rollback()
    finally:
        await conn.close()

    plan = nodes(json.loads(text)[0]["Plan"])
    assert not [n["Node Type"] for n in plan if "Hash" in n["Node Type"]]
    updated = [n for n in plan if n["Node Type"] == "ModifyTable" and n["Operation"] == "Update"]
    assert [(n["Relation Name"], n["Actual Rows"]) for n in updated] == [("conversations", 1)]
    inserted = [n for n in plan if n["Node Type"] == "ModifyTable" and n["Operation"] == "Insert"]
    assert any(n.get("Relation Name") == "messages" for n in inserted)


TOGETHER = Database.queries["append_messages_together"]


def gathered_appends(conversations: list[uuid.UUID], text: str) -> dict[str, object]:
    # The arrays as chatstore/appends.py builds them: one plain message each.
    each = batch_params([MessageInput(role="user", content=text)])
    count = len(conversations)
    return {
        "conversation_ids": conversations,
        "user_ids": [USER] * count,
        "expected_last_seqs": [None] * count,
        "message_counts": [1] * count,
        "appends": list(range(1, count + 1)),
        "positions": [1] * count,
        "search_config": "simple",
        **{column: values * count for column, values in each.items()},
    }


@pytest.mark.parametrize("conversations", [20, 2_000])
async def test_gathered_appends_are_planned_once_and_reach_conversations_by_key(
    empty_database: str, conversations: int
) -> None:
    # The benchmark's shape (20 conversations) and a bigger one, analyzed:
    # the gathered statement is planned generically after its five custom
    # plans, like append_messages, and reads no message. On the bigger
    # table it reaches each conversation through the primary key; on the
    # small one PostgreSQL hashes the table instead (cheaper than 8 index
    # probes, it judges), once for the whole statement: never a scan for
    # each append.
    conn = await asyncpg.connect(empty_database)
    try:
        await insert_user(conn)
        ids = await insert_conversations(conn, conversations)
        await conn.execute("ANALYZE")
        transaction = conn.transaction()
        await transaction.start()
        try:
            statement = await conn.prepare(TOGETHER.sql)
            for n in range(12):
                some = ids[n : n + 2 + n % 7]
                rows = await statement.fetch(*TOGETHER.args(gathered_appends(some, f"call {n}")))
                assert [row["append"] for row in rows] == list(range(1, len(some) + 1))
            counts = await conn.fetchrow(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement = $1",
                TOGETHER.sql,
            )
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            explain = await conn.prepare(f"EXPLAIN (ANALYZE, FORMAT JSON) {TOGETHER.sql}")
            text = await explain.fetchval(*TOGETHER.args(gathered_appends(ids[-8:], "planned")))
        finally:
            await transaction.rollback()
    finally:
        await conn.close()
    assert counts is not None
    assert (counts["custom_plans"], counts["generic_plans"]) == (5, 7)

    plan = nodes(json.loads(text)[0]["Plan"])
    scans = [
        (n["Node Type"], n.get("Index Name"), n.get("Actual Loops"))
        for n in plan
        if n.get("Relation Name") == "conversations" and "Scan" in n["Node Type"]
    ]
    if conversations > 20:
        assert scans == [("Index Scan", "conversations_pkey", 8)] * 2, scans
    else:
        assert scans and all(loops == 1 for _, _, loops in scans), scans
    assert all(n.get("Relation Name") != "messages" for n in plan if "Scan" in n["Node Type"])
    updated = [n for n in plan if n["Node Type"] == "ModifyTable" and n["Operation"] == "Update"]
    assert [(n["Relation Name"], n["Actual Rows"]) for n in updated] == [("conversations", 8)]
