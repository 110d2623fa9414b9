"""The process's Prometheus metrics, named once here and served at /metrics.

Every metric lives in one registry of this module (not the client's global
default), so an app built twice in one process (tests) never registers a
name twice. Each server process counts its own: with ``--workers N`` a
scrape reaches one worker, so scrape each worker or sum over instances.
README.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from chatstore.pool import Pool

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

HTTP_REQUESTS = Counter(
    "chatstore_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ("route", "method", "status"),
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "chatstore_http_request_duration_seconds",
    "Time from a request's arrival to its response's start, by route template and method.",
    ("route", "method"),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
POOL_WAITERS = Gauge(
    "chatstore_pool_waiters",
    "Callers waiting for a free pooled connection right now.",
    ("pool",),
    registry=REGISTRY,
)
WRITERS_WAITING = Gauge(
    "chatstore_writers_waiting",
    "Writers waiting in this process for their conversation's turn (another"
    " of its writers holds it), without a connection.",
    registry=REGISTRY,
)
DATABASE_ERRORS = Counter(
    "chatstore_database_errors",
    "Database failures turned into 503s, by kind (the driver's exception class).",
    ("kind",),
    registry=REGISTRY,
)
EVENT_STREAMS = Gauge(
    "chatstore_event_streams_open",
    "Server-Sent Events streams (…/events) open on this process.",
    registry=REGISTRY,
)
LISTEN_RECONNECTS = Counter(
    "chatstore_listen_reconnects",
    "Times the process's LISTEN connection (live updates) was lost and re-made.",
    registry=REGISTRY,
)
APPENDS_PER_STATEMENT = Histogram(
    "chatstore_appends_per_statement",
    "Plain appends each append statement carried: 1 alone, more when appends that waited "
    "for a free statement went together (chatstore/appends.py).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
    registry=REGISTRY,
)
IDEMPOTENT_REPLAYS = Counter(
    "chatstore_idempotent_replays",
    "Requests answered from a stored response because their Idempotency-Key was used before.",
    registry=REGISTRY,
)
RETENTION_DELETED = Counter(
    "chatstore_retention_deleted_conversations",
    "Conversations deleted by the retention job (CHATSTORE_RETENTION_DAYS) on this process.",
    registry=REGISTRY,
)
REPLICA_SERVING = Gauge(
    "chatstore_replica_serving",
    "1 while a read replica (CHATSTORE_REPLICA_URLS, by position from 0) serves reads, "
    "0 while it is skipped (down, or lagging past CHATSTORE_REPLICA_MAX_LAG_SECONDS).",
    ("replica",),
    registry=REGISTRY,
)
REPLICA_LAG = Gauge(
    "chatstore_replica_lag_seconds",
    "How far a read replica is behind the primary, as of its last check: the age of the "
    "oldest primary WAL position it has not replayed (0 when caught up).",
    ("replica",),
    registry=REGISTRY,
)
READS = Counter(
    "chatstore_reads",
    "Reads routed with read replicas configured, by the server that served them "
    "(replica, or primary: none serving, none replayed the client's writes yet, or a "
    "replica's read failed).",
    ("server",),
    registry=REGISTRY,
)


class _Pools(Collector):
    """Connections of each tracked asyncpg pool, in use and idle, read at scrape time.

    Pools of one name (several stores in one process) add up. The references
    are strong (asyncpg's Pool has __slots__ without __weakref__); a pool is
    dropped once it is closing, at the next track or scrape.
    """

    def __init__(self) -> None:
        self._pools: list[tuple[str, Pool]] = []

    def _open(self) -> list[tuple[str, Pool]]:
        self._pools = [(name, pool) for name, pool in self._pools if not pool.is_closing()]
        return self._pools

    def track(self, name: str, pool: Pool) -> None:
        self._open().append((name, pool))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "chatstore_pool_connections",
            "Connections of a pool, by state (in_use, idle).",
            labels=("pool", "state"),
        )
        totals: dict[str, tuple[int, int]] = {}
        for name, pool in list(self._open()):
            size, idle = pool.get_size(), pool.get_idle_size()
            in_use, idle_so_far = totals.get(name, (0, 0))
            totals[name] = (in_use + size - idle, idle_so_far + idle)
        for name, (in_use, idle) in totals.items():
            family.add_metric((name, "in_use"), in_use)
            family.add_metric((name, "idle"), idle)
        yield family


POOLS = _Pools()
REGISTRY.register(POOLS)


def render() -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(REGISTRY)
