"""The migrations: apply, roll back, share a better-auth database, and hold the data rules.

Each test that migrates works on a database of its own (``create_database``),
dropped afterwards; the constraint tests use the suite's shared migrated
database with fresh users. The constraint tests insert with raw SQL over a
plain asyncpg connection (no pool codecs, no pydantic models), so what they
prove is what the schema itself refuses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from support.databases import create_database
from support.users import make_user

from chatstore import migrations
from chatstore.auth import new_id, new_token
from chatstore.config import Settings
from chatstore.errors import Unavailable
from chatstore.messages import batch_params
from chatstore.models import MessageInput
from chatstore.resources import migrations_dir
from chatstore.store import ChatStore

ROOT = Path(__file__).resolve().parent.parent
# Every migration in the folder, in order: later migrations join the round trips.
MIGRATION_IDS = sorted(
    p.name.removesuffix(".sql")
    for p in migrations_dir().glob("*.sql")
    if not p.name.endswith(".rollback.sql")
)
BETTER_AUTH_TABLES = {"user", "session", "account", "verification"}
CHAT_TABLES = {"conversations", "messages", "message_tool_calls"}
CHATSTORE_TABLES = CHAT_TABLES | BETTER_AUTH_TABLES | {"chatstore_owned_tables"}
# yoyo's own bookkeeping (applied migrations, log, lock, schema version).
YOYO_TABLES = {"_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock"}


async def connect(url: str) -> asyncpg.Connection[asyncpg.Record]:
    return await asyncpg.connect(url)


async def drop_database(server_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def empty_database(server_url: str) -> AsyncIterator[str]:
    """A brand-new database, not migrated; dropped after the test."""
    url = await create_database(server_url, "chatstore_migr")
    try:
        yield url
    finally:
        await drop_database(server_url, url)


async def apply(url: str) -> list[str]:
    return await asyncio.to_thread(migrations.apply, url)


async def rollback_all(url: str) -> list[str]:
    return await asyncio.to_thread(migrations.rollback, url)


async def status(url: str) -> dict[str, bool]:
    states = await asyncio.to_thread(migrations.status, url)
    return {state.id: state.applied for state in states}


async def pending(url: str) -> list[str]:
    return await asyncio.to_thread(migrations.pending, url)


async def tables(url: str) -> set[str]:
    """The ordinary tables of the public schema, yoyo's bookkeeping left out."""
    conn = await connect(url)
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
    finally:
        await conn.close()
    return {row["tablename"] for row in rows} - YOYO_TABLES


async def functions(url: str) -> set[str]:
    """Functions of the public schema that no extension brought."""
    conn = await connect(url)
    try:
        rows = await conn.fetch(
            """
            SELECT p.proname
            FROM pg_proc AS p
            WHERE p.pronamespace = 'public'::regnamespace
              AND NOT EXISTS (
                  SELECT 1 FROM pg_depend AS d
                  WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
              )
            """
        )
    finally:
        await conn.close()
    return {row["proname"] for row in rows}


# --- snapshots of a table's shape, to compare before and after -----------------

COLUMNS_SQL = """
SELECT table_name, ordinal_position, column_name, data_type, is_nullable, column_default
FROM information_schema.columns
WHERE table_schema = 'public' AND table_name = ANY ($1::text[])
ORDER BY table_name, ordinal_position
"""

INDEXES_SQL = """
SELECT tablename, indexname, indexdef
FROM pg_indexes
WHERE schemaname = 'public' AND tablename = ANY ($1::text[])
ORDER BY tablename, indexname
"""

CONSTRAINTS_SQL = """
SELECT conrelid::regclass::text AS table_name, conname, pg_get_constraintdef(oid) AS definition
FROM pg_constraint
WHERE conrelid IN (SELECT to_regclass(quote_ident(name)) FROM unnest($1::text[]) AS name)
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class Shape:
    columns: list[tuple[Any, ...]]
    indexes: list[tuple[Any, ...]]
    constraints: list[tuple[Any, ...]]


async def shape(conn: asyncpg.Connection[asyncpg.Record], names: set[str]) -> Shape:
    args = sorted(names)
    return Shape(
        columns=[tuple(r) for r in await conn.fetch(COLUMNS_SQL, args)],
        indexes=[tuple(r) for r in await conn.fetch(INDEXES_SQL, args)],
        constraints=[tuple(r) for r in await conn.fetch(CONSTRAINTS_SQL, args)],
    )


# --- apply and roll back ---------------------------------------------------------


async def test_apply_on_empty_database_creates_chat_and_better_auth_tables(
    empty_database: str,
) -> None:
    assert MIGRATION_IDS[:2] == ["0001.better-auth", "0002.conversations-messages"]
    assert await apply(empty_database) == MIGRATION_IDS

    assert await tables(empty_database) >= CHATSTORE_TABLES
    assert await status(empty_database) == dict.fromkeys(MIGRATION_IDS, True)
    assert await pending(empty_database) == []
    conn = await connect(empty_database)
    try:
        owned = {r["name"] for r in await conn.fetch("SELECT name FROM chatstore_owned_tables")}
    finally:
        await conn.close()
    assert owned == BETTER_AUTH_TABLES


async def test_apply_twice_is_a_no_op(empty_database: str) -> None:
    await apply(empty_database)
    assert await apply(empty_database) == []
    assert await pending(empty_database) == []


async def test_apply_through_a_migration_stops_there_and_names_one_not_pending(
    empty_database: str,
) -> None:
    first, second = MIGRATION_IDS[:2]
    assert await asyncio.to_thread(migrations.apply, empty_database, first) == [first]
    assert await pending(empty_database) == MIGRATION_IDS[1:]
    with pytest.raises(ValueError, match=f"migration '{first}' is not pending"):
        await asyncio.to_thread(migrations.apply, empty_database, first)
    assert await asyncio.to_thread(migrations.apply, empty_database, second) == [second]


async def test_apply_creates_an_index_for_every_access_path(empty_database: str) -> None:
    await apply(empty_database)
    conn = await connect(empty_database)
    try:
        names = {
            r["indexname"]
            for r in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
            )
        }
    finally:
        await conn.close()
    assert {
        "conversations_pkey",
        "conversations_user_archived_activity_idx",
        "conversations_activity_idx",
        "messages_pkey",
        "message_tool_calls_pkey",
        "message_tool_calls_message_idx",
        "session_userId_idx",
        "account_userId_idx",
        "verification_identifier_idx",
    } <= names


async def test_every_foreign_key_cascades_and_has_an_index_on_its_leading_column(
    empty_database: str,
) -> None:
    await apply(empty_database)
    conn = await connect(empty_database)
    try:
        rows = await conn.fetch(
            """
            SELECT con.conname,
                   con.confdeltype::text AS confdeltype,
                   EXISTS (
                       SELECT 1 FROM pg_index AS i
                       WHERE i.indrelid = con.conrelid AND i.indkey[0] = con.conkey[1]
                   ) AS indexed
            FROM pg_constraint AS con
            WHERE con.contype = 'f' AND con.connamespace = 'public'::regnamespace
            ORDER BY con.conname
            """
        )
    finally:
        await conn.close()
    assert {r["conname"] for r in rows} >= {
        "account_userId_fkey",
        "conversations_user_id_fkey",
        "message_tool_calls_message_fkey",
        "messages_conversation_fkey",
        "session_userId_fkey",
    }
    assert [r["conname"] for r in rows if r["confdeltype"] != "c"] == []  # c = CASCADE
    assert [r["conname"] for r in rows if not r["indexed"]] == []


async def test_apply_rollback_all_apply_round_trip(empty_database: str, settings: Settings) -> None:
    assert await apply(empty_database) == MIGRATION_IDS
    created_tables = await tables(empty_database)
    created_functions = await functions(empty_database)

    assert await rollback_all(empty_database) == MIGRATION_IDS[::-1]
    # Nothing of chatstore's is left, better-auth tables made by 0001 included.
    assert await tables(empty_database) == set()
    assert await functions(empty_database) == set()
    assert await status(empty_database) == dict.fromkeys(MIGRATION_IDS, False)
    assert await pending(empty_database) == MIGRATION_IDS

    assert await apply(empty_database) == MIGRATION_IDS
    assert await pending(empty_database) == []
    assert await tables(empty_database) == created_tables
    assert await functions(empty_database) == created_functions
    # The re-created schema works end to end.
    async with ChatStore(empty_database, settings=settings) as store:
        user_id = (await make_user(store)).user_id
        conversation = await store.create_conversation(user_id)
        await store.append_message(user_id, conversation.id, {"role": "user", "content": "hi"})
        page = await store.list_messages(user_id, conversation.id)
        assert [m.content for m in page.data] == ["hi"]


async def test_rollback_down_to_0001_keeps_the_better_auth_tables(empty_database: str) -> None:
    await apply(empty_database)
    after_0001 = MIGRATION_IDS[1:]
    rolled_back = await asyncio.to_thread(migrations.rollback, empty_database, len(after_0001))
    assert rolled_back == after_0001[::-1]
    assert await tables(empty_database) == BETTER_AUTH_TABLES | {"chatstore_owned_tables"}
    assert await pending(empty_database) == after_0001


# --- sharing a database with a better-auth server ------------------------------------

# better-auth's tables as an older release (or its Drizzle/Prisma adapters) made
# them: `timestamp` without time zone, foreign keys without ON DELETE CASCADE,
# and columns its plugins add ("user".role from the admin plugin,
# "session"."impersonatedBy").
PREEXISTING_BETTER_AUTH = """
CREATE TABLE "user" (
    "id"            text      NOT NULL PRIMARY KEY,
    "name"          text      NOT NULL,
    "email"         text      NOT NULL UNIQUE,
    "emailVerified" boolean   NOT NULL,
    "image"         text,
    "createdAt"     timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt"     timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "role"          text
);
CREATE TABLE "session" (
    "id"             text      NOT NULL PRIMARY KEY,
    "expiresAt"      timestamp NOT NULL,
    "token"          text      NOT NULL UNIQUE,
    "createdAt"      timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt"      timestamp NOT NULL,
    "ipAddress"      text,
    "userAgent"      text,
    "userId"         text      NOT NULL REFERENCES "user" ("id"),
    "impersonatedBy" text
);
CREATE TABLE "account" (
    "id"                    text      NOT NULL PRIMARY KEY,
    "accountId"             text      NOT NULL,
    "providerId"            text      NOT NULL,
    "userId"                text      NOT NULL REFERENCES "user" ("id"),
    "accessToken"           text,
    "refreshToken"          text,
    "idToken"               text,
    "accessTokenExpiresAt"  timestamp,
    "refreshTokenExpiresAt" timestamp,
    "scope"                 text,
    "password"              text,
    "createdAt"             timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt"             timestamp NOT NULL
);
CREATE TABLE "verification" (
    "id"         text      NOT NULL PRIMARY KEY,
    "identifier" text      NOT NULL,
    "value"      text      NOT NULL,
    "expiresAt"  timestamp NOT NULL,
    "createdAt"  timestamp DEFAULT CURRENT_TIMESTAMP,
    "updatedAt"  timestamp DEFAULT CURRENT_TIMESTAMP
);
"""


@dataclass
class BetterAuthData:
    user_id: str
    token: str
    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)


async def seed_better_auth(conn: asyncpg.Connection[asyncpg.Record]) -> BetterAuthData:
    """One user with an admin role and one live session, stored as better-auth does."""
    data = BetterAuthData(user_id=new_id(), token=new_token())
    # better-auth writes UTC wall-clock time into `timestamp` columns.
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    await conn.execute(
        """INSERT INTO "user" (id, name, email, "emailVerified", "createdAt", "updatedAt", role)
           VALUES ($1, 'Ada', 'ada@example.test', true, $2, $2, 'admin')""",
        data.user_id,
        now,
    )
    await conn.execute(
        """INSERT INTO "session" (id, "expiresAt", token, "createdAt", "updatedAt", "userId")
           VALUES ($1, $2, $3, $4, $4, $5)""",
        new_id(),
        now + timedelta(days=7),
        data.token,
        now,
        data.user_id,
    )
    return data


async def better_auth_rows(
    conn: asyncpg.Connection[asyncpg.Record], names: set[str]
) -> dict[str, list[tuple[Any, ...]]]:
    return {
        name: [tuple(r) for r in await conn.fetch(f'SELECT * FROM "{name}" ORDER BY id')]
        for name in sorted(names)
    }


async def test_apply_leaves_preexisting_better_auth_tables_untouched(
    empty_database: str, settings: Settings
) -> None:
    conn = await connect(empty_database)
    try:
        await conn.execute(PREEXISTING_BETTER_AUTH)
        seeded = await seed_better_auth(conn)
        before = await shape(conn, BETTER_AUTH_TABLES)
        rows_before = await better_auth_rows(conn, BETTER_AUTH_TABLES)
    finally:
        await conn.close()
    assert ("user", 8, "role", "text", "YES", None) in before.columns  # the probe is real

    assert await apply(empty_database) == MIGRATION_IDS

    conn = await connect(empty_database)
    try:
        after = await shape(conn, BETTER_AUTH_TABLES)
        assert after == before  # same columns, types, defaults, indexes, constraints
        assert await better_auth_rows(conn, BETTER_AUTH_TABLES) == rows_before
        assert await conn.fetchval("SELECT count(*) FROM chatstore_owned_tables") == 0
    finally:
        await conn.close()

    # chatstore works with the better-auth user: its session authenticates
    # ("expiresAt" is a `timestamp` here) and it owns conversations and messages.
    async with ChatStore(empty_database, settings=settings) as store:
        session = await store.queries.one(store.pool, "session_user", token=seeded.token)
        assert session is not None
        assert session["user_id"] == seeded.user_id
        conversation = await store.create_conversation(seeded.user_id, title="shared db")
        await store.append_message(
            seeded.user_id, conversation.id, {"role": "user", "content": "hi"}
        )
        page = await store.list_messages(seeded.user_id, conversation.id)
        assert [m.content for m in page.data] == ["hi"]
        listed = await store.list_conversations(seeded.user_id)
        assert [c.id for c in listed.data] == [conversation.id]

    assert await rollback_all(empty_database) == MIGRATION_IDS[::-1]

    # Rolling chatstore back leaves the better-auth server's tables and rows alone.
    assert await tables(empty_database) == BETTER_AUTH_TABLES
    assert await functions(empty_database) == set()
    conn = await connect(empty_database)
    try:
        assert await shape(conn, BETTER_AUTH_TABLES) == before
        assert await better_auth_rows(conn, BETTER_AUTH_TABLES) == rows_before
    finally:
        await conn.close()


async def test_rollback_drops_only_the_better_auth_tables_chatstore_created(
    empty_database: str,
) -> None:
    # A database holding only "user" and "session": 0001 adds "account" and
    # "verification" (referencing the existing "user"), and only those go back.
    only_user_and_session = PREEXISTING_BETTER_AUTH.split('CREATE TABLE "account"')[0]
    conn = await connect(empty_database)
    try:
        await conn.execute(only_user_and_session)
        await seed_better_auth(conn)
        before = await shape(conn, {"user", "session"})
        rows_before = await better_auth_rows(conn, {"user", "session"})
    finally:
        await conn.close()

    await apply(empty_database)
    conn = await connect(empty_database)
    try:
        owned = {r["name"] for r in await conn.fetch("SELECT name FROM chatstore_owned_tables")}
        assert owned == {"account", "verification"}
        assert await shape(conn, {"user", "session"}) == before
    finally:
        await conn.close()

    await rollback_all(empty_database)
    assert await tables(empty_database) == {"user", "session"}
    conn = await connect(empty_database)
    try:
        assert await shape(conn, {"user", "session"}) == before
        assert await better_auth_rows(conn, {"user", "session"}) == rows_before
    finally:
        await conn.close()


# --- the plain yoyo CLI ---------------------------------------------------------------


async def test_plain_yoyo_cli_applies_the_migrations_folder(empty_database: str) -> None:
    yoyo = Path(sys.executable).parent / "yoyo"
    command = [
        str(yoyo),
        "apply",
        "--batch",
        "--no-config-file",
        "--database",
        migrations.yoyo_url(empty_database),
        "migrations",
    ]
    done = await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert await pending(empty_database) == []
    assert await tables(empty_database) >= CHATSTORE_TABLES
    # chatstore's own runner sees the CLI's work as done.
    assert await apply(empty_database) == []


def test_yoyo_url_uses_the_psycopg3_scheme() -> None:
    assert migrations.yoyo_url("postgresql://u:p@h:5/db?sslmode=require") == (
        "postgresql+psycopg://u:p@h:5/db?sslmode=require"
    )
    assert migrations.yoyo_url("postgres://h/db") == "postgresql+psycopg://h/db"
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        migrations.yoyo_url("mysql://h/db")


# --- data rules held by the schema itself ------------------------------------------------


@pytest.fixture
async def raw(database: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    """A plain connection: no codecs, no models, just SQL."""
    conn = await connect(database)
    try:
        yield conn
    finally:
        await conn.close()


async def new_conversation(conn: asyncpg.Connection[asyncpg.Record], user_id: str) -> uuid.UUID:
    conversation: uuid.UUID = await conn.fetchval(
        "INSERT INTO conversations (user_id) VALUES ($1) RETURNING id", user_id
    )
    return conversation


# search_vector (migrations/0004) is NOT NULL without a default: a raw insert
# computes it as append_messages does.
INSERT_MESSAGE = """
INSERT INTO messages
    (conversation_id, seq, user_id, role, content, name, tool_calls, tool_call_id, metadata,
     search_vector)
VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, coalesce($9::text::jsonb, '{}'),
        to_tsvector('simple', coalesce($5, '')))
"""
TOOL_CALLS = '[{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]'


@dataclass(frozen=True)
class BadMessage:
    fields: Mapping[str, object]
    constraint: str
    error: type[asyncpg.PostgresError] = asyncpg.CheckViolationError


BAD_MESSAGES = {
    "role outside the set": BadMessage({"role": "robot"}, "messages_role_known"),
    "tool message without tool_call_id": BadMessage(
        {"role": "tool"}, "messages_tool_call_id_only_and_always_on_tool"
    ),
    "tool_call_id on a user message": BadMessage(
        {"tool_call_id": "call_1"}, "messages_tool_call_id_only_and_always_on_tool"
    ),
    "tool_calls on a user message": BadMessage(
        {"tool_calls": TOOL_CALLS}, "messages_tool_calls_only_on_assistant"
    ),
    "tool_calls an empty array": BadMessage(
        {"role": "assistant", "tool_calls": "[]"}, "messages_tool_calls_non_empty_array"
    ),
    "tool_calls an object": BadMessage(
        {"role": "assistant", "tool_calls": '{"id": "call_1"}'},
        "messages_tool_calls_non_empty_array",
    ),
    "tool_calls a string": BadMessage(
        {"role": "assistant", "tool_calls": '"call_1"'}, "messages_tool_calls_non_empty_array"
    ),
    "content null without tool_calls": BadMessage(
        {"content": None}, "messages_content_null_only_with_tool_calls"
    ),
    "assistant content null without tool_calls": BadMessage(
        {"role": "assistant", "content": None}, "messages_content_null_only_with_tool_calls"
    ),
    "metadata a JSON array": BadMessage({"metadata": '["a"]'}, "messages_metadata_is_object"),
    "metadata JSON null": BadMessage({"metadata": "null"}, "messages_metadata_is_object"),
    "name with a space": BadMessage({"name": "Ada Lovelace"}, "messages_name_format"),
    "name empty": BadMessage({"name": ""}, "messages_name_format"),
    "name of 65 chars": BadMessage({"name": "n" * 65}, "messages_name_format"),
    "seq zero": BadMessage({"seq": 0}, "messages_seq_positive"),
    "user_id other than the conversation's": BadMessage(
        {"user_id": "OTHER"}, "messages_conversation_fkey", asyncpg.ForeignKeyViolationError
    ),
    "unknown conversation": BadMessage(
        {"conversation_id": uuid.UUID(int=0)},
        "messages_conversation_fkey",
        asyncpg.ForeignKeyViolationError,
    ),
}


async def insert_message(
    conn: asyncpg.Connection[asyncpg.Record],
    conversation: uuid.UUID,
    user_id: str,
    fields: Mapping[str, object],
) -> None:
    """A valid user message at seq 1, with ``fields`` replacing columns."""
    row: dict[str, object] = {
        "conversation_id": conversation,
        "seq": 1,
        "user_id": user_id,
        "role": "user",
        "content": "hello",
        "name": None,
        "tool_calls": None,
        "tool_call_id": None,
        "metadata": None,
    }
    unknown = set(fields) - set(row)
    assert not unknown, unknown
    row.update(fields)
    await conn.execute(INSERT_MESSAGE, *row.values())


async def test_valid_edge_messages_are_accepted(
    raw: asyncpg.Connection[asyncpg.Record], user_id: str
) -> None:
    # The control group of the refusals below: at the edge of every rule.
    conversation = await new_conversation(raw, user_id)
    accepted: list[dict[str, object]] = [
        {"seq": 1, "name": "n" * 64, "metadata": '{"k": "v"}'},
        {"seq": 2, "role": "assistant", "content": None, "tool_calls": TOOL_CALLS},
        {"seq": 3, "role": "tool", "tool_call_id": "call_1", "name": "A-z_0-9"},
        {"seq": 4, "role": "system", "content": ""},
        {"seq": 5, "role": "developer"},
        {"seq": 6, "role": "assistant", "content": "text and calls", "tool_calls": TOOL_CALLS},
    ]
    for fields in accepted:
        await insert_message(raw, conversation, user_id, fields)
    assert await raw.fetchval(
        "SELECT count(*) FROM messages WHERE conversation_id = $1", conversation
    ) == len(accepted)


@pytest.mark.parametrize("case", BAD_MESSAGES.values(), ids=BAD_MESSAGES.keys())
async def test_schema_refuses_invalid_message(
    raw: asyncpg.Connection[asyncpg.Record], user_id: str, other_user_id: str, case: BadMessage
) -> None:
    conversation = await new_conversation(raw, user_id)
    # "OTHER" stands for a real, different user: the composite key is what refuses.
    fields = {k: other_user_id if v == "OTHER" else v for k, v in case.fields.items()}
    with pytest.raises(case.error) as refused:
        await insert_message(raw, conversation, user_id, fields)
    assert refused.value.constraint_name == case.constraint
    assert (
        await raw.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1", conversation)
        == 0
    )


# A domain checks a value when it is written into its column (migrations/0017):
# an update that breaks a rule is refused as an insert is, by the same name.
BAD_UPDATES = {
    "message role outside the set": ("messages", "role = 'robot'", "messages_role_known"),
    "message name with a space": ("messages", "name = 'Ada Lovelace'", "messages_name_format"),
    "message metadata a JSON array": (
        "messages",
        "metadata = '[]'",
        "messages_metadata_is_object",
    ),
    "message tool_calls an empty array": (
        "messages",
        "role = 'assistant', tool_calls = '[]'",
        "messages_tool_calls_non_empty_array",
    ),
    "message item a JSON array": ("messages", "item = '[]'", "messages_item_is_object"),
    "message role of a tool answer without its call id": (
        "messages",
        "role = 'tool'",
        "messages_tool_call_id_only_and_always_on_tool",
    ),
    "conversation title of 201 chars": (
        "conversations",
        "title = repeat('t', 201)",
        "conversations_title_length",
    ),
    "conversation metadata a JSON array": (
        "conversations",
        "metadata = '[]'",
        "conversations_metadata_is_object",
    ),
}


@pytest.mark.parametrize("case", BAD_UPDATES.values(), ids=BAD_UPDATES.keys())
async def test_schema_refuses_an_update_that_breaks_a_rule(
    raw: asyncpg.Connection[asyncpg.Record], user_id: str, case: tuple[str, str, str]
) -> None:
    table, assignment, constraint = case
    conversation = await new_conversation(raw, user_id)
    await insert_message(raw, conversation, user_id, {})
    key = "conversation_id" if table == "messages" else "id"
    before = await raw.fetchrow(f"SELECT * FROM {table} WHERE {key} = $1", conversation)
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await raw.execute(f"UPDATE {table} SET {assignment} WHERE {key} = $1", conversation)
    assert refused.value.constraint_name == constraint
    assert await raw.fetchrow(f"SELECT * FROM {table} WHERE {key} = $1", conversation) == before


@dataclass(frozen=True)
class BadConversation:
    sql: str
    args: tuple[object, ...]
    constraint: str
    error: type[asyncpg.PostgresError] = asyncpg.CheckViolationError


BAD_CONVERSATIONS = {
    "title of 201 chars": BadConversation(
        "INSERT INTO conversations (user_id, title) VALUES ($1, $2)",
        ("t" * 201,),
        "conversations_title_length",
    ),
    "metadata a JSON array": BadConversation(
        "INSERT INTO conversations (user_id, metadata) VALUES ($1, $2::text::jsonb)",
        ("[]",),
        "conversations_metadata_is_object",
    ),
    "message_count above last_seq": BadConversation(
        "INSERT INTO conversations (user_id, last_seq, message_count) VALUES ($1, $2, $3)",
        (1, 2),
        "conversations_counters_non_negative",
    ),
    "negative last_seq": BadConversation(
        "INSERT INTO conversations (user_id, last_seq) VALUES ($1, $2)",
        (-1,),
        "conversations_counters_non_negative",
    ),
    "unknown user": BadConversation(
        "INSERT INTO conversations (user_id) VALUES ($1 || '-nobody')",
        (),
        "conversations_user_id_fkey",
        asyncpg.ForeignKeyViolationError,
    ),
}


@pytest.mark.parametrize("case", BAD_CONVERSATIONS.values(), ids=BAD_CONVERSATIONS.keys())
async def test_schema_refuses_invalid_conversation(
    raw: asyncpg.Connection[asyncpg.Record], user_id: str, case: BadConversation
) -> None:
    with pytest.raises(case.error) as refused:
        await raw.execute(case.sql, user_id, *case.args)
    assert refused.value.constraint_name == case.constraint
    assert await raw.fetchval("SELECT count(*) FROM conversations WHERE user_id = $1", user_id) == 0


async def test_title_of_200_chars_is_accepted(
    raw: asyncpg.Connection[asyncpg.Record], user_id: str
) -> None:
    title = await raw.fetchval(
        "INSERT INTO conversations (user_id, title) VALUES ($1, $2) RETURNING title",
        user_id,
        "t" * 200,
    )
    assert title == "t" * 200


async def test_tool_call_row_needs_its_message(
    raw: asyncpg.Connection[asyncpg.Record], user_id: str
) -> None:
    conversation = await new_conversation(raw, user_id)
    with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
        await raw.execute(
            """INSERT INTO message_tool_calls (conversation_id, call_id, seq, user_id)
               VALUES ($1, 'c', 1, $2)""",
            conversation,
            user_id,
        )
    assert refused.value.constraint_name == "message_tool_calls_message_fkey"


async def test_deleting_a_user_cascades_to_conversations_messages_and_tool_calls(
    raw: asyncpg.Connection[asyncpg.Record], user_id: str
) -> None:
    conversation = await new_conversation(raw, user_id)
    await insert_message(
        raw, conversation, user_id, {"role": "assistant", "content": None, "tool_calls": TOOL_CALLS}
    )
    await raw.execute(
        """INSERT INTO message_tool_calls (conversation_id, call_id, seq, user_id)
           VALUES ($1, 'call_1', 1, $2)""",
        conversation,
        user_id,
    )
    await raw.execute('DELETE FROM "user" WHERE id = $1', user_id)
    counts = await raw.fetchrow(
        """SELECT (SELECT count(*) FROM conversations WHERE id = $1) AS conversations,
                  (SELECT count(*) FROM messages WHERE conversation_id = $1) AS messages,
                  (SELECT count(*) FROM message_tool_calls WHERE conversation_id = $1) AS calls""",
        conversation,
    )
    assert counts is not None
    assert dict(counts) == {"conversations": 0, "messages": 0, "calls": 0}


# -- 0012.branches -----------------------------------------------------------------

BRANCHES = "0012.branches"


def before_branches() -> int:
    """How many of the newest migrations to roll back to be before 0012."""
    return len(MIGRATION_IDS) - MIGRATION_IDS.index(BRANCHES)


async def test_existing_conversations_migrate_to_one_linear_branch(
    empty_database: str, settings: Settings
) -> None:
    await asyncio.to_thread(migrations.apply, empty_database)
    await asyncio.to_thread(migrations.rollback, empty_database, before_branches())
    conn = await asyncpg.connect(empty_database)
    try:
        user_id = new_id()
        await conn.execute(
            """INSERT INTO "user" (id, name, email, "emailVerified", "createdAt", "updatedAt")
               VALUES ($1, 'U', $1 || '@example.test', true, now(), now())""",
            user_id,
        )
        conversation: uuid.UUID = await conn.fetchval(
            """INSERT INTO conversations (user_id, last_seq, tail_seq, message_count)
               VALUES ($1, 5, 5, 4) RETURNING id""",
            user_id,
        )
        for seq in (1, 2, 4, 5):  # 3 was deleted
            await conn.execute(
                INSERT_MESSAGE,
                conversation,
                seq,
                user_id,
                "user",
                f"m{seq}",
                None,
                None,
                None,
                None,
            )
    finally:
        await conn.close()
    await asyncio.to_thread(migrations.apply, empty_database)
    async with ChatStore(empty_database, settings=settings) as store:
        page = await store.list_messages(user_id, conversation)
        assert [(m.seq, m.parent_seq) for m in page.data] == [(1, None), (2, 1), (4, 2), (5, 4)]
        appended = await store.append_message(
            user_id, conversation, {"role": "user", "content": "x"}
        )
        assert appended.parent_seq == 5
        # A branch, then the rollback: the active path is what is left.
        await store.append_messages(
            user_id, conversation, [{"role": "user", "content": "y"}], parent_seq=2
        )
    await asyncio.to_thread(migrations.rollback, empty_database, before_branches())
    conn = await asyncpg.connect(empty_database)
    try:
        seqs = await conn.fetch(
            "SELECT seq FROM messages WHERE conversation_id = $1 ORDER BY seq", conversation
        )
        count = await conn.fetchval(
            "SELECT message_count FROM conversations WHERE id = $1", conversation
        )
    finally:
        await conn.close()
    assert [r["seq"] for r in seqs] == [1, 2, 7]
    assert count == 3


# -- 0013.items --------------------------------------------------------------------

ITEMS = "0013.items"


def before_items() -> int:
    """How many of the newest migrations to roll back to be before 0013."""
    return len(MIGRATION_IDS) - MIGRATION_IDS.index(ITEMS)


async def test_items_rollback_keeps_chat_rows_relinked_and_up_again_works(
    empty_database: str, settings: Settings
) -> None:
    await apply(empty_database)
    conn = await asyncpg.connect(empty_database)
    try:
        user_id = new_id()
        await conn.execute(
            """INSERT INTO "user" (id, name, email, "emailVerified", "createdAt", "updatedAt")
               VALUES ($1, 'U', $1 || '@example.test', true, now(), now())""",
            user_id,
        )
    finally:
        await conn.close()
    reasoning = {"type": "reasoning", "encrypted_content": "e", "summary": []}
    async with ChatStore(empty_database, settings=settings) as store:
        conversation = (await store.create_conversation(user_id)).id
        await store.add_items(
            user_id,
            conversation,
            [
                {"role": "user", "content": "q"},
                reasoning,
                reasoning,
                {
                    "type": "function_call",
                    "id": "own",
                    "call_id": "c",
                    "name": "f",
                    "arguments": "{}",
                },
                {"type": "function_call_output", "call_id": "c", "output": "o"},
                reasoning,
            ],
        )
        assert (await store.get_item(user_id, conversation, "own")).seq == 4  # an item_key
    await asyncio.to_thread(migrations.rollback, empty_database, before_items())
    conn = await asyncpg.connect(empty_database)
    try:
        rows = await conn.fetch(
            "SELECT seq, parent_seq, role FROM messages WHERE conversation_id = $1 ORDER BY seq",
            conversation,
        )
        counters = await conn.fetchrow(
            "SELECT message_count, tail_seq FROM conversations WHERE id = $1", conversation
        )
        columns = await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_name = 'messages' AND column_name IN ('item', 'item_key')"
        )
    finally:
        await conn.close()
    # The reasoning items go; the function call's parent is the user message.
    assert [tuple(r) for r in rows] == [(1, None, "user"), (4, 1, "assistant"), (5, 4, "tool")]
    assert counters is not None
    assert tuple(counters) == (3, 5)
    assert columns == 0
    await apply(empty_database)
    async with ChatStore(empty_database, settings=settings) as store:
        items = (await store.list_items(user_id, conversation)).items
        assert [i.id for i in items] == ["msg_1", "fc_4_0", "fco_5"]
        await store.add_items(user_id, conversation, [reasoning])


# -- 0016.follow-leases ------------------------------------------------------------

FOLLOW_LEASES = "0016.follow-leases"


async def followed_until_column(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_name = 'conversations' AND column_name = 'followed_until'"
        )
        return count
    finally:
        await conn.close()


async def test_follow_leases_rollback_drops_the_lease_column_keeps_the_rows_and_up_again_works(
    empty_database: str, settings: Settings
) -> None:
    await apply(empty_database)
    async with ChatStore(empty_database, settings=settings) as store:
        user_id = (await make_user(store)).user_id
        conversation = await store.create_conversation(user_id)
        await store.append_message(user_id, conversation.id, {"role": "user", "content": "hi"})
        leased = await store.db.scalar(
            "follow_conversation",
            user_id=user_id,
            conversation_id=conversation.id,
            lease_seconds=60,
        )
        assert leased == conversation.id
    assert await followed_until_column(empty_database) == 1
    since = len(MIGRATION_IDS) - MIGRATION_IDS.index(FOLLOW_LEASES)
    assert (
        await asyncio.to_thread(migrations.rollback, empty_database, since)
        == (MIGRATION_IDS[-since:][::-1])
    )
    assert await followed_until_column(empty_database) == 0
    assert await apply(empty_database) == MIGRATION_IDS[-since:]
    async with ChatStore(empty_database, settings=settings) as store:
        # Kept, and unleased again: the lease is gone with its column.
        page = await store.list_messages(user_id, conversation.id)
        assert [m.content for m in page.data] == ["hi"]
        (stored,) = await store.db.many(
            "append_messages",
            user_id=user_id,
            conversation_id=conversation.id,
            expected_last_seq=None,
            parent_seq=None,
            search_config=settings.search_config,
            **batch_params([MessageInput(role="user", content="again")]),
        )
        assert (stored["seq"], stored["followed"]) == (2, False)


# -- 0017.rules-as-domains, 0018.validate-two-column-rules -------------------------

RULES_AS_DOMAINS = "0017.rules-as-domains"
VALIDATE_TWO_COLUMN_RULES = "0018.validate-two-column-rules"
SWAPPED = ("messages", "conversations")


async def storage_and_scans(url: str) -> dict[str, tuple[int, int]]:
    """Per table of SWAPPED: its file (a rewrite gives it a new one) and the
    sequential scans of it counted so far (a constraint's validation is one),
    once every other session on the database has ended: a session reports
    its statistics on its way out, before it leaves pg_stat_activity."""
    conn = await connect(url)
    try:
        for _ in range(200):
            others = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
            if not others:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("another session stayed on the database")
        rows = await conn.fetch(
            "SELECT relname, pg_relation_filenode(relid) AS filenode, seq_scan"
            " FROM pg_stat_user_tables WHERE relname = ANY ($1::text[])",
            list(SWAPPED),
        )
    finally:
        await conn.close()
    return {row["relname"]: (row["filenode"], row["seq_scan"]) for row in rows}


async def stored_rows(url: str) -> list[tuple[Any, ...]]:
    conn = await connect(url)
    try:
        rows = await conn.fetch(
            "SELECT seq, role::text, name::text, tool_calls::text, metadata::text, item::text"
            " FROM messages ORDER BY conversation_id, seq"
        )
    finally:
        await conn.close()
    return [tuple(row) for row in rows]


async def seed_every_kind_of_row(url: str, settings: Settings) -> None:
    """A chat message with a name and metadata, a tool call and its answer,
    and a Responses item without a chat form: a row for every rule."""
    async with ChatStore(url, settings=settings) as store:
        user_id = (await make_user(store)).user_id
        conversation = await store.create_conversation(user_id, title="t" * 200)
        await store.append_messages(
            user_id,
            conversation.id,
            [
                {"role": "user", "content": "hi", "name": "ada", "metadata": {"k": "v"}},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            ],
        )
        await store.add_items(
            user_id, conversation.id, [{"type": "reasoning", "id": "rs_1", "summary": []}]
        )


async def test_rules_as_domains_neither_rewrites_nor_scans_the_tables_under_its_lock(
    empty_database: str, settings: Settings
) -> None:
    # Up to 0016, with a row of every kind in the tables.
    await asyncio.to_thread(migrations.apply, empty_database, "0016.follow-leases")
    await seed_every_kind_of_row(empty_database, settings)
    rows = await stored_rows(empty_database)
    # yoyo's connection reports its statistics when it closes, the
    # migration's scans included.
    before = await storage_and_scans(empty_database)

    applied = await asyncio.to_thread(migrations.apply, empty_database, RULES_AS_DOMAINS)

    assert applied == [RULES_AS_DOMAINS]
    # The same files, and not one scan: the ACCESS EXCLUSIVE lock was held
    # for catalog changes only.
    assert await storage_and_scans(empty_database) == before
    conn = await connect(empty_database)
    try:
        unvalidated = await conn.fetch(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'messages'::regclass"
            " AND NOT convalidated ORDER BY conname"
        )
        domains = await conn.fetch(
            "SELECT typname FROM pg_type WHERE typtype = 'd'"
            " AND typnamespace = 'public'::regnamespace ORDER BY typname"
        )
    finally:
        await conn.close()
    assert [row["conname"] for row in unvalidated] == [
        "messages_content_null_only_with_tool_calls",
        "messages_item_key_only_on_items",
        "messages_role_or_item",
        "messages_tool_call_id_only_and_always_on_tool",
        "messages_tool_calls_only_on_assistant",
    ]
    assert [row["typname"] for row in domains] == [
        "conversations_metadata",
        "conversations_title",
        "messages_item",
        "messages_metadata",
        "messages_name",
        "messages_role",
        "messages_tool_calls",
    ]

    # 0018 validates them by reading messages, once per rule.
    assert await apply(empty_database) == [VALIDATE_TWO_COLUMN_RULES]
    after = await storage_and_scans(empty_database)
    assert after["messages"] == (before["messages"][0], before["messages"][1] + 5)
    conn = await connect(empty_database)
    try:
        assert not await conn.fetchval(
            "SELECT count(*) FROM pg_constraint"
            " WHERE conrelid IN ('messages'::regclass, 'conversations'::regclass)"
            " AND NOT convalidated"
        )
    finally:
        await conn.close()
    assert await stored_rows(empty_database) == rows


async def test_rules_as_domains_rollback_restores_the_table_constraints_and_up_again_works(
    empty_database: str, settings: Settings
) -> None:
    await asyncio.to_thread(migrations.apply, empty_database, "0016.follow-leases")
    conn = await connect(empty_database)
    try:
        shape_before = await shape(conn, set(SWAPPED))
    finally:
        await conn.close()
    await apply(empty_database)
    await seed_every_kind_of_row(empty_database, settings)
    rows = await stored_rows(empty_database)
    since = len(MIGRATION_IDS) - MIGRATION_IDS.index(RULES_AS_DOMAINS)

    assert (
        await asyncio.to_thread(migrations.rollback, empty_database, since)
        == MIGRATION_IDS[-since:][::-1]
    )

    conn = await connect(empty_database)
    try:
        # Every rule a validated table constraint again, under its own name.
        assert await shape(conn, set(SWAPPED)) == shape_before
        assert not await conn.fetchval(
            "SELECT count(*) FROM pg_type WHERE typtype = 'd'"
            " AND typnamespace = 'public'::regnamespace"
        )
    finally:
        await conn.close()
    assert await stored_rows(empty_database) == rows
    assert await apply(empty_database) == MIGRATION_IDS[-since:]
    assert await stored_rows(empty_database) == rows


async def test_a_statement_prepared_before_a_migration_changed_its_types_is_a_retry_not_a_500(
    empty_database: str, settings: Settings
) -> None:
    # A process that prepared its statements before the column types
    # changed under it (0017's rollback here, or any later migration that
    # changes a column's type): PostgreSQL refuses to run a prepared
    # statement whose result type changed. Inside a transaction (a
    # branching append), that is a retry (503), once; the retry prepares
    # again.
    await apply(empty_database)
    one_connection = dataclasses.replace(settings, pool_min_size=1, pool_max_size=1)
    async with ChatStore(empty_database, settings=one_connection) as store:
        user_id = (await make_user(store)).user_id
        conversation = (await store.create_conversation(user_id)).id
        await store.append_message(user_id, conversation, {"role": "user", "content": "1"})
        await store.append_message(user_id, conversation, {"role": "user", "content": "2"})
        since = len(MIGRATION_IDS) - MIGRATION_IDS.index(RULES_AS_DOMAINS)
        await asyncio.to_thread(migrations.rollback, empty_database, since)

        with pytest.raises(Unavailable):
            await store.append_message(
                user_id, conversation, {"role": "user", "content": "3"}, parent_seq=1
            )
        branched = await store.append_message(
            user_id, conversation, {"role": "user", "content": "3"}, parent_seq=1
        )
        assert (branched.seq, branched.parent_seq) == (3, 1)
        page = await store.list_messages(user_id, conversation)
        assert [m.content for m in page.data] == ["1", "3"]
