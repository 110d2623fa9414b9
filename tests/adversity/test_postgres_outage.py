"""Faults 1 and 2: PostgreSQL goes away under a steady write load.

``restart``: a fast shutdown (``pg_ctl stop -m fast``: every backend gets
57P01 admin_shutdown, in-flight transactions roll back), down for a while,
then started again. ``kill``: SIGKILL of the postmaster, as a crash would,
then a start that runs crash recovery from the WAL.

The promises, both ways: meanwhile every request ends in time with 2xx or
503 ``unavailable`` with Retry-After (never another 5xx, never a hang); the
same server process answers 2xx again within 2 s of PostgreSQL answering;
afterwards every acknowledged message is in the database exactly once, at
the seq it was acknowledged with, and no batch is half-stored.
"""

from __future__ import annotations

import asyncio

import pytest

from adversity.harness import (
    RECOVERY_PROMISE_SECONDS,
    Lab,
    Load,
    describe,
    make_writers,
    now,
    record,
    verify,
)

pytestmark = pytest.mark.adversity

WRITERS = 24
WARMUP_SECONDS = 2.5
DOWN_SECONDS = 1.5
AFTER_SECONDS = 4.0

WHAT = {
    "restart": "PostgreSQL stopped (fast shutdown) mid-load, down 1.5 s, started again",
    "kill": "postmaster SIGKILLed mid-load, down 1.5 s, started again (crash recovery)",
}


@pytest.mark.parametrize("how", ["restart", "kill"])
async def test_postgres_outage_under_load(lab: Lab, how: str) -> None:
    database = await lab.database()
    server = await lab.serve(database)
    writers = await make_writers(database, WRITERS)
    load = Load(server.base_url, writers)

    await load.start()
    try:
        await load.run_for(WARMUP_SECONDS)
        down_at = now()
        if how == "restart":
            await asyncio.to_thread(database.cluster.stop, "fast")
        else:
            await asyncio.to_thread(database.cluster.kill)
        await load.run_for(DOWN_SECONDS)
        starting = asyncio.create_task(asyncio.to_thread(database.cluster.start))
        up_at = await database.wait_answering()
        await starting
        await load.run_for(AFTER_SECONDS)
    finally:
        await load.stop()

    recovery = load.first_ok_after(up_at)
    late = load.failed_after(up_at + RECOVERY_PROMISE_SECONDS)
    verdict = await verify(database, load)
    record(
        f"postgres-{how}",
        {
            "what": WHAT[how],
            **load.figures(),
            **verdict.figures(),
            "postgres_down_s": round(up_at - down_at, 3),
            "recovery_s": None if recovery is None else round(recovery, 3),
            "failures_after_promise": len(late),
            "server_starts": server.starts,
            "asyncpg_floor_warnings": server.benign_tracebacks(),
        },
    )

    origin = load.started_at
    assert not load.failures(), "requests that broke the contract:\n" + describe(
        load.failures(), origin
    )
    assert any(a.ok and a.ended < down_at for a in load.attempts), "no load before the fault"
    assert load.count("unavailable") > 0, "the outage was not seen: was the fault injected?"
    assert recovery is not None, "no request succeeded after PostgreSQL came back"
    assert recovery <= RECOVERY_PROMISE_SECONDS, (
        f"first 2xx {recovery:.3f} s after PostgreSQL answered again"
    )
    assert not late, (
        f"requests still failing {RECOVERY_PROMISE_SECONDS} s after PostgreSQL answered:\n"
        + describe(late, origin)
    )
    assert server.running and server.starts == 1, "the server did not survive the outage"
    verdict.assert_sound()
    assert not server.problems(), "the server log shows errors:\n" + "\n".join(
        server.problems()[:20]
    )
