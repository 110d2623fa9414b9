"""How long the database's disk takes to flush, while the HTTP runs run.

Every acknowledged append waits for its commit's WAL flush (an fdatasync).
When the disk holds one flush for 200 ms, the appends of all 16 connections
wait those 200 ms, whatever the server above does. The GETs flush nothing
and do not see it. A 10 s run at 2,500 requests/s has 250 requests in its
slowest 1%, so about 16 such stalls put the POST p99 at their length.

The disks of this project's shared cloud machines stall on their own:
flushes of up to a second were seen with the machine idle (BENCHMARKS.md).
The probe puts the disk's flushes in the same run as the latencies they
may explain. A thread writes 8 KiB to a file beside the database's data
directory and fdatasyncs it every 50 ms, recording how long each write and
flush took; each run's window then reports the flushes that overlapped it.
PostgreSQL's own count and time of its WAL flushes in the same window
(``pg_stat_wal`` with ``track_wal_io_timing``, which the bench's throwaway
cluster turns on) say how much of the run the server spent flushing: the
probe samples the disk, these are the flushes the commits waited for. They
are approximate: PostgreSQL 15's processes publish their counters at most
once a second, and an idle one its last ones up to 10 s later, so a 5 s
window misses up to a second of its own flushes and may hold the tail of
the run before it (the other server's, when they alternate); a 1 s
``--quick`` run shows little of its own.

The probe's own load (20 flushes of 8 KiB a second) is small beside the
thousands of commits a second it watches.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg

EVERY_SECONDS = 0.05
BLOCK = b"\0" * 8192
SLOTS = 128  # the file cycles over this many blocks: 1 MiB, never growing
SLOW_MS = 50.0  # a flush this long holds an append past the p99 target alone


@dataclass(frozen=True, slots=True)
class Flushes:
    """The flushes that overlapped one window."""

    count: int
    p99_ms: float
    max_ms: float
    slow: int  # flushes of SLOW_MS or more
    # Every flush, in the order they ran: saved so that a miss can be
    # taken apart afterwards (how many were slow, when), not only summed up.
    each_ms: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "p99_ms": round(self.p99_ms, 1),
            "max_ms": round(self.max_ms, 1),
            "slow": self.slow,
            "each_ms": [round(x, 2) for x in self.each_ms],
        }


def summarize(latencies_ms: list[float]) -> Flushes:
    """``latencies_ms`` in the order the flushes ran."""
    if not latencies_ms:
        return Flushes(0, 0.0, 0.0, 0)
    ordered = sorted(latencies_ms)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    slow = sum(1 for x in ordered if x >= SLOW_MS)
    return Flushes(len(ordered), p99, ordered[-1], slow, tuple(latencies_ms))


class DiskProbe:
    """A background thread flushing a small file in ``folder`` (on the
    database's filesystem); ``during`` the runs' spans (``Watch``)."""

    def __init__(self, folder: Path) -> None:
        fd, name = tempfile.mkstemp(prefix="chatstore-bench-flush-", dir=folder)
        self._fd = fd
        self._path = Path(name)
        # (monotonic start, monotonic end) of every flush; appended by the
        # thread only, read under the lock.
        self._flushes: list[tuple[float, float]] = []
        self._flushing: float | None = None  # the start of the flush under way
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="disk-probe", daemon=True)

    def start(self) -> DiskProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self._fd)
        self._path.unlink(missing_ok=True)

    def during(self, spans: list[tuple[float, float]]) -> Flushes:
        """The flushes that overlapped any of the (start, end) spans, each once."""
        with self._lock:
            flushes = list(self._flushes)
            flushing = self._flushing
        now = time.monotonic()
        found = [(b - a) * 1000 for a, b in flushes if any(b >= s and a <= e for s, e in spans)]
        if flushing is not None and any(flushing <= e for _, e in spans):
            # Still flushing now: at least this long so far.
            found.append((now - flushing) * 1000)
        return summarize(found)

    def _run(self) -> None:
        block = 0
        while not self._stop.is_set():
            # The write is timed with the flush, as a commit's are: the kernel
            # may hold a write back while too much of its cache is dirty.
            started = time.monotonic()
            with self._lock:
                self._flushing = started
            os.pwrite(self._fd, BLOCK, block * len(BLOCK))
            block = (block + 1) % SLOTS
            os.fdatasync(self._fd)  # releases the GIL: the bench's loop goes on
            ended = time.monotonic()
            with self._lock:
                self._flushing = None
                self._flushes.append((started, ended))
            self._stop.wait(EVERY_SECONDS)


def describe(flushes: dict[str, Any] | None) -> str:
    """A saved window (``Flushes.to_json``) for the tables: its longest flush."""
    if not flushes or not flushes.get("count"):
        return "-"
    slow = f", {flushes['slow']} >= {SLOW_MS:.0f}" if flushes["slow"] else ""
    return f"{flushes['max_ms']:.0f}{slow}"


def describe_wal(wal: dict[str, Any] | None) -> str:
    """A saved ``WalSyncs.to_json`` for the tables: mean flush, share of the run."""
    if not wal or not wal.get("count"):
        return "-"
    return f"{wal['mean_ms']:.2f} ({wal['share']:.0%})"


def flush_note(flushes: dict[str, Any] | None, wal: dict[str, Any] | None = None) -> str:
    """After a p99 in the targets: the disk's longest flush in the same runs,
    and PostgreSQL's mean WAL flush."""
    found = []
    if flushes and flushes.get("count"):
        found.append(f"disk flush max {flushes['max_ms']:.0f} ms")
    if wal and wal.get("count"):
        found.append(f"WAL flush mean {wal['mean_ms']:.2f} ms")
    return f" ({'; '.join(found)})" if found else ""


@dataclass(frozen=True, slots=True)
class WalSyncs:
    """pg_stat_wal's flush counters at one moment (cluster-wide), or their
    difference over a window (``at``: the window's wall time, then)."""

    count: int
    ms: float
    at: float  # monotonic seconds

    def __sub__(self, before: WalSyncs) -> WalSyncs:
        return WalSyncs(self.count - before.count, self.ms - before.ms, self.at - before.at)

    def __add__(self, other: WalSyncs) -> WalSyncs:
        return WalSyncs(self.count + other.count, self.ms + other.ms, self.at + other.at)

    def to_json(self) -> dict[str, Any]:
        """A window's flushes: how many, their mean, and the share of the
        window's wall time they took."""
        return {
            "count": self.count,
            "mean_ms": round(self.ms / self.count, 3) if self.count else 0.0,
            "share": round(self.ms / (self.at * 1000), 3) if self.at > 0 else 0.0,
        }


async def wal_syncs(dsn: str) -> WalSyncs | None:
    """None unless the server times its WAL flushes (track_wal_io_timing)."""
    connection = await asyncpg.connect(dsn)
    try:
        if await connection.fetchval("SHOW track_wal_io_timing") != "on":
            return None
        row = await connection.fetchrow("SELECT wal_sync, wal_sync_time FROM pg_stat_wal")
    except asyncpg.PostgresError:  # before PostgreSQL 14: no pg_stat_wal
        return None
    finally:
        await connection.close()
    assert row is not None
    return WalSyncs(int(row["wal_sync"]), float(row["wal_sync_time"]), time.monotonic())


class Watch:
    """One run, watched: ``async with Watch(dsn) as watch:`` around it
    records its span (for ``DiskProbe.during``) and PostgreSQL's WAL
    flushes in it (None when the server does not time them)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._before: WalSyncs | None = None
        self.span = (0.0, 0.0)
        self.wal: WalSyncs | None = None

    async def __aenter__(self) -> Watch:
        self._before = await wal_syncs(self._dsn)
        self.span = (time.monotonic(), 0.0)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.span = (self.span[0], time.monotonic())
        if kind is not None:
            return
        after = await wal_syncs(self._dsn)
        if self._before is not None and after is not None:
            self.wal = after - self._before


def flush_report(probe: DiskProbe | None, watches: list[Watch]) -> dict[str, Any]:
    """The runs' flushes, as saved beside their latencies: the disk's
    (``Flushes.to_json``, None when not probed) and PostgreSQL's WAL
    flushes summed over the runs (``WalSyncs.to_json``, None when not
    timed)."""
    wal: WalSyncs | None = WalSyncs(0, 0.0, 0.0)
    for watch in watches:
        wal = None if wal is None or watch.wal is None else wal + watch.wal
    disk = None if probe is None else probe.during([w.span for w in watches])
    return {
        "disk_flushes": None if disk is None else disk.to_json(),
        "wal_syncs": None if wal is None else wal.to_json(),
    }
