"""chatstore.cluster against real PostgreSQL clusters (no mocks).

One module-scoped throwaway cluster serves most checks, to keep the file fast; every
test leaves it running for the next one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from chatstore import cluster as cluster_mod
from chatstore.cluster import (
    PORT_FILE,
    Cluster,
    ClusterError,
    PostgresNotFound,
    find_bin_dir,
    throwaway,
)


@pytest.fixture(scope="module")
def pg() -> Iterator[Cluster]:
    c = throwaway()
    try:
        c.start()
        yield c
    finally:
        c.destroy()


async def test_start_and_connect(pg: Cluster) -> None:
    assert pg.is_running()
    assert pg.psql("select 1") == "1"
    conn = await asyncpg.connect(pg.dsn())
    try:
        assert await conn.fetchval("select current_setting('listen_addresses')") == "127.0.0.1"
    finally:
        await conn.close()


async def test_create_database_is_idempotent(pg: Cluster) -> None:
    pg.create_database('odd "name"')
    pg.create_database('odd "name"')
    conn = await asyncpg.connect(pg.dsn('odd "name"'))
    try:
        assert await conn.fetchval("select current_database()") == 'odd "name"'
    finally:
        await conn.close()


def test_restart_keeps_data(pg: Cluster) -> None:
    pg.psql("create table restart_t (x int); insert into restart_t values (1)")
    old_pid = pg.postmaster_pid()
    pg.restart()
    assert pg.postmaster_pid() not in (None, old_pid)
    assert pg.psql("select x from restart_t") == "1"


async def test_kill_then_start_recovers_committed_data(pg: Cluster) -> None:
    conn = await asyncpg.connect(pg.dsn())
    try:
        await conn.execute("create table kill_t (x int); insert into kill_t values (7)")
        pg.kill()
        assert not pg.is_running()
    finally:
        conn.terminate()  # its server is gone; close() would wait for a reply
    pg.start()
    assert pg.psql("select x from kill_t") == "7"


def test_stop_then_not_running(pg: Cluster) -> None:
    pg.stop()
    assert not pg.is_running()
    assert pg.postmaster_pid() is None
    pg.stop()  # stopping a stopped cluster is a no-op
    with pytest.raises(ClusterError, match="No postmaster"):
        pg.kill()
    pg.start()
    assert pg.psql("select 1") == "1"


def test_reuse_of_existing_data_folder(pg: Cluster) -> None:
    version = pg.data_dir / "PG_VERSION"
    before = version.stat().st_mtime_ns
    pid = pg.postmaster_pid()
    again = Cluster.create(pg.data_dir, fast_unsafe=True)
    assert again.port == pg.port
    assert (pg.data_dir / PORT_FILE).read_text().strip() == str(pg.port)
    assert version.stat().st_mtime_ns == before  # no second initdb
    # A running postmaster is adopted, not restarted, and left running: we only stop
    # what we started.
    with again:
        assert again.postmaster_pid() == pid
        assert again.psql("select 1") == "1"
    assert pg.postmaster_pid() == pid


def test_explicit_but_invalid_pg_bin_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHATSTORE_PG_BIN", str(tmp_path))
    with pytest.raises(PostgresNotFound, match="CHATSTORE_PG_BIN is set to") as info:
        find_bin_dir()  # no fallback to the machine's binaries: the setting is wrong
    message = str(info.value)
    assert "\n" not in message and message.endswith(
        "or set CHATSTORE_DATABASE_URL to an existing database."
    )


def test_no_binaries_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CHATSTORE_PG_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(cluster_mod, "PG_LIB", tmp_path)
    with pytest.raises(
        PostgresNotFound,
        match=r"apt-get install postgresql\) or set "
        "CHATSTORE_DATABASE_URL",
    ):
        find_bin_dir()


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
