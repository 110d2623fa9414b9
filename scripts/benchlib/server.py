"""``chatstore serve`` as a subprocess, and the memory of its workers.

With ``--workers 1`` uvicorn serves in the ``chatstore`` process itself; with
more, that process is a supervisor and the workers are its children (spawned
``multiprocessing`` processes). RSS is read from /proc/<pid>/status: VmRSS
now, VmHWM the peak since the process started.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from chatstore.embedded import free_port

VENV_BIN = Path(sys.executable).parent


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/<pid>/status (VmRSS, VmHWM), 0 when gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid:
            found.append(int(entry))
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Server:
    dsn: str
    workers: int
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CHATSTORE_") and k not in ("DATABASE_URL", "BETTER_AUTH_SECRET")
        }
        env["CHATSTORE_DATABASE_URL"] = self.dsn
        args = [str(VENV_BIN / "chatstore"), "serve", "--port", str(self.port)]
        args += ["--workers", str(self.workers), "--log-level", "warning"]
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                args,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=Path(__file__).resolve().parents[2],
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"chatstore serve exited with {self.process.returncode}; see {self.log_path}"
                )
            if len(self.worker_pids()) == self.workers and self._ready():
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"chatstore serve did not get ready; see {self.log_path}")
            time.sleep(0.1)
        if self.workers > 1:
            # Both workers must answer: a few requests each way.
            for _ in range(20):
                self._ready()

    def _ready(self) -> bool:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            connection.request("GET", "/readyz")
            ok = connection.getresponse().status == 200
            connection.close()
        except OSError:
            return False
        return ok

    def worker_pids(self) -> list[int]:
        if self.process is None:
            return []
        if self.workers == 1:
            return [self.process.pid]
        return [
            pid
            for pid in children(self.process.pid)
            if "multiprocessing.spawn" in cmdline(pid) and "resource_tracker" not in cmdline(pid)
        ]

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                # Our own process group (start_new_session): the supervisor and its workers.
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


class RssSampler:
    """Samples VmRSS of some processes every ``interval`` seconds, in a thread."""

    def __init__(self, pids: list[int], interval: float = 0.1) -> None:
        self.pids = pids
        self.interval = interval
        self.peak_kb: dict[int, int] = {pid: 0 for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                self.peak_kb[pid] = max(self.peak_kb[pid], status_kb(pid, "VmRSS"))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for pid in self.pids:
            self.peak_kb[pid] = max(self.peak_kb[pid], status_kb(pid, "VmRSS"))
