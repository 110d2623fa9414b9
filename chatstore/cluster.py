"""A private PostgreSQL cluster run with the machine's PostgreSQL binaries.

Used by ``chatstore serve`` when no database URL is configured (an embedded
cluster under ``.chatstore/pgdata``) and by the tests (throwaway clusters that
fault tests stop, restart and kill). Stdlib only, so the CLI can use it before
anything heavier is imported.

Security: the cluster is initialised with ``--auth=trust`` and listens on
127.0.0.1 only, with unix sockets disabled. Anyone with a shell on this machine
can therefore connect as the superuser ``postgres``; that is the usual bargain
of a private development database and why it never listens on other addresses.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import quote

SUPERUSER = "postgres"
PORT_FILE = "chatstore-port"  # the saved port: URLs to the embedded cluster stay valid across runs
CONF_FILE = "chatstore.conf"  # our settings, included at the end of postgresql.conf so they win
LOG_FILE = "postgres.log"
PG_LIB = Path("/usr/lib/postgresql")  # Debian/Ubuntu layout: /usr/lib/postgresql/<ver>/bin


class ClusterError(RuntimeError):
    """The private cluster could not be created, started or stopped."""


class PostgresNotFound(ClusterError):
    """No PostgreSQL server binaries on this machine."""


def _has_initdb(d: Path) -> bool:
    return os.access(d / "initdb", os.X_OK)


def _version_key(p: Path) -> tuple[int, ...]:
    return tuple(int(x) for x in p.parent.name.split(".") if x.isdigit())


def find_bin_dir() -> Path:
    """The directory holding initdb, pg_ctl, postgres, psql and pg_isready.

    An explicitly set CHATSTORE_PG_BIN is obeyed or fails: silently falling back
    to other binaries would hide a misconfiguration (e.g. the wrong major version).
    """
    env = os.environ.get("CHATSTORE_PG_BIN")
    if env:
        if _has_initdb(Path(env)):
            return Path(env)
        raise PostgresNotFound(
            f"CHATSTORE_PG_BIN is set to {env!r}, which holds no executable initdb: point it "
            "at a PostgreSQL bin directory (e.g. /usr/lib/postgresql/15/bin), unset it, "
            "or set CHATSTORE_DATABASE_URL to an existing database."
        )
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and _has_initdb(Path(out)):
            return Path(out)
    versions = sorted((d for d in PG_LIB.glob("*/bin") if _has_initdb(d)), key=_version_key)
    if versions:
        return versions[-1]
    initdb = shutil.which("initdb")
    if initdb:
        # /usr/local/bin/initdb is often a lone symlink; its target's folder has the rest.
        return Path(initdb).resolve().parent
    raise PostgresNotFound(
        "No PostgreSQL server binaries found (looked for initdb in CHATSTORE_PG_BIN, "
        f"pg_config --bindir, {PG_LIB}/*/bin and PATH): install them "
        "(apt-get install postgresql) or set CHATSTORE_DATABASE_URL to an existing database."
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    """True if pid exists and is not a zombie (a SIGKILLed, orphaned postmaster stays a zombie
    until PID 1 reaps it, and kill(pid, 0) would still succeed on it)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
        return raw.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to the signal probe
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _children(pid: int) -> list[int]:
    kids = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat_file.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat_file.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return kids


def _check_reachable(path: Path, user: str) -> None:
    """PostgreSQL (run as `user`) must be able to search every existing parent of `path`."""
    pw = pwd.getpwnam(user)
    groups = set(os.getgrouplist(user, pw.pw_gid))
    for d in reversed(path.parents):
        if not d.exists():
            break
        st = d.stat()
        if st.st_uid == pw.pw_uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            raise ClusterError(
                f"PostgreSQL runs as user {user!r} here (it refuses root) but cannot enter {d} "
                f"on the way to {path}: make it searchable (chmod o+x {d}) or put the data "
                "folder elsewhere."
            )


@dataclass
class Cluster:
    data_dir: Path
    port: int
    bin_dir: Path
    run_as: str | None  # the unprivileged user that runs initdb/pg_ctl/postgres when we are root
    temp_root: Path | None = None  # removed by destroy() (throwaway clusters)
    _started: bool = field(default=False, init=False, repr=False)

    @classmethod
    def create(
        cls, data_dir: Path, *, port: int | None = None, fast_unsafe: bool = False
    ) -> Cluster:
        """initdb `data_dir` unless it already holds a cluster, then (re)write our settings.

        Port: an explicit `port` wins and is saved; else the saved port; else a free one, saved.
        """
        data_dir = data_dir.absolute()
        run_as = SUPERUSER if os.geteuid() == 0 else None
        c = cls(data_dir=data_dir, port=0, bin_dir=find_bin_dir(), run_as=run_as)
        if run_as is not None:
            try:
                _check_reachable(data_dir, run_as)
            except KeyError:
                raise ClusterError(
                    f"We run as root, which PostgreSQL refuses, and there is no user {run_as!r} "
                    f"to run it as: create it (useradd --system {run_as})."
                ) from None
        if not (data_dir / "PG_VERSION").exists():
            if data_dir.exists() and any(data_dir.iterdir()):
                raise ClusterError(f"{data_dir} is neither empty nor a PostgreSQL data folder.")
            data_dir.mkdir(parents=True, exist_ok=True)
            c._own(data_dir)
            args = [str(c.bin_dir / "initdb"), "-D", str(data_dir), "--auth=trust"]
            args += [f"--username={SUPERUSER}", "--encoding=UTF8", "--locale=C"]
            c._run(args + (["--no-sync"] if fast_unsafe else []), as_server=True, what="initdb")
        port_file = data_dir / PORT_FILE
        if port is None and port_file.exists():
            port = int(port_file.read_text().strip())
        c.port = port if port is not None else free_port()
        c._write(PORT_FILE, f"{c.port}\n")
        settings = [
            f"port = {c.port}",
            "listen_addresses = '127.0.0.1'",
            "unix_socket_directories = ''",  # socket paths are length-limited; TCP suffices
        ]
        if fast_unsafe:
            # synchronous_commit stays on: with fsync=off it costs only a write() to the page
            # cache, and it keeps commits durable across a SIGKILL, which fault tests rely on.
            settings += ["fsync = off", "full_page_writes = off"]
        c._write(
            CONF_FILE,
            "# Rewritten by chatstore on every Cluster.create().\n" + "\n".join(settings) + "\n",
        )
        main_conf = data_dir / "postgresql.conf"
        include = f"include_if_exists = '{CONF_FILE}'"
        if include not in main_conf.read_text():
            with main_conf.open("a") as f:
                f.write(f"\n{include}\n")
        return c

    # -- running things -------------------------------------------------------------------

    def _own(self, path: Path) -> None:
        if self.run_as is not None:
            pw = pwd.getpwnam(self.run_as)
            os.chown(path, pw.pw_uid, pw.pw_gid)
        if path.is_dir():
            path.chmod(0o700)

    def _write(self, name: str, text: str) -> None:
        (self.data_dir / name).write_text(text)
        self._own(self.data_dir / name)

    def _run(
        self,
        args: list[str],
        *,
        as_server: bool = False,
        what: str,
        timeout: float = 120,
        new_session: bool = False,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        # PG* variables (PGSSLMODE, PGSERVICE, ...) would redirect or break our own clients.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        uid = gid = groups = None
        if as_server and self.run_as is not None:
            pw = pwd.getpwnam(self.run_as)
            uid, gid, groups = pw.pw_uid, pw.pw_gid, os.getgrouplist(self.run_as, pw.pw_gid)
            env["HOME"] = pw.pw_dir
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=env,
            cwd="/",
            user=uid,
            group=gid,
            extra_groups=groups,
            start_new_session=new_session,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"{what} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.data_dir / LOG_FILE).read_text().splitlines()[-lines:])
        except OSError as e:
            return f"(no server log: {e})"

    def postmaster_pid(self) -> int | None:
        """The live postmaster's pid from postmaster.pid, or None."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def is_running(self) -> bool:
        return self.postmaster_pid() is not None

    def start(self, timeout: float = 30) -> None:
        """Start and wait until it accepts connections; adopt a postmaster already running here."""
        deadline = time.monotonic() + timeout
        if self.is_running():
            # Someone (an earlier chatstore, a crashed test) left it running: reuse it on the
            # port it really listens on (line 4 of postmaster.pid), and leave it running on exit.
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            if len(lines) >= 4 and lines[3].strip().isdigit():
                self.port = int(lines[3])
        else:
            args = [str(self.bin_dir / "pg_ctl"), "start", "-D", str(self.data_dir), "-w", "-s"]
            args += ["-t", str(max(1, int(timeout))), "-l", str(self.data_dir / LOG_FILE)]
            # New session: Ctrl-C meant for us must not reach the server; we stop it ourselves.
            proc = self._run(
                args,
                as_server=True,
                what="pg_ctl start",
                timeout=timeout + 15,
                new_session=True,
                check=False,
            )
            if proc.returncode != 0:
                raise ClusterError(
                    f"PostgreSQL in {self.data_dir} did not start: "
                    f"{proc.stderr.strip()}\n{self._log_tail()}"
                )
            self._started = True
        isready = [
            *(str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)),
            *("-U", SUPERUSER),  # else it asks as the OS user, which the log reports as FATAL
        ]
        while self._run([*isready, "-t", "1"], what="pg_isready", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"PostgreSQL on port {self.port} is not accepting connections "
                    f"after {timeout:g} s:\n{self._log_tail()}"
                )
            time.sleep(0.1)

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        """Stop the server (whoever started it); a no-op when it is not running."""
        self._started = False
        if not self.is_running():
            return
        args = [str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", mode]
        self._run([*args, "-w", "-s", "-t", "60"], as_server=True, what="pg_ctl stop", timeout=75)

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

    # -- clients ---------------------------------------------------------------------------

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{quote(database, safe='')}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` with psql (unaligned, tuples only) and return its output."""
        args = [str(self.bin_dir / "psql"), "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1"]
        args += ["-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database]
        return self._run([*args, "-c", sql], what="psql", timeout=60).stdout.strip()

    def create_database(self, name: str) -> None:
        """Create database `name` unless it exists."""
        exists = f"SELECT 1 FROM pg_database WHERE datname = '{name.replace(chr(39), chr(39) * 2)}'"
        if self.psql(exists) == "1":
            return
        try:
            self.psql(f'CREATE DATABASE "{name.replace(chr(34), chr(34) * 2)}"')
        except ClusterError:
            if self.psql(exists) != "1":  # not a lost race with another creator: a real failure
                raise

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._started:  # only stop what we started; an adopted postmaster keeps running
            self.stop()


def throwaway(fast_unsafe: bool = True, port: int | None = None) -> Cluster:
    """A fresh cluster in a temp folder on a free port (not started); destroy() removes it."""
    root = Path(tempfile.mkdtemp(prefix="chatstore-pg-", dir="/tmp"))
    root.chmod(0o755)  # mkdtemp makes it 0700: the postgres user must be able to enter it
    try:
        c = Cluster.create(root / "pgdata", port=port, fast_unsafe=fast_unsafe)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    c.temp_root = root
    return c
