"""The HTTP layer: ``chatstore serve`` under load from a separate process.

For each worker count, for each workload: the floor's throughput at
concurrency 16 is measured again right before the HTTP run (so the two are
adjacent in time on a noisy machine), then the load generator warms up and
runs for a fixed time while the workers' RSS is sampled. Every non-2xx
response and every socket error is counted; any fails the run.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import profile as profiling
from .api import Floor
from .diskprobe import DiskProbe, Watch, flush_note, flush_report
from .plan import Plan
from .seed import Fixture
from .server import RssSampler, Server, cpu_seconds, status_kb
from .stats import Op, measure
from .wrk import LoadResult, Request, have_wrk, run_loadgen, run_wrk

MB = 1024.0  # kB per MB in /proc/<pid>/status


@dataclass(frozen=True, slots=True)
class HttpWorkload:
    key: str
    title: str
    requests: list[Request]
    floor: Op
    floor_key: str  # the Python API workload it is compared with
    target: float | None  # HTTP / floor throughput, at least


@dataclass
class HttpResult:
    workload: str
    title: str
    workers: int
    load: LoadResult
    floor_throughput: float
    floor_key: str
    ratio: float
    target: float | None
    warmup_non2xx: int
    flushes: dict[str, Any]  # the disk's and PostgreSQL's flushes in the run (flush_report)


@dataclass
class WorkerMemory:
    workers: int
    peak_rss_mb: list[float]  # VmHWM of each worker after the whole load
    sampled_peak_mb: list[float]  # highest VmRSS seen by the sampler


@dataclass
class ExportMemory:
    messages: int
    bytes: int
    seconds: float
    rss_before_mb: float
    rss_peak_mb: float
    rss_after_mb: float

    @property
    def growth_mb(self) -> float:
        return self.rss_after_mb - self.rss_before_mb

    @property
    def peak_growth_mb(self) -> float:
        return self.rss_peak_mb - self.rss_before_mb


@dataclass
class ClientComparison:
    client: str
    throughput: float
    p50_ms: float
    p99_ms: float
    client_cpu_per_1k: float  # CPU seconds the client used per 1,000 requests
    server_cpu_per_1k: float  # CPU seconds the server worker used per 1,000 requests
    client_cpu_share: float  # client CPU seconds / wall seconds (1.0 = one core)


@dataclass
class HttpReport:
    client: str
    results: list[HttpResult] = field(default_factory=list)
    memory: list[WorkerMemory] = field(default_factory=list)
    export: ExportMemory | None = None
    clients: list[ClientComparison] = field(default_factory=list)
    profiles: dict[str, profiling.Profile] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _auth(token: str, body: bool = False) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if body:
        headers["Content-Type"] = "application/json"
    return headers


def http_workloads(fixture: Fixture, floor: Floor) -> list[HttpWorkload]:
    tokens = fixture.tokens
    append_body = json.dumps({"role": "user", "content": "HTTP benchmark message: the quick fox."})
    append_requests = [
        Request(
            "POST",
            f"/api/conversations/{cid}/messages",
            _auth(tokens[fixture.append_user], body=True),
            append_body,
        )
        for cid in fixture.append_conversations
    ]
    conversations = fixture.append_conversations

    def floor_append(w: int, i: int) -> Awaitable[object]:
        # The same spread as the HTTP run: consecutive requests, consecutive conversations.
        cid = conversations[(w + i * 16) % len(conversations)]
        return floor.append(fixture.append_user, cid, [("user", "HTTP benchmark message.")])

    page_requests = [
        Request(
            "GET",
            f"/api/conversations/{fixture.big}/messages?limit=50&order=desc",
            _auth(tokens[fixture.reader_user]),
        )
    ]

    def floor_page(w: int, i: int) -> Awaitable[object]:
        return floor.page(fixture.reader_user, fixture.big, 50)

    list_user = fixture.big_list_user
    list_requests = [Request("GET", "/api/conversations?limit=20", _auth(tokens[list_user]))]

    def floor_list(w: int, i: int) -> Awaitable[object]:
        return floor.conversations(list_user, 20)

    users, terms = fixture.search_users, fixture.search_terms
    pairs = [(users[n % len(users)], terms[(n * 7) % len(terms)]) for n in range(1000)]
    search_requests = [
        Request("GET", f"/api/search?q={quote(term)}&limit=20", _auth(tokens[user]))
        for user, term in pairs
    ]

    def floor_search(w: int, i: int) -> Awaitable[object]:
        user, term = pairs[(w * 61 + i) % len(pairs)]
        return floor.search(user, term, 20)

    return [
        HttpWorkload(
            "append", "POST one message", append_requests, floor_append, "append_c16", 0.6
        ),
        HttpWorkload(
            "page50",
            "GET newest 50 messages (big conversation)",
            page_requests,
            floor_page,
            "page50_big_c16",
            0.5,
        ),
        HttpWorkload(
            "list20", "GET page of 20 conversations", list_requests, floor_list, "list20_c16", 0.5
        ),
        HttpWorkload("search", "GET search", search_requests, floor_search, "search_c16", None),
    ]


def _load(
    client: str, port: int, requests: list[Request], connections: int, seconds: int
) -> LoadResult:
    if client == "wrk":
        return run_wrk(port, requests, connections=connections, seconds=seconds)
    return run_loadgen(port, requests, connections=connections, seconds=seconds)


async def run(
    dsn: str,
    fixture: Fixture,
    floor: Floor,
    plan: Plan,
    logs: Path,
    *,
    client: str,
    profile_seconds: int,
    probe: DiskProbe | None = None,
) -> HttpReport:
    report = HttpReport(client=client)
    workloads = http_workloads(fixture, floor)
    connections = plan.http_connections
    for workers in (1,) if plan.quick else (1, 2):
        server = Server(dsn, workers, logs / f"serve-{workers}w.log")
        server.start()
        try:
            pids = server.worker_pids()
            sampled = {pid: 0 for pid in pids}
            for workload in workloads:
                floor_run = await measure(workload.floor, connections, plan.duration / 2)
                warm = await asyncio.to_thread(
                    _load, client, server.port, workload.requests, connections, plan.http_warmup
                )
                async with Watch(dsn) as watch:
                    with RssSampler(pids) as sampler:
                        load = await asyncio.to_thread(
                            _load,
                            client,
                            server.port,
                            workload.requests,
                            connections,
                            plan.http_duration,
                        )
                for pid, kb in sampler.peak_kb.items():
                    sampled[pid] = max(sampled[pid], kb)
                result = HttpResult(
                    workload=workload.key,
                    title=workload.title,
                    workers=workers,
                    load=load,
                    floor_throughput=floor_run.throughput,
                    floor_key=workload.floor_key,
                    ratio=load.throughput / floor_run.throughput if floor_run.throughput else 0,
                    target=workload.target,
                    warmup_non2xx=warm.non2xx + warm.socket_errors,
                    flushes=flush_report(probe, [watch]),
                )
                report.results.append(result)
                bad = load.non2xx + load.socket_errors + result.warmup_non2xx
                if bad:
                    report.failures.append(
                        f"HTTP {workload.key} ({workers} worker(s)): {load.non2xx} non-2xx, "
                        f"{load.socket_errors} socket errors, {result.warmup_non2xx} in the "
                        f"warm-up {load.detail or warm.detail}"
                    )
                flushes = flush_note(result.flushes["disk_flushes"], result.flushes["wal_syncs"])
                print(
                    f"  http {workers}w {workload.key}: {load.throughput:,.0f} req/s "
                    f"(floor {floor_run.throughput:,.0f}/s, x{result.ratio:.2f}), "
                    f"p99 {load.p99_ms:.1f} ms{flushes}, non-2xx {load.non2xx}"
                )
            report.memory.append(
                WorkerMemory(
                    workers=workers,
                    peak_rss_mb=[status_kb(pid, "VmHWM") / MB for pid in pids],
                    sampled_peak_mb=[sampled[pid] / MB for pid in pids],
                )
            )
            if workers == 1 and plan.client_comparison > 0:
                report.clients = await _compare_clients(server, workloads[1], plan)
            if workers == 1 and profile_seconds > 0:
                for workload in workloads:
                    found = await _profile(
                        server, workload, client, connections, profile_seconds, logs
                    )
                    if found is not None:
                        report.profiles[workload.key] = found
        finally:
            server.stop()

    report.export = await _export_memory(dsn, fixture, plan, logs)
    return report


async def _compare_clients(
    server: Server, workload: HttpWorkload, plan: Plan
) -> list[ClientComparison]:
    """The same workload from wrk and from the asyncio client: what each costs."""
    found = []
    (pid,) = server.worker_pids()
    clients = ["wrk", "python"] if have_wrk() else ["python"]
    for client in clients:
        before = cpu_seconds(pid)
        load = await asyncio.to_thread(
            _load,
            client,
            server.port,
            workload.requests,
            plan.http_connections,
            plan.client_comparison,
        )
        used = cpu_seconds(pid) - before
        per_1k = 1000 / load.requests if load.requests else 0.0
        found.append(
            ClientComparison(
                client=load.client,
                throughput=load.throughput,
                p50_ms=load.p50_ms,
                p99_ms=load.p99_ms,
                client_cpu_per_1k=load.client_cpu_s * per_1k,
                server_cpu_per_1k=used * per_1k,
                client_cpu_share=load.client_cpu_s / load.seconds if load.seconds else 0.0,
            )
        )
        print(
            f"  client {load.client}: {load.throughput:,.0f} req/s, "
            f"client CPU {load.client_cpu_s / load.seconds:.0%} of a core"
        )
    return found


async def _profile(
    server: Server,
    workload: HttpWorkload,
    client: str,
    connections: int,
    seconds: int,
    logs: Path,
) -> profiling.Profile | None:
    (pid,) = server.worker_pids()
    out = logs / f"py-spy-{workload.key}.txt"
    recorder = profiling.record(pid, seconds, out)
    if recorder is None:
        return None
    await asyncio.sleep(0.5)  # py-spy attaches
    await asyncio.to_thread(_load, client, server.port, workload.requests, connections, seconds)
    _, error = await asyncio.to_thread(recorder.communicate)
    if recorder.returncode != 0 or not out.exists():
        print(f"  py-spy failed: {error.decode(errors='replace').strip()[-300:]}")
        return None
    found = profiling.summarize(out)
    top = ", ".join(f"{k} {v:.0%}" for k, v in list(found.self_by_layer.items())[:4])
    print(f"  py-spy {workload.key}: {top}")
    return found


def _stream_export(port: int, path: str, token: str) -> tuple[int, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    response = connection.getresponse()
    if response.status != 200:
        raise RuntimeError(f"export answered {response.status}: {response.read(500)!r}")
    total = 0
    while chunk := response.read(1 << 20):
        total += len(chunk)
    connection.close()
    return total, time.perf_counter() - started


async def _export_memory(dsn: str, fixture: Fixture, plan: Plan, logs: Path) -> ExportMemory:
    """A fresh one-worker server exports the big conversation as JSONL."""
    server = Server(dsn, 1, logs / "serve-export.log")
    server.start()
    try:
        (pid,) = server.worker_pids()
        token = fixture.tokens[fixture.reader_user]
        # Warm every code path the export uses on something small first.
        await asyncio.to_thread(
            _stream_export,
            server.port,
            f"/api/conversations/{fixture.small}/export?format=jsonl",
            token,
        )
        before = status_kb(pid, "VmRSS")
        with RssSampler([pid], interval=0.02) as sampler:
            size, seconds = await asyncio.to_thread(
                _stream_export,
                server.port,
                f"/api/conversations/{fixture.big}/export?format=jsonl",
                token,
            )
        after = status_kb(pid, "VmRSS")
        result = ExportMemory(
            messages=plan.big_conversation,
            bytes=size,
            seconds=seconds,
            rss_before_mb=before / MB,
            rss_peak_mb=sampler.peak_kb[pid] / MB,
            rss_after_mb=after / MB,
        )
        print(
            f"  export {plan.big_conversation:,} messages as JSONL: {size / 1e6:,.0f} MB in "
            f"{seconds:.1f} s; RSS {result.rss_before_mb:.0f} -> peak "
            f"{result.rss_peak_mb:.0f} -> {result.rss_after_mb:.0f} MB"
        )
        return result
    finally:
        server.stop()


def to_json(report: HttpReport) -> dict[str, Any]:
    return {
        "client": report.client,
        "results": [
            {
                "workload": r.workload,
                "title": r.title,
                "workers": r.workers,
                **r.load.to_json(),
                "floor_key": r.floor_key,
                "floor_throughput": round(r.floor_throughput, 1),
                "ratio": round(r.ratio, 3),
                "target": r.target,
                "warmup_non2xx": r.warmup_non2xx,
                **r.flushes,
            }
            for r in report.results
        ],
        "memory": [
            {
                "workers": m.workers,
                "peak_rss_mb": [round(x, 1) for x in m.peak_rss_mb],
                "sampled_peak_mb": [round(x, 1) for x in m.sampled_peak_mb],
            }
            for m in report.memory
        ],
        "export": None
        if report.export is None
        else {
            "messages": report.export.messages,
            "bytes": report.export.bytes,
            "seconds": round(report.export.seconds, 2),
            "rss_before_mb": round(report.export.rss_before_mb, 1),
            "rss_peak_mb": round(report.export.rss_peak_mb, 1),
            "rss_after_mb": round(report.export.rss_after_mb, 1),
        },
        "clients": [
            {
                "client": c.client,
                "throughput": round(c.throughput, 1),
                "p50_ms": round(c.p50_ms, 3),
                "p99_ms": round(c.p99_ms, 3),
                "client_cpu_per_1k": round(c.client_cpu_per_1k, 4),
                "server_cpu_per_1k": round(c.server_cpu_per_1k, 4),
                "client_cpu_share": round(c.client_cpu_share, 3),
            }
            for c in report.clients
        ],
        "profiles": {
            key: {
                "samples": p.samples,
                "self_by_layer": p.self_by_layer,
                "inclusive_by_layer": p.inclusive_by_layer,
                "top_functions": p.top_functions,
            }
            for key, p in report.profiles.items()
        },
        "failures": report.failures,
    }
