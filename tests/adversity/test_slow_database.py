"""Fault 5: a slow database, as one user's stalled statements.

A raw session holds the row lock of one conversation (``SELECT ... FOR
UPDATE`` in an open transaction), so every append to it waits. With
CHATSTORE_STATEMENT_TIMEOUT_MS=2000 PostgreSQL cancels such a statement
after 2 s (57014 query_canceled), or the lock wait of one that first waited
in line in the server (chatstore/writers.py) when the rest of its
acquire + statement timeouts runs out (55P03), which the server answers as
503 ``unavailable`` with Retry-After: a clean error in bounded time, not a
hang.
Meanwhile the other users' appends go on, 2xx at low latency; once the lock
is let go the stalled user's appends succeed again.

The second test sizes the pool below the stall: 4 connections, 8 stalled
clients. Every request still ends in bounded time, 2xx or 503, and the
other users are served as in the first test: the stalled conversation's
writers wait in line in the server process, and only one of them holds a
connection (chatstore/writers.py; RELIABILITY.md, finding 1, was every
connection and 10 of 24 other requests turned away).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from support.serve import Server

from adversity.harness import (
    Database,
    Lab,
    Load,
    Writer,
    describe,
    make_writers,
    now,
    percentiles,
    record,
    verify,
)

pytestmark = pytest.mark.adversity

STATEMENT_TIMEOUT_MS = 2000
ACQUIRE_TIMEOUT_S = 2.0
WARMUP_SECONDS = 1.5
HOLD_SECONDS = 6.0
AFTER_SECONDS = 2.5
# A stalled request ends with the statement timeout, plus at most one wait
# for a free connection, plus slack for a loaded 2-core machine.
STALL_BOUND_S = STATEMENT_TIMEOUT_MS / 1000 + ACQUIRE_TIMEOUT_S + 1.5
# The other users' latency while one user stalls may not degrade beyond
# this factor of their own latency before the stall (or these floors: on a
# 2-core machine the load itself makes a baseline of a few hundred ms).
DEGRADATION_FACTOR = 2.0
P50_FLOOR_S = 0.25
P99_FLOOR_S = 1.0


async def hold_conversation_lock(
    database: Database, writer: Writer, seconds: float
) -> tuple[float, float]:
    """Hold the conversation row's lock for ``seconds``; returns (taken, released)."""
    connection = await database.connect()
    try:
        async with connection.transaction():
            await connection.execute(
                "SELECT 1 FROM conversations WHERE id = $1::uuid FOR UPDATE",
                writer.conversation_id,
            )
            taken = now()
            await asyncio.sleep(seconds)
        return taken, now()
    finally:
        await connection.close()


@dataclasses.dataclass(frozen=True)
class Stall:
    others: Load
    stalled: Load
    taken: float
    released: float
    database: Database
    server: Server


async def stall(lab: Lab, *, pool_size: int, stalled_clients: int, other_clients: int) -> Stall:
    database = await lab.database()
    server = await lab.serve(
        database,
        CHATSTORE_STATEMENT_TIMEOUT_MS=str(STATEMENT_TIMEOUT_MS),
        CHATSTORE_ACQUIRE_TIMEOUT_SECONDS=str(int(ACQUIRE_TIMEOUT_S)),
        CHATSTORE_POOL_MAX_SIZE=str(pool_size),
    )
    others = Load(server.base_url, await make_writers(database, other_clients, prefix="o"))
    victims = await make_writers(database, stalled_clients, prefix="v", shared=True)
    stalled = Load(server.base_url, victims)
    await others.start()
    await stalled.start()
    try:
        await others.run_for(WARMUP_SECONDS)
        taken, released = await hold_conversation_lock(database, victims[0], HOLD_SECONDS)
        await others.run_for(AFTER_SECONDS)
        stalled.check_workers()
    finally:
        await stalled.stop()
        await others.stop()
    return Stall(others, stalled, taken, released, database, server)


def assert_server_fine(server: Server) -> None:
    assert server.running and server.starts == 1
    assert not server.problems(), "the server log shows errors:\n" + "\n".join(
        server.problems()[:20]
    )


def assert_others_unhurt(held_others: list[Any], others: Load, taken: float) -> None:
    """The other users' latency while one user stalled stays within
    DEGRADATION_FACTOR of their own before (or the floors)."""
    latency = percentiles([a.latency for a in held_others])
    baseline = percentiles(before(others, taken))
    for name, floor in (("p50_ms", P50_FLOOR_S), ("p99_ms", P99_FLOOR_S)):
        bound = max(DEGRADATION_FACTOR * baseline[name], floor * 1000)
        assert latency[name] <= bound, (
            f"other users' {name} {latency[name]} while one user stalled, {baseline[name]} before"
        )


def before(load: Load, taken: float) -> list[float]:
    """Latencies of the requests answered before the lock was taken (the baseline)."""
    return [a.latency for a in load.attempts if a.ok and a.ended < taken]


def during(load: Load, taken: float, released: float) -> list[Any]:
    """Requests sent and answered while the lock was held."""
    return [a for a in load.attempts if a.started >= taken and a.ended <= released]


async def test_statement_timeout_frees_a_stalled_user(lab: Lab) -> None:
    run = await stall(lab, pool_size=10, stalled_clients=2, other_clients=12)
    others, stalled, taken, released, database = (
        run.others,
        run.stalled,
        run.taken,
        run.released,
        run.database,
    )
    # The stalled user's requests in flight at any moment of the hold. They
    # wait one after another (in line in the server, then for the row), so
    # one sent during the hold may end only after it: each is judged by how
    # it ended, not by when.
    over_hold = [a for a in stalled.attempts if a.started < released and a.ended > taken]
    refused = [a for a in over_hold if a.kind == "unavailable"]
    held_others = during(others, taken, released)
    others_latency = percentiles([a.latency for a in held_others])
    baseline = percentiles(before(others, taken))
    back = stalled.first_ok_after(released)
    verdicts = [await verify(database, load) for load in (others, stalled)]
    record(
        "slow-database",
        {
            "what": "one conversation's row lock held 6 s (SELECT ... FOR UPDATE); statement"
            f" timeout {STATEMENT_TIMEOUT_MS} ms; pool 10; 2 stalled clients, 12 others",
            "requests": len(others.attempts) + len(stalled.attempts),
            "acknowledged_requests": others.count("ok") + stalled.count("ok"),
            "acknowledged_messages": sum(
                load.figures()["acknowledged_messages"] for load in (others, stalled)
            ),
            "lost": sum(v.lost for v in verdicts),
            "other_5xx": others.figures()["other_5xx"] + stalled.figures()["other_5xx"],
            "stalled": stalled.figures(),
            "others": others.figures(),
            "stalled_refused_latency": percentiles([a.latency for a in refused]),
            "others_latency_before": baseline,
            "others_latency_while_held": others_latency,
            "others_ok_while_held": f"{sum(a.ok for a in held_others)}/{len(held_others)}",
            "recovery_s": None if back is None else round(back, 3),
        },
    )

    origin = others.started_at
    for load in (others, stalled):
        assert not load.failures(), "requests that broke the contract:\n" + describe(
            load.failures(), origin
        )
    assert refused, "no stalled request was refused while the lock was held:\n" + describe(
        over_hold, origin
    )
    # Refused no sooner than the statement timeout (what the first waits for
    # the row) and no later than the bound (in line, for the pool and for
    # the row together).
    slow = [
        a for a in refused if not STATEMENT_TIMEOUT_MS / 1000 - 0.1 <= a.latency <= STALL_BOUND_S
    ]
    assert not slow, "stalled requests refused outside the bounded waits:\n" + describe(
        slow, origin
    )
    late = [a for a in over_hold if a.latency > STALL_BOUND_S]
    assert not late, "stalled requests past the bounded waits:\n" + describe(late, origin)
    assert held_others and all(a.ok for a in held_others), (
        "other users refused while one user stalled:\n"
        + describe([a for a in held_others if not a.ok], origin)
    )
    assert_others_unhurt(held_others, others, taken)
    assert back is not None and back <= 2.0, f"the stalled user's first 2xx {back} s after"
    for verdict in verdicts:
        verdict.assert_sound()
    assert_server_fine(run.server)


async def test_stall_larger_than_the_pool(lab: Lab) -> None:
    run = await stall(lab, pool_size=4, stalled_clients=8, other_clients=8)
    others, stalled, taken, released, database = (
        run.others,
        run.stalled,
        run.taken,
        run.released,
        run.database,
    )
    held_others = during(others, taken, released)
    held_stalled = during(stalled, taken, released)
    verdicts = [await verify(database, load) for load in (others, stalled)]
    ok_others = [a for a in held_others if a.ok]
    record(
        "slow-database-pool-exhausted",
        {
            "what": "as slow-database, with pool 4 and 8 stalled clients, 8 others",
            "requests": len(others.attempts) + len(stalled.attempts),
            "acknowledged_requests": others.count("ok") + stalled.count("ok"),
            "acknowledged_messages": sum(
                load.figures()["acknowledged_messages"] for load in (others, stalled)
            ),
            "lost": sum(v.lost for v in verdicts),
            "other_5xx": others.figures()["other_5xx"] + stalled.figures()["other_5xx"],
            "stalled": stalled.figures(),
            "others": others.figures(),
            "stalled_latency_while_held": percentiles([a.latency for a in held_stalled]),
            "others_latency_before": percentiles(before(others, taken)),
            "others_latency_while_held": percentiles([a.latency for a in held_others]),
            "others_ok_latency_while_held": percentiles([a.latency for a in ok_others]),
            "others_ok_while_held": f"{len(ok_others)}/{len(held_others)}",
            "asyncpg_cancelled_connect_warnings": run.server.benign_tracebacks(),
            "recovery_s": None,
        },
    )

    origin = others.started_at
    for load in (others, stalled):
        assert not load.failures(), "requests that broke the contract:\n" + describe(
            load.failures(), origin
        )
        late = [a for a in load.attempts if a.latency > STALL_BOUND_S]
        assert not late, "requests past the bounded waits:\n" + describe(late, origin)
    assert held_others and len(ok_others) == len(held_others), (
        "other users refused while one user's writers outnumbered the pool:\n"
        + describe([a for a in held_others if not a.ok], origin)
    )
    assert_others_unhurt(held_others, others, taken)
    assert others.first_ok_after(released) is not None
    assert stalled.first_ok_after(released) is not None
    for verdict in verdicts:
        verdict.assert_sound()
    assert_server_fine(run.server)
