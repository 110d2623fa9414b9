"""``chatstore serve`` as a subprocess on a real loopback port: the one helper.

Every suite that runs the server for real (features, adversity, the
end-to-end test) starts it here: a ``Server`` is one process (``--workers 1``
by default, so its pid is uvicorn's, the process that serves and whose memory
can be read), restartable on the same port, its output in a log file that a
failed test shows (``ShowsLogs``, see support/fixtures.py).

Pytest does not rewrite the asserts of this module: every check says what it saw.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from chatstore.embedded import free_port

READY_SECONDS = 60.0
STOP_SECONDS = 20.0

# Log lines that mean a bug whatever precedes them.
BUG_MARKERS = (
    "unhandled error",  # chatstore/http/errors.py: a 500
    "Exception in ASGI application",  # uvicorn caught what the app let through
    "exception was never retrieved",  # a task or future failed unobserved
)
# Lines heading a traceback that is a library's warning, not a failure.
BENIGN_TRACEBACK_HEADINGS = ("Failed to restore the pool connection floor",)
# asyncpg, when a connect is cancelled (an acquire timeout) while it awaits
# the server's answer to its SSLRequest, closes the socket and so fails a
# future nobody awaits any more: asyncio logs it as never retrieved. The
# request got its 503; nothing leaks.
BENIGN_UNRETRIEVED = "ConnectionError('unexpected connection_lost() call')"
# What betrays a server-side bug in a stretch of output (problems_since): any
# traceback at all, where the server is not under a database fault.
STRICT_MARKERS = ("Traceback", "unhandled error", "Exception in ASGI application")


def chatstore_command(*args: str) -> list[str]:
    """The installed ``chatstore`` script, else ``python -m chatstore``."""
    script = Path(sys.executable).with_name("chatstore")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "chatstore"]
    return [*command, *args]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would point chatstore elsewhere
    (libpq's PG*, chatstore's own settings, a database URL), plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PG", "CHATSTORE_", "BETTER_AUTH_")) and name != "DATABASE_URL"
    }
    return {**env, **extra}


def serve_env(database_url: str, secret: str | None, **extra: str) -> dict[str, str]:
    """A server's environment: this database, this auth secret, ``extra`` settings."""
    assert secret is not None, "a server needs an auth secret"
    return clean_env(CHATSTORE_DATABASE_URL=database_url, BETTER_AUTH_SECRET=secret, **extra)


class ShowsLogs:
    """Something whose output a failed test that used it should show."""

    def logs(self) -> str:
        raise NotImplementedError


@dataclasses.dataclass
class Server(ShowsLogs):
    """A ``chatstore serve`` process on a fixed loopback port, restartable there.

    ``workers=None`` leaves the worker count to chatstore (the CLI's default).
    """

    log: Path
    # Holds the database URL, password included: kept out of repr (and so of reports).
    env: dict[str, str] = dataclasses.field(repr=False)
    name: str = "serve"
    workers: int | None = 1
    port: int = dataclasses.field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    host = "127.0.0.1"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- life ------------------------------------------------------------------------

    def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        self.starts += 1
        args = ["serve", "--port", str(self.port)]
        if self.workers is not None:
            args += ["--workers", str(self.workers)]
        with self.log.open("ab") as out:
            if self.starts > 1:  # a restart: where the new process's output begins
                out.write(f"=== {self.name}: start #{self.starts} ===\n".encode())
                out.flush()
            self.process = subprocess.Popen(
                chatstore_command(*args),
                env=self.env,
                cwd=self.log.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def _exited(self) -> str | None:
        assert self.process is not None, f"{self.name} was never started"
        if self.process.poll() is None:
            return None
        return f"chatstore serve exited with {self.process.returncode}\n{self.logs()}"

    async def wait_ready(self, within: float = READY_SECONDS) -> float:
        """Poll /readyz until 200; returns the monotonic time it first was."""
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2) as client:
            while time.monotonic() < deadline:
                exited = self._exited()
                if exited is not None:
                    raise AssertionError(exited)
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return time.monotonic()
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"/readyz not 200 after {within} s\n{self.logs()}")

    def wait_ready_blocking(self, within: float = READY_SECONDS) -> float:
        """``wait_ready`` for synchronous fixtures."""
        deadline = time.monotonic() + within
        with httpx.Client(base_url=self.base_url, timeout=2) as client:
            while time.monotonic() < deadline:
                exited = self._exited()
                if exited is not None:
                    raise AssertionError(exited)
                try:
                    if client.get("/readyz").status_code == 200:
                        return time.monotonic()
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise AssertionError(f"/readyz not 200 after {within} s\n{self.logs()}")

    def signal(self, signum: signal.Signals) -> None:
        """Send ``signum`` without waiting (several servers stop in parallel)."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Its exit status once it exits; subprocess.TimeoutExpired after ``timeout`` s."""
        assert self.process is not None, f"{self.name} was never started"
        return self.process.wait(timeout)

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL only if it does not stop in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a crash would."""
        assert self.process is not None, f"{self.name} was never started"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def assert_alive(self) -> None:
        exited = self._exited()
        assert exited is None, exited

    # -- what it uses ----------------------------------------------------------------

    def rss_bytes(self) -> int:
        """The server's resident set size (VmRSS in /proc/<pid>/status)."""
        return rss_bytes(self.pid)

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server has used."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        # utime and stime: fields 14 and 15 of stat(5), 12 and 13 after the ")".
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # -- its output ------------------------------------------------------------------

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

    def tail(self, offset: int = 0, limit: int = 6000) -> str:
        """The output after ``offset`` (bytes), its last ``limit`` characters."""
        with self.log.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        return text[-limit:]

    def problems_since(self, offset: int) -> list[str]:
        """Lines of the output after ``offset`` that betray a bug (STRICT_MARKERS)."""
        text = self.tail(offset, limit=len(self.text()) + 1)
        return [line for line in text.splitlines() if any(m in line for m in STRICT_MARKERS)]

    def problems(self) -> list[str]:
        """What in the log betrays a bug: a 500 (chatstore logs "unhandled
        error"), an exception uvicorn caught, a task that died, any traceback
        but asyncpg's own warning while it refills the pool's minimum size
        (it logs one each time a reconnect fails during an outage)."""
        lines = self.text().splitlines()
        found = []
        for index, line in enumerate(lines):
            if line.startswith("Traceback"):
                heading = lines[index - 1] if index else ""
                if heading.startswith(BENIGN_TRACEBACK_HEADINGS):
                    continue
                last = next(
                    (later for later in lines[index + 1 :] if not later.startswith(" ")), "?"
                )
                found.append(f"{heading} | {last}")
            elif any(marker in line for marker in BUG_MARKERS):
                following = lines[index + 1] if index + 1 < len(lines) else ""
                if "never retrieved" in line and BENIGN_UNRETRIEVED in following:
                    continue
                found.append(f"{line} | {following}")
        return found

    def benign_tracebacks(self) -> int:
        """asyncpg's own warnings (see BENIGN_*), counted for the record."""
        return sum(
            1
            for line in self.text().splitlines()
            if line.startswith(BENIGN_TRACEBACK_HEADINGS) or BENIGN_UNRETRIEVED in line
        )

    def logs(self, limit: int = 40_000) -> str:
        text = self.text()
        if len(text) > limit:
            text = text[: limit // 4] + "\n[... cut ...]\n" + text[-(limit * 3) // 4 :]
        return f"--- {self.name} on {self.base_url} (log {self.log}) ---\n{text}"


def rss_bytes(pid: int) -> int:
    """The resident set size of a process (VmRSS in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            assert unit == "kB", line
            return int(value) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@dataclasses.dataclass
class ServerGroup(ShowsLogs):
    """Servers started together over one database, their logs in one folder."""

    servers: list[Server]
    log_dir: Path

    def logs(self) -> str:
        return "\n".join(server.logs() for server in self.servers)

    def stop(self, *, keep_logs: bool = False) -> None:
        for server in self.servers:  # all at once, then wait for each
            server.signal(signal.SIGTERM)
        for server in self.servers:
            server.stop()
        if not keep_logs:
            shutil.rmtree(self.log_dir, ignore_errors=True)


def start_servers(
    names: Sequence[str], database_url: str, secret: str | None, **env: str
) -> ServerGroup:
    """``chatstore serve`` processes on one database, each ready (/readyz 200)."""
    log_dir = Path(tempfile.mkdtemp(prefix="chatstore-serve-"))
    environment = serve_env(database_url, secret, **env)
    group = ServerGroup(servers=[], log_dir=log_dir)
    try:
        for name in names:
            server = Server(log=log_dir / f"{name}.log", env=environment, name=name)
            group.servers.append(server)
            server.start()
        for server in group.servers:
            server.wait_ready_blocking()
    except BaseException:
        group.stop(keep_logs=True)
        raise
    return group


@contextmanager
def running_server(database_url: str, secret: str | None, **env: str) -> Iterator[Server]:
    """One ready ``chatstore serve`` for the duration of the block, its log
    folder removed afterwards."""
    group = start_servers(["serve"], database_url, secret, **env)
    try:
        yield group.servers[0]
    finally:
        group.stop()
