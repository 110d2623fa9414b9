"""A PostgreSQL outage as the people who run chatstore see it.

The log tells an outage twice, when it starts and when it ends, however many
requests it fails (before: a warning per 503, and asyncpg's traceback each
time it retried its pool's floor). /metrics counts the failures by kind.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adversity.harness import REQUEST_TIMEOUT, Lab, make_writers, now

pytestmark = pytest.mark.adversity

REQUESTS_DURING_OUTAGE = 30
BACK_WITHIN_SECONDS = 30.0


def database_errors(text: str) -> dict[str, float]:
    return {
        sample.labels["kind"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "chatstore_database_errors_total"
    }


async def test_an_outage_of_many_requests_logs_one_warning_when_it_starts_and_one_when_it_ends(
    lab: Lab,
) -> None:
    database = await lab.database()
    server = await lab.serve(database)
    (writer,) = await make_writers(database, 1)
    path = f"/api/conversations/{writer.conversation_id}"
    headers = {"Authorization": f"Bearer {writer.token}"}

    async with httpx.AsyncClient(base_url=server.base_url, timeout=REQUEST_TIMEOUT) as client:
        assert (await client.get(path, headers=headers)).status_code == 200
        before = database_errors((await client.get("/metrics")).text)

        await asyncio.to_thread(database.cluster.stop, "fast")
        statuses = [
            (await client.get(path, headers=headers)).status_code
            for _ in range(REQUESTS_DURING_OUTAGE)
        ]
        assert statuses == [503] * REQUESTS_DURING_OUTAGE, statuses
        during = database_errors((await client.get("/metrics")).text)

        await asyncio.to_thread(database.cluster.start)
        await database.wait_answering()
        deadline = now() + BACK_WITHIN_SECONDS
        while (await client.get(path, headers=headers)).status_code != 200:
            assert now() < deadline, "no 200 after PostgreSQL came back"
            await asyncio.sleep(0.1)
        for _ in range(5):
            assert (await client.get(path, headers=headers)).status_code == 200

    # Every 503 was counted, by the driver's exception class.
    failed = {kind: during[kind] - before.get(kind, 0.0) for kind in during}
    assert sum(failed.values()) >= REQUESTS_DURING_OUTAGE, (before, during)
    assert all(kind.isidentifier() for kind in failed), failed

    server.stop()
    text = server.text()
    lines = text.splitlines()
    started = [line for line in lines if "database unavailable" in line]
    ended = [line for line in lines if "database available again" in line]
    assert len(started) == 1 and "WARNING" in started[0], "\n".join(started[:5]) or text[-3000:]
    assert len(ended) == 1 and "WARNING" in ended[0], "\n".join(ended) or text[-3000:]
    assert lines.index(started[0]) < lines.index(ended[0])
    # No traceback per reconnect attempt, and nothing that betrays a bug.
    assert "Failed to restore the pool connection floor" not in text, text[-3000:]
    assert not server.problems(), server.problems()
    # Each request still has its own (info) line.
    assert sum(" 503 " in line and "chatstore.requests" in line for line in lines) == (
        REQUESTS_DURING_OUTAGE
    )
