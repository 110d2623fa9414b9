"""`chatstore serve`'s log as an operator reads it: CHATSTORE_LOG_FORMAT=json
makes every line one JSON object, in every worker process, and each request
is one line with its method, route template, status, duration and id."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.serve import Server, serve_env
from support.users import make_user

from chatstore.config import Settings
from chatstore.store import ChatStore


async def test_json_log_format_is_one_object_per_line_in_every_worker(
    database: str, settings: Settings, store: ChatStore
) -> None:
    user = await make_user(store)
    log_dir = Path(tempfile.mkdtemp(prefix="chatstore-logs-"))
    # --workers 2: spawned processes, each of which must configure its own logging.
    server = Server(
        log=log_dir / "serve.log",
        env=serve_env(database, settings.auth_secret, CHATSTORE_LOG_FORMAT="json"),
        name="json",
        workers=2,
    )
    server.start()
    log = server.log
    try:
        server.wait_ready_blocking()
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            ids = [f"json-{n}" for n in range(8)]
            for request_id in ids:
                response = await client.get(
                    "/api/conversations",
                    headers={**user.headers, "X-Request-ID": request_id},
                )
                assert response.status_code == 200, response.text
                assert response.headers["X-Request-ID"] == request_id
        server.stop()
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        entries: list[dict[str, Any]] = []
        for line in lines:
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"not a JSON line: {line!r}\n{server.logs()}") from None
        assert all({"time", "level", "logger", "message"} <= set(e) for e in entries), entries
        # uvicorn's own lines are in the format too, from both workers.
        started = [e for e in entries if e["message"].startswith("Started server process")]
        assert len(started) == 2, server.logs()
        # Each worker tunes its garbage collector once started (chatstore/gctune.py).
        tuned = [e for e in entries if e["message"].startswith("garbage collector: ")]
        assert len(tuned) == 2 and all(e["logger"] == "chatstore.gctune" for e in tuned), tuned
        assert all("collected every 5000 allocations" in e["message"] for e in tuned), tuned

        requests = {
            e["request_id"]: e
            for e in entries
            if e["logger"] == "chatstore.requests" and e.get("request_id") in ids
        }
        assert set(requests) == set(ids), server.logs()
        for entry in requests.values():
            assert entry["level"] == "info"
            assert (entry["method"], entry["route"], entry["status"]) == (
                "GET",
                "/api/conversations",
                200,
            )
            assert isinstance(entry["duration_ms"], float | int) and entry["duration_ms"] >= 0
        # uvicorn's access log stays off: chatstore's line is the one line a request.
        assert not [e for e in entries if e["logger"] == "uvicorn.access"], server.logs()
    finally:
        server.stop()
        shutil.rmtree(log_dir, ignore_errors=True)


def _loaded(pid: int, library: str) -> bool:
    """Whether the process has ``library``'s compiled module mapped."""
    return f"/{library}/" in Path(f"/proc/{pid}/maps").read_text()


async def test_serve_runs_on_uvloop_and_httptools_unless_the_settings_opt_out(
    database: str, settings: Settings, store: ChatStore
) -> None:
    # httptools with the request head bounded (tests/features/test_request_head.py).
    user = await make_user(store)
    log_dir = Path(tempfile.mkdtemp(prefix="chatstore-loop-"))
    try:
        for extra, fast in (
            ({}, True),
            ({"CHATSTORE_SERVE_LOOP": "asyncio", "CHATSTORE_SERVE_HTTP": "h11"}, False),
        ):
            server = Server(
                log=log_dir / f"serve-{fast}.log",
                env=serve_env(database, settings.auth_secret, **extra),
                name=f"loop-{fast}",
            )
            server.start()
            try:
                server.wait_ready_blocking()
                async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
                    response = await client.get("/api/conversations", headers=user.headers)
                    assert response.status_code == 200, response.text
                assert _loaded(server.pid, "uvloop") is fast, server.logs()
                assert _loaded(server.pid, "httptools") is fast, server.logs()
            finally:
                server.stop()
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


def test_an_unknown_serve_loop_or_http_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="CHATSTORE_SERVE_LOOP"):
        Settings.from_env({"CHATSTORE_SERVE_LOOP": "trio"})
    with pytest.raises(ValueError, match="CHATSTORE_SERVE_HTTP"):
        Settings.from_env({"CHATSTORE_SERVE_HTTP": "h2"})
    defaults = Settings.from_env({})
    assert (defaults.serve_loop, defaults.serve_http) == ("auto", "httptools")
