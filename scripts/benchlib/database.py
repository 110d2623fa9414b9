"""The database under test, its settings, and the machine it runs on.

Without ``--database-url`` the bench starts a throwaway cluster with the
machine's PostgreSQL binaries and real durability
(fsync and synchronous_commit on), adds
pg_stat_statements to it, and destroys it at the end. With a URL it creates
a database of its own on that server and drops it at the end.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from chatstore import migrations
from chatstore.embedded import Cluster

# What BENCHMARKS.md reports about the server, read with SHOW.
SETTINGS = (
    "server_version",
    "synchronous_commit",
    "fsync",
    "full_page_writes",
    "wal_sync_method",
    "shared_buffers",
    "work_mem",
    "maintenance_work_mem",
    "effective_cache_size",
    "max_wal_size",
    "checkpoint_timeout",
    "max_connections",
    "random_page_cost",
    "jit",
    "shared_preload_libraries",
    "track_wal_io_timing",
)


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@dataclass
class BenchDatabase:
    given_url: str | None
    cluster: Cluster | None = None
    folder: Path | None = None  # the cluster's temporary folder, deleted by stop_server()
    server_url: str = ""
    name: str = ""
    dsn: str = ""
    pg_stat_statements: bool = False
    log: list[str] = field(default_factory=list)

    def start_server(self) -> None:
        """Start the throwaway cluster (unless a URL was given)."""
        if self.given_url is not None:
            self.server_url = self.given_url
            self.name = f"chatstore_bench_{secrets.token_hex(4)}"
            return
        self.folder = Path(tempfile.mkdtemp(prefix="chatstore-bench-pg-", dir="/tmp"))
        self.folder.chmod(0o755)  # mkdtemp makes it 0700: the postgres user must enter it
        cluster = Cluster.create(self.folder / "pgdata")
        self.cluster = cluster
        cluster.start()
        # The WAL flushes' time in pg_stat_wal (diskprobe.py reads it per
        # HTTP run): a clock read around each write and flush.
        cluster.psql("ALTER SYSTEM SET track_wal_io_timing = on")
        cluster.psql("SELECT pg_reload_conf()")
        # pg_stat_statements needs a preload, hence a restart. It tells where
        # the server's share of each operation's time goes.
        try:
            cluster.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            cluster.stop()
            cluster.start()
        except Exception as error:  # pragma: no cover - a PostgreSQL without contrib
            self.log.append(f"pg_stat_statements unavailable: {error}")
        self.server_url = cluster.dsn("postgres")
        self.name = "chatstore_bench"

    async def create(self) -> None:
        """Create the bench database and apply chatstore's migrations."""
        connection = await asyncpg.connect(self.server_url)
        try:
            await connection.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await connection.close()
        self.dsn = with_database(self.server_url, self.name)
        await asyncio.to_thread(migrations.apply, self.dsn)
        connection = await asyncpg.connect(self.dsn)
        try:
            # pgstattuple: the search index's pending list (pending_pages).
            await connection.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        except asyncpg.PostgresError as error:
            self.log.append(f"pgstattuple unavailable: {error}")
        try:
            await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await connection.fetchval("SELECT count(*) FROM pg_stat_statements")
            self.pg_stat_statements = True
        except asyncpg.PostgresError as error:
            self.log.append(f"pg_stat_statements unavailable: {error}")
        finally:
            await connection.close()

    async def flush_folder(self) -> Path | None:
        """A writable folder on the database's disk, for the disk probe
        (diskprobe.py): the throwaway cluster's own folder, or, for a given
        server on this machine, the folder above its data directory. None
        when the server is elsewhere (its disk cannot be probed from here)."""
        if self.folder is not None:
            return self.folder
        if urlsplit(self.server_url).hostname not in ("127.0.0.1", "localhost", "::1", None):
            return None
        connection = await asyncpg.connect(self.dsn)
        try:
            data = await connection.fetchval("SHOW data_directory")
        except asyncpg.PostgresError:  # not allowed to read it (no pg_read_all_settings)
            return None
        finally:
            await connection.close()
        parent = Path(data).parent
        return parent if parent.is_dir() and os.access(parent, os.W_OK) else None

    async def drop(self) -> None:
        """Drop the database we created on a given server."""
        if self.given_url is None or not self.dsn:
            return
        connection = await asyncpg.connect(self.server_url)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await connection.close()

    def stop_server(self) -> None:
        if self.cluster is not None:
            self.cluster.stop("immediate")
            self.cluster = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    async def settings(self) -> dict[str, str]:
        connection = await asyncpg.connect(self.dsn)
        try:
            found: dict[str, str] = {}
            for name in SETTINGS:
                try:
                    found[name] = str(await connection.fetchval(f"SHOW {name}"))
                except asyncpg.PostgresError:
                    found[name] = "?"
            return found
        finally:
            await connection.close()


async def reset_statements(connection: asyncpg.Connection[Any]) -> None:
    await connection.execute("SELECT pg_stat_statements_reset()")


def like_pattern(sql: str) -> str:
    """A LIKE pattern matching the statement as pg_stat_statements shows it:
    constants (strings, numbers, booleans, NULL) become ``$n`` there, so
    they are wildcards here; a trailing semicolon is dropped."""
    text = sql.strip().rstrip(";").strip()
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    escaped = re.sub(r"'(?:[^']|'')*'", "%", escaped)
    escaped = re.sub(r"\b(?:true|false|null)\b", "%", escaped, flags=re.IGNORECASE)
    return re.sub(r"(?<![\w$])\d+(?![\w])", "%", escaped)


async def statement_stats(
    connection: asyncpg.Connection[Any], sql: str
) -> tuple[int, float] | None:
    """(calls, mean execution ms) of one statement since the last reset."""
    row = await connection.fetchrow(
        "SELECT sum(calls)::bigint AS calls,"
        " sum(total_exec_time) / nullif(sum(calls), 0) AS mean_ms"
        " FROM pg_stat_statements WHERE btrim(query) LIKE $1",
        like_pattern(sql),
    )
    if row is None or row["calls"] is None:
        return None
    return int(row["calls"]), float(row["mean_ms"])


async def gin_pending_pages(connection: asyncpg.Connection[Any]) -> int | None:
    """Pages in the search index's pending list (GIN fastupdate), if pgstattuple is there."""
    try:
        value = await connection.fetchval(
            "SELECT pending_pages FROM pgstatginindex('messages_search_idx')"
        )
    except asyncpg.PostgresError:
        return None
    return None if value is None else int(value)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _meminfo_mb() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


def machine_facts() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "memory_mb": _meminfo_mb(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "packages": {
            name: _version(name)
            for name in ("asyncpg", "starlette", "uvicorn", "pydantic", "h11", "httptools")
        },
        "uvloop": importlib.util.find_spec("uvloop") is not None,
        "httptools": importlib.util.find_spec("httptools") is not None,
        "wrk": _wrk_version(),
        "loadavg_start": loadavg(),
    }


def _wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "absent"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "?"
