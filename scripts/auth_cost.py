"""What authenticating costs a request: the in-process session cache (one
database round trip per request, the operation's own) against a session
lookup on every request (two round trips), on the same database in one run.

    .venv/bin/python scripts/auth_cost.py [--database-url URL] [--seconds 5]

Drives the ASGI app in-process (httpx.ASGITransport: no sockets, so the
HTTP server's cost does not drown the difference) at concurrency 8, and
alternates the two setups A/B/A/B to cancel drift on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from chatstore import migrations
from chatstore.config import Settings
from chatstore.embedded import Cluster
from chatstore.http.app import create_app
from chatstore.sessions import create_session
from chatstore.store import ChatStore

CONCURRENCY = 8
ROUNDS = 3


@contextmanager
def database(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    # A durable cluster of its own in a temporary folder, deleted at the end.
    root = Path(tempfile.mkdtemp(prefix="chatstore-auth-cost-", dir="/tmp"))
    root.chmod(0o755)  # mkdtemp makes it 0700: the postgres user must be able to enter it
    try:
        cluster = Cluster.create(root / "pgdata")
        cluster.start()
        try:
            cluster.create_database("auth_cost")
            yield cluster.dsn("auth_cost")
        finally:
            cluster.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def measure(
    settings: Settings, store: ChatStore, path: str, token: str, seconds: float
) -> list[float]:
    app = create_app(settings, store=store)
    latencies: list[float] = []
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench"
        ) as client,
    ):
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.get(path, headers=headers)
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return latencies


async def main(url: str, seconds: float) -> None:
    await asyncio.to_thread(migrations.apply, url)
    base = Settings(database_url=url, pool_max_size=CONCURRENCY)
    setups = {
        "cached session (1 round trip)": dataclasses.replace(base, auth_cache_seconds=5),
        "lookup every request (2 round trips)": dataclasses.replace(base, auth_cache_seconds=0),
    }
    async with ChatStore(url, settings=base) as store:
        user_id, token = await create_session(store, "auth-cost@example.test")
        conversation = await store.create_conversation(user_id, title="auth cost")
        await store.append_messages(
            user_id, conversation.id, [{"role": "user", "content": f"m{i}"} for i in range(50)]
        )
        paths = {
            "GET /api/conversations/{id}": f"/api/conversations/{conversation.id}",
            "GET /api/conversations/{id}/messages?limit=50": (
                f"/api/conversations/{conversation.id}/messages?limit=50"
            ),
        }
        print(f"concurrency {CONCURRENCY}, {seconds:g} s per cell in {ROUNDS} alternating rounds")
        print("| request | setup | requests/s | p50 ms | p99 ms |")
        print("|---|---|---:|---:|---:|")
        for label, path in paths.items():
            runs: dict[str, list[list[float]]] = {name: [] for name in setups}
            for _ in range(ROUNDS):
                for name, settings in setups.items():
                    latencies = await measure(settings, store, path, token, seconds / ROUNDS)
                    runs[name].append(latencies)
            rates = []
            for name, rounds in runs.items():
                ordered = sorted(value for run in rounds for value in run)
                rate = statistics.median(len(run) / (seconds / ROUNDS) for run in rounds)
                rates.append(rate)
                p50 = ordered[len(ordered) // 2] * 1000
                p99 = ordered[int(len(ordered) * 0.99)] * 1000
                print(f"| {label} | {name} | {rate:.0f} | {p50:.2f} | {p99:.2f} |")
            cached, uncached = rates
            print(f"| {label} | a lookup per request costs | {cached / uncached:.2f}x | | |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url")
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    with database(args.database_url) as url:
        asyncio.run(main(url, args.seconds))
