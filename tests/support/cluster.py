"""The embedded cluster's test-only powers, kept out of the shipped package.

chatstore/embedded.py is what ``chatstore serve`` needs: create a cluster,
start, stop, connect. The tests also make throwaway clusters in temporary
folders, trade durability for speed, and (fault tests) kill and restart
PostgreSQL under load: ``ThrowawayCluster`` (durable: fsync on, so a SIGKILL
is honest) and ``FastCluster`` (fsync off) subclass the shipped ``Cluster``
with these.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from chatstore.embedded import HBA, Cluster, ClusterError, _alive, free_port

# pg_hba.conf of a primary that lets standbys stream its WAL: the same SCRAM
# over 127.0.0.1 as every other login, nothing more.
REPLICATION_HBA = HBA + "host    replication  all   127.0.0.1/32  scram-sha-256\n"


@dataclass
class ThrowawayCluster(Cluster):
    """A cluster that tests kill, restart and destroy."""

    temp_root: Path | None = None  # removed by destroy() (a throwaway cluster's folder)

    def restart(self) -> None:
        self.stop("fast")
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would; the next start() runs crash recovery."""
        pid = self.postmaster_pid()
        if pid is None:
            raise ClusterError(f"No postmaster running in {self.data_dir} to kill.")
        kids = _children(pid)
        os.kill(pid, signal.SIGKILL)
        # Backends exit on their own once they see the postmaster die; the next postmaster must
        # not find them still attached to the old shared memory, so wait (then force) them out.
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in [pid, *kids]):
            if time.monotonic() > deadline:
                for p in kids:
                    if _alive(p):
                        os.kill(p, signal.SIGKILL)
            time.sleep(0.02)
        # The killed postmaster may linger as a zombie (PID 1 reaps lazily here), and postgres
        # refuses to start while the pid in postmaster.pid answers kill(pid, 0). It is dead and
        # so are its children, so the lock file is stale.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        self._started = False

    def destroy(self) -> None:
        """Stop immediately and delete the cluster's files (the whole temp folder if throwaway)."""
        self.stop("immediate")
        shutil.rmtree(self.temp_root or self.data_dir, ignore_errors=True)

    def allow_replication(self) -> None:
        """Let a standby stream this (running) cluster's WAL: pg_hba.conf gets a
        ``host replication`` line (SCRAM, loopback), and segments are kept long
        enough for a standby stopped for a few seconds to catch up."""
        self._write("pg_hba.conf", REPLICATION_HBA)
        self.psql("ALTER SYSTEM SET wal_keep_size = '256MB'")
        self.psql("SELECT pg_reload_conf()")

    def standby(self) -> ThrowawayCluster:
        """A hot standby of this running cluster, not started: ``pg_basebackup -R``
        (streaming replication over loopback, its password in primary_conninfo)
        into a temp folder, on a free port. destroy() removes it."""
        root = Path(tempfile.mkdtemp(prefix="chatstore-standby-", dir="/tmp"))
        root.chmod(0o755)
        data_dir = root / "pgdata"
        data_dir.mkdir(mode=0o700)
        self._own(data_dir)
        args = [str(self.bin_dir / "pg_basebackup"), "-D", str(data_dir), "-R"]
        args += ["-X", "stream", "-c", "fast", "--no-sync", "-w"]
        args += ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        deadline = time.monotonic() + 10
        while True:
            # The postmaster rereads pg_hba.conf when it gets round to the SIGHUP.
            proc = self._run(
                args, as_server=True, what="pg_basebackup", check=False, password=self.password
            )
            if proc.returncode == 0:
                break
            if time.monotonic() > deadline:
                shutil.rmtree(root, ignore_errors=True)
                raise ClusterError(f"pg_basebackup failed: {proc.stderr.strip()}")
            shutil.rmtree(data_dir, ignore_errors=True)
            data_dir.mkdir(mode=0o700)
            self._own(data_dir)
            time.sleep(0.2)
        # The backup copied our settings file with the primary's port: create() rewrites it.
        (data_dir / "postmaster.pid").unlink(missing_ok=True)
        standby = type(self).create(data_dir, port=free_port())
        standby.temp_root = root
        return standby

    def log_tail(self, lines: int = 20) -> str:
        """The end of PostgreSQL's own log, for a failed test's report."""
        return self._log_tail(lines)


class FastCluster(ThrowawayCluster):
    """Fast and unsafe: no fsync at initdb or after, for the suite's shared cluster."""

    def _initdb_options(self) -> list[str]:
        return ["--no-sync"]

    def _extra_settings(self) -> list[str]:
        # synchronous_commit stays on: with fsync=off it costs only a write() to the page
        # cache, and it keeps commits durable across a SIGKILL, which fault tests rely on.
        return ["fsync = off", "full_page_writes = off"]


def throwaway(fast_unsafe: bool = True, port: int | None = None) -> ThrowawayCluster:
    """A fresh cluster in a temp folder on a free port (not started); destroy() removes it."""
    root = Path(tempfile.mkdtemp(prefix="chatstore-pg-", dir="/tmp"))
    root.chmod(0o755)  # mkdtemp makes it 0700: the postgres user must be able to enter it
    kind = FastCluster if fast_unsafe else ThrowawayCluster
    try:
        c = kind.create(root / "pgdata", port=port)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    c.temp_root = root
    return c


def _children(pid: int) -> list[int]:
    kids = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat_file.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat_file.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return kids
