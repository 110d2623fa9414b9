"""chatstore behind PgBouncer in transaction-pooling mode (a pooled connection
string, such as Neon's ``-pooler`` host), with the documented setting for
prepared statements.

Debian bookworm's PgBouncer is 1.18: no ``max_prepared_statements`` (1.21+),
so the documented setting is ``CHATSTORE_STATEMENT_CACHE_SIZE=0``; LISTEN
(live updates) and migrations take ``CHATSTORE_DIRECT_DATABASE_URL``. Each
PgBouncer here has few server connections (tests/support/pgbouncer.py), so many
client connections really share them, a transaction at a time.

What is shown:
- the whole HTTP suite passes through PgBouncer (a subprocess run with
  ``CHATSTORE_TEST_PGBOUNCER=1``), and PgBouncer's own statistics show the
  traffic went through it;
- the store's operations (append, list, idempotent repeats, concurrent
  appends, export through a server-side cursor) and live updates work;
- the default statement cache (256) fails there ("prepared statement ...
  does not exist"): 0 is required;
- statement_timeout, sent as a startup parameter, can only be dropped by
  PgBouncer: the server-side timeout is off behind it (the client-side
  backstop still ends a stalled statement 5 s later); a database or role
  default (ALTER ... SET statement_timeout) does apply.

Three tests guard fixes these tests forced (see their docstrings): a pooler
that refuses the statement_timeout startup parameter (as Neon's does for
parameters it does not support) refused every chatstore connection, so it is
no longer sent through a pooled URL; asyncpg's RESET ALL on release made
PgBouncer forget chatstore's timezone (UTC) and application_name, so pooled
connections are released without a reset query; and an export left the
driver's named prepared statement on the shared server connection, where
another process's first export collided with it, so export declares its
cursor in SQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from support import pgbouncer
from support.databases import create_database
from support.users import make_user

from adversity.harness import record
from chatstore import export, migrations
from chatstore.config import Settings
from chatstore.dberrors import translate_errors
from chatstore.errors import Unavailable
from chatstore.events import MessageEvents, follow
from chatstore.models import MAX_BATCH, Message
from chatstore.store import ChatStore

pytestmark = pytest.mark.adversity

REPO = Path(__file__).resolve().parents[2]
SECRET = "pgbouncer-secret-" + "x" * 24
HTTP_SUITE_MIN_PASSED = 800
HTTP_SUITE_TIMEOUT = 300


def pooled_settings(direct_url: str, **changes: Any) -> Settings:
    """The documented configuration behind a transaction-mode pooler."""
    base = Settings(
        auth_secret=SECRET,
        statement_cache_size=0,
        direct_database_url=direct_url,
        pool_min_size=1,
        pool_max_size=20,
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def bouncer(server_url: str) -> Iterator[pgbouncer.PgBouncer]:
    with pgbouncer.start(server_url) as running:
        yield running


@pytest.fixture(scope="module")
async def direct_url(server_url: str) -> str:
    """A migrated database of its own, by its direct URL."""
    url = await create_database(server_url, "chatstore_pgbouncer")
    await asyncio.to_thread(migrations.apply, url)
    return url


@pytest.fixture(scope="module")
async def store(bouncer: pgbouncer.PgBouncer, direct_url: str) -> AsyncIterator[ChatStore]:
    async with ChatStore(bouncer.url(direct_url), settings=pooled_settings(direct_url)) as opened:
        yield opened


def text(message: Message) -> str:
    assert message.content is not None
    return message.content


# -- the HTTP suite -------------------------------------------------------------


def test_http_suite_passes_through_pgbouncer() -> None:
    """tests/http, whole, with its store (and so its app) connected through a
    PgBouncer in transaction mode (support/fixtures.py, CHATSTORE_TEST_PGBOUNCER=1).
    ``-p support.pgbouncer`` prints PgBouncer's statistics at the end: the proof that
    the traffic went through it."""
    pythonpath = os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "CHATSTORE_TEST_PGBOUNCER": "1", "PYTHONPATH": pythonpath}
    command = [sys.executable, "-m", "pytest", "tests/http", "-q", "-p", "no:cacheprovider"]
    command += ["-x", "-p", "support.pgbouncer"]
    started = time.monotonic()
    run = subprocess.run(
        command,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=HTTP_SUITE_TIMEOUT,
    )
    seconds = time.monotonic() - started
    output = run.stdout + run.stderr
    tail = "\n".join(output.splitlines()[-40:])
    assert run.returncode == 0, f"the HTTP suite failed through PgBouncer:\n{tail}"
    passed = re.search(r"(\d+) passed", output)
    assert passed is not None, f"no pass count in the output:\n{tail}"
    assert int(passed[1]) >= HTTP_SUITE_MIN_PASSED, f"too few tests passed:\n{tail}"
    stats = re.search(
        r"pgbouncer: (PgBouncer [\d.]+), .*: (\d+) transactions, (\d+) queries", output
    )
    assert stats is not None, f"PgBouncer's statistics are missing: it was not used?\n{tail}"
    # Every test goes through the store at least once (a session for its user).
    assert int(stats[2]) >= int(passed[1]), f"too little traffic through PgBouncer:\n{tail}"
    record(
        "pgbouncer",
        {
            "what": "HTTP suite through PgBouncer (transaction pooling), statement_cache_size=0",
            "pgbouncer": stats[1],
            "default_pool_size": pgbouncer.POOL_SIZE,
            "passed": int(passed[1]),
            "transactions": int(stats[2]),
            "queries": int(stats[3]),
            "seconds": round(seconds, 1),
        },
    )


# -- the store through PgBouncer ------------------------------------------------


async def test_clients_share_few_server_connections(store: ChatStore) -> None:
    """Transaction pooling is real: 20 client connections, each in a query at
    the same moment, are served by at most default_pool_size server backends."""

    async def backend() -> int:
        async with store.connection() as connection:
            pid: int = await connection.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.2)")
            return pid

    pids = await asyncio.gather(*(backend() for _ in range(20)))
    assert store.pool.get_size() == 20, store.pool.get_size()
    assert 1 <= len(set(pids)) <= pgbouncer.POOL_SIZE, sorted(set(pids))


async def test_store_operations_through_pgbouncer(store: ChatStore) -> None:
    user = (await make_user(store)).user_id
    conversation = await store.create_conversation(user, title="through pgbouncer")
    stored = await store.append_messages(
        user,
        conversation.id,
        [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}],
    )
    assert [m.seq for m in stored] == [1, 2]
    page = await store.list_messages(user, conversation.id)
    assert [(m.seq, m.content) for m in page.data] == [(1, "hello"), (2, "hi")]

    # Idempotent repeats: the same key replays the first result, stores nothing more.
    first = await store.append_message(
        user, conversation.id, {"role": "user", "content": "once"}, idempotency_key="k-1"
    )
    again = await store.append_message(
        user, conversation.id, {"role": "user", "content": "once"}, idempotency_key="k-1"
    )
    assert again == first and first.seq == 3, (first, again)
    created = await store.create_conversation(user, title="t", idempotency_key="c-1")
    replayed = await store.create_conversation(user, title="t", idempotency_key="c-1")
    assert replayed.id == created.id
    assert (await store.get_conversation(user, conversation.id)).message_count == 3


async def test_concurrent_appends_through_pgbouncer_are_gap_free(store: ChatStore) -> None:
    """20 tasks append to one conversation at once, through 20 client
    connections sharing a few server connections: every seq once, no gap."""
    user = (await make_user(store)).user_id
    conversation = await store.create_conversation(user)
    per_task = 5

    async def writer(task: int) -> list[int]:
        seqs = []
        for i in range(per_task):
            message = {"role": "user", "content": f"{task}-{i}"}
            seqs.append((await store.append_message(user, conversation.id, message)).seq)
        return seqs

    acknowledged = [
        seq for seqs in await asyncio.gather(*(writer(t) for t in range(20))) for seq in seqs
    ]
    total = 20 * per_task
    assert sorted(acknowledged) == list(range(1, total + 1)), sorted(acknowledged)
    page = await store.list_messages(user, conversation.id, limit=1000)
    assert [m.seq for m in page.data] == list(range(1, total + 1))
    assert sorted(text(m) for m in page.data) == sorted(
        f"{t}-{i}" for t in range(20) for i in range(per_task)
    )


async def test_export_streams_through_pgbouncer_while_others_write(store: ChatStore) -> None:
    """The export's server-side cursor lives in one transaction, so it keeps
    its server connection for several fetches (2500 rows, 1000 a fetch) while
    other clients write through the remaining ones."""
    user = (await make_user(store)).user_id
    conversation = await store.create_conversation(user)
    total = 2500
    for start in range(0, total, MAX_BATCH):
        batch = [{"role": "user", "content": f"m{n}"} for n in range(start, start + MAX_BATCH)]
        await store.append_messages(user, conversation.id, batch)
    other = await store.create_conversation(user)

    async def write_meanwhile() -> None:
        for n in range(30):
            await store.append_message(user, other.id, {"role": "user", "content": f"o{n}"})

    async def exported() -> list[Message]:
        return [m async for m in export.iter_messages(store, user, conversation.id)]

    messages, _ = await asyncio.gather(exported(), write_meanwhile())
    assert [m.seq for m in messages] == list(range(1, total + 1))
    assert [m.content for m in messages] == [f"m{n}" for n in range(total)]
    lines = b"".join([chunk async for chunk in export.jsonl(store, user, conversation.id)])
    assert len(lines.splitlines()) == total


async def test_live_updates_with_the_direct_url(store: ChatStore) -> None:
    """Queries through PgBouncer, LISTEN on CHATSTORE_DIRECT_DATABASE_URL: an
    appended message reaches a follower by notification, long before the
    follower's idle heartbeat would have made it look again."""
    user = (await make_user(store)).user_id
    conversation = await store.create_conversation(user)
    events = MessageEvents(store)
    stream = follow(store, events, user, conversation.id, after=0, idle_seconds=30)

    async def first() -> Message | None:
        return await anext(stream)

    try:
        waiting = asyncio.create_task(first())
        await asyncio.sleep(0.5)  # listening, and the follower read the empty conversation
        assert not waiting.done()
        appended_at = time.monotonic()
        await store.append_message(user, conversation.id, {"role": "user", "content": "live"})
        message = await asyncio.wait_for(waiting, 10)
        latency = time.monotonic() - appended_at
        assert message is not None and message.content == "live", message
        assert latency < 5, f"{latency:.2f} s: not by notification"
    finally:
        if isinstance(stream, AsyncGenerator):
            await stream.aclose()
        await events.stop()


# -- prepared statements: the documented setting ---------------------------------


async def test_default_statement_cache_fails_behind_transaction_pooling(
    server_url: str, direct_url: str
) -> None:
    """With asyncpg's statement cache (256), a statement prepared on one server
    connection is later executed on another: "prepared statement ... does not
    exist" (an error chatstore does not translate: HTTP 500). Made
    deterministic with 2 server connections: another client holds the first
    while the store prepares on the second; PgBouncer then hands out the most
    recently released one (LIFO), the first. With statement_cache_size=0 the
    same sequence works."""
    seed_settings = pooled_settings(direct_url)
    async with ChatStore(direct_url, settings=seed_settings) as direct:
        user = (await make_user(direct)).user_id
        conversation = await direct.create_conversation(user)
        await direct.append_message(user, conversation.id, {"role": "user", "content": "x"})

    with pgbouncer.start(server_url, pool_size=2) as small:
        pooled = small.url(direct_url)

        async def list_twice(cache_size: int) -> None:
            holder = await asyncpg.connect(pooled, statement_cache_size=0)
            try:
                transaction = holder.transaction()
                await transaction.start()  # holds server connection 1
                settings = pooled_settings(
                    direct_url, statement_cache_size=cache_size, pool_min_size=1, pool_max_size=1
                )
                async with ChatStore(pooled, settings=settings) as store:
                    await store.list_messages(user, conversation.id)  # prepared on connection 2
                    await transaction.commit()  # connection 1 is now the most recently released
                    page = await store.list_messages(user, conversation.id)
                    assert [m.content for m in page.data] == ["x"]
            finally:
                await holder.close()

        with pytest.raises(asyncpg.InvalidSQLStatementNameError, match="does not exist"):
            await list_twice(256)
        await list_twice(0)


# -- session settings behind PgBouncer --------------------------------------------


async def test_statement_timeout_is_dropped_by_pgbouncer(
    bouncer: pgbouncer.PgBouncer, direct_url: str
) -> None:
    """PgBouncer 1.18 forwards only client_encoding, DateStyle, TimeZone,
    standard_conforming_strings and application_name; statement_timeout can
    only be ignored (ignore_startup_parameters), so CHATSTORE_STATEMENT_TIMEOUT_MS
    has no effect on the server behind it. The client-side backstop still ends
    a stalled statement, statement_timeout + 5 s after it began, and cancels it
    on the server."""
    settings = pooled_settings(direct_url, statement_timeout_ms=300, pool_max_size=2)
    # The same database configured directly (no pooler, no direct URL), for comparison.
    unpooled = dataclasses.replace(settings, direct_database_url=None, statement_cache_size=256)
    async with (
        ChatStore(direct_url, settings=unpooled) as direct,
        ChatStore(bouncer.url(direct_url), settings=settings) as pooled,
    ):
        show = "SELECT current_setting('statement_timeout')"
        assert await direct.executor.fetchval(show) == "300ms"
        assert await pooled.executor.fetchval(show) == "0"
        with pytest.raises(asyncpg.QueryCanceledError):
            await direct.executor.fetchval("SELECT pg_sleep(1)")
        # Through PgBouncer the server lets it run its whole second.
        await pooled.executor.fetchval("SELECT pg_sleep(1)")
        # The backstop: asyncpg's command_timeout (0.3 + 5 s) fires and cancels it.
        started = time.monotonic()
        with pytest.raises(Unavailable), translate_errors():
            await pooled.executor.fetchval("SELECT pg_sleep(8)")
        waited = time.monotonic() - started
        assert 5 <= waited < 7.5, waited  # not at 0.3 s: at the backstop, 0.3 + 5 s
        # asyncpg cancels it on the server too (PgBouncer forwards the cancel request).
        running = "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(8)'"
        deadline = time.monotonic() + 2
        while await direct.executor.fetchval(running + " AND state = 'active'") != 0:
            assert time.monotonic() < deadline, "the stalled statement still runs on the server"
            await asyncio.sleep(0.05)


async def test_statement_timeout_as_a_database_default_applies_behind_pgbouncer(
    server_url: str,
) -> None:
    """The remedy for the above: a default of the database (or of the role,
    ALTER ROLE ... SET statement_timeout) applies to PgBouncer's server
    connections, and asyncpg's RESET ALL on release goes back to it."""
    database = await create_database(server_url, "chatstore_pgbouncer_st")
    admin = await asyncpg.connect(server_url)
    try:
        name = database.rsplit("/", 1)[1]
        await admin.execute(f"ALTER DATABASE \"{name}\" SET statement_timeout = '300ms'")
    finally:
        await admin.close()
    with pgbouncer.start(server_url, pool_size=2) as fresh:
        settings = pooled_settings(database, statement_timeout_ms=300, pool_max_size=2)
        async with ChatStore(fresh.url(database), settings=settings) as pooled:
            for _ in range(3):  # each time after a release (RESET ALL)
                show = "SELECT current_setting('statement_timeout')"
                assert await pooled.executor.fetchval(show) == "300ms"
                with pytest.raises(Unavailable), translate_errors():
                    await pooled.executor.fetchval("SELECT pg_sleep(1)")


# -- product issues (these fail until chatstore is fixed) ------------------------------


async def test_connects_through_a_pooler_that_refuses_statement_timeout(
    server_url: str, direct_url: str
) -> None:
    """Guards a fix. A transaction-mode pooler refuses startup parameters it does
    not support unless told to ignore them: PgBouncer's default (and Debian's
    stock pgbouncer.ini) ignores none, and Neon's pooler answers "unsupported
    startup parameter" for such parameters (neondatabase/neon#6291). chatstore
    sent statement_timeout as one (chatstore/pool.py, server_settings), so
    every connection was refused: ProtocolViolationError "unsupported startup
    parameter: statement_timeout", which chatstore turned into 503s for every
    request. The fix: statement_timeout is not sent through a pooled URL (it is
    left to ALTER ROLE/DATABASE ... SET statement_timeout, see the test above)."""
    with pgbouncer.start(server_url, ignore_startup_parameters=("extra_float_digits",)) as strict:
        settings = pooled_settings(direct_url)
        async with ChatStore(strict.url(direct_url), settings=settings) as store:
            user = (await make_user(store)).user_id
            conversation = await store.create_conversation(user)
            assert (await store.list_messages(user, conversation.id)).data == []


async def test_timezone_and_application_name_survive_pool_releases(
    server_url: str, direct_url: str
) -> None:
    """Guards a fix. PgBouncer tracks TimeZone and application_name per client
    and sets them on the server connection before each of the client's
    transactions (the other client here keeps its own all along). But when
    asyncpg's pool releases a connection it sends ``RESET ALL`` (with
    ``CLOSE ALL; UNLISTEN *; pg_advisory_unlock_all()``): through PgBouncer
    that resets the *server* connection to the database's defaults, and
    PgBouncer, seeing the parameters change in the client's transaction,
    records those defaults as what the client wants. From the second use of
    each pooled connection on, chatstore runs in the database's default zone
    (here Asia/Tokyo) with an empty application_name; directly, RESET ALL goes
    back to the startup values and nothing changes. sql/auth.sql relies on
    UTC when it writes now() or a timestamptz into better-auth's plain
    ``timestamp`` columns (Drizzle/Prisma-made schemas): behind PgBouncer on a
    database whose default zone is not UTC, ``chatstore token`` would write
    session expiries off by the zone's offset. Fix (chatstore/pool.py): a
    connection_class whose ``get_reset_query()`` returns "" (chatstore sets
    no session state on pooled connections; asyncpg still rolls back an open
    transaction on release), which also saves a round trip per release."""
    database = await create_database(server_url, "chatstore_pgbouncer_tz")
    admin = await asyncpg.connect(server_url)
    try:
        name = database.rsplit("/", 1)[1]
        await admin.execute(f"ALTER DATABASE \"{name}\" SET timezone = 'Asia/Tokyo'")
    finally:
        await admin.close()

    with pgbouncer.start(server_url, pool_size=1) as single:
        pooled = single.url(database)
        query = (
            "SELECT current_setting('application_name'), current_setting('TimeZone'), "
            "pg_backend_pid()"
        )
        other = await asyncpg.connect(
            pooled,
            statement_cache_size=0,
            server_settings={"application_name": "other", "timezone": "America/New_York"},
        )
        settings = pooled_settings(direct_url, pool_min_size=1, pool_max_size=1)
        try:
            async with ChatStore(pooled, settings=settings) as store:
                seen = []
                for _ in range(3):
                    seen.append(("store", *(await store.executor.fetchrow(query) or ())))
                    seen.append(("other", *(await other.fetchrow(query) or ())))
        finally:
            await other.close()
    assert len({row[3] for row in seen}) == 1, seen  # one server connection for both
    assert {row[1:3] for row in seen if row[0] == "other"} == {("other", "America/New_York")}
    assert {row[1:3] for row in seen if row[0] == "store"} == {("chatstore", "UTC")}, seen


EXPORT_IN_A_NEW_PROCESS = """
import asyncio, sys
from chatstore import export
from chatstore.config import Settings
from chatstore.store import ChatStore

async def main(url: str, direct: str, user: str, conversation: str) -> None:
    settings = Settings(auth_secret="x" * 32, statement_cache_size=0,
                        direct_database_url=direct, pool_min_size=1, pool_max_size=1)
    async with ChatStore(url, settings=settings) as store:
        try:
            exported = [m async for m in export.iter_messages(store, user, conversation)]
        except Exception as error:
            sys.exit(f"{type(error).__name__}: {str(error).splitlines()[0]}")
        print(len(exported))

asyncio.run(main(*sys.argv[1:]))
"""


async def test_exports_from_two_processes_through_transaction_pooling(
    server_url: str, direct_url: str, store: ChatStore
) -> None:
    """Guards a fix. asyncpg runs a cursor through a *named* prepared statement
    (``__asyncpg_stmt_<n>__``, n from a per-process counter) even with
    statement_cache_size=0, and closes it only with the connection's next
    statement, which PgBouncer may send to another server connection. The
    export's statement therefore stays on the shared server connection, and
    the first export of another process (a second worker, another instance,
    the same server after a restart) that lands there fails:
    DuplicatePreparedStatementError 'prepared statement "__asyncpg_stmt_1__"
    already exists' (HTTP 500). One server connection here makes it
    deterministic. The fix (chatstore/export.py): no protocol-level named
    statement: ``DECLARE chatstore_export NO SCROLL CURSOR FOR <query>`` then
    ``FETCH FORWARD 1000 FROM chatstore_export`` in the same transaction (the cursor dies with
    the transaction)."""
    user = (await make_user(store)).user_id
    conversation = await store.create_conversation(user)
    await store.append_messages(user, conversation.id, [{"role": "user", "content": "x"}] * 3)
    with pgbouncer.start(server_url, pool_size=1) as single:
        args = [single.url(direct_url), direct_url, user, str(conversation.id)]
        outcomes = []
        for _ in range(2):
            run = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-c", EXPORT_IN_A_NEW_PROCESS, *args],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=REPO,
            )
            outcomes.append((run.returncode, run.stdout.strip(), run.stderr.strip()[-500:]))
    assert outcomes == [(0, "3", ""), (0, "3", "")], outcomes
