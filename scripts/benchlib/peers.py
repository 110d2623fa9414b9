"""The Python API against the peers: every store in its own process and database.

Each store of ``peerstores`` runs in a ``peerworker`` process of its own, on
a database of its own in the same PostgreSQL server, seeded with the same
data (64 empty append conversations, one of 100 and one of 10k messages).
A phase (an operation at a concurrency) gives every store the same time in
short slices taken round-robin, the order rotating each round, so that
background load on this shared machine weighs on all of them alike. Only
one store runs at any moment.

Then the sweep: appends and newest-50-of-10k at concurrency 1, 4, 16, 64 for
chatstore, the floor and the best peer of each operation (the peer with the
highest throughput in the phase at the highest concurrency), the plot's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg

from .database import with_database
from .peerstores import PEERS, STORES
from .plan import Plan
from .stats import Run, Summary

# The server's current WAL position, in bytes.
WalPosition = Callable[[], Awaitable[int]]

REPO = Path(__file__).resolve().parents[2]
LLAMA_PYTHON = REPO / ".venv-llama" / "bin" / "python"


@dataclass(frozen=True, slots=True)
class Phase:
    key: str
    title: str
    op: str  # "append" or "newest"
    size: int | None  # the conversation read by "newest"
    concurrency: int


def phases(plan: Plan) -> list[Phase]:
    big, small = plan.peer_sizes[1], plan.peer_sizes[0]
    return [
        Phase("append_c1", "append 1", "append", None, 1),
        Phase("append_c16", "append 1", "append", None, 16),
        Phase(f"newest_{big}_c1", f"newest 50 of {label(big)}", "newest", big, 1),
        Phase(f"newest_{big}_c8", f"newest 50 of {label(big)}", "newest", big, 8),
        Phase(f"newest_{small}_c1", f"newest 50 of {label(small)}", "newest", small, 1),
        Phase(f"newest_{small}_c8", f"newest 50 of {label(small)}", "newest", small, 8),
    ]


def label(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


class PeerProcess:
    """A peerworker subprocess and its line protocol."""

    def __init__(self, name: str, log: Path) -> None:
        self.name = name
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    def python(self) -> str | None:
        if self.name == "llamaindex":
            return str(LLAMA_PYTHON) if LLAMA_PYTHON.exists() else None
        return sys.executable

    async def start(self) -> None:
        python = self.python()
        if python is None:
            raise RuntimeError(
                f"{LLAMA_PYTHON} is missing: scripts/bench makes it (see BENCHMARKS.md)"
            )
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                python,
                "-m",
                "scripts.benchlib.peerworker",
                self.name,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=REPO,
                limit=1 << 26,
            )

    async def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        process = self.process
        assert process is not None and process.stdin is not None and process.stdout is not None
        process.stdin.write((json.dumps(command) + "\n").encode())
        await process.stdin.drain()
        line = await process.stdout.readline()
        if not line:
            raise RuntimeError(f"peer {self.name} exited; see {self.log}")
        found: dict[str, Any] = json.loads(line)
        if not found.get("ok"):
            raise RuntimeError(f"peer {self.name}: {found.get('error')}")
        return found

    async def run(self, op: str, size: int | None, concurrency: int, seconds: float) -> Run:
        found = await self.ask(
            {
                "cmd": "run",
                "op": op,
                "target": None if size is None else f"read-{size}",
                "concurrency": concurrency,
                "seconds": seconds,
            }
        )
        return Run(
            ops=found["ops"],
            seconds=found["seconds"],
            cpu_seconds=found["cpu_seconds"],
            latencies=found["latencies"],
        )

    async def stop(self) -> None:
        process = self.process
        if process is None:
            return
        self.process = None
        if process.returncode is None:
            try:
                assert process.stdin is not None
                process.stdin.write(b'{"cmd": "close"}\n')
                await process.stdin.drain()
                process.stdin.close()
                # A few seconds to close its pool; its database is dropped anyway.
                await asyncio.wait_for(process.wait(), 3)
            except (OSError, TimeoutError):
                process.kill()
                await process.wait()


def summary(runs: list[Run]) -> dict[str, Any]:
    found = asdict(Summary.of(runs))
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in found.items()}


async def interleave(
    workers: dict[str, PeerProcess],
    op: str,
    size: int | None,
    concurrency: int,
    *,
    warmup: float,
    seconds: float,
    slice_seconds: float,
    wal: WalPosition | None = None,
) -> dict[str, dict[str, Any]]:
    """``seconds`` of each store in slices, round-robin, the order rotating.
    ``wal``: the server's WAL position, read around each slice: only one
    store runs at a time, so what was written meanwhile is that store's
    (give or take autovacuum)."""
    names = list(workers)
    runs: dict[str, list[Run]] = {name: [] for name in names}
    if warmup > 0:
        for name in names:
            await workers[name].run(op, size, concurrency, warmup)
    rounds = max(1, round(seconds / slice_seconds))
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            before = None if wal is None else await wal()
            run = await workers[name].run(op, size, concurrency, slice_seconds)
            if wal is not None and before is not None:
                run.wal_bytes = await wal() - before
            runs[name].append(run)
    return {name: summary(runs[name]) for name in names}


class Peers:
    """The peer processes of one run: started (imports and seeding) while the
    bench seeds its own database, measured later, stopped at the end."""

    def __init__(self, server_url: str, plan: Plan, logs: Path, notes: list[str]) -> None:
        self.server_url = server_url
        self.plan = plan
        names = [name for name in STORES if name != "llamaindex" or LLAMA_PYTHON.exists()]
        if "llamaindex" not in names:
            notes.append(f"peers: llama-index skipped, {LLAMA_PYTHON} missing")
        self.workers = {name: PeerProcess(name, logs / f"peer-{name}.log") for name in names}
        self.setup: asyncio.Task[dict[str, float]] | None = None

    def start(self) -> None:
        """Create the databases, start the processes and seed, in the background."""
        self.setup = asyncio.create_task(self._start())

    async def _start(self) -> dict[str, float]:
        databases = {name: f"chatstore_peer_{name}" for name in self.workers}

        async def create(database: str) -> None:
            admin = await asyncpg.connect(self.server_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                await admin.execute(f'CREATE DATABASE "{database}"')
            finally:
                await admin.close()

        await asyncio.gather(
            *(create(database) for database in databases.values()),
            *(worker.start() for worker in self.workers.values()),
        )
        opened = await asyncio.gather(
            *(
                worker.ask(
                    {
                        "cmd": "open",
                        "dsn": with_database(self.server_url, databases[name]),
                        "append": self.plan.append_conversations,
                        "sizes": list(self.plan.peer_sizes),
                    }
                )
                for name, worker in self.workers.items()
            )
        )
        return {name: found["seconds"] for name, found in zip(self.workers, opened, strict=True)}

    async def ready(self) -> dict[str, float]:
        """Wait for the setup (before anything is measured, so that no seeding overlaps it)."""
        assert self.setup is not None
        return await self.setup

    async def measure(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"stores": {name: STORES[name][1] for name in self.workers}}
        doc["setup_seconds"] = await self.ready()
        admin = await asyncpg.connect(self.server_url)
        with contextlib.suppress(asyncpg.PostgresError):
            await admin.execute("CHECKPOINT")
        try:
            return await self._phases(doc, admin)
        finally:
            await admin.close()

    async def _phases(self, doc: dict[str, Any], admin: asyncpg.Connection[Any]) -> dict[str, Any]:
        plan, workers = self.plan, self.workers

        async def wal() -> int:
            # Bytes since 0/0; reading it writes no WAL.
            return int(await admin.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))

        doc["phases"] = []
        for phase in phases(plan):
            found = await interleave(
                workers,
                phase.op,
                phase.size,
                phase.concurrency,
                warmup=plan.peer_warmup,
                seconds=plan.peer_duration,
                slice_seconds=plan.peer_slice,
                wal=wal,
            )
            doc["phases"].append({**asdict(phase), "results": found})
            print(
                f"  {phase.title}, c={phase.concurrency}: "
                + ", ".join(f"{n} {r['throughput']:,.0f}/s" for n, r in found.items()),
                flush=True,
            )

        best = best_peers(doc["phases"])
        doc["best_peer"] = best
        doc["sweep"] = []
        big = plan.peer_sizes[1]
        for op, size in (("append", None), ("newest", big)):
            names = ["floor", best.get(op, ""), "chatstore"]
            chosen = {n: workers[n] for n in names if n in workers}
            for concurrency in plan.sweep:
                found = await interleave(
                    chosen,
                    op,
                    size,
                    concurrency,
                    warmup=plan.peer_warmup,
                    seconds=plan.sweep_duration,
                    slice_seconds=plan.peer_slice,
                )
                doc["sweep"].append(
                    {"op": op, "size": size, "concurrency": concurrency, "results": found}
                )
                print(
                    f"  sweep {op} c={concurrency}: "
                    + ", ".join(f"{n} {r['throughput']:,.0f}/s" for n, r in found.items()),
                    flush=True,
                )
        return doc

    async def stop(self) -> None:
        if self.setup is not None and not self.setup.done():
            self.setup.cancel()
            with contextlib.suppress(BaseException):
                await self.setup
        await asyncio.gather(*(worker.stop() for worker in self.workers.values()))


def best_peers(found_phases: list[dict[str, Any]]) -> dict[str, str]:
    """Per operation, the peer fastest at that operation's highest concurrency."""
    best: dict[str, str] = {}
    for op in ("append", "newest"):
        of_op = [p for p in found_phases if p["op"] == op]
        if not of_op:
            continue
        top = max(of_op, key=lambda p: (p["concurrency"], p["size"] or 0))
        candidates = {n: r["throughput"] for n, r in top["results"].items() if n in PEERS}
        if candidates:
            best[op] = max(candidates, key=lambda n: candidates[n])
    return best
