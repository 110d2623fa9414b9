"""Fault 3: the chatstore server SIGKILLed mid-load, then started again.

Every request carries an Idempotency-Key, and a client whose request failed
(the connection reset under it, or refused while the server is down)
retries the same request with the same key until it is acknowledged. That
is the client's side of the bargain; the server's: whatever was in flight
when it died either committed whole (and the retry replays it) or not at
all (and the retry stores it), so every message ends stored exactly once,
and no batch is half-stored.
"""

from __future__ import annotations

import asyncio

import pytest

from adversity.harness import Lab, Load, describe, make_writers, now, record, verify

pytestmark = pytest.mark.adversity

WRITERS = 24
WARMUP_SECONDS = 2.5
DOWN_SECONDS = 0.5
AFTER_SECONDS = 3.0


async def test_server_killed_mid_load(lab: Lab) -> None:
    database = await lab.database()
    server = await lab.serve(database)
    writers = await make_writers(database, WRITERS)
    load = Load(server.base_url, writers, key_everything=True)

    await load.start()
    try:
        await load.run_for(WARMUP_SECONDS)
        killed_at = now()
        await asyncio.to_thread(server.kill)
        await load.run_for(DOWN_SECONDS)
        server.start()
        ready_at = await server.wait_ready()
        await load.run_for(AFTER_SECONDS)
    finally:
        await load.stop()

    first_ok = load.first_ok_after(ready_at)
    retried = sum(1 for i in load.intents if i.attempts > 1)
    verdict = await verify(database, load)
    record(
        "server-kill",
        {
            "what": "chatstore serve SIGKILLed mid-load, restarted on the same port after 0.5 s;"
            " clients retry with their Idempotency-Key",
            **load.figures(),
            **verdict.figures(),
            "server_down_s": round(ready_at - killed_at, 3),
            "recovery_s": None if first_ok is None else round(first_ok, 3),
            "retried_intents": retried,
            "server_starts": server.starts,
        },
    )

    origin = load.started_at
    # A reset or refused connection is what a killed server looks like; a
    # 503 may come while the restarted server's pool fills. Nothing else.
    failures = load.failures(allow=("unavailable", "transport"))
    assert not failures, "requests that broke the contract:\n" + describe(failures, origin)
    transport_after = [a for a in load.failed_after(ready_at) if a.kind == "transport"]
    assert not transport_after, "transport errors from the restarted server:\n" + describe(
        transport_after, origin
    )
    assert load.count("transport") > 0, "the kill was not seen: was the fault injected?"
    assert first_ok is not None, "no request succeeded after the restart"
    verdict.assert_sound(every_intent_acknowledged=True)
    assert not server.problems(), "the server log shows errors:\n" + "\n".join(
        server.problems()[:20]
    )
