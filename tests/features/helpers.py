"""Helpers of the feature tests: callers, the in-process app, server processes.

This module is imported by the tests directly, so pytest does not rewrite
its asserts: each says what it saw.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from chatstore import sessions
from chatstore.config import Settings
from chatstore.embedded import free_port
from chatstore.http.app import create_app
from chatstore.responder import Responder
from chatstore.store import ChatStore

BASE_URL = "http://test"
READY_SECONDS = 60.0
STOP_SECONDS = 20.0


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    """A better-auth user with a live session."""

    user_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def with_key(self, key: str) -> dict[str, str]:
        return {**self.headers, "Idempotency-Key": key}


MakeCaller = Callable[[], Awaitable[Caller]]


async def make_caller(store: ChatStore) -> Caller:
    user_id, token = await sessions.create_session(store, f"{secrets.token_hex(8)}@example.test")
    return Caller(user_id=user_id, token=token)


@asynccontextmanager
async def open_api(
    settings: Settings,
    store: ChatStore,
    *,
    responder: Responder | None = None,
    raise_app_exceptions: bool = True,
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the real app with its lifespan running (ASGITransport runs
    none). raise_app_exceptions=False: an unexpected error surfaces as the
    500 a real client gets, not as an exception in the test."""
    app = create_app(settings, store=store, responder=responder)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client


def new_key() -> str:
    return f"key-{secrets.token_hex(8)}"


def describe(response: httpx.Response) -> str:
    return (
        f"{response.request.method} {response.request.url} -> {response.status_code} "
        + (response.text[:500])
    )


def assert_status(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, describe(response)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The contract's error body; returns the inner ``error`` object."""
    context = describe(response)
    assert response.status_code == status, context
    assert response.headers.get("content-type", "").startswith("application/json"), context
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, context
    error = body["error"]
    assert isinstance(error, dict), context
    assert set(error) in ({"code", "message"}, {"code", "message", "details"}), context
    assert isinstance(error["message"], str) and error["message"], context
    if code is not None:
        assert error["code"] == code, context
    return error


# -- server processes --------------------------------------------------------


def chatstore_command(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("chatstore")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "chatstore"]
    return [*command, *args]


class ServerLogs:
    """Something whose server output a failed test should show."""

    def logs(self) -> str:
        raise NotImplementedError


@dataclasses.dataclass
class Server(ServerLogs):
    """A ``chatstore serve --workers 1`` process: uvicorn runs in it, so its
    pid is the process that serves (and whose memory we can read)."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError as error:
            text = f"(no log: {error})"
        return f"--- {self.name} ({self.base_url}, pid {self.pid}) ---\n{text}"


@dataclasses.dataclass
class ServerGroup(ServerLogs):
    servers: list[Server]
    log_dir: Path

    def logs(self) -> str:
        return "\n".join(server.logs() for server in self.servers)


def server_env(database_url: str, settings: Settings, **extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("CHATSTORE_DATABASE_URL", "DATABASE_URL") and not name.startswith("PG")
    }
    assert settings.auth_secret is not None
    return {
        **env,
        "CHATSTORE_DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": settings.auth_secret,
        **extra,
    }


def launch(name: str, env: dict[str, str], log_dir: Path) -> Server:
    port = free_port()
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            chatstore_command("serve", "--port", str(port), "--workers", "1"),
            env=env,
            cwd=log_dir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Server(name=name, process=process, base_url=f"http://127.0.0.1:{port}", log=log)


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"chatstore serve exited with {server.process.returncode}\n{server.logs()}"
            )
        try:
            if httpx.get(f"{server.base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"/readyz not 200 after {READY_SECONDS} s\n{server.logs()}")


def stop(server: Server) -> None:
    """SIGTERM and wait; SIGKILL only if it does not stop in time."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def start_servers(
    names: Sequence[str], database_url: str, settings: Settings, **extra_env: str
) -> ServerGroup:
    """Start ``chatstore serve`` processes on one database, wait until each is ready."""
    log_dir = Path(tempfile.mkdtemp(prefix="chatstore-features-"))
    env = server_env(database_url, settings, **extra_env)
    group = ServerGroup(servers=[], log_dir=log_dir)
    try:
        for name in names:
            group.servers.append(launch(name, env, log_dir))
        for server in group.servers:
            wait_ready(server)
    except BaseException:
        stop_servers(group, keep_logs=True)
        raise
    return group


def stop_servers(group: ServerGroup, *, keep_logs: bool = False) -> None:
    for server in group.servers:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
    for server in group.servers:
        stop(server)
    if not keep_logs:
        shutil.rmtree(group.log_dir, ignore_errors=True)


def rss_bytes(pid: int) -> int:
    """The resident set size of a process (VmRSS in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            assert unit == "kB", line
            return int(value) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


# -- server-sent events ------------------------------------------------------


async def read_block(lines: AsyncIterator[str], seconds: float) -> list[str]:
    """The lines of the next SSE block (up to its blank line), within ``seconds``."""
    block: list[str] = []
    async with asyncio.timeout(seconds):
        async for line in lines:
            if line == "":
                if block:
                    return block
                continue
            block.append(line)
    raise AssertionError(f"the event stream ended; partial block {block!r}")


async def read_event(lines: AsyncIterator[str], seconds: float) -> list[str]:
    """The next SSE block that is an event, within ``seconds`` (comment
    blocks such as ``: connected`` and ``: heartbeat`` are skipped)."""
    deadline = time.monotonic() + seconds
    while True:
        block = await read_block(lines, max(deadline - time.monotonic(), 0.001))
        if not all(line.startswith(":") for line in block):
            return block
