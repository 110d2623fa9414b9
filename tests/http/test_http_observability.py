"""What the people who run chatstore see: /metrics, a log line a request, a request id.

In process (httpx's ASGITransport over the real app). The JSON log format
as ``chatstore serve`` configures it, and a database outage as the log and
/metrics tell it, are in tests/test_serve_logs.py and
tests/adversity/test_outage_observability.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from support.app import open_app, open_client
from support.requests import create_conversation
from support.users import User

from chatstore import logs
from chatstore.config import Settings
from chatstore.store import ChatStore

CONVERSATION = "/api/conversations/{id}"
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples named ``name`` of a Prometheus text page, by sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return response.text


def requests_of(text: str, route: str, method: str, status: str) -> float:
    key = (("method", method), ("route", route), ("status", status))
    return samples(text, "chatstore_http_requests_total").get(key, 0.0)


async def test_metrics_count_requests_by_route_template_never_by_raw_path(
    client: httpx.AsyncClient, user: User
) -> None:
    before = await scrape(client)
    conversation_id = str((await create_conversation(client, user))["id"])
    for _ in range(3):
        response = await client.get(f"/api/conversations/{conversation_id}", headers=user.headers)
        assert response.status_code == 200
    missing = await client.get(f"/api/conversations/{uuid.uuid4()}", headers=user.headers)
    assert missing.status_code == 404
    probe = await client.get(f"/wp-admin/{uuid.uuid4()}.php")
    assert probe.status_code == 404
    after = await scrape(client)

    def grew(route: str, method: str, status: str) -> float:
        return requests_of(after, route, method, status) - requests_of(
            before, route, method, status
        )

    assert grew(CONVERSATION, "GET", "200") == 3
    assert grew(CONVERSATION, "GET", "404") == 1
    assert grew("/api/conversations", "POST", "201") == 1
    assert grew("<unmatched>", "GET", "404") == 1
    # No label value is a raw path: no id, no probe.
    assert conversation_id not in after and "wp-admin" not in after
    durations = samples(after, "chatstore_http_request_duration_seconds_count")
    assert durations[(("method", "GET"), ("route", CONVERSATION))] >= 3


async def test_metrics_count_an_unknown_method_as_other(client: httpx.AsyncClient) -> None:
    before = requests_of(await scrape(client), "/healthz", "OTHER", "405")
    response = await client.request("BREW", "/healthz")
    assert response.status_code == 405
    after = await scrape(client)
    assert requests_of(after, "/healthz", "OTHER", "405") == before + 1
    assert "BREW" not in after


async def test_metrics_show_the_pool_connections_and_need_no_credentials(
    client: httpx.AsyncClient, user: User
) -> None:
    await create_conversation(client, user)  # the pool has served something
    text = await scrape(client)
    pool = samples(text, "chatstore_pool_connections")
    assert set(pool) >= {
        (("pool", "main"), ("state", "in_use")),
        (("pool", "main"), ("state", "idle")),
    }, pool
    assert sum(v for k, v in pool.items() if ("pool", "main") in k) >= 1
    assert (("pool", "main"),) in samples(text, "chatstore_pool_waiters")
    # Nobody waits in a conversation's line between requests.
    assert samples(text, "chatstore_writers_waiting") == {(): 0.0}


async def test_request_log_line_has_method_route_status_duration_and_the_echoed_request_id(
    client: httpx.AsyncClient, user: User, caplog: pytest.LogCaptureFixture
) -> None:
    conversation_id = str((await create_conversation(client, user))["id"])
    with caplog.at_level(logging.INFO, logger="chatstore.requests"):
        response = await client.get(
            f"/api/conversations/{conversation_id}",
            headers={**user.headers, "X-Request-ID": "trace-4f2a:9"},
        )
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "trace-4f2a:9"
    (record,) = [r for r in caplog.records if r.name == "chatstore.requests"]
    assert record.levelno == logging.INFO
    assert (record.method, record.route, record.status) == ("GET", CONVERSATION, 200)  # type: ignore[attr-defined]
    assert isinstance(record.duration_ms, float) and record.duration_ms >= 0  # type: ignore[attr-defined]
    assert record.request_id == "trace-4f2a:9"  # type: ignore[attr-defined]
    assert conversation_id not in record.getMessage()
    line = logs.TextFormatter().format(record)
    assert re.search(r"GET /api/conversations/\{id\} 200 [\d.]+ ms request_id=trace-4f2a:9$", line)


@pytest.mark.parametrize(
    "given",
    ["x" * 129, "two words", "tab\there", "caf\u00e9", ""],
    ids=["too-long", "space", "control", "non-ascii", "empty"],
)
async def test_a_request_id_that_is_not_short_printable_ascii_is_replaced_by_a_generated_one(
    client: httpx.AsyncClient, given: str
) -> None:
    response = await client.get("/healthz", headers=[(b"X-Request-ID", given.encode("utf-8"))])
    assert response.status_code == 200
    assert GENERATED_ID.match(response.headers["X-Request-ID"]), response.headers


async def test_every_response_carries_a_request_id_errors_included(
    client: httpx.AsyncClient,
) -> None:
    ids = set()
    for path in ("/healthz", "/api/conversations", "/nowhere"):
        response = await client.get(path)
        ids.add(response.headers["X-Request-ID"])
    assert len(ids) == 3 and all(GENERATED_ID.match(i) for i in ids)


async def test_a_bug_is_counted_as_a_500_and_its_log_lines_carry_the_request_id(
    settings: Settings, store: ChatStore, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug")

    # As `chatstore serve` configures its handler (chatstore/logs.py).
    caplog.handler.addFilter(logs.RequestIdFilter())
    async with open_app(settings, store) as app:
        app.router.routes.append(Route("/broken/{part}", broken))
        async with open_client(app) as client:
            before = requests_of(await scrape(client), "/broken/{part}", "GET", "500")
            with caplog.at_level(logging.INFO, logger="chatstore"):
                response = await client.get("/broken/1", headers={"X-Request-ID": "bug-1"})
            assert response.status_code == 500
            assert response.headers["X-Request-ID"] == "bug-1"
            after = requests_of(await scrape(client), "/broken/{part}", "GET", "500")
    assert after == before + 1
    # The traceback's record carries the id of the request that failed, like
    # that request's own line: the two can be joined in the log.
    (error,) = [r for r in caplog.records if r.name == "chatstore.http" and r.exc_info]
    (line,) = [r for r in caplog.records if r.name == "chatstore.requests"]
    assert getattr(error, "request_id", None) == getattr(line, "request_id", None) == "bug-1"
    assert getattr(line, "status", None) == 500


def test_the_json_log_format_is_one_object_per_line_with_the_fields() -> None:
    record = logging.makeLogRecord(
        {
            "name": "chatstore.requests",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "GET %s 200",
            "args": ("/healthz",),
            "method": "GET",
            "route": "/healthz",
            "status": 200,
            "duration_ms": 0.4,
            "request_id": "r1",
        }
    )
    try:
        raise ValueError("line one\nline two")
    except ValueError:
        failed = logging.makeLogRecord(
            {
                "name": "chatstore.http",
                "levelname": "ERROR",
                "msg": "boom",
                "exc_info": sys.exc_info(),
            }
        )
    formatter = logs.JsonFormatter()
    entry = json.loads(formatter.format(record))
    assert entry["message"] == "GET /healthz 200"
    assert entry["level"] == "info" and entry["logger"] == "chatstore.requests"
    assert {k: entry[k] for k in logs.FIELDS} == {
        "method": "GET",
        "route": "/healthz",
        "status": 200,
        "duration_ms": 0.4,
        "request_id": "r1",
    }
    text = formatter.format(failed)
    assert "\n" not in text  # a traceback stays on its line
    assert "line two" in json.loads(text)["exception"]


def test_an_unknown_log_format_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="CHATSTORE_LOG_FORMAT"):
        Settings.from_env({"CHATSTORE_LOG_FORMAT": "xml"})
    assert Settings.from_env({"CHATSTORE_LOG_FORMAT": "json"}).log_format == "json"
    assert Settings.from_env({}).log_format == "text"


async def test_a_request_cancelled_before_its_response_is_counted_as_499_not_500(
    settings: Settings, store: ChatStore
) -> None:
    entered = asyncio.Event()

    async def hangs(request: Request) -> Response:
        entered.set()
        await asyncio.sleep(3600)
        raise AssertionError("not cancelled")

    async with open_app(settings, store) as app:
        app.router.routes.append(Route("/hangs", hangs))
        async with open_client(app) as client:
            before = await scrape(client)
            # httpx's ASGITransport runs the app in the caller's task: cancelling
            # the request cancels the app, as a stopping server does.
            request = asyncio.create_task(client.get("/hangs"))
            await asyncio.wait_for(entered.wait(), 10)
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
            after = await scrape(client)
    assert (
        requests_of(after, "/hangs", "GET", "499")
        == requests_of(before, "/hangs", "GET", "499") + 1
    )
    assert requests_of(after, "/hangs", "GET", "500") == requests_of(before, "/hangs", "GET", "500")
