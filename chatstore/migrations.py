"""Schema migrations: yoyo over psycopg 3, kept off the event loop by callers.

yoyo is synchronous; async callers run these functions in a thread
(``asyncio.to_thread``). The same migrations/ folder works with the plain
``yoyo apply --database postgresql+psycopg://... migrations`` CLI.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from yoyo import get_backend, read_migrations
from yoyo.backends import DatabaseBackend
from yoyo.exceptions import LockTimeout
from yoyo.migrations import MigrationList

from chatstore.resources import migrations_dir

# Concurrent `chatstore migrate` runs queue on a session advisory lock,
# which PostgreSQL releases by itself when a killed process's connection
# goes, so it can never be left behind. Under it, yoyo's own lock (a row in
# yoyo_lock, which a killed process does leave behind) is only contended by
# a plain `yoyo` run or by such a leftover: a short wait, then an explanation.
ADVISORY_LOCK_KEY = 0x63686174  # "chat"
YOYO_LOCK_TIMEOUT_SECONDS = 10
# How often a queued run asks for the advisory lock again.
LOCK_POLL_SECONDS = 0.2


class MigrationLocked(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class MigrationState:
    id: str
    applied: bool


def yoyo_url(url: str) -> str:
    """The same database URL with the scheme yoyo uses for psycopg 3."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql", "postgresql+psycopg"):
        raise ValueError(f"not a PostgreSQL URL: scheme {parts.scheme!r}")
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


def _migrations() -> MigrationList:
    return read_migrations(str(migrations_dir()))


@contextmanager
def _locked(url: str) -> Iterator[DatabaseBackend]:
    backend = get_backend(yoyo_url(url))
    try:
        _wait_for_advisory_lock(backend)
        with backend.lock(timeout=YOYO_LOCK_TIMEOUT_SECONDS):
            yield backend
    except LockTimeout as error:
        raise MigrationLocked(
            f"yoyo's migration lock is held ({error}): if no `yoyo` command is running "
            "against this database, a killed migration left it behind; remove it with "
            "`chatstore migrate break-lock` and run the migration again"
        ) from error
    finally:
        backend.connection.close()


def _wait_for_advisory_lock(backend: DatabaseBackend) -> None:
    """Take the session advisory lock, asking again until it is free.

    Not ``pg_advisory_lock()``, which waits inside a statement: a waiting
    run would then hold a snapshot, and the holder's ``CREATE INDEX
    CONCURRENTLY`` (a non-transactional migration, 0011) waits for every
    snapshot older than its build, so the two waited on each other until
    lock_timeout failed the migration (tests/adversity/test_migration_faults.py,
    test_concurrent_migrate_apply). Between tries this session holds nothing
    but its connection."""
    connection = backend.connection
    while True:
        row = connection.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()
        connection.commit()  # no transaction, so no snapshot, while we wait
        if row is not None and row[0]:
            return
        time.sleep(LOCK_POLL_SECONDS)


def apply(url: str, through: str | None = None) -> list[str]:
    """Apply the pending migrations in order: all of them, or with
    ``through`` those up to that one (tests/test_migrations.py applies one
    migration on its own to watch what it does)."""
    with _locked(url) as backend:
        pending = backend.to_apply(_migrations())
        if through is not None:
            ids = [migration.id for migration in pending]
            if through not in ids:
                raise ValueError(f"migration {through!r} is not pending (pending: {ids})")
            pending = pending[: ids.index(through) + 1]
        backend.apply_migrations(pending)
        return [migration.id for migration in pending]


def rollback(url: str, count: int | None = None) -> list[str]:
    """Roll back the newest ``count`` applied migrations (all when None)."""
    with _locked(url) as backend:
        applied = backend.to_rollback(_migrations())
        chosen = applied if count is None else applied[:count]
        backend.rollback_migrations(chosen)
        return [migration.id for migration in chosen]


def status(url: str) -> list[MigrationState]:
    backend = get_backend(yoyo_url(url))
    try:
        migrations = _migrations()
        applied = {m.id for m in migrations if backend.is_applied(m)}
        return [MigrationState(m.id, m.id in applied) for m in migrations]
    finally:
        backend.connection.close()


@functools.cache
def known_ids() -> tuple[str, ...]:
    """The ids of every migration this chatstore ships."""
    return tuple(migration.id for migration in _migrations())


def pending(url: str) -> list[str]:
    return [state.id for state in status(url) if not state.applied]


def break_lock(url: str) -> None:
    backend = get_backend(yoyo_url(url))
    try:
        backend.break_lock()
    finally:
        backend.connection.close()
