"""What each part of chatstore's schema costs a one-message append.

A template database is migrated and seeded as the bench seeds its peers
(scripts/benchlib/peerworker.py: 64 empty append conversations, one of 100
and one of 10,000 messages, through ``peerstores.Chatstore``). Then every
variant gets a copy of it with one part of the schema changed (the search
GIN dropped, the activity indexes dropped, ...; see VARIANTS), and VACUUM
(ANALYZE). The floor is ``peerstores.Floor`` (hand-written asyncpg on the
minimal schema), seeded the same way in a database of its own. The variant
without ``to_tsvector`` changes the text of the append statement in this
process only (``null_tsv_queries``); nothing in sql/ is modified.

Each round runs every variant, in an order that rotates from round to round
(and is reversed every other round): a pool of 16, a 1 s warm-up at c=16,
then ``--seconds`` of one-message appends at c=1 and at c=16 (worker w of c
writes to conversations w, w+c, ...: peerworker's appender), chatstore with
every append a statement of its own (append_statements=0: no gathering,
chatstore/appends.py), so that a variant's figures are what the schema
costs one append's statement. Each phase
measures appends per second; the server's CPU per append (utime + stime,
from /proc, of the database's backends and the WAL writer: on a server of
this machine only); WAL bytes per append (the LSN difference); and, when the
server has pg_walinspect (contrib, PostgreSQL 15+), the WAL records by
resource manager (GIN records, FPI bytes). The conversations table's HOT
updates are counted over the whole variant run. Ratios to the floor are
paired: each variant's figure over the floor's in the same round.

A throwaway cluster (durable: fsync on, as the bench's) is made in a
temporary folder and destroyed at the end; ``--database-url`` uses a server
of yours instead (the URL of a database to connect to for CREATE DATABASE;
its role must be allowed to create databases, and for pg_walinspect be a
superuser or hold pg_read_server_files). Every database made here is
dropped at the end, after an error or Ctrl-C too.

Progress goes to stderr, one line per phase; the Markdown tables to stdout;
every phase's raw figures, as JSON lines, to ``--json``.

Long because: one measurement end to end (the variants, the setup, the
phases, the cleanup and the report's three tables) in one file, as
scripts/bench_replicas.py is; split up, its parts would serve nothing else.

Usage (BENCHMARKS.md, "What each part of the schema costs an append"):
    scripts/bench_append_cost                           # 10 rounds of 5 s phases (~35 min)
    scripts/bench_append_cost --rounds 1 --seconds 1    # a smoke run
    scripts/bench_append_cost --variants table_checks,no_checks  # some (and floor, base)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import signal
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

# The tests' cluster helpers, and this checkout's chatstore whichever venv runs us.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

# This file's folder (scripts/) is on sys.path: benchlib is a top-level package here.
from benchlib.peerstores import POOL, USER, Chatstore, Floor, Store
from benchlib.peerworker import _appender
from benchlib.stats import measure
from support.cluster import ThrowawayCluster, throwaway
from support.databases import database_url

from chatstore.config import Settings
from chatstore.queries import Queries, parse_sql
from chatstore.resources import sql_dir
from chatstore.store import ChatStore

REPO = Path(__file__).resolve().parent.parent

APPEND_CONVERSATIONS = 64
SIZES = (100, 10000)
CONCURRENCIES = (1, 16)
TICK = os.sysconf("SC_CLK_TCK")
TIMES, DASH = "\u00d7", "\u2013"  # the tables' multiplication sign and en dash
RESULTS = REPO / "bench-results"

# The conversations' indexes on updated_at (migrations/0011): while one is there,
# the append's update of its conversation cannot be HOT.
ACTIVITY = (
    "DROP INDEX conversations_user_archived_activity_idx",
    "DROP INDEX conversations_activity_idx",
)

# Every rule an append is judged by, on messages and conversations: the
# tables' CHECK constraints and, since migration 0017, their columns'
# domains' constraints. PostgreSQL 15 reads each table constraint's stored
# expression anew for every statement that writes the table (ExecRelCheck's
# stringToNode), so their cost is per append, not per row.
DROP_CHECKS = """
DO $$
DECLARE
    found record;
BEGIN
    FOR found IN
        SELECT conrelid::regclass AS rel, conname
        FROM pg_constraint
        WHERE contype = 'c' AND conrelid IN ('messages'::regclass, 'conversations'::regclass)
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', found.rel, found.conname);
    END LOOP;
    FOR found IN
        SELECT DISTINCT con.contypid::regtype AS domain, con.conname
        FROM pg_attribute AS a
        JOIN pg_constraint AS con ON con.contypid = a.atttypid
        WHERE a.attrelid IN ('messages'::regclass, 'conversations'::regclass)
    LOOP
        EXECUTE format('ALTER DOMAIN %s DROP CONSTRAINT %I', found.domain, found.conname);
    END LOOP;
END
$$
"""

# The schema before migration 0017: every rule a table CHECK constraint, as
# its rollback puts them back.
TABLE_CHECKS = (REPO / "migrations" / "0017.rules-as-domains.rollback.sql").read_text()


@dataclass(frozen=True)
class Variant:
    name: str
    label: str  # as BENCHMARKS.md's table names it
    ddl: tuple[str, ...] = ()  # run on the copy of the template
    floor: bool = False  # peerstores.Floor on the minimal schema, not chatstore
    null_tsv: bool = False  # the append stores a NULL search_vector (no to_tsvector)


VARIANTS = (
    Variant("floor", "minimal floor", floor=True),
    Variant("base", "chatstore as shipped"),
    Variant("no_gin", "without the search GIN", ("DROP INDEX messages_search_idx",)),
    Variant(
        "no_gin_null_tsv",
        "without the GIN and without computing search_vector",
        ("DROP INDEX messages_search_idx",),
        null_tsv=True,
    ),
    Variant(
        "gin_expr_null_tsv",
        "GIN on a to_tsvector(…) expression, no stored column",
        (
            "DROP INDEX messages_search_idx",
            "CREATE INDEX messages_search_idx ON messages USING gin"
            " (user_id, to_tsvector('simple'::regconfig, chatstore_search_text(content)))"
            " WITH (fastupdate = off)",
        ),
        null_tsv=True,
    ),
    Variant(
        "gin_no_user",
        "GIN without user_id",
        (
            "DROP INDEX messages_search_idx",
            "CREATE INDEX messages_search_idx ON messages USING gin (search_vector)"
            " WITH (fastupdate = off)",
        ),
    ),
    Variant("no_activity_idx", "without the conversations' activity indexes", ACTIVITY),
    Variant(
        "ff70_keep_idx",
        "conversations at fillfactor 70, indexes kept",
        ("ALTER TABLE conversations SET (fillfactor = 70)", "VACUUM FULL conversations"),
    ),
    Variant("no_parent_idx", "without messages_parent_idx", ("DROP INDEX messages_parent_idx",)),
    Variant(
        "no_active_path_idx",
        "without messages_active_path_idx",
        ("DROP INDEX messages_active_path_idx",),
    ),
    Variant(
        "no_item_key_idx", "without messages_item_key_idx", ("DROP INDEX messages_item_key_idx",)
    ),
    Variant(
        "no_gin_no_activity",
        "without the GIN and without the activity indexes",
        ("DROP INDEX messages_search_idx", *ACTIVITY),
    ),
    Variant(
        "table_checks",
        "the single-column rules as table CHECK constraints (before migration 0017)",
        (TABLE_CHECKS,),
    ),
    Variant("no_checks", "without the CHECK constraints", (DROP_CHECKS,)),
    Variant(
        "no_fk",
        "without the messages → conversations foreign key",
        ("ALTER TABLE messages DROP CONSTRAINT messages_conversation_fkey",),
    ),
)
# Always run: every ratio is to one of them.
REFERENCES = ("floor", "base")

# The append statement's search_vector, and what the no-to_tsvector variants
# store instead: NULL, the search_config parameter kept so the call is unchanged.
TSV = (
    "to_tsvector(\n"
    "            :search_config::regconfig, chatstore_search_text(batch.content)\n"
    "        ) AS search_vector,"
)
NULL_TSV = (
    "(CASE WHEN :search_config::regconfig IS NOT NULL THEN NULL END)::tsvector AS search_vector,"
)


def null_tsv_queries(queries: Queries) -> Queries:
    """chatstore's queries with the append statements (append_messages and
    append_messages_together) storing a NULL search_vector."""
    names = ("append_messages", "append_messages_together")
    file = queries[names[0]].file
    text = (sql_dir() / file).read_text("utf-8-sig")
    if text.count(TSV) != len(names):
        raise SystemExit(
            f"sql/{file}: the append statements no longer compute search_vector as "
            "scripts/bench_append_cost.py expects: update its TSV."
        )
    changed = {q.name: q for q in parse_sql(text.replace(TSV, NULL_TSV), file)}
    for name in names:
        if changed[name].params != queries[name].params:
            raise SystemExit(f"sql/{file}: the NULL search_vector edit changed {name}'s parameters")
    return Queries(changed[name] if name in names else queries[name] for name in queries)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- databases


class Databases:
    """The databases made on the server, each dropped by drop_all()."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.prefix = f"append_cost_{secrets.token_hex(3)}"
        self.made: list[str] = []

    def url(self, name: str) -> str:
        return database_url(self.server, name)

    async def create(self, suffix: str, template: str | None = None) -> str:
        name = f"{self.prefix}_{suffix}"
        # Recorded first: a CREATE interrupted after the server did it is dropped too.
        self.made.append(name)
        statement = f'CREATE DATABASE "{name}"'
        if template is not None:
            statement += f' TEMPLATE "{template}"'
        await self.admin(statement)
        return name

    async def drop(self, name: str) -> None:
        await self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.made.remove(name)

    async def drop_all(self) -> None:
        for name in list(self.made):
            try:
                await self.drop(name)
            except (OSError, asyncpg.PostgresError) as e:
                say(f"could not drop database {name}: {e}")

    async def admin(self, statement: str) -> None:
        connection = await asyncpg.connect(self.server)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()


async def seed(peer: Store, url: str) -> None:
    """Open ``peer`` on ``url``, seed it as peerworker does, close it."""
    peer.load()
    await peer.open(url)
    try:
        for k in range(APPEND_CONVERSATIONS):
            await peer.seed(f"append-{k}", 0)
        for size in SIZES:
            await peer.seed(f"read-{size}", size)
    finally:
        await peer.close()


async def setup(databases: Databases, variants: Sequence[Variant]) -> bool:
    """The template, then one database per variant; returns whether pg_walinspect is there."""
    template = await databases.create("template")
    await seed(Chatstore(), databases.url(template))
    say("setup: template migrated and seeded")
    walinspect = True
    for variant in variants:
        if variant.floor:
            name = await databases.create(variant.name)
            await seed(Floor(), databases.url(name))
        else:
            name = await databases.create(variant.name, template=template)
        connection = await asyncpg.connect(databases.url(name))
        try:
            for statement in variant.ddl:
                await connection.execute(statement)
            if walinspect:
                try:
                    await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
                except asyncpg.PostgresError as e:
                    say(f"setup: no pg_walinspect ({e}): no per-record WAL breakdown")
                    walinspect = False
            await connection.execute("VACUUM (ANALYZE)")
        finally:
            await connection.close()
        say(f"setup: {variant.name}")
    await databases.drop(template)
    return walinspect


# ---------------------------------------------------------------- measuring


async def open_peer(variant: Variant, dsn: str) -> Store:
    """The variant's store on its (seeded) database, its pool of 16 open."""
    if variant.floor:
        floor = Floor()
        floor.pool = await asyncpg.create_pool(dsn, min_size=POOL, max_size=POOL)
        return floor
    chatstore = Chatstore()
    # Every append a statement of its own (no gathering, chatstore/appends.py):
    # what the schema costs one append's statement, whatever arrives with it.
    settings = Settings(
        database_url=dsn, pool_min_size=POOL, pool_max_size=POOL, append_statements=0
    )
    store = ChatStore(dsn, settings=settings)
    if variant.null_tsv:
        store.db.queries = null_tsv_queries(store.db.queries)
    await store.open()
    chatstore.store = store
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT title, id FROM conversations WHERE user_id = $1", USER
        )
    finally:
        await connection.close()
    chatstore.ids = {row["title"]: row["id"] for row in rows}
    return chatstore


def load_average() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def machine_busy_ticks() -> int:
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    return sum(values) - values[3] - values[4]  # all but idle and iowait


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)


def is_postgres(pid: int) -> bool:
    """A PostgreSQL process of this machine (a remote server's pids are not ours to read)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
    except OSError:
        return False


async def server_pids(monitor: asyncpg.Connection, database: str) -> list[int]:
    rows = await monitor.fetch(
        "SELECT pid FROM pg_stat_activity"
        " WHERE (datname = $1 AND pid <> pg_backend_pid()) OR backend_type = 'walwriter'",
        database,
    )
    return [row["pid"] for row in rows if is_postgres(row["pid"])]


async def phase(
    peer: Store,
    monitor: asyncpg.Connection,
    database: str,
    concurrency: int,
    seconds: float,
    resume: dict[int, int],
    walinspect: bool,
) -> dict[str, Any]:
    pids = await server_pids(monitor, database)
    cpu0 = {pid: cpu_ticks(pid) for pid in pids}
    own0, busy0 = cpu_ticks(os.getpid()), machine_busy_ticks()
    lsn0 = await monitor.fetchval("SELECT pg_current_wal_lsn()::text")
    run = await measure(
        _appender(peer, APPEND_CONVERSATIONS, concurrency), concurrency, seconds, resume
    )
    lsn1 = await monitor.fetchval("SELECT pg_current_wal_lsn()::text")
    server = sum(cpu_ticks(pid) - cpu0[pid] for pid in pids)
    own, busy = cpu_ticks(os.getpid()) - own0, machine_busy_ticks() - busy0
    ops = max(run.ops, 1)
    wal = await monitor.fetchval(
        "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)", lsn1, lsn0
    )
    rmgr: dict[str, list[float]] | None = None
    if walinspect:
        # pg_walinspect reads flushed WAL only (every commit's is, synchronous_commit on).
        flushed = await monitor.fetchval(
            "SELECT least(pg_current_wal_flush_lsn(), $1::text::pg_lsn)::text", lsn1
        )
        rows = await monitor.fetch(
            'SELECT "resource_manager/record_type" AS manager, count, record_size, fpi_size'
            " FROM pg_get_wal_stats($1::text::pg_lsn, $2::text::pg_lsn) WHERE count > 0",
            lsn0,
            flushed,
        )
        rmgr = {
            row["manager"]: [row["count"] / ops, row["record_size"] / ops, row["fpi_size"] / ops]
            for row in rows
        }
    latencies = sorted(run.latencies)
    return {
        "c": concurrency,
        "ops": run.ops,
        "seconds": run.seconds,
        "ops_s": run.ops / run.seconds,
        "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else None,
        "server_cpu_us_op": server / TICK / ops * 1e6 if pids else None,
        "client_cpu_us_op": run.cpu_seconds / ops * 1e6,
        # CPU the rest of the machine used meanwhile (other jobs, autovacuum, ...), in cores.
        "other_cores": (busy - server - own) / TICK / run.seconds,
        "wal_b_op": float(wal) / ops,
        "rmgr": rmgr,
    }


async def conversation_updates(url: str) -> tuple[int, int]:
    connection = await asyncpg.connect(url)
    try:
        row = await connection.fetchrow(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
            " WHERE relname = 'conversations'"
        )
    finally:
        await connection.close()
    return (row["n_tup_upd"], row["n_tup_hot_upd"]) if row is not None else (0, 0)


async def run_variant(
    databases: Databases,
    variant: Variant,
    round_: int,
    seconds: float,
    resume: dict[str, dict[int, int]],
    walinspect: bool,
) -> dict[str, Any]:
    database = f"{databases.prefix}_{variant.name}"
    url = databases.url(database)
    updates0, hot0 = await conversation_updates(url)
    peer = await open_peer(variant, url)
    monitor = await asyncpg.connect(url)
    phases = []
    try:
        warm = _appender(peer, APPEND_CONVERSATIONS, 16)
        await measure(warm, 16, 1.0, resume.setdefault(f"{variant.name}/warm", {}))
        for c in CONCURRENCIES:
            cursor = resume.setdefault(f"{variant.name}/{c}", {})
            found = await phase(peer, monitor, database, c, seconds, cursor, walinspect)
            phases.append(found)
            cpu = found["server_cpu_us_op"]
            say(
                f"round {round_ + 1} {variant.name} c={c}: {found['ops_s']:,.0f} appends/s, "
                + (f"server CPU {cpu:,.0f} µs, " if cpu is not None else "")
                + f"WAL {found['wal_b_op']:,.0f} B an append"
                + f" (other processes: {found['other_cores']:.2f} cores)"
            )
    finally:
        await monitor.close()
        await peer.close()
    await asyncio.sleep(1.0)  # the backends exit and flush their table statistics
    updates1, hot1 = await conversation_updates(url)
    return {
        "variant": variant.name,
        "round": round_,
        "phases": phases,
        "upd": updates1 - updates0,
        "hot_upd": hot1 - hot0,
    }


# ---------------------------------------------------------------- report


def spread(values: list[float], fmt: str = ",.0f") -> str:
    """Median (min-max), or "-" without values."""
    if not values:
        return "-"
    median = format(statistics.median(values), fmt)
    if len(values) == 1:
        return median
    return f"{median} ({format(min(values), fmt)}{DASH}{format(max(values), fmt)})"


def report(
    variants: Sequence[Variant], results: list[dict[str, Any]], meta: dict[str, Any], out: TextIO
) -> None:
    runs: dict[str, dict[int, dict[str, Any]]] = {v.name: {} for v in variants}
    for result in results:
        runs[result["variant"]][result["round"]] = result
    walinspect = meta["walinspect"]

    def values(name: str, i: int, key: str) -> list[float]:
        found = (run["phases"][i][key] for run in runs[name].values())
        return [x for x in found if x is not None]

    def paired(
        name: str, reference: str, i: int, f: Callable[[dict[str, Any], dict[str, Any]], float]
    ) -> list[float]:
        out = []
        for round_, run in runs[name].items():
            ref = runs[reference].get(round_)
            if ref is not None:
                out.append(f(run["phases"][i], ref["phases"][i]))
        return out

    def ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
        return float(a["ops_s"] / b["ops_s"]) if b["ops_s"] else math.nan

    def delta(key: str) -> Callable[[dict[str, Any], dict[str, Any]], float]:
        def f(a: dict[str, Any], b: dict[str, Any]) -> float:
            return float(a[key] - b[key]) if a[key] is not None and b[key] is not None else 0.0

        return f

    def gin(name: str) -> str:
        if not walinspect:
            return "-"
        counts = [run["phases"][1]["rmgr"].get("Gin", [0.0])[0] for run in runs[name].values()]
        return spread(counts, ".1f")

    def hot(name: str) -> str:
        updates = sum(run["upd"] for run in runs[name].values())
        hot = sum(run["hot_upd"] for run in runs[name].values())
        return f"{hot:,} of {updates:,}" + (f" ({hot / updates:.0%})" if updates else "")

    print(
        f"What each part of the schema costs an append: {meta['rounds']} round(s) of"
        f" {meta['seconds']:g} s phases at c=1 and c=16 (pool of 16), variants in rotating"
        f" order; {meta['server']}; {meta['cores']} cores shared by the client and the server;"
        f" {meta['started']} to {meta['finished']}. Median (min{DASH}max) over the rounds; ratios"
        " to the floor paired with the floor's run in the same round.\n",
        file=out,
    )
    print(
        f"| variant | c=1 ops/s | c=16 ops/s | {TIMES} floor c=1 | {TIMES} floor c=16"
        " | server CPU µs/op c=1 | server CPU µs/op c=16 | WAL B/op c=1 | WAL B/op c=16"
        " | GIN records/op c=16 | conversations HOT updates |",
        file=out,
    )
    print("| --- |" + " ---: |" * 9 + " --- |", file=out)
    for v in variants:
        n = v.name
        print(
            f"| {v.label} (`{n}`) | {spread(values(n, 0, 'ops_s'))}"
            f" | {spread(values(n, 1, 'ops_s'))}"
            f" | {spread(paired(n, 'floor', 0, ratio), '.2f')}"
            f" | {spread(paired(n, 'floor', 1, ratio), '.2f')}"
            f" | {spread(values(n, 0, 'server_cpu_us_op'))}"
            f" | {spread(values(n, 1, 'server_cpu_us_op'))}"
            f" | {spread(values(n, 0, 'wal_b_op'))} | {spread(values(n, 1, 'wal_b_op'))}"
            f" | {gin(n)} | {hot(n)} |",
            file=out,
        )

    print("\nPaired with chatstore as shipped (`base`) in the same round:\n", file=out)
    print(
        f"| variant | {TIMES} base c=1 | {TIMES} base c=16 | server CPU Δ µs/op c=1 | c=16"
        " | WAL Δ B/op c=1 | c=16 |",
        file=out,
    )
    print("| --- |" + " ---: |" * 6, file=out)
    for v in variants:
        if v.name == "base":
            continue
        n = v.name
        print(
            f"| `{n}` | {spread(paired(n, 'base', 0, ratio), '.2f')}"
            f" | {spread(paired(n, 'base', 1, ratio), '.2f')}"
            f" | {spread(paired(n, 'base', 0, delta('server_cpu_us_op')), '+,.0f')}"
            f" | {spread(paired(n, 'base', 1, delta('server_cpu_us_op')), '+,.0f')}"
            f" | {spread(paired(n, 'base', 0, delta('wal_b_op')), '+,.0f')}"
            f" | {spread(paired(n, 'base', 1, delta('wal_b_op')), '+,.0f')} |",
            file=out,
        )

    if walinspect:
        print(
            "\nWAL per append by resource manager at c=16 (pg_walinspect, medians):"
            " records / record bytes / full-page-image bytes\n",
            file=out,
        )
        for v in variants:
            phases = [run["phases"][1]["rmgr"] for run in runs[v.name].values()]
            parts = []
            for manager in sorted({m for p in phases for m in p}):
                found = [p.get(manager, [0.0, 0.0, 0.0]) for p in phases]
                count = statistics.median(x[0] for x in found)
                if count >= 0.05:
                    record = statistics.median(x[1] for x in found)
                    fpi = statistics.median(x[2] for x in found)
                    parts.append(f"{manager} {count:.2f} / {record:,.0f} / {fpi:,.0f}")
            print(f"- `{v.name}`: " + "; ".join(parts), file=out)
    else:
        print(
            "\nThe server has no pg_walinspect (contrib, PostgreSQL 15+): no GIN record count"
            " and no per-record WAL breakdown (WAL B/op is measured all the same).",
            file=out,
        )
    others = [p["other_cores"] for r in results for p in r["phases"]]
    if others:
        print(
            f"\nOther processes used {spread(others, '.2f')} cores during the phases"
            f" (median (min{DASH}max)): where that is high, ops and CPU are noisy.",
            file=out,
        )
    if not any(r["phases"][0]["server_cpu_us_op"] is not None for r in results):
        print("\nThe server is not on this machine: its CPU could not be read.", file=out)


# ---------------------------------------------------------------- main


async def server_facts(server: str) -> str:
    connection = await asyncpg.connect(server)
    try:
        facts = [
            f"{name} {await connection.fetchval(f'SHOW {name}')}"
            for name in ("server_version", "fsync", "synchronous_commit", "full_page_writes")
        ]
    finally:
        await connection.close()
    return "PostgreSQL " + ", ".join(facts).removeprefix("server_version ")


async def run(
    args: argparse.Namespace, variants: Sequence[Variant], server: str, out: TextIO
) -> None:
    databases = Databases(server)
    started = datetime.now(UTC)
    meta: dict[str, Any] = {
        "meta": True,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "server": await server_facts(server),
        "throwaway": args.database_url is None,
        "cores": os.cpu_count(),
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
    }
    results: list[dict[str, Any]] = []
    try:
        meta["walinspect"] = await setup(databases, variants)
        out.write(json.dumps(meta) + "\n")
        names = [v.name for v in variants]
        by_name = {v.name: v for v in variants}
        resume: dict[str, dict[int, int]] = {}
        for round_ in range(args.rounds):
            shift = (round_ * len(names)) // args.rounds
            order = names[shift:] + names[:shift]
            if round_ % 2 == 1:
                order.reverse()
            load = load_average()
            out.write(json.dumps({"round": round_, "order": order, "loadavg": load}) + "\n")
            say(f"round {round_ + 1}/{args.rounds}: load average {' '.join(load)}")
            for name in order:
                result = await run_variant(
                    databases, by_name[name], round_, args.seconds, resume, meta["walinspect"]
                )
                results.append(result)
                out.write(json.dumps(result) + "\n")
                out.flush()
    finally:
        await databases.drop_all()
    meta["finished"] = datetime.now(UTC).strftime("%H:%M UTC")
    report(variants, results, meta, sys.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds of every variant")
    parser.add_argument("--seconds", type=float, default=5.0, help="per phase (c=1, c=16)")
    parser.add_argument(
        "--database-url",
        help="a server of yours (a database to connect to) instead of a throwaway cluster",
    )
    parser.add_argument(
        "--json",
        type=Path,
        help="raw results as JSON lines (default: bench-results/append-cost-<timestamp>.json)",
    )
    parser.add_argument(
        "--variants",
        help="only these variants, comma-separated (the floor and `base` always run)",
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds positive")
    variants: Sequence[Variant] = VARIANTS
    if args.variants:
        asked = {name.strip() for name in args.variants.split(",") if name.strip()}
        unknown = asked - {v.name for v in VARIANTS}
        if unknown:
            parser.error(
                f"unknown variant(s): {', '.join(sorted(unknown))};"
                f" known: {', '.join(v.name for v in VARIANTS)}"
            )
        variants = tuple(v for v in VARIANTS if v.name in asked or v.name in REFERENCES)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path: Path = args.json or RESULTS / f"append-cost-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    # SIGTERM as Ctrl-C: the databases are dropped and the cluster destroyed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    cluster: ThrowawayCluster | None = None
    try:
        server = args.database_url
        if server is None:
            say("starting a throwaway PostgreSQL cluster")
            cluster = throwaway(fast_unsafe=False)
            cluster.start()
            server = cluster.dsn()
        with path.open("w") as out:
            asyncio.run(run(args, variants, server, out))
        say(f"raw results: {path}")
    except KeyboardInterrupt:
        say("interrupted")
        raise SystemExit(130) from None
    finally:
        if cluster is not None:
            cluster.destroy()


if __name__ == "__main__":
    main()
