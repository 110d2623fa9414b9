"""The adversity suite's machinery: clusters, server processes, load, verdicts.

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
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx

from chatstore import migrations, sessions
from chatstore.config import Settings
from chatstore.embedded import Cluster, free_port, throwaway
from chatstore.store import ChatStore

SECRET = "adversity-secret-" + "x" * 24
DATABASE = "chatstore"
# A request that takes longer than this is a hang, whatever it ends with.
REQUEST_TIMEOUT = 10.0
READY_SECONDS = 60.0
STOP_SECONDS = 20.0
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


# Log lines that mean a bug whatever precedes them.
BUG_MARKERS = (
    "unhandled error",  # chatstore/http/errors.py: a 500
    "Exception in ASGI application",  # uvicorn caught what the app let through
    "exception was never retrieved",  # a task or future failed unobserved
)
# Lines heading a traceback that is a library's warning, not a failure.
BENIGN_TRACEBACK_HEADINGS = ("Failed to restore the pool connection floor",)
# asyncpg, when a connect is cancelled (an acquire timeout) while it awaits
# the server's answer to its SSLRequest, closes the socket and so fails a
# future nobody awaits any more: asyncio logs it as never retrieved. The
# request got its 503; nothing leaks.
BENIGN_UNRETRIEVED = "ConnectionError('unexpected connection_lost() call')"


def chatstore_command(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("chatstore")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "chatstore"]
    return [*command, *args]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would point chatstore elsewhere."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PG", "CHATSTORE_", "BETTER_AUTH_")) and name != "DATABASE_URL"
    }
    return {**env, **extra}


def now() -> float:
    return time.monotonic()


# -- clusters and servers ----------------------------------------------------


@dataclasses.dataclass
class Database:
    cluster: Cluster
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


@dataclasses.dataclass
class Server:
    """A ``chatstore serve --workers 1`` process on a fixed port: uvicorn runs
    in it, so its pid is the process that serves. Restartable on the same port."""

    database: Database
    log: Path
    # Holds the database URL, password included: kept out of repr (and so of reports).
    env: dict[str, str] = dataclasses.field(repr=False)
    port: int = dataclasses.field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"=== adversity: start #{self.starts} ===\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                chatstore_command("serve", "--port", str(self.port), "--workers", "1"),
                env=self.env,
                cwd=self.log.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, within: float = READY_SECONDS) -> float:
        """Poll /readyz until 200; returns the monotonic time it first was."""
        deadline = now() + within
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2) as client:
            while now() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"chatstore serve exited with {self.process.returncode}\n{self.logs()}"
                    )
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return now()
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"/readyz not 200 after {within} s\n{self.logs()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a crash would."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError as error:
            return f"(no log: {error})"

    def problems(self) -> list[str]:
        """What in the log betrays a bug: a 500 (chatstore logs "unhandled
        error"), an exception uvicorn caught, a task that died, any traceback
        but asyncpg's own warning while it refills the pool's minimum size
        (it logs one each time a reconnect fails during an outage)."""
        lines = self.text().splitlines()
        found = []
        for index, line in enumerate(lines):
            if line.startswith("Traceback"):
                heading = lines[index - 1] if index else ""
                if heading.startswith(BENIGN_TRACEBACK_HEADINGS):
                    continue
                last = next(
                    (later for later in lines[index + 1 :] if not later.startswith(" ")), "?"
                )
                found.append(f"{heading} | {last}")
            elif any(marker in line for marker in BUG_MARKERS):
                following = lines[index + 1] if index + 1 < len(lines) else ""
                if "never retrieved" in line and BENIGN_UNRETRIEVED in following:
                    continue
                found.append(f"{line} | {following}")
        return found

    def benign_tracebacks(self) -> int:
        """asyncpg's own warnings (see BENIGN_*), counted for the record."""
        return sum(
            1
            for line in self.text().splitlines()
            if line.startswith(BENIGN_TRACEBACK_HEADINGS) or BENIGN_UNRETRIEVED in line
        )

    def logs(self, limit: int = 40_000) -> str:
        text = self.text()
        if len(text) > limit:
            text = text[: limit // 4] + "\n[... cut ...]\n" + text[-(limit * 3) // 4 :]
        return f"--- chatstore serve on {self.base_url} (log {self.log}) ---\n{text}"


class Lab:
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
            database=database,
            log=self.folder / f"serve-{len(self.servers)}.log",
            env=clean_env(
                CHATSTORE_DATABASE_URL=database.url,
                BETTER_AUTH_SECRET=SECRET,
                **{**SERVER_ENV, **env},
            ),
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
                + database.cluster._log_tail(60)
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
                email = f"{prefix}{index}-{secrets.token_hex(4)}@example.test"
                user_id, token = await sessions.create_session(store, email)
                conversation = await store.create_conversation(user_id, title=f"{prefix}{index}")
                owner = (user_id, token, str(conversation.id))
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
