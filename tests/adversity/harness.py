"""The adversity suite's machinery: clusters, server processes, load, verdicts.

The server process is support/serve.py's ``Server``; this adds the
lab that owns a test's clusters and servers, the load, and the verdict.

Everything is real: a throwaway PostgreSQL cluster with fsync on (so a
SIGKILL is honest), ``chatstore serve`` as a subprocess on a real port, and
an asyncio client over real sockets. The tests inject a fault while the load
runs, then check the database itself (raw asyncpg, not the server) against
what the server acknowledged.

This module is imported by the tests directly, so pytest does not rewrite
its asserts: every check says what it saw.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx
from support.cluster import ThrowawayCluster, throwaway
from support.serve import Server, ShowsLogs, chatstore_command, clean_env, serve_env
from support.users import make_user

from chatstore import migrations
from chatstore.config import Settings
from chatstore.store import ChatStore

SECRET = "adversity-secret-" + "x" * 24
DATABASE = "chatstore"
# A request that takes longer than this is a hang, whatever it ends with.
REQUEST_TIMEOUT = 10.0
# How long a client waits after a failure before its next request.
BACKOFF_SECONDS = 0.1
# The promise: the server answers again within this long of PostgreSQL.
RECOVERY_PROMISE_SECONDS = 2.0

REPO = Path(__file__).resolve().parents[2]
RESULTS_FILE = REPO / "bench-results" / "reliability.json"

# Settings every adversity server runs with: short bounded waits, so an
# outage is answered quickly.
SERVER_ENV = {
    "CHATSTORE_CONNECT_TIMEOUT_SECONDS": "2",
    "CHATSTORE_ACQUIRE_TIMEOUT_SECONDS": "2",
    "CHATSTORE_STATEMENT_TIMEOUT_MS": "5000",
    "CHATSTORE_POOL_MAX_SIZE": "10",
}


def now() -> float:
    return time.monotonic()


# -- clusters and servers ----------------------------------------------------


@dataclasses.dataclass
class Database:
    cluster: ThrowawayCluster
    name: str

    @property
    def url(self) -> str:
        return self.cluster.dsn(self.name)

    async def connect(self) -> asyncpg.Connection[asyncpg.Record]:
        return await asyncpg.connect(
            self.url, timeout=5, server_settings={"application_name": "adversity"}
        )

    async def wait_answering(self, within: float = 60.0) -> float:
        """Poll until PostgreSQL accepts a connection and answers a query;
        returns the monotonic time it first did."""
        deadline = now() + within
        while True:
            try:
                connection = await asyncpg.connect(self.url, timeout=1)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                if now() > deadline:
                    raise
                await asyncio.sleep(0.02)
                continue
            try:
                await connection.fetchval("SELECT 1")
                return now()
            finally:
                await connection.close()


class Lab(ShowsLogs):
    """What one test owns: its clusters, its servers, a folder for logs.
    ``close()`` takes it all down, whatever state the test left it in."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="chatstore-adversity-"))
        self.databases: list[Database] = []
        self.servers: list[Server] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    async def database(self, *, migrate: bool = True) -> Database:
        cluster = await asyncio.to_thread(throwaway, False)
        database = Database(cluster, DATABASE)
        self.databases.append(database)
        await asyncio.to_thread(cluster.start)
        await asyncio.to_thread(cluster.create_database, DATABASE)
        if migrate:
            await asyncio.to_thread(migrations.apply, database.url)
        return database

    def server(self, database: Database, **env: str) -> Server:
        server = Server(
            log=self.folder / f"serve-{len(self.servers)}.log",
            env=serve_env(database.url, SECRET, **{**SERVER_ENV, **env}),
        )
        self.servers.append(server)
        return server

    async def serve(self, database: Database, **env: str) -> Server:
        server = self.server(database, **env)
        server.start()
        await server.wait_ready()
        return server

    def spawn(self, *args: str, database: Database) -> subprocess.Popen[bytes]:
        """A ``chatstore`` command in the background (pipes for its output)."""
        process = subprocess.Popen(
            chatstore_command(*args),
            env=clean_env(CHATSTORE_DATABASE_URL=database.url),
            cwd=self.folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.processes.append(process)
        return process

    async def run(
        self, *args: str, database: Database, within: float = 60.0
    ) -> tuple[subprocess.CompletedProcess[str], float]:
        """Run a ``chatstore`` command to its end; returns it and how long it took."""
        started = now()
        done = await asyncio.to_thread(
            subprocess.run,
            chatstore_command(*args),
            env=clean_env(CHATSTORE_DATABASE_URL=database.url),
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=within,
        )
        return done, now() - started

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.communicate()
        for database in self.databases:
            database.cluster.destroy()
        shutil.rmtree(self.folder, ignore_errors=True)

    def logs(self) -> str:
        parts = [server.logs() for server in self.servers]
        for database in self.databases:
            parts.append(
                f"--- postgres log ({database.cluster.data_dir}) ---\n"
                + database.cluster.log_tail(60)
            )
        return "\n".join(parts)


# -- writers and load ---------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Writer:
    """One client: a better-auth user with a session, writing to one conversation."""

    name: str
    user_id: str
    token: str
    conversation_id: str


async def make_writers(
    database: Database, count: int, *, prefix: str = "w", shared: bool = False
) -> list[Writer]:
    """``count`` writers, each its own user and conversation, or (``shared``)
    all one user writing to one conversation."""
    settings = Settings(auth_secret=SECRET, pool_min_size=1, pool_max_size=2)
    writers = []
    async with ChatStore(database.url, settings=settings) as store:
        owner: tuple[str, str, str] | None = None
        for index in range(count):
            if owner is None or not shared:
                user = await make_user(store)
                conversation = await store.create_conversation(
                    user.user_id, title=f"{prefix}{index}"
                )
                owner = (user.user_id, user.token, str(conversation.id))
            writers.append(Writer(f"{prefix}{index}", *owner))
    return writers


Kind = Literal["ok", "unavailable", "transport", "hang", "bad"]


@dataclasses.dataclass
class Intent:
    """What a client wants stored: one message, or a batch of three."""

    writer: str
    conversation_id: str
    contents: tuple[str, ...]
    key: str | None
    acknowledged_seqs: tuple[int, ...] | None = None
    attempts: int = 0

    @property
    def batch(self) -> bool:
        return len(self.contents) > 1

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_seqs is not None


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP request and how it ended."""

    writer: str
    started: float
    ended: float
    kind: Kind
    status: int | None
    detail: str
    replayed: bool = False

    @property
    def latency(self) -> float:
        return self.ended - self.started

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


class Load:
    """Concurrent clients appending unique messages over HTTP.

    Each writer loops: a single message (content ``<writer>-<n>``), and every
    ``batch_every``-th time a batch of three with an Idempotency-Key. A keyed
    request that fails is retried with the same key until acknowledged (or
    until ``stop()``'s drain runs out); an unkeyed one is not retried: the
    next message is a new one. ``key_everything`` puts a key on singles too.
    """

    def __init__(
        self,
        base_url: str,
        writers: Sequence[Writer],
        *,
        batch_every: int = 3,
        key_everything: bool = False,
    ) -> None:
        self.base_url = base_url
        self.writers = list(writers)
        self.batch_every = batch_every
        self.key_everything = key_everything
        self.intents: list[Intent] = []
        self.attempts: list[Attempt] = []
        self.started_at = 0.0
        self.stopped_at = 0.0
        self._stopping = asyncio.Event()
        self._give_up_at = float("inf")
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        # Idle connections expire on the client well before uvicorn closes
        # them (timeout_keep_alive, 5 s; httpx's default expiry is 5 s too):
        # otherwise a request can go out on a connection the server is closing
        # at that instant, and fail with no fault of the server's.
        limits = httpx.Limits(
            max_connections=len(self.writers) + 8,
            max_keepalive_connections=len(self.writers),
            keepalive_expiry=1.0,
        )
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=REQUEST_TIMEOUT, limits=limits
        )
        self.started_at = now()
        self._tasks = [
            asyncio.create_task(self._work(writer), name=f"load-{writer.name}")
            for writer in self.writers
        ]

    async def stop(self, drain_seconds: float = 30.0) -> None:
        """No new messages; keyed retries go on for at most ``drain_seconds``."""
        self._stopping.set()
        self.stopped_at = now()
        self._give_up_at = self.stopped_at + drain_seconds
        try:
            await asyncio.gather(*self._tasks)
        finally:
            assert self._client is not None
            await self._client.aclose()

    async def run_for(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.check_workers()

    def check_workers(self) -> None:
        """A worker that died (a bug in this harness) must not pass silently."""
        for task in self._tasks:
            if task.done() and task.exception() is not None:
                raise AssertionError(f"load worker {task.get_name()} died") from task.exception()

    async def _work(self, writer: Writer) -> None:
        n = 0
        while not self._stopping.is_set():
            n += 1
            tag = f"{writer.name}-{n}"
            batch = self.batch_every > 0 and n % self.batch_every == 0
            contents = tuple(f"{tag}.{i}" for i in range(3)) if batch else (tag,)
            key = f"key-{tag}" if batch or self.key_everything else None
            intent = Intent(writer.name, writer.conversation_id, contents, key)
            self.intents.append(intent)
            while True:
                attempt = await self._send(writer, intent)
                if attempt.ok or intent.key is None or now() > self._give_up_at:
                    break
                await asyncio.sleep(BACKOFF_SECONDS)
            if not attempt.ok:
                await asyncio.sleep(BACKOFF_SECONDS)

    async def _send(self, writer: Writer, intent: Intent) -> Attempt:
        assert self._client is not None
        headers = {"Authorization": f"Bearer {writer.token}"}
        if intent.key is not None:
            headers["Idempotency-Key"] = intent.key
        messages = [{"role": "user", "content": content} for content in intent.contents]
        body: dict[str, Any] = {"messages": messages} if intent.batch else messages[0]
        intent.attempts += 1
        started = now()
        status: int | None = None
        replayed = False
        kind: Kind
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT + 5):  # backstop for httpx's own
                response = await self._client.post(
                    f"/api/conversations/{writer.conversation_id}/messages",
                    json=body,
                    headers=headers,
                )
        except (httpx.TimeoutException, TimeoutError) as error:
            kind, detail = "hang", f"no answer in {REQUEST_TIMEOUT} s ({type(error).__name__})"
        except httpx.TransportError as error:
            kind, detail = "transport", f"{type(error).__name__}: {error}"
        else:
            status = response.status_code
            replayed = response.headers.get("idempotent-replayed") == "true"
            kind, detail = self._judge(intent, response)
        attempt = Attempt(writer.name, started, now(), kind, status, detail, replayed)
        self.attempts.append(attempt)
        return attempt

    @staticmethod
    def _judge(intent: Intent, response: httpx.Response) -> tuple[Kind, str]:
        status = response.status_code
        described = f"{status} {response.text[:300]}"
        if status == 201:
            data = response.json()
            stored = data["data"] if intent.batch else [data]
            contents = tuple(message["content"] for message in stored)
            if contents != intent.contents:
                return "bad", f"201 for {intent.contents} carried {contents}"
            intent.acknowledged_seqs = tuple(int(message["seq"]) for message in stored)
            return "ok", str(status)
        if status == 503:
            try:
                code = response.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = None
            if code == "unavailable" and response.headers.get("retry-after", "").isdigit():
                return "unavailable", described
            return "bad", f"503 without the contract's body or Retry-After: {described}"
        return "bad", described

    # -- figures --------------------------------------------------------------

    def count(self, kind: Kind) -> int:
        return sum(1 for attempt in self.attempts if attempt.kind == kind)

    def failures(self, *, allow: Sequence[Kind] = ("unavailable",)) -> list[Attempt]:
        """Attempts that broke a promise: anything but 2xx and the allowed kinds."""
        return [a for a in self.attempts if not a.ok and a.kind not in allow]

    def first_ok_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the first acknowledged request sent after it."""
        ends = [a.ended for a in self.attempts if a.ok and a.started >= moment]
        return min(ends) - moment if ends else None

    def failed_after(self, moment: float) -> list[Attempt]:
        return [a for a in self.attempts if not a.ok and a.started >= moment]

    def latencies(self, kind: Kind | None = None) -> list[float]:
        return [a.latency for a in self.attempts if kind is None or a.kind == kind]

    def figures(self) -> dict[str, Any]:
        statuses = Counter(str(a.status) if a.status is not None else a.kind for a in self.attempts)
        acknowledged = [i for i in self.intents if i.acknowledged]
        return {
            "clients": len(self.writers),
            "requests": len(self.attempts),
            "acknowledged_requests": self.count("ok"),
            "acknowledged_messages": sum(len(i.contents) for i in acknowledged),
            "unavailable_503": self.count("unavailable"),
            "other_5xx": sum(1 for a in self.attempts if (a.status or 0) >= 500)
            - self.count("unavailable"),
            "transport_errors": self.count("transport"),
            "hangs": self.count("hang"),
            "replayed": sum(1 for a in self.attempts if a.ok and a.replayed),
            "bad": self.count("bad"),
            "statuses": dict(sorted(statuses.items())),
            "max_latency_s": round(max(self.latencies(), default=0.0), 3),
            "max_503_latency_s": round(max(self.latencies("unavailable"), default=0.0), 3),
        }


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"p50_ms": round(1000 * (values[0] if values else 0.0), 1), "p99_ms": 0.0}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50_ms": round(1000 * statistics.median(values), 1),
        "p99_ms": round(1000 * cuts[98], 1),
        "max_ms": round(1000 * max(values), 1),
    }


def describe(attempts: Sequence[Attempt], origin: float, limit: int = 10) -> str:
    lines = [
        f"  {a.writer} t={a.started - origin:.3f}s +{a.latency:.3f}s {a.kind}: {a.detail}"
        for a in attempts[:limit]
    ]
    if len(attempts) > limit:
        lines.append(f"  ... and {len(attempts) - limit} more")
    return "\n".join(lines)


# -- verdict: the database against what was acknowledged ----------------------


@dataclasses.dataclass
class Verdict:
    stored_messages: int
    lost: int
    duplicated: int
    half_batches: int
    unacknowledged_stored: int
    never_acknowledged: int
    problems: list[str]

    def figures(self) -> dict[str, int]:
        return {
            "stored_messages": self.stored_messages,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "half_batches": self.half_batches,
            "unacknowledged_but_stored": self.unacknowledged_stored,
            "never_acknowledged": self.never_acknowledged,
        }

    def assert_sound(self, *, every_intent_acknowledged: bool = False) -> None:
        problems = list(self.problems)
        if every_intent_acknowledged and self.never_acknowledged:
            problems.append(f"{self.never_acknowledged} retried requests never acknowledged")
        assert not problems, "\n".join(problems[:30])


async def verify(database: Database, load: Load) -> Verdict:
    """Compare the database with the load's record, message by message.

    Every acknowledged message must be stored exactly once, at the seq it
    was acknowledged with; no message twice, acknowledged or not; a batch all
    or nothing, at consecutive seqs; every conversation's seqs 1..n with no
    gap (nothing is deleted here) and its counters equal to n.
    """
    conversations = sorted({w.conversation_id for w in load.writers})
    connection = await database.connect()
    try:
        rows = await connection.fetch(
            "SELECT conversation_id::text AS cid, seq, content FROM messages"
            " WHERE conversation_id = ANY($1::uuid[]) ORDER BY conversation_id, seq",
            conversations,
        )
        heads = await connection.fetch(
            "SELECT id::text AS cid, last_seq, tail_seq, message_count FROM conversations"
            " WHERE id = ANY($1::uuid[])",
            conversations,
        )
    finally:
        await connection.close()

    problems: list[str] = []
    where: defaultdict[str, list[tuple[str, int]]] = defaultdict(list)
    seqs: defaultdict[str, list[int]] = defaultdict(list)
    for row in rows:
        where[row["content"]].append((row["cid"], row["seq"]))
        seqs[row["cid"]].append(row["seq"])

    known = {content for intent in load.intents for content in intent.contents}
    strangers = sorted(set(where) - known)
    if strangers:
        problems.append(f"{len(strangers)} stored messages nobody sent: {strangers[:5]}")
    duplicated = [c for c, places in where.items() if len(places) > 1]
    for content in duplicated[:10]:
        problems.append(f"stored more than once: {content!r} at {where[content]}")

    lost = half = unacknowledged_stored = never = 0
    for intent in load.intents:
        present = [where.get(content, []) for content in intent.contents]
        stored = sum(1 for places in present if places)
        if intent.batch and stored not in (0, len(intent.contents)):
            half += 1
            problems.append(f"half-stored batch {intent.contents}: {present}")
        if intent.batch and stored == len(intent.contents):
            at = [places[0][1] for places in present]
            if at != list(range(at[0], at[0] + len(at))):
                problems.append(f"batch {intent.contents} not at consecutive seqs: {at}")
        if intent.acknowledged_seqs is None:
            unacknowledged_stored += stored
            if intent.key is not None:
                never += 1
            continue
        for content, places, seq in zip(
            intent.contents, present, intent.acknowledged_seqs, strict=True
        ):
            if not places:
                lost += 1
                problems.append(f"LOST: {content!r} was acknowledged with seq {seq}")
            elif places[0] != (intent.conversation_id, seq):
                problems.append(f"{content!r} acknowledged at seq {seq}, stored at {places}")

    for head in heads:
        found = seqs.get(head["cid"], [])
        n = len(found)
        if found != list(range(1, n + 1)):
            missing = sorted(set(range(1, max(found, default=0) + 1)) - set(found))
            problems.append(f"conversation {head['cid']}: seq gaps, missing {missing[:10]}")
        counters = (head["last_seq"], head["tail_seq"], head["message_count"])
        if counters != (n, n, n):
            problems.append(
                f"conversation {head['cid']}: last_seq/tail_seq/message_count {counters}, "
                f"{n} messages stored"
            )
    return Verdict(
        stored_messages=len(rows),
        lost=lost,
        duplicated=len(duplicated),
        half_batches=half,
        unacknowledged_stored=unacknowledged_stored,
        never_acknowledged=never,
        problems=problems,
    )


# -- results -----------------------------------------------------------------


def record(fault: str, figures: dict[str, Any]) -> None:
    """Keep this run's figures for RELIABILITY.md (bench-results/ is git-ignored)."""
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    try:
        results = json.loads(RESULTS_FILE.read_text())
    except (OSError, ValueError):
        results = {}
    results[fault] = {**figures, "recorded_at": dt.datetime.now(dt.UTC).isoformat()}
    RESULTS_FILE.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"\n[{fault}] {json.dumps(figures, sort_keys=True)}")
