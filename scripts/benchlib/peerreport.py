"""The peers' tables, their targets and their plot (issue 11's targets).

Read from the JSON document only (``doc["peers"]``, ``doc["http_peers"]``),
so ``--replot`` makes them again from a saved run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .diskprobe import describe, describe_wal, flush_note

# chatstore / floor throughput, at least, per phase (the targets).
FLOOR_TARGETS = {
    ("append", 1): 0.8,
    ("append", 16): 0.7,
    ("newest", 1): 0.8,
    ("newest", 8): 0.6,
}
LANGCHAIN_APPEND = 1.5  # chatstore appends / langchain-postgres', c=1 and c=16
HTTP_RATIO = 5.0  # chatstore serve / the FastAPI + SQLModel peer
HTTP_P99_MS = 50.0


def _n(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.0f}" if value >= 10 else f"{value:,.1f}"


def _x(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def _cost(result: dict[str, Any] | None) -> str:
    if result is None:
        return "-"
    wal = result.get("wal_bytes_per_op")
    return f"{result['cpu_us_per_op']:,.0f} / " + ("-" if wal is None else f"{wal:,.0f}")


def _table(header: list[str], rows: list[list[str]]) -> str:
    rule = ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def _best(results: dict[str, Any], stores: dict[str, str]) -> tuple[str | None, float]:
    peers = {n: r["throughput"] for n, r in results.items() if n not in ("floor", "chatstore")}
    if not peers:
        return None, math.nan
    name = max(peers, key=lambda n: peers[n])
    return stores.get(name, name), peers[name]


def python_markdown(peers: dict[str, Any]) -> str:
    stores: dict[str, str] = peers["stores"]
    names = list(stores)
    out = ["### Python API: chatstore, the minimal floor and the peers (ops/s)\n"]
    rows = []
    for phase in peers["phases"]:
        results = phase["results"]
        chatstore = results["chatstore"]["throughput"]
        best_name, best = _best(results, stores)
        rows.append(
            [f"{phase['title']}, c={phase['concurrency']}"]
            + [_n(results[n]["throughput"]) for n in names]
            + [
                f"**{_x(_ratio(chatstore, results['floor']['throughput']))}**",
                f"{_x(_ratio(chatstore, best))} ({best_name})",
            ]
        )
    header = ["ops/s", *(stores[n] for n in names), "chatstore / floor", "chatstore / best peer"]
    out.append(_table(header, rows))
    out.append("")
    out.append("p99 latency, ms:\n")
    out.append(
        _table(
            ["p99 ms", *(stores[n] for n in names)],
            [
                [f"{p['title']}, c={p['concurrency']}"]
                + [f"{p['results'][n]['p99_ms']:.1f}" if n in p["results"] else "-" for n in names]
                for p in peers["phases"]
            ],
        )
    )
    out.append("")
    out.append(
        "What one operation costs: the store's own process's CPU, µs, and the WAL the "
        "server wrote for it, bytes (only one store runs at a time; WAL is what reaches the "
        "disk before a commit returns):\n"
    )
    out.append(
        _table(
            ["CPU µs / WAL bytes", *(stores[n] for n in names)],
            [
                [f"{p['title']}, c={p['concurrency']}"]
                + [_cost(p["results"].get(n)) for n in names]
                for p in peers["phases"]
            ],
        )
    )
    out.append("")
    sweep = peers.get("sweep", [])
    if sweep:
        out.append("Concurrency sweep (ops/s; pool of 16 everywhere, so 64 queues on the pool):\n")
        best = peers.get("best_peer", {})
        rows = []
        for point in sweep:
            results = point["results"]
            peer = best.get(point["op"])
            floor, chatstore = results["floor"]["throughput"], results["chatstore"]["throughput"]
            rows.append(
                [
                    f"{point['op']}, c={point['concurrency']}",
                    _n(floor),
                    "-"
                    if peer not in results
                    else f"{_n(results[peer]['throughput'])} ({stores.get(peer, peer)})",
                    _n(chatstore),
                    _x(_ratio(chatstore, floor)),
                ]
            )
        out.append(_table(["ops/s", "floor", "best peer", "chatstore", "chatstore / floor"], rows))
        out.append("")
    out.append(
        "Each store runs in its own process on its own database (same server), pool of 16, "
        "~90-character messages; a phase gives every store the same time in slices taken "
        "round-robin (only one store runs at a time). langchain-postgres and llama-index read "
        "a whole history and keep the last 50 (their APIs have no page). Setup and seeding, s: "
        + ", ".join(f"{stores[n]} {s}" for n, s in peers.get("setup_seconds", {}).items())
        + ".\n"
    )
    return "\n".join(out)


def http_markdown(http: dict[str, Any]) -> str:
    client = http["client"]
    load = (
        f"wrk, {http['threads']} threads x {http['connections']} connections"
        if client == "wrk"
        else f"the asyncio client, {http['connections']} connections"
    )
    out = [f"### HTTP: `chatstore serve` against FastAPI + SQLModel (1 worker each, {load})\n"]
    rows = []
    for r in http["results"]:
        cs, peer = r["results"]["chatstore"], r["results"]["fastapi_sqlmodel"]
        rows.append(
            [
                r["title"],
                _n(peer["throughput"]),
                _n(cs["throughput"]),
                f"**{r['ratio']:.2f}**",
                f"{peer['p50_ms']:.1f} / {peer['p99_ms']:.1f}",
                f"{cs['p50_ms']:.1f} / {cs['p99_ms']:.1f}",
                f"{describe(peer.get('disk_flushes'))} / {describe(cs.get('disk_flushes'))}",
                f"{describe_wal(peer.get('wal_syncs'))} / {describe_wal(cs.get('wal_syncs'))}",
            ]
        )
    out.append(
        _table(
            [
                "req/s",
                "FastAPI + SQLModel",
                "chatstore",
                "chatstore / peer",
                "peer p50 / p99 ms",
                "chatstore p50 / p99 ms",
                "disk flush max ms, peer / chatstore runs",
                "WAL flush mean ms (share of runs), peer / chatstore",
            ],
            rows,
        )
    )
    runs = http.get("runs", 2)
    out.append(
        f"\nEach server on its own database with the same data; per workload both warm up "
        f"{http.get('warmup_seconds', 2)} s, then run {runs} x {http.get('seconds', 5)} s each, "
        "alternating; p99 is the worst run's. No in-process floor here: the ratio is against "
        "the peer. Disk flush max: the longest fdatasync of a file on the database's disk "
        "during that server's runs (scripts/benchlib/diskprobe.py, one every 50 ms), and how "
        "many took 50 ms or more; every append's commit waits for one. WAL flush: PostgreSQL's own "
        "(pg_stat_wal), their mean and the share of that server's runs they took; approximate, "
        "since PostgreSQL publishes them up to a second late (10 s once idle).\n"
    )
    return "\n".join(out)


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 11's targets: measured, met or not."""
    found: list[dict[str, Any]] = []
    peers = doc.get("peers") or {}
    for phase in peers.get("phases", []):
        results = phase["results"]
        chatstore = results["chatstore"]["throughput"]
        goal = FLOOR_TARGETS.get((phase["op"], phase["concurrency"]))
        if goal is not None:
            ratio = _ratio(chatstore, results["floor"]["throughput"])
            found.append(
                {
                    "target": f"{phase['title']}, c={phase['concurrency']}: "
                    f"chatstore >= {goal}x the minimal floor",
                    "value": f"{ratio:.2f}x",
                    "met": ratio >= goal,
                }
            )
        if phase["op"] == "append" and "langchain" in results:
            ratio = _ratio(chatstore, results["langchain"]["throughput"])
            found.append(
                {
                    "target": f"append 1, c={phase['concurrency']}: "
                    f"chatstore >= {LANGCHAIN_APPEND}x langchain-postgres",
                    "value": f"{ratio:.2f}x",
                    "met": ratio >= LANGCHAIN_APPEND,
                }
            )
    http = doc.get("http_peers") or {}
    for r in http.get("results", []):
        found.append(
            {
                "target": f"HTTP {r['title']}: chatstore >= {HTTP_RATIO:.0f}x FastAPI + SQLModel",
                "value": f"{r['ratio']:.2f}x",
                "met": r["ratio"] >= HTTP_RATIO,
            }
        )
        cs = r["results"]["chatstore"]
        p99 = cs["p99_ms"]
        found.append(
            {
                "target": f"HTTP {r['title']}: chatstore p99 < {HTTP_P99_MS:.0f} ms "
                f"at {http['connections']} connections",
                "value": f"{p99:.1f} ms" + flush_note(cs.get("disk_flushes"), cs.get("wal_syncs")),
                "met": p99 < HTTP_P99_MS,
            }
        )
    return found


def markdown(doc: dict[str, Any]) -> str:
    out = []
    if doc.get("peers"):
        out.append(python_markdown(doc["peers"]))
    if doc.get("http_peers"):
        out.append(http_markdown(doc["http_peers"]))
    found = targets(doc)
    if found:
        out.append("### Issue 11's targets (measured in this run, never asserted)\n")
        out.append(
            _table(
                ["target", "measured", "status"],
                [[t["target"], t["value"], "met" if t["met"] else "**not met**"] for t in found],
            )
        )
        out.append("")
    return "\n".join(out)


def plot(doc: dict[str, Any], directory: Path) -> list[Path]:
    """Throughput vs concurrency, appends and reads: chatstore, the floor, the best peer."""
    sweep = (doc.get("peers") or {}).get("sweep", [])
    if not sweep:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stores: dict[str, str] = doc["peers"]["stores"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    styles = {"floor": ("s-", "#9aa5b1"), "chatstore": ("o-", "#2b6cb0")}
    for ax, op in ((axes[0], "append"), (axes[1], "newest")):
        points = sorted((p for p in sweep if p["op"] == op), key=lambda p: p["concurrency"])
        if not points:
            continue
        size = points[0]["size"]
        title = "append 1 message" if op == "append" else f"newest 50 of {size:,} messages"
        levels = [p["concurrency"] for p in points]
        for name in points[0]["results"]:
            style, color = styles.get(name, ("^--", "#dd6b20"))
            ax.plot(
                levels,
                [p["results"][name]["throughput"] for p in points],
                style,
                color=color,
                label=stores.get(name, name),
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_ylim(bottom=0)
        ax.set_xlabel("concurrent tasks (pool of 16)")
        ax.set_ylabel("operations per second")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Throughput vs concurrency ({doc['mode']} run, {doc['started'][:10]})")
    fig.tight_layout()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "concurrency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
