"""Which PostgreSQL to use: the configured URL, or the embedded cluster.

With no CHATSTORE_DATABASE_URL / DATABASE_URL, chatstore runs its own
cluster under the data folder (.chatstore/pgdata by default) with the
machine's PostgreSQL binaries: created on first use, reused afterwards,
stopped when the command that started it ends (one that was already running,
say under `chatstore serve`, is left running). Its URL carries the cluster's
password (see chatstore/cluster.py): pass it on, never print it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from chatstore.cluster import Cluster
from chatstore.config import Settings

EMBEDDED_DATABASE = "chatstore"


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    if settings.database_url is not None:
        yield settings.database_url
        return
    cluster = Cluster.create(settings.data_dir.resolve() / "pgdata")
    with cluster:
        cluster.create_database(EMBEDDED_DATABASE)
        yield cluster.dsn(EMBEDDED_DATABASE)
