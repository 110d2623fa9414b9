"""The results as one JSON document, its Markdown tables, and the targets.

Everything the Markdown shows is read from the JSON document, so
``--replot`` and the tables of BENCHMARKS.md can be made again from a saved
``bench-results/bench-*.json``.
"""

from __future__ import annotations

import math
from typing import Any

from . import peerreport
from .diskprobe import describe, describe_wal, flush_note

# The task's targets (measured and reported, never asserted).
API_RATIO = 0.9
HTTP_P99_MS = 50.0
PAGE_FLATNESS = 1.2
RSS_PER_WORKER_MB = 150.0
EXPORT_GROWTH_MB = 50.0


DASH = "-"


def _n(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return f"{value:,.{digits}f}"


def _ms(value: float) -> str:
    if value is None or math.isnan(value):
        return DASH
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _mark(met: bool | None) -> str:
    return DASH if met is None else ("met" if met else "**missed**")


def size_label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the task: what was measured and whether it is met."""
    found: list[dict[str, Any]] = []
    for r in doc.get("api", []):
        found.append(
            {
                "target": f"Python API {r['key']}: chatstore >= {API_RATIO}x floor",
                "value": f"{r['ratio']:.2f}x",
                "met": r["ratio"] >= API_RATIO,
            }
        )
    http = doc.get("http") or {}
    for r in http.get("results", []):
        if r["target"] is not None:
            found.append(
                {
                    "target": f"HTTP {r['workload']} ({r['workers']}w): >= {r['target']}x floor "
                    f"{r['floor_key']}",
                    "value": f"{r['ratio']:.2f}x",
                    "met": r["ratio"] >= r["target"],
                }
            )
        found.append(
            {
                "target": f"HTTP {r['workload']} ({r['workers']}w): p99 < {HTTP_P99_MS:.0f} ms",
                "value": f"{r['p99_ms']:.1f} ms"
                + flush_note(r.get("disk_flushes"), r.get("wal_syncs")),
                "met": r["p99_ms"] < HTTP_P99_MS,
            }
        )
    for m in http.get("memory", []):
        peak = max(m["peak_rss_mb"]) if m["peak_rss_mb"] else math.nan
        found.append(
            {
                "target": f"server peak RSS per worker ({m['workers']}w) "
                f"< {RSS_PER_WORKER_MB:.0f} MB",
                "value": f"{peak:.0f} MB",
                "met": peak < RSS_PER_WORKER_MB,
            }
        )
    export = http.get("export")
    if export:
        growth = export["rss_peak_mb"] - export["rss_before_mb"]
        found.append(
            {
                "target": f"export of {size_label(export['messages'])} messages grows RSS "
                f"< {EXPORT_GROWTH_MB:.0f} MB (peak during - before)",
                "value": f"{growth:+.1f} MB",
                "met": growth < EXPORT_GROWTH_MB,
            }
        )
    for kind, what in (("page", "page of 50"), ("list", "page of 20 conversations")):
        points = sorted(
            (p for p in doc.get("scaling", []) if p["kind"] == kind), key=lambda p: p["size"]
        )
        if len(points) >= 2:
            small, big = points[0], points[-1]
            ratio = big["chatstore_p50_ms"] / small["chatstore_p50_ms"]
            found.append(
                {
                    "target": f"{what}: {size_label(big['size'])} <= {PAGE_FLATNESS}x "
                    f"{size_label(small['size'])} (p50)",
                    "value": f"{ratio:.2f}x",
                    "met": ratio <= PAGE_FLATNESS,
                }
            )
    return found


def markdown(doc: dict[str, Any]) -> str:
    out: list[str] = []
    machine = doc["machine"]
    pg = doc["postgres"]
    out.append(
        f"## chatstore benchmark ({doc['mode']} run, {doc['started']}, "
        f"{doc['wall_seconds']:.0f} s)\n"
    )
    out.append(
        f"{machine['nproc']} cores ({machine['cpu']}), {machine['memory_mb'] / 1024:.0f} GiB, "
        f"Linux {machine['kernel']}, Python {machine['python']}, load average at start "
        f"{machine['loadavg_start'][0]:.2f}, at end {doc['loadavg_end'][0]:.2f}. "
        f"PostgreSQL {pg.get('server_version', '?')}: "
        f"synchronous_commit={pg.get('synchronous_commit')}, "
        f"fsync={pg.get('fsync')}, shared_buffers={pg.get('shared_buffers')}, "
        f"work_mem={pg.get('work_mem')}. "
        f"Command: `{doc.get('command', 'scripts/bench')}`.\n"
    )
    peer_tables = peerreport.markdown(doc)
    if peer_tables:
        out.append(peer_tables)

    api = doc.get("api", [])
    if api:
        out.append("### Python API: chatstore vs the floor (raw asyncpg)\n")
        rows = []
        for r in api:
            cs, fl = r["chatstore"], r["floor"]
            low, high = r.get("ratio_iqr", [math.nan, math.nan])
            title = r["title"]
            if r.get("gin_pending_pages") is not None:
                title += f" (GIN pending list: {r['gin_pending_pages']} pages)"
            rows.append(
                [
                    title,
                    str(r["concurrency"]),
                    _n(cs["throughput"]),
                    _n(fl["throughput"]),
                    f"**{r['ratio']:.2f}** ({low:.2f}-{high:.2f})",
                    f"{cs['cpu_us_per_op']:.0f} / {fl['cpu_us_per_op']:.0f}",
                    f"{_ms(cs['p50_ms'])} / {_ms(fl['p50_ms'])}",
                    f"{_ms(cs['p99_ms'])} / {_ms(fl['p99_ms'])}",
                    _ms(r["server_ms"]) if r.get("server_ms") is not None else DASH,
                    _mark(r["ratio"] >= API_RATIO),
                ]
            )
        out.append(
            table(
                [
                    "workload",
                    "conc.",
                    "chatstore ops/s",
                    "floor ops/s",
                    "ratio (IQR)",
                    "CPU us/op cs / floor",
                    "p50 ms cs / floor",
                    "p99 ms cs / floor",
                    "server ms",
                    f">= {API_RATIO}x",
                ],
                rows,
            )
        )
        out.append(
            "\nops/s: operations over seconds, each side timed in alternating 0.25 s slices; "
            "ratio: median of the per-slice-pair throughput ratios (IQR: their 25th-75th "
            "percentiles, the noise); CPU us/op: this process's CPU time per operation; "
            "server ms: mean execution time of the statement (pg_stat_statements, both sides).\n"
        )

    http = doc.get("http") or {}
    if http.get("results"):
        out.append(f"### HTTP: `chatstore serve` under load ({http['client']}, 16 connections)\n")
        rows = []
        for r in http["results"]:
            rows.append(
                [
                    r["title"],
                    str(r["workers"]),
                    _n(r["throughput"]),
                    _ms(r["p50_ms"]),
                    _ms(r["p99_ms"]),
                    str(r["non2xx"] + r["socket_errors"] + r["warmup_non2xx"]),
                    _n(r["floor_throughput"]),
                    f"**{r['ratio']:.2f}**",
                    DASH
                    if r["target"] is None
                    else f"{r['target']}x: {_mark(r['ratio'] >= r['target'])}",
                    _mark(r["p99_ms"] < HTTP_P99_MS),
                    describe(r.get("disk_flushes")),
                    describe_wal(r.get("wal_syncs")),
                ]
            )
        out.append(
            table(
                [
                    "workload",
                    "workers",
                    "req/s",
                    "p50 ms",
                    "p99 ms",
                    "non-2xx",
                    "floor c16 ops/s",
                    "HTTP / floor",
                    "ratio target",
                    f"p99 < {HTTP_P99_MS:.0f} ms",
                    "disk flush max ms",
                    "WAL flush mean ms (share of run)",
                ],
                rows,
            )
        )
        out.append(
            "\nfloor c16: the same statement from 16 tasks on the raw asyncpg pool, measured "
            "right before the HTTP run. Disk flush max: the longest fdatasync of a file on the "
            "database's disk during the run (scripts/benchlib/diskprobe.py, one every 50 ms), "
            "and how many took 50 ms or more; every append's commit waits for one. WAL flush: "
            "PostgreSQL's own (pg_stat_wal), their mean and the share of the run they took; "
            "approximate, since PostgreSQL publishes them up to a second late (10 s once idle).\n"
        )

    if http.get("memory") or http.get("export"):
        out.append("### Memory\n")
        rows = []
        for m in http.get("memory", []):
            rows.append(
                [
                    f"peak RSS under the HTTP load, {m['workers']} worker(s)",
                    ", ".join(f"{x:.0f} MB" for x in m["peak_rss_mb"]),
                    _mark(max(m["peak_rss_mb"]) < RSS_PER_WORKER_MB),
                ]
            )
        export = http.get("export")
        if export:
            growth = export["rss_peak_mb"] - export["rss_before_mb"]
            rows.append(
                [
                    f"export of {export['messages']:,} messages as JSONL "
                    f"({export['bytes'] / 1e6:,.0f} MB in {export['seconds']:.1f} s)",
                    f"RSS {export['rss_before_mb']:.0f} MB before, {export['rss_peak_mb']:.0f} MB "
                    f"peak, {export['rss_after_mb']:.0f} MB after ({growth:+.1f} MB)",
                    _mark(growth < EXPORT_GROWTH_MB),
                ]
            )
        out.append(table(["what", "measured", "target"], rows, "llc"))
        out.append("")

    scaling = doc.get("scaling", [])
    if scaling:
        out.append("### Scaling: the cost of a page as the data grows\n")
        rows = []
        for p in scaling:
            what = "newest 50 messages" if p["kind"] == "page" else "first 20 conversations"
            unit = (
                "messages in the conversation"
                if p["kind"] == "page"
                else "conversations of the user"
            )
            rows.append(
                [
                    what,
                    f"{p['size']:,} {unit}",
                    _ms(p["chatstore_p50_ms"]),
                    _ms(p["chatstore_p99_ms"]),
                    _ms(p["floor_p50_ms"]),
                    _ms(p["server_ms"]),
                    str(p["buffers"]),
                ]
            )
        out.append(
            table(
                [
                    "read",
                    "size",
                    "chatstore p50 ms",
                    "chatstore p99 ms",
                    "floor p50 ms",
                    "server ms (EXPLAIN ANALYZE)",
                    "buffers",
                ],
                rows,
                "llrrrrr",
            )
        )
        out.append("")

    clients = http.get("clients", [])
    if clients:
        out.append("### Load generator: wrk against an asyncio client (page of 50, 1 worker)\n")
        rows = [
            [
                c["client"],
                _n(c["throughput"]),
                _ms(c["p99_ms"]),
                f"{c['client_cpu_share']:.0%}",
                f"{c['client_cpu_per_1k'] * 1000:.0f} ms",
                f"{c['server_cpu_per_1k'] * 1000:.0f} ms",
            ]
            for c in clients
        ]
        out.append(
            table(
                [
                    "client",
                    "req/s",
                    "p99 ms",
                    "client CPU (of one core)",
                    "client CPU per 1k req",
                    "server CPU per 1k req",
                ],
                rows,
            )
        )
        out.append("")

    profiles = http.get("profiles", {})
    if profiles:
        out.append("### Where the server's CPU goes (py-spy, 1 worker, busy samples)\n")
        layers = sorted({k for p in profiles.values() for k in p["self_by_layer"]})
        rows = [
            [layer] + [f"{profiles[w]['self_by_layer'].get(layer, 0):.0%}" for w in profiles]
            for layer in layers
        ]
        out.append(table(["layer (innermost frame)", *profiles.keys()], rows))
        out.append("")

    found = targets(doc)
    if found:
        out.append("### Targets\n")
        out.append(
            table(
                ["target", "measured", "status"],
                [[t["target"], t["value"], _mark(t["met"])] for t in found],
                "lrl",
            )
        )
        out.append("")
    failures = doc.get("failures", [])
    if failures:
        out.append("### FAILURES\n")
        out.extend(f"- {f}" for f in failures)
        out.append("")
    return "\n".join(out)
