"""A private PgBouncer in transaction-pooling mode, in front of a test PostgreSQL.

Used by support/fixtures.py (``CHATSTORE_TEST_PGBOUNCER=1``: the suite's store
connects through it) and by tests/adversity/test_pgbouncer.py. It plays the
part of a managed transaction-mode pooler such as Neon's ``-pooler`` host:
a server connection belongs to a client only for one transaction, and a
small ``default_pool_size`` makes many clients share few server connections.

PgBouncer refuses to run as root, so when we are root it runs as the
unprivileged ``postgres`` user (like our PostgreSQL clusters), from a temp
folder it can read and write. It runs in the foreground of its own session
and is stopped by pid.

Authentication: when the server's URL carries a password (our clusters'
do), PgBouncer logs in to the server with it and asks its own clients for
the same password (``scram-sha-256``), so it opens no passwordless way in
to a server that has none; the URL ``url()`` returns carries it too.

Startup parameters: asyncpg sends chatstore's ``server_settings``
(application_name, timezone, statement_timeout) in the startup packet.
PgBouncer 1.18 (Debian bookworm) passes on only client_encoding, DateStyle,
TimeZone, standard_conforming_strings and application_name, and refuses a
connection that sends anything else ("unsupported startup parameter")
unless the parameter is listed in ``ignore_startup_parameters``, where it is
dropped: behind this PgBouncer, statement_timeout is NOT applied
(tests/adversity/test_pgbouncer.py shows it, and what else changes).

Also a pytest plugin (``-p support.pgbouncer`` with tests/ on PYTHONPATH): at the
end of the run it prints what every PgBouncer of the run carried (from its
admin console), so a run through PgBouncer shows that it really was.

This module is imported by the tests directly, so pytest does not rewrite
its asserts.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from chatstore.embedded import ClusterError, find_bin_dir, free_port

if TYPE_CHECKING:
    import pytest

RUN_AS = "postgres"  # the user PgBouncer runs as when we are root (it refuses root)
POOL_SIZE = 4  # server connections per (database, user): far fewer than clients
MAX_CLIENT_CONN = 1000
# Startup parameters PgBouncer would refuse the connection for, dropped instead.
# extra_float_digits: the usual entry (JDBC and others send it). statement_timeout
# is not here on purpose: chatstore does not send it through a pooled URL
# (chatstore/pool.py, server_settings), which strict poolers such as Neon's refuse.
IGNORED_STARTUP_PARAMETERS = ("extra_float_digits",)
LOG_FILE = "pgbouncer.log"
CONF_FILE = "pgbouncer.ini"

# One line per PgBouncer stopped in this process: what it carried (see summary()).
SUMMARIES: list[str] = []


class PgBouncerError(RuntimeError):
    """PgBouncer is missing, or did not start."""


def find_binary() -> str | None:
    """PgBouncer's executable (Debian puts it in /usr/sbin, often not on PATH)."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    debian = Path("/usr/sbin/pgbouncer")
    return str(debian) if os.access(debian, os.X_OK) else None


def version(binary: str | None = None) -> str:
    """E.g. ``'PgBouncer 1.18.0'``."""
    binary = binary or find_binary()
    if binary is None:
        raise PgBouncerError("pgbouncer is not installed (scripts/bootstrap installs it as root)")
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.splitlines()[0].strip() if out.stdout else out.stderr.strip()


def _doubled(value: str) -> str:
    """A value for PgBouncer's auth file, which escapes a double quote by doubling it."""
    return value.replace('"', '""')


def _quoted(value: str) -> str:
    """A value for a PgBouncer connection string (libpq style, single-quoted)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class PgBouncer:
    """A running PgBouncer; ``stop()`` (or leaving the ``with`` block) ends it."""

    port: int
    root: Path  # temp folder with the config, auth file and log; removed by stop()
    process: subprocess.Popen[bytes]
    config: str  # the pgbouncer.ini it runs with
    admin_user: str  # may use the admin console (the virtual database "pgbouncer")
    password: str = field(default="", repr=False)  # the admin user's, if clients need one

    def url(self, direct_url: str) -> str:
        """``direct_url`` (to the PostgreSQL behind us) with PgBouncer's host and port."""
        parts = urlsplit(direct_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def show(self, what: str) -> list[dict[str, str]]:
        """``SHOW <what>`` on the admin console (STATS, POOLS, SERVERS, CLIENTS...).

        With psql: the console speaks only the simple query protocol, and
        asyncpg's queries use the extended one."""
        psql = find_bin_dir() / "psql"
        args = [str(psql), "-X", "-A", "-F", "\t", "--pset", "footer=off", "-v", "ON_ERROR_STOP=1"]
        args += ["-h", "127.0.0.1", "-p", str(self.port), "-U", self.admin_user, "-d", "pgbouncer"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if self.password:
            env["PGPASSWORD"] = self.password  # the environment, not the command line
        out = subprocess.run(
            [*args, "-c", f"SHOW {what}"],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
            check=True,
        ).stdout.splitlines()
        header = out[0].split("\t") if out else []
        return [dict(zip(header, line.split("\t"), strict=True)) for line in out[1:]]

    def summary(self) -> str:
        """E.g. ``pgbouncer: PgBouncer 1.18.0, pool_mode=transaction, default_pool_size=4:
        4061 transactions, 6120 queries; 4 server connections open``."""
        stats = [row for row in self.show("STATS") if row["database"] != "pgbouncer"]
        xacts = sum(int(row["total_xact_count"]) for row in stats)
        queries = sum(int(row["total_query_count"]) for row in stats)
        servers = len(self.show("SERVERS"))
        return (
            f"pgbouncer: {version()}, pool_mode=transaction, default_pool_size={self.pool_size}: "
            f"{xacts} transactions, {queries} queries; {servers} server connections open"
        )

    @property
    def pool_size(self) -> int:
        for line in self.config.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "default_pool_size":
                return int(value)
        raise PgBouncerError("no default_pool_size in the config")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.root / LOG_FILE).read_text().splitlines()[-lines:])
        except OSError as e:
            return f"(no pgbouncer log: {e})"

    def stop(self) -> None:
        """SIGTERM (immediate shutdown), SIGKILL if it lingers; then remove its folder.
        What it carried is kept in SUMMARIES first."""
        if self.process.poll() is None:
            try:
                SUMMARIES.append(self.summary())
            except (OSError, subprocess.SubprocessError, ClusterError, PgBouncerError) as e:
                SUMMARIES.append(f"pgbouncer: (no statistics: {e!r})")
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start(
    server_url: str,
    *,
    pool_size: int = POOL_SIZE,
    max_client_conn: int = MAX_CLIENT_CONN,
    ignore_startup_parameters: tuple[str, ...] = IGNORED_STARTUP_PARAMETERS,
    timeout: float = 15,
) -> PgBouncer:
    """Start PgBouncer (transaction pooling) in front of the server of ``server_url``
    (any database on it: ``* = host=... port=...``) and wait until it answers."""
    binary = find_binary()
    if binary is None:
        raise PgBouncerError("pgbouncer is not installed (scripts/bootstrap installs it as root)")
    server = urlsplit(server_url)
    user = unquote(server.username or RUN_AS)
    password = unquote(server.password or "")
    target = f"host={server.hostname or '127.0.0.1'} port={server.port or 5432}"
    if password:  # the server wants one: PgBouncer logs in as this user with it
        target += f" user={_quoted(user)} password={_quoted(password)}"
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="chatstore-pgbouncer-", dir="/tmp"))
    config = "\n".join(
        [
            "[databases]",
            f"* = {target}",
            "",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {port}",
            "unix_socket_dir =",  # TCP only, like our clusters
            "pool_mode = transaction",
            # With a password, clients log in with it, as they would to the server;
            # without one (a trust server given as CHATSTORE_TEST_DATABASE_URL) nor do they.
            # The auth file lists the user either way.
            f"auth_type = {'scram-sha-256' if password else 'trust'}",
            f"auth_file = {root / 'userlist.txt'}",
            f"max_client_conn = {max_client_conn}",
            f"default_pool_size = {pool_size}",
            "min_pool_size = 0",
            "reserve_pool_size = 0",
            f"ignore_startup_parameters = {','.join(ignore_startup_parameters)}",
            f"logfile = {root / LOG_FILE}",
            "log_connections = 0",
            "log_disconnections = 0",
            f"admin_users = {user}",
            "",
        ]
    )
    try:
        # Both hold the password: readable by their owner only (and the folder is 0700).
        userlist = f'"{_doubled(user)}" "{_doubled(password)}"\n'
        for name, text in ((CONF_FILE, config), ("userlist.txt", userlist)):
            fd = os.open(root / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        uid = gid = groups = None
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam(RUN_AS)
            except KeyError:
                raise PgBouncerError(
                    f"We run as root, which PgBouncer refuses, and there is no user "
                    f"{RUN_AS!r} to run it as."
                ) from None
            uid, gid, groups = pw.pw_uid, pw.pw_gid, os.getgrouplist(RUN_AS, pw.pw_gid)
            for path in (root, root / CONF_FILE, root / "userlist.txt"):
                os.chown(path, uid, gid)
        # PG* variables mean nothing to PgBouncer, but keep its environment plain.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        process = subprocess.Popen(
            [binary, "-q", str(root / CONF_FILE)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=root,
            env=env,
            user=uid,
            group=gid,
            extra_groups=groups,
            # Its own session: a Ctrl-C meant for pytest must not reach it; we stop it.
            start_new_session=True,
        )
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    bouncer = PgBouncer(
        port=port, root=root, process=process, config=config, admin_user=user, password=password
    )
    deadline = time.monotonic() + timeout
    while not _accepts(port):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = bouncer.log_tail()
            bouncer.stop()
            raise PgBouncerError(f"PgBouncer did not start on port {port}:\n{tail}")
        time.sleep(0.05)
    return bouncer


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def database_url(url: str, database: str) -> str:
    """``url`` naming ``database`` instead."""
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(database, safe="")))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """With ``-p support.pgbouncer``: what each PgBouncer of the run carried."""
    for line in SUMMARIES:
        terminalreporter.write_line(line)
