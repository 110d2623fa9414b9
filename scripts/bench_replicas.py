"""Read throughput with 0, 1 and 2 read replicas, and the primary's CPU per read.

A primary and two hot standbys (``pg_basebackup -R``, streaming over
loopback) are made in temporary folders on this machine, a data set is
seeded, then the same read load (conversation lists, message pages,
conversation gets, searches; many concurrent clients of one ChatStore) runs
for a while with 0, 1 and 2 replicas configured. All of it shares this
machine's cores, so reads per second say little about a real deployment;
the figure that scales is the primary's CPU per read: the CPU time of the
primary's whole process tree (postmaster, backends, reaped backends) over
the run, divided by the reads. With replicas, the primary only answers the
lag monitor (a few queries a second) and the reads that must see a write.

Usage (BENCHMARKS.md):
    scripts/bench_replicas              # 20 s per setting
    scripts/bench_replicas --seconds 3  # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.cluster import ThrowawayCluster, throwaway
from support.databases import create_database, database_url

from chatstore import metrics, migrations
from chatstore.config import Settings
from chatstore.store import ChatStore

TICKS = os.sysconf("SC_CLK_TCK")
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
]


def tree_cpu_seconds(root: int) -> float:
    """CPU time of ``root`` and every live descendant, plus what it reaped
    (cutime, cstime): monotonic as backends come and go."""
    parents: dict[int, int] = {}
    times: dict[int, tuple[int, int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        # utime, stime, cutime, cstime: fields 14-17 of stat, 12-15 after the name.
        times[pid] = (int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]))
    own, reaped = times.get(root, (0, 0))
    total = own + reaped
    for pid, parent in parents.items():
        if pid != root and parent == root:
            total += times[pid][0]  # a live backend (it forks nothing)
    return total / TICKS


async def seed(store: ChatStore, users: int, conversations: int, messages: int) -> list[str]:
    owners = []
    for n in range(users):
        user_id, _token = await store.create_session(f"bench{n}@example.com")
        owners.append(user_id)
        for c in range(conversations):
            made = await store.create_conversation(user_id, title=f"conversation {c}")
            batch = [
                {"role": "user", "content": " ".join(random.choices(WORDS, k=12)) + f" {m}"}
                for m in range(messages)
            ]
            await store.append_messages(user_id, made.id, batch)
    return owners


async def read_load(
    store: ChatStore, pages: dict[str, list[uuid.UUID]], seconds: float, clients: int
) -> int:
    """Reads for ``seconds`` by ``clients`` concurrent tasks; returns how many."""
    owners = list(pages)
    deadline = time.monotonic() + seconds
    done = 0

    async def client(n: int) -> None:
        nonlocal done
        rng = random.Random(n)
        while time.monotonic() < deadline:
            user_id = rng.choice(owners)
            conversation = rng.choice(pages[user_id])
            kind = rng.random()
            if kind < 0.4:
                await store.list_messages(user_id, conversation, limit=50)
            elif kind < 0.7:
                await store.list_conversations(user_id)
            elif kind < 0.9:
                await store.get_conversation(user_id, conversation)
            else:
                await store.search(user_id, rng.choice(WORDS))
            done += 1

    await asyncio.gather(*(client(n) for n in range(clients)))
    return done


async def all_serving(store: ChatStore) -> None:
    """Wait (up to 30 s) until every configured replica serves reads."""
    if store.db.replicas is None:
        return
    async with asyncio.timeout(30):
        while True:
            if all(replica.serving for replica in store.db.replicas.replicas):
                return
            await asyncio.sleep(0.1)


def served(server: str) -> float:
    value = metrics.REGISTRY.get_sample_value("chatstore_reads_total", {"server": server})
    return value or 0.0


async def run(args: argparse.Namespace) -> None:
    primary = throwaway()
    standbys: list[ThrowawayCluster] = []
    try:
        primary.start()
        primary.allow_replication()
        url = await create_database(primary.dsn(), "bench_replicas")
        await asyncio.to_thread(migrations.apply, url)
        name = url.rsplit("/", 1)[1]
        settings = Settings(pool_min_size=args.clients, pool_max_size=args.clients)
        async with ChatStore(url, settings=settings) as store:
            owners = await seed(store, args.users, args.conversations, args.messages)
            pages = {
                user_id: [c.id for c in (await store.list_conversations(user_id)).data]
                for user_id in owners
            }
        for _ in range(2):
            standby = primary.standby()
            standby.start()
            standbys.append(standby)
        rows = []
        for count in (0, 1, 2):
            urls = tuple(database_url(s.dsn(), name) for s in standbys[:count])
            chosen = dataclasses.replace(settings, replica_urls=urls, replica_max_lag_seconds=5)
            async with ChatStore(url, settings=chosen) as store:
                await all_serving(store)
                await read_load(store, pages, min(2.0, args.seconds), args.clients)  # warm
                before = [tree_cpu_seconds(c.postmaster_pid() or 0) for c in (primary, *standbys)]
                on_replicas = served("replica")
                started = time.monotonic()
                reads = await read_load(store, pages, args.seconds, args.clients)
                elapsed = time.monotonic() - started
                after = [tree_cpu_seconds(c.postmaster_pid() or 0) for c in (primary, *standbys)]
                by_replicas = served("replica") - on_replicas
            used = [a - b for a, b in zip(after, before, strict=True)]
            rows.append(
                (
                    count,
                    reads / elapsed,
                    1000 * used[0] / reads,
                    1000 * sum(used[1:]) / reads,
                    by_replicas / reads,
                )
            )
        print(
            f"Read replicas: {args.clients} concurrent readers, {args.seconds:g} s per setting, "
            f"{args.users} users x {args.conversations} conversations x {args.messages} messages, "
            f"{os.cpu_count()} cores shared by the client, the primary and the standbys.\n"
        )
        print("| replicas | reads/s | primary CPU ms/read | standbys CPU ms/read | by replicas |")
        print("|---:|---:|---:|---:|---:|")
        for count, rate, primary_ms, standby_ms, share in rows:
            print(f"| {count} | {rate:,.0f} | {primary_ms:.3f} | {standby_ms:.3f} | {share:.0%} |")
        base = rows[0][2]
        for count, _rate, primary_ms, _s, _share in rows[1:]:
            print(
                f"\nprimary CPU per read with {count} replica(s): {primary_ms / base:.2f}x of none"
            )
    finally:
        for standby in standbys:
            standby.destroy()
        primary.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="load per setting")
    parser.add_argument("--clients", type=int, default=16, help="concurrent readers")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--conversations", type=int, default=10, help="per user")
    parser.add_argument("--messages", type=int, default=40, help="per conversation")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
