"""``python -m scripts.benchlib [--quick] [--plot] ...``: see ``scripts/bench --help``."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from types import FrameType
from typing import Any

from chatstore.config import Settings
from chatstore.store import ChatStore

from . import api, httpbench, httppeers, peers, report, scaling
from .database import (
    BenchDatabase,
    gin_pending_pages,
    loadavg,
    machine_facts,
    reset_statements,
    statement_stats,
)
from .diskprobe import DiskProbe
from .plan import FULL, QUICK, Plan
from .seed import Fixture, seed
from .stats import Summary, compare
from .wrk import have_wrk

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench-results"
PLOTS = REPO / "docs" / "bench"
SECTIONS = ("api", "scaling", "http", "peers", "httppeers")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="chatstore against the floor (raw asyncpg): Python API, HTTP, memory, "
        "scaling. Prints Markdown tables and writes a JSON file.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run (< 2 minutes, small seeds)")
    parser.add_argument("--plot", action="store_true", help=f"write PNG charts to {PLOTS}")
    parser.add_argument(
        "--json",
        type=Path,
        help="where to write the results (default: bench-results/bench-<timestamp>.json)",
    )
    parser.add_argument(
        "--database-url",
        help="use this PostgreSQL server (a database is "
        "created on it and dropped at the end) instead of a throwaway cluster",
    )
    parser.add_argument(
        "--client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="HTTP load generator (auto: wrk when installed)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run py-spy on the 1-worker server under each HTTP workload",
    )
    parser.add_argument(
        "--phase-seconds",
        type=float,
        metavar="S",
        help="shorten every timed phase to S seconds (a check that a full run works; "
        "its numbers are not the benchmark's)",
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default {','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--replot",
        type=Path,
        metavar="JSON",
        help="only redraw the charts (and tables) from a saved results file",
    )
    return parser.parse_args(argv)


def summary_json(summary: Summary) -> dict[str, Any]:
    found = asdict(summary)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in found.items()}


async def run_api(
    store: ChatStore, floor: api.Floor, fixture: Fixture, plan: Plan, db: BenchDatabase
) -> list[dict[str, Any]]:
    import asyncpg

    results = []
    monitor = await asyncpg.connect(db.dsn) if db.pg_stat_statements else None
    big = api.size_label(max(fixture.conversations))
    lists = api.size_label(max(fixture.list_users))
    try:
        for workload in api.workloads(
            store, floor, fixture, big_label="big", list_label=f"{lists} conversations"
        ):
            pending = None
            if monitor is not None:
                await reset_statements(monitor)
                if workload.statement == "search_messages":
                    pending = await gin_pending_pages(monitor)
            found = await compare(
                workload.chatstore,
                workload.floor,
                concurrency=workload.concurrency,
                warmup=plan.warmup,
                seconds=plan.duration,
                slice_seconds=plan.slice,
            )
            stats = (
                None
                if monitor is None
                else await statement_stats(monitor, api.QUERIES[workload.statement].sql)
            )
            title = workload.title.replace("a big-message", f"a {big}-message")
            results.append(
                {
                    "key": workload.key,
                    "title": title,
                    "concurrency": workload.concurrency,
                    "chatstore": summary_json(found.a),
                    "floor": summary_json(found.b),
                    "ratio": round(found.ratio, 4),
                    "ratio_iqr": [round(found.ratio_low, 4), round(found.ratio_high, 4)],
                    "cpu_ratio": round(found.cpu_ratio, 4),
                    "pairs": found.pairs,
                    "target": workload.target,
                    "server_ms": None if stats is None else round(stats[1], 4),
                    "server_calls": None if stats is None else stats[0],
                    "gin_pending_pages": pending,
                }
            )
            print(
                f"  {workload.key}: chatstore {found.a.throughput:,.0f}/s, "
                f"floor {found.b.throughput:,.0f}/s, ratio {found.ratio:.2f} "
                f"(IQR {found.ratio_low:.2f}-{found.ratio_high:.2f}), CPU/op "
                f"{found.a.cpu_us_per_op:.0f} vs {found.b.cpu_us_per_op:.0f} us",
                flush=True,
            )
    finally:
        if monitor is not None:
            await monitor.close()
    return results


async def bench(
    db: BenchDatabase, plan: Plan, args: argparse.Namespace, logs: Path, doc: dict[str, Any]
) -> None:
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    await db.create()
    # The peers import their libraries and seed their own databases while the
    # bench seeds its own (nothing is measured meanwhile).
    peer_run = peers.Peers(db.server_url, plan, logs, db.log) if "peers" in sections else None
    http_peer_seed = (
        asyncio.create_task(httppeers.seed_peer(db.server_url, plan))
        if "httppeers" in sections
        else None
    )
    try:
        if peer_run is not None:
            peer_run.start()
        doc["postgres"] = await db.settings()
        print(f"seeding ({plan.label}) ...", flush=True)
        started = time.perf_counter()
        fixture = await seed(db.dsn, plan, db.log)
        doc["seed"] = {
            "seconds": round(time.perf_counter() - started, 1),
            "steps": fixture.seconds,
            "rows": fixture.rows,
        }
        print(f"  seeded in {doc['seed']['seconds']} s: {fixture.rows}", flush=True)
        # Nothing is measured while a peer still seeds.
        if peer_run is not None:
            print(f"  peers set up and seeded (seconds): {await peer_run.ready()}", flush=True)
        if http_peer_seed is not None:
            await asyncio.wait([http_peer_seed])

        # Both sides get the defaults a user gets: pool of 2..10, statement cache 256.
        settings = Settings(database_url=db.dsn)
        api.check_floor_order()
        async with ChatStore(db.dsn, settings=settings) as store:
            resets = await api.chatstore_resets(store)
        doc["floor"] = {"reset_on_release": resets}
        pool = await api.floor_pool(db.dsn, settings, reset=resets)
        floor = api.Floor(pool, settings.search_config)
        # The disk's flush times beside the HTTP runs' latencies (diskprobe.py).
        folder = await db.flush_folder()
        probe = None if folder is None else DiskProbe(folder).start()
        doc["disk_probe"] = str(folder) if folder is not None else None
        try:
            async with ChatStore(db.dsn, settings=settings) as store:
                await api.check_same_work(store, floor, fixture)
                if "api" in sections:
                    print("Python API ...", flush=True)
                    doc["api"] = await run_api(store, floor, fixture, plan, db)
                if "scaling" in sections:
                    print("scaling ...", flush=True)
                    points = await scaling.run(store, floor, fixture, plan, db.dsn)
                    doc["scaling"] = [
                        {
                            k: round(v, 4) if isinstance(v, float) else v
                            for k, v in asdict(p).items()
                        }
                        for p in points
                    ]
            if "http" in sections:
                client = args.client
                if client == "auto":
                    client = "wrk" if have_wrk() else "python"
                print(f"HTTP ({client}) ...", flush=True)
                found = await httpbench.run(
                    db.dsn,
                    fixture,
                    floor,
                    plan,
                    logs,
                    client=client,
                    profile_seconds=plan.http_duration if args.profile else 0,
                    probe=probe,
                )
                doc["http"] = httpbench.to_json(found)
                doc["failures"].extend(found.failures)
            if peer_run is not None:
                print("peers, Python API (each in its own process and database) ...", flush=True)
                doc["peers"] = await peer_run.measure()
                await peer_run.stop()
            if http_peer_seed is not None:
                client = "wrk" if args.client != "python" and have_wrk() else "python"
                print(f"peers, HTTP ({client}) ...", flush=True)
                peer_url, peer_data = await http_peer_seed
                found_http = await httppeers.run(
                    peer_url, peer_data, db.dsn, fixture, plan, logs, client, probe
                )
                doc["http_peers"] = found_http
                doc["failures"].extend(found_http["failures"])
        finally:
            if probe is not None:
                probe.stop()
            await pool.close()
    finally:
        if peer_run is not None:
            await peer_run.stop()
        if http_peer_seed is not None and not http_peer_seed.done():
            http_peer_seed.cancel()
        await db.drop()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM does what Ctrl-C does: asyncio.run cancels the run, whose
    # finally blocks stop the servers and the cluster.
    signal.raise_signal(signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot is not None:
        saved = json.loads(args.replot.read_text())
        print(report.markdown(saved))
        if args.plot:
            from .plot import plot

            for path in plot(saved, PLOTS):
                print(f"wrote {path.relative_to(REPO)}")
        return 0

    plan = QUICK if args.quick else FULL
    if args.phase_seconds is not None:
        s = args.phase_seconds
        plan = replace(
            plan,
            duration=s,
            slice=min(plan.slice, s),
            scaling_duration=s,
            http_duration=max(1, round(s)),
            http_warmup=1,
            client_comparison=0,
            peer_duration=s,
            peer_slice=min(plan.peer_slice, s),
            sweep_duration=s,
            http_peer_duration=max(1, round(s)),
        )
    # Ctrl-C works even when started from a script in the background (where
    # SIGINT arrives ignored), and SIGTERM means the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    now = dt.datetime.now(dt.UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    logs = RESULTS / f"logs-{stamp}"
    logs.mkdir()
    started = time.perf_counter()
    doc: dict[str, Any] = {
        "mode": plan.label,
        "started": now.isoformat(timespec="seconds"),
        "command": "scripts/bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "plan": asdict(plan),
        "machine": machine_facts(),
        "postgres": {},
        "failures": [],
    }
    db = BenchDatabase(args.database_url)
    try:
        db.start_server()
        asyncio.run(bench(db, plan, args, logs, doc))
    finally:
        db.stop_server()
    doc["notes"] = db.log
    doc["wall_seconds"] = round(time.perf_counter() - started, 1)
    doc["loadavg_end"] = loadavg()

    path = args.json or RESULTS / f"bench-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print()
    print(report.markdown(doc))
    print(f"results: {path}")
    if args.plot:
        from .plot import plot

        for written in plot(doc, PLOTS):
            print(f"wrote {written.relative_to(REPO)}")
    if doc["failures"]:
        print("FAILED: " + "; ".join(doc["failures"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("scripts/bench: interrupted; servers and cluster stopped", file=sys.stderr)
        sys.exit(130)
