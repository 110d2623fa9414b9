"""Fault 4: the server's connections terminated under it, mid-load.

``pg_terminate_backend`` on every backend whose application_name is
``chatstore`` (the pool's connections and the LISTEN connection), four times
a second apart, while PostgreSQL itself stays up. A request on a terminated
connection may fail, but cleanly (503 with Retry-After); the pool renews
its dead connections by itself, so the server is back to 2xx promptly after
each wave, and no acknowledged message is lost. Afterwards the server holds
no more connections than its pool allows (nothing leaked).
"""

from __future__ import annotations

import pytest

from adversity.harness import (
    RECOVERY_PROMISE_SECONDS,
    SERVER_ENV,
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
WARMUP_SECONDS = 2.0
WAVES = 4
WAVE_EVERY_SECONDS = 1.0
AFTER_SECONDS = 3.0

TERMINATE = """
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
FROM pg_stat_activity
WHERE application_name = 'chatstore' AND pid <> pg_backend_pid()
"""


async def test_connections_terminated_under_the_pool(lab: Lab) -> None:
    database = await lab.database()
    server = await lab.serve(database)
    writers = await make_writers(database, WRITERS)
    load = Load(server.base_url, writers)
    admin = await database.connect()

    waves: list[float] = []
    terminated: list[int] = []
    await load.start()
    try:
        await load.run_for(WARMUP_SECONDS)
        for _ in range(WAVES):
            waves.append(now())
            terminated.append(int(await admin.fetchval(TERMINATE)))
            await load.run_for(WAVE_EVERY_SECONDS)
        await load.run_for(AFTER_SECONDS - WAVE_EVERY_SECONDS)
        connections = int(
            await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'chatstore'"
            )
        )
    finally:
        await load.stop()
        await admin.close()

    recoveries = [load.first_ok_after(wave) for wave in waves]
    late = load.failed_after(waves[-1] + RECOVERY_PROMISE_SECONDS)
    failed_per_wave = [
        sum(1 for a in load.attempts if not a.ok and start <= a.started < end)
        for start, end in zip(waves, [*waves[1:], float("inf")], strict=True)
    ]
    verdict = await verify(database, load)
    known = [r for r in recoveries if r is not None]
    record(
        "connection-drops",
        {
            "what": f"pg_terminate_backend on all of the server's connections, {WAVES} waves"
            f" {WAVE_EVERY_SECONDS:g} s apart",
            **load.figures(),
            **verdict.figures(),
            "terminated_per_wave": terminated,
            "failed_per_wave": failed_per_wave,
            "recovery_s": round(max(known), 3) if known else None,
            "recovery_per_wave_s": [None if r is None else round(r, 3) for r in recoveries],
            "connections_after": connections,
            "server_starts": server.starts,
        },
    )

    origin = load.started_at
    assert not load.failures(), "requests that broke the contract:\n" + describe(
        load.failures(), origin
    )
    assert all(count > 0 for count in terminated), f"nothing to terminate: {terminated}"
    for wave, recovery in zip(waves, recoveries, strict=True):
        assert recovery is not None, f"no 2xx after the wave at t={wave - origin:.3f}s"
        assert recovery <= RECOVERY_PROMISE_SECONDS, (
            f"first 2xx {recovery:.3f} s after the wave at t={wave - origin:.3f}s"
        )
    assert not late, (
        f"requests still failing {RECOVERY_PROMISE_SECONDS} s after the last wave:\n"
        + describe(late, origin)
    )
    # The pool's connections, plus the LISTEN connection of live updates.
    allowed = int(SERVER_ENV["CHATSTORE_POOL_MAX_SIZE"]) + 1
    assert 0 < connections <= allowed, f"{connections} connections after healing"
    assert server.running and server.starts == 1
    verdict.assert_sound()
    assert not server.problems(), "the server log shows errors:\n" + "\n".join(
        server.problems()[:20]
    )
