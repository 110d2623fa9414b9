"""Fault 6: migrations run concurrently, and migrations killed midway.

``chatstore migrate apply`` queues on a session advisory lock (released by
PostgreSQL when the holder's connection goes, so a killed process cannot
leave it behind) and under it takes yoyo's lock, a row in yoyo_lock that a
killed process does leave behind. So:

* two ``migrate apply`` at once on a fresh database: both exit 0, each
  migration applied (and logged) exactly once;
* a ``migrate apply`` SIGKILLed in the middle of a migration (its DDL
  blocked by a writer's lock): the migration's transaction rolls back, so
  nothing is half-applied; the next ``migrate apply`` finds yoyo's stale
  lock and explains in one sentence, naming ``chatstore migrate
  break-lock``, within seconds; after ``break-lock`` it finishes the job;
* a ``migrate apply`` SIGKILLed while it waits for the advisory lock: the
  next one proceeds as soon as the holder lets go.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence
from typing import TypeAlias

import asyncpg
import pytest

from adversity.harness import Database, Lab, now, record
from chatstore import migrations
from chatstore.migrations import ADVISORY_LOCK_KEY, known_ids

pytestmark = pytest.mark.adversity

ROUNDS = 2
EXPLAIN_WITHIN_SECONDS = 15.0
# yoyo polls its lock row every 0.5 s, a queued run the advisory lock every
# 0.2 s (chatstore/migrations.py, LOCK_POLL_SECONDS).
PROCEED_WITHIN_SECONDS = 5.0

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"


async def applied_counts(connection: Connection) -> tuple[dict[str, int], dict[str, int]]:
    """Per migration: rows in _yoyo_migration, and 'apply' entries in _yoyo_log."""
    marked = await connection.fetch(
        "SELECT migration_id, count(*) AS n FROM _yoyo_migration GROUP BY migration_id"
    )
    logged = await connection.fetch(
        "SELECT migration_id, count(*) AS n FROM _yoyo_log"
        " WHERE operation = 'apply' GROUP BY migration_id"
    )
    return (
        {row["migration_id"]: row["n"] for row in marked},
        {row["migration_id"]: row["n"] for row in logged},
    )


async def wait_for_rows(
    connection: Connection,
    query: str,
    *,
    count: int = 1,
    within: float = 30.0,
    process: subprocess.Popen[bytes] | None = None,
) -> list[asyncpg.Record]:
    """Poll ``query`` until it returns ``count`` rows; fail at once, with its
    output, if ``process`` (what should make the rows appear) exits first."""
    deadline = now() + within
    while True:
        rows = await connection.fetch(query)
        if len(rows) >= count:
            return rows
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(
                f"{process.args!r} exited with {process.returncode} before {query!r} matched:\n"
                f"stdout: {out.decode(errors='replace')}\nstderr: {err.decode(errors='replace')}"
            )
        assert now() < deadline, f"after {within} s, {len(rows)} rows of: {query}"
        await asyncio.sleep(0.05)


async def wait_backends_gone(connection: Connection, pids: Sequence[int]) -> None:
    deadline = now() + 30
    while await connection.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", list(pids)
    ):
        assert now() < deadline, f"backends {pids} still there after 30 s"
        await asyncio.sleep(0.05)


def output(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"


async def test_concurrent_migrate_apply(lab: Lab) -> None:
    first = await lab.database(migrate=False)
    databases = [first]
    for index in range(1, ROUNDS):
        name = f"race{index}"
        await asyncio.to_thread(first.cluster.create_database, name)
        databases.append(Database(first.cluster, name))
    everything = {migration_id: 1 for migration_id in known_ids()}

    slowest = 0.0
    for database in databases:
        started = now()
        runs = [lab.spawn("migrate", "apply", database=database) for _ in range(2)]
        outputs = [await asyncio.to_thread(run.communicate, timeout=120) for run in runs]
        slowest = max(slowest, now() - started)
        said = [
            f"exit {run.returncode}: {out.decode().strip()} {err.decode().strip()}"
            for run, (out, err) in zip(runs, outputs, strict=True)
        ]
        assert [run.returncode for run in runs] == [0, 0], said
        printed = sorted(out.decode().strip() for out, _err in outputs)
        assert printed == ["applied: " + ", ".join(known_ids()), "nothing to apply"], said
        connection = await database.connect()
        try:
            marked, logged = await applied_counts(connection)
            stale = await connection.fetchval("SELECT count(*) FROM yoyo_lock")
        finally:
            await connection.close()
        assert marked == everything, marked
        assert logged == everything, logged
        assert stale == 0, "a finished migrate left yoyo's lock behind"

    record(
        "migrate-concurrent",
        {
            "what": f"two `chatstore migrate apply` at once on a fresh database, {ROUNDS} rounds",
            "requests": 2 * ROUNDS,
            "acknowledged_requests": 2 * ROUNDS,
            "lost": 0,
            "other_5xx": 0,
            "result": "both exit 0 every round; each migration applied and logged once",
            "recovery_s": round(slowest, 3),
        },
    )


# The migration killed midway: its CREATE TRIGGER waits for a writer's lock
# on messages, which gives the test a moment to kill it inside the migration.
VICTIM = "0005.message-events"


async def test_migrate_killed_midway(lab: Lab) -> None:
    database = await lab.database()
    # Roll back the victim and every migration after it; apply reapplies them all.
    reapplied = list(known_ids()[known_ids().index(VICTIM) :])
    rolled = await asyncio.to_thread(migrations.rollback, database.url, len(reapplied))
    assert sorted(rolled) == reapplied, rolled
    victim = VICTIM
    admin = await database.connect()
    writer = await database.connect()
    try:
        # A writer's lock on messages: the migration's CREATE TRIGGER waits for it.
        holding = writer.transaction()
        await holding.start()
        await writer.execute("LOCK TABLE messages IN ROW EXCLUSIVE MODE")
        migrate = lab.spawn("migrate", "apply", database=database)
        [blocked] = await wait_for_rows(
            admin,
            "SELECT pid, query FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
            process=migrate,
        )
        assert "CREATE TRIGGER" in blocked["query"], blocked["query"]
        lock_pid = await admin.fetchval("SELECT pid FROM yoyo_lock")
        assert lock_pid == migrate.pid, f"yoyo_lock pid {lock_pid}, migrate pid {migrate.pid}"

        migrate.kill()
        await asyncio.to_thread(migrate.communicate)
        await holding.rollback()
        # Its backend runs the statement it was waiting for, finds the client
        # gone and rolls the migration back.
        await wait_backends_gone(admin, [blocked["pid"]])

        marked, _logged = await applied_counts(admin)
        half = await admin.fetchval(
            "SELECT to_regprocedure('chatstore_notify_messages()') IS NOT NULL"
            " OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'messages_notify_appended')"
        )
        left_lock = await admin.fetchval("SELECT pid FROM yoyo_lock")
    finally:
        await writer.close()
        await admin.close()
    assert victim not in marked, "the killed migration is marked applied"
    assert not half, "the killed migration is half-applied"
    assert left_lock == migrate.pid, "the killed migrate left no yoyo lock (test premise)"

    stuck, took = await lab.run("migrate", "apply", database=database)
    lines = stuck.stderr.strip().splitlines()
    assert stuck.returncode == 1, output(stuck)
    assert len(lines) == 1 and "Traceback" not in stuck.stderr, output(stuck)
    assert "chatstore migrate break-lock" in lines[0], output(stuck)
    assert took <= EXPLAIN_WITHIN_SECONDS, f"explained after {took:.1f} s"

    broken, _ = await lab.run("migrate", "break-lock", database=database)
    assert broken.returncode == 0, output(broken)
    finished, _ = await lab.run("migrate", "apply", database=database)
    assert finished.returncode == 0, output(finished)
    assert finished.stdout.strip() == f"applied: {', '.join(reapplied)}", output(finished)

    connection = await database.connect()
    try:
        marked, logged = await applied_counts(connection)
        stale = await connection.fetchval("SELECT count(*) FROM yoyo_lock")
    finally:
        await connection.close()
    everything = {migration_id: 1 for migration_id in known_ids()}
    assert marked == everything, marked
    # Each was applied, rolled back, then applied again: twice in the log.
    assert logged == {**everything, **dict.fromkeys(reapplied, 2)}, logged
    assert stale == 0
    record(
        "migrate-killed-midway",
        {
            "what": "`chatstore migrate apply` SIGKILLed inside a migration (its CREATE TRIGGER"
            " blocked by a writer's lock); then apply, break-lock, apply",
            "requests": 4,
            "acknowledged_requests": 4,
            "lost": 0,
            "other_5xx": 0,
            "result": "migration rolled back whole; next apply exits 1 with one sentence:"
            f" {lines[0]!r}; after break-lock, apply finishes it",
            "recovery_s": round(took, 3),
        },
    )


async def test_migrate_killed_while_queued(lab: Lab) -> None:
    database = await lab.database()
    [victim] = await asyncio.to_thread(migrations.rollback, database.url, 1)
    admin = await database.connect()
    holder = await database.connect()
    # A queued run asks for the advisory lock again and again (it never waits
    # inside a statement, where it would hold a snapshot): its backend's
    # last query says so.
    asking = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND query LIKE 'SELECT pg_try_advisory_lock%'"
    )
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        first = lab.spawn("migrate", "apply", database=database)
        [orphan] = await wait_for_rows(admin, asking, process=first)
        first.kill()
        await asyncio.to_thread(first.communicate)
        # Its backend does not linger: it held nothing but its connection.
        await wait_backends_gone(admin, [orphan["pid"]])
        second = lab.spawn("migrate", "apply", database=database)
        await wait_for_rows(admin, asking, process=second)
        assert second.poll() is None, "the second migrate did not wait for the lock"
        released_at = now()
        await holder.close()
        out, err = await asyncio.to_thread(second.communicate, timeout=60)
        took = now() - released_at
        marked, logged = await applied_counts(admin)
        stale = await admin.fetchval("SELECT count(*) FROM yoyo_lock")
    finally:
        await holder.close()
        await admin.close()
    said = f"exit {second.returncode}\nstdout: {out.decode()}\nstderr: {err.decode()}"
    assert second.returncode == 0, said
    assert out.decode().strip() == f"applied: {victim}", said
    assert took <= PROCEED_WITHIN_SECONDS, f"proceeded {took:.1f} s after the holder let go"
    everything = {migration_id: 1 for migration_id in known_ids()}
    assert marked == everything, marked
    assert logged == {**everything, victim: 2}, logged
    assert stale == 0
    record(
        "migrate-killed-while-queued",
        {
            "what": "`chatstore migrate apply` SIGKILLed while queued on the advisory lock;"
            " a second one queued behind it",
            "requests": 2,
            "acknowledged_requests": 2,
            "lost": 0,
            "other_5xx": 0,
            "result": "the second applies the pending migration once the holder lets go",
            "recovery_s": round(took, 3),
        },
    )
