"""Shared machinery of the hostile-input and isolation tests (tests/adversity).

Helpers only, no fixtures: each test module defines its own (a
module-scoped server from ``running_server``), because a module that the
tests import cannot also be loaded as a ``pytest_plugins`` plugin (pytest
could no longer rewrite its asserts: an error under filterwarnings=error),
and this folder's conftest.py belongs to the fault-injection tests.

Everything is real: ``chatstore serve`` (uvicorn, one worker: its pid is the
process that serves, so its VmRSS is the server's memory) runs as a
subprocess on its own loopback port, over the suite's migrated database
(tests/conftest.py ``database``); callers are better-auth users with real
sessions. Nothing is mocked.

Pytest does not rewrite the asserts of this module: every check says what
it saw.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

from adversity.harness import chatstore_command, clean_env
from chatstore import sessions
from chatstore.embedded import free_port
from chatstore.store import ChatStore

# The server refuses a body that has not fully arrived after this long (408).
BODY_TIMEOUT_SECONDS = 3
READY_SECONDS = 60.0
STOP_SECONDS = 20.0

# Every hostile server: short body timeout, and no session cache, so that a
# session deleted or expired in the database is refused on the next request.
SERVER_ENV = {
    "CHATSTORE_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT_SECONDS),
    "CHATSTORE_AUTH_CACHE_SECONDS": "0",
    "CHATSTORE_POOL_MAX_SIZE": "10",
    "CHATSTORE_STATEMENT_TIMEOUT_MS": "10000",
}

JSON_HEADERS = {"content-type": "application/json"}

# What betrays a server-side bug in the server's output.
_PROBLEM_MARKERS = ("Traceback", "unhandled error", "Exception in ASGI application")


# -- the server ------------------------------------------------------------------


@dataclasses.dataclass
class Served:
    """A running ``chatstore serve --workers 1``."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    secret: str

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def rss_kib(self) -> int:
        """The server's resident set size (VmRSS), in KiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS in /proc/{self.process.pid}/status")

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server has used."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        # utime and stime: fields 14 and 15 of stat(5), 12 and 13 after the ")".
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError as error:
            return f"(no log: {error})"

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def problems_since(self, offset: int) -> list[str]:
        """Lines of the server's output after ``offset`` that betray a bug."""
        with self.log.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        return [line for line in text.splitlines() if any(m in line for m in _PROBLEM_MARKERS)]

    def tail(self, offset: int = 0, limit: int = 6000) -> str:
        with self.log.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        return text[-limit:]

    def assert_alive(self) -> None:
        assert self.process.poll() is None, (
            f"chatstore serve exited with {self.process.returncode}\n{self.tail()}"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(database_url: str, secret: str, folder: Path, **env: str) -> Served:
    """``chatstore serve`` on a free loopback port, once /readyz says 200."""
    port = free_port()
    log = folder / f"serve-{port}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            chatstore_command("serve", "--port", str(port), "--workers", "1"),
            env=clean_env(
                CHATSTORE_DATABASE_URL=database_url,
                BETTER_AUTH_SECRET=secret,
                **{**SERVER_ENV, **env},
            ),
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    served = Served(process=process, port=port, log=log, secret=secret)
    deadline = time.monotonic() + READY_SECONDS
    with httpx.Client(base_url=served.base_url, timeout=2) as client:
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"chatstore serve exited with {process.returncode}\n{served.text()}"
                )
            try:
                if client.get("/readyz").status_code == 200:
                    return served
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                served.stop()
                raise AssertionError(f"/readyz not 200 after {READY_SECONDS} s\n{served.text()}")
            time.sleep(0.05)


# -- callers ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    """A better-auth user with a live session."""

    user_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def json_headers(self) -> dict[str, str]:
        return {**self.headers, **JSON_HEADERS}


async def make_user(store: ChatStore) -> User:
    user_id, token = await sessions.create_session(store, f"{secrets.token_hex(6)}@example.test")
    return User(user_id=user_id, token=token)


def tool_call(call_id: str, name: str = "lookup", arguments: str = "{}") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def seed_messages(tag: str) -> list[dict[str, Any]]:
    """A realistic history: system, user, an assistant tool call, its tool
    answer, the assistant's reply. ``tag`` makes the contents searchable."""
    call_id = f"call_{secrets.token_hex(4)}"
    return [
        {"role": "system", "content": f"you are a helpful {tag} assistant"},
        {"role": "user", "content": f"what is the weather in {tag} town", "metadata": {"k": tag}},
        {"role": "assistant", "content": None, "tool_calls": [tool_call(call_id, "weather")]},
        {"role": "tool", "tool_call_id": call_id, "content": f"sunny in {tag} town"},
        {"role": "assistant", "content": f"It is sunny in {tag} town.", "name": "bot_1"},
    ]


# -- assertions ------------------------------------------------------------------


def error_of(status: int, headers: Mapping[str, str], body: bytes, what: str) -> dict[str, Any]:
    """The contract's error body ``{"error": {"code", "message", "details"?}}``
    as application/json; returns the inner object."""
    context = f"{what} -> {status} {body[:400]!r}"
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    assert media_type == "application/json", context
    parsed = json.loads(body)
    assert isinstance(parsed, dict) and set(parsed) == {"error"}, context
    error = parsed["error"]
    assert isinstance(error, dict), context
    assert set(error) in ({"code", "message"}, {"code", "message", "details"}), context
    assert isinstance(error["code"], str) and error["code"], context
    assert isinstance(error["message"], str) and error["message"], context
    if "details" in error:
        details = error["details"]
        assert isinstance(details, list) and details, context
        for item in details:
            assert isinstance(item, dict) and set(item) == {"loc", "msg"}, context
    return error


def assert_contract_error(response: httpx.Response, status: int | None = None) -> dict[str, Any]:
    """A 4xx (``status`` if given) with the contract's error body."""
    what = f"{response.request.method} {response.request.url}"
    if status is not None:
        assert response.status_code == status, (
            f"{what} -> {response.status_code} {response.text[:400]}"
        )
    assert 400 <= response.status_code < 500, (
        f"{what} -> {response.status_code} {response.text[:400]}"
    )
    return error_of(response.status_code, response.headers, response.content, what)


# -- raw HTTP over a socket --------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    """One HTTP/1.1 response (Content-Length or read-to-close bodies)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readline()).strip().split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                break
            parts.append(await reader.readexactly(size))
            await reader.readline()
        body = b"".join(parts)
    else:
        body = await reader.read()
    return RawResponse(status=status, headers=headers, body=body)


def request_head(
    method: str,
    path: str,
    port: int,
    headers: Mapping[str, str],
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# -- a memory sampler ---------------------------------------------------------------


class RssSampler:
    """Samples a server's VmRSS every ``every`` seconds while it runs."""

    def __init__(self, served: Served, every: float = 0.02) -> None:
        self._served = served
        self._every = every
        self.samples: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RssSampler:
        self.samples.append(self._served.rss_kib())
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task
        self.samples.append(self._served.rss_kib())

    async def _run(self) -> None:
        while True:
            self.samples.append(self._served.rss_kib())
            await asyncio.sleep(self._every)

    @property
    def baseline_kib(self) -> int:
        return self.samples[0]

    @property
    def peak_growth_kib(self) -> int:
        return max(self.samples) - self.samples[0]


# -- the server as a context ------------------------------------------------------


@contextmanager
def running_server(database_url: str, secret: str | None, **env: str) -> Iterator[Served]:
    """``chatstore serve`` for the duration of the block, its log in a
    temporary folder removed afterwards."""
    assert secret is not None
    with tempfile.TemporaryDirectory(prefix="chatstore-hostile-") as folder:
        served = start_server(database_url, secret, Path(folder), **env)
        try:
            yield served
        finally:
            served.stop()


@contextmanager
def no_server_problems(served: Served) -> Iterator[None]:
    """Fails if the server logged a traceback while the block ran."""
    offset = served.log_size()
    yield
    problems = served.problems_since(offset)
    assert not problems, "\n".join(problems) + "\n" + served.tail(offset)
