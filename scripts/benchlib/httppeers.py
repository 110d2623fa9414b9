"""The HTTP API against its peer: ``chatstore serve`` and the FastAPI + SQLModel
app (scripts/benchpeers/fastapi_sqlmodel_app.py), each with one uvicorn
worker, each on its own database with the same data, the same requests.

The peer's database gets the peer's own schema (made from its SQLModel
models) and the same shapes of data as chatstore's bench database: the
users and bearer sessions, 64 empty conversations to append to, one
conversation of 10k messages, a user with 10k conversations. Per workload:
both servers warm up, then run alternately (peer, chatstore, chatstore,
peer, ...) under wrk with 2 threads x 16 connections (or the asyncio
client when wrk is absent); any non-2xx fails the run.

Long because: the peer's seeding (its own schema, COPY of the same data shapes), both
servers' lifecycles and the alternating load belong to one comparison.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from chatstore.auth import new_id, new_token
from chatstore.embedded import free_port

from .database import with_database
from .diskprobe import DiskProbe, Watch, flush_report
from .peerstores import text_of
from .plan import Plan
from .seed import Fixture
from .server import Server
from .wrk import LoadResult, Request, run_loadgen, run_wrk

REPO = Path(__file__).resolve().parents[2]
APP = "scripts.benchpeers.fastapi_sqlmodel_app:app"
DATABASE = "chatstore_peer_http"
HTTP_RATIO = 5.0  # the target: chatstore >= 5x the peer
HTTP_P99_MS = 50.0


@dataclass
class PeerData:
    """The ids and tokens of the requests, for one server."""

    append_token: str
    append_conversations: list[uuid.UUID]
    reader_token: str
    page_conversation: uuid.UUID
    list_token: str


@dataclass
class PeerServer:
    """uvicorn serving the peer app, one worker."""

    url: str  # postgresql+asyncpg:// URL of its database
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        env = {**os.environ, "PEER_DATABASE_URL": self.url}
        args = [sys.executable, "-m", "uvicorn", APP, "--port", str(self.port)]
        args += ["--workers", "1", "--log-level", "warning", "--no-access-log"]
        # uvloop and the HTTP parser chatstore serve runs on
        # (CHATSTORE_SERVE_HTTP, httptools unless set), as uvicorn[standard]
        # does: the comparison is of the apps, not of their parsers.
        http = os.environ.get("CHATSTORE_SERVE_HTTP") or "httptools"
        args += ["--loop", "uvloop", "--http", http]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not _answers(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"the peer app exited; see {self.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the peer app did not get ready; see {self.log_path}")
            time.sleep(0.1)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


def _answers(port: int) -> bool:
    import http.client

    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/docs")
        ok = connection.getresponse().status == 200
        connection.close()
    except OSError:
        return False
    return ok


async def seed_peer(server_url: str, plan: Plan) -> tuple[str, PeerData]:
    """The peer's database: its schema from its models, then the data by COPY."""
    from scripts.benchpeers.fastapi_sqlmodel_app import create_schema

    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    dsn = with_database(server_url, DATABASE)
    rest = dsn.split("://", 1)[1]
    await asyncio.to_thread(create_schema, "postgresql+psycopg://" + rest)

    users = ["peer-append", "peer-reader", "peer-list"]
    tokens = {u: new_token() for u in users}
    now = dt.datetime.now(dt.UTC)
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    append_ids = [uuid.uuid4() for _ in range(plan.append_conversations)]
    page_id = uuid.uuid4()
    size = plan.mid_conversation
    conversations: list[tuple[Any, ...]] = [
        (cid, "peer-append", f"Append {k}", "{}", 0, 0, base, base)
        for k, cid in enumerate(append_ids)
    ]
    conversations.append((page_id, "peer-reader", "Big", "{}", size, size, base, base))
    conversations += [
        (uuid.uuid4(), "peer-list", f"List {k}", "{}", 0, 0, base, base - dt.timedelta(seconds=k))
        for k in range(list_size(plan))
    ]
    rng = random.Random(7)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("SET synchronous_commit = off")
        await connection.copy_records_to_table(
            "user",
            columns=["id", "name", "email", "emailVerified", "createdAt", "updatedAt"],
            records=[(u, u, f"{u}@bench.example", True, now, now) for u in users],
        )
        await connection.copy_records_to_table(
            "session",
            columns=["id", "token", "userId", "expiresAt", "createdAt", "updatedAt"],
            records=[(new_id(), tokens[u], u, now + dt.timedelta(days=7), now, now) for u in users],
        )
        await connection.copy_records_to_table(
            "conversations",
            columns=[
                "id",
                "user_id",
                "title",
                "metadata",
                "message_count",
                "last_seq",
                "created_at",
                "updated_at",
            ],
            records=conversations,
        )
        await connection.copy_records_to_table(
            "messages",
            columns=[
                "conversation_id",
                "seq",
                "user_id",
                "role",
                "content",
                "metadata",
                "created_at",
            ],
            records=(
                (
                    page_id,
                    seq,
                    "peer-reader",
                    "user" if seq % 2 else "assistant",
                    text_of(0, rng.randrange(10**6)),
                    "{}",
                    base + dt.timedelta(milliseconds=seq),
                )
                for seq in range(1, size + 1)
            ),
        )
        await connection.execute('VACUUM (ANALYZE) messages, conversations, "user", "session"')
    finally:
        await connection.close()
    data = PeerData(
        append_token=tokens["peer-append"],
        append_conversations=append_ids,
        reader_token=tokens["peer-reader"],
        page_conversation=page_id,
        list_token=tokens["peer-list"],
    )
    return "postgresql+asyncpg://" + rest, data


def list_size(plan: Plan) -> int:
    """The user whose first 20 conversations are read has 10k of them (1k in --quick)."""
    return 1_000 if plan.quick else 10_000


def chatstore_data(fixture: Fixture, plan: Plan) -> PeerData:
    list_user = fixture.list_users[list_size(plan)]
    return PeerData(
        append_token=fixture.tokens[fixture.append_user],
        append_conversations=fixture.append_conversations,
        reader_token=fixture.tokens[fixture.reader_user],
        page_conversation=fixture.conversations.get(plan.mid_conversation, fixture.big),
        list_token=fixture.tokens[list_user],
    )


def requests(data: PeerData) -> dict[str, tuple[str, list[Request]]]:
    def auth(token: str, body: bool = False) -> dict[str, str]:
        found = {"Authorization": f"Bearer {token}"}
        if body:
            found["Content-Type"] = "application/json"
        return found

    body = json.dumps({"role": "user", "content": text_of(1, 1)})
    return {
        "append": (
            "POST one message",
            [
                Request(
                    "POST",
                    f"/api/conversations/{cid}/messages",
                    auth(data.append_token, True),
                    body,
                )
                for cid in data.append_conversations
            ],
        ),
        "newest50": (
            "GET newest 50 messages of a 10k conversation",
            [
                Request(
                    "GET",
                    f"/api/conversations/{data.page_conversation}/messages?limit=50&order=desc",
                    auth(data.reader_token),
                )
            ],
        ),
        "list20": (
            "GET 20 conversations",
            [Request("GET", "/api/conversations?limit=20", auth(data.list_token))],
        ),
    }


def _load(client: str, port: int, reqs: list[Request], plan: Plan, seconds: int) -> LoadResult:
    if client == "wrk":
        return run_wrk(
            port,
            reqs,
            connections=plan.http_connections,
            seconds=seconds,
            threads=plan.http_peer_threads,
        )
    return run_loadgen(port, reqs, connections=plan.http_connections, seconds=seconds)


def _combine(loads: list[LoadResult]) -> dict[str, Any]:
    requests_ = sum(x.requests for x in loads)
    seconds = sum(x.seconds for x in loads)
    return {
        "requests": requests_,
        "seconds": round(seconds, 3),
        "throughput": round(requests_ / seconds if seconds else 0.0, 1),
        # The worst of the runs' p99 (and p50's mean): never flattering.
        "p50_ms": round(sum(x.p50_ms for x in loads) / len(loads), 3),
        "p99_ms": round(max(x.p99_ms for x in loads), 3),
        "non2xx": sum(x.non2xx for x in loads),
        "socket_errors": sum(x.socket_errors for x in loads),
    }


async def run(
    peer_url: str,
    peer_data: PeerData,
    dsn: str,
    fixture: Fixture,
    plan: Plan,
    logs: Path,
    client: str,
    probe: DiskProbe | None = None,
) -> dict[str, Any]:
    peer = PeerServer(peer_url, logs / "peer-fastapi.log")
    chatstore = Server(dsn, 1, logs / "serve-peers.log")
    sides = {"fastapi_sqlmodel": peer_data, "chatstore": chatstore_data(fixture, plan)}
    doc: dict[str, Any] = {
        "client": client,
        "threads": plan.http_peer_threads if client == "wrk" else 1,
        "connections": plan.http_connections,
        "warmup_seconds": 0 if plan.quick else plan.http_warmup,
        "runs": 1 if plan.quick else 2,
        "seconds": plan.http_peer_duration,
        "results": [],
        "failures": [],
    }
    try:
        await asyncio.gather(asyncio.to_thread(peer.start), asyncio.to_thread(chatstore.start))
        ports = {"fastapi_sqlmodel": peer.port, "chatstore": chatstore.port}
        plans = {name: requests(data) for name, data in sides.items()}
        for workload in plans["chatstore"]:
            title = plans["chatstore"][workload][0]
            loads: dict[str, list[LoadResult]] = {name: [] for name in sides}
            watches: dict[str, list[Watch]] = {name: [] for name in sides}
            # --quick: no warm-up and one run each (a smoke run, not numbers).
            for name in [] if plan.quick else sides:
                warm = await asyncio.to_thread(
                    _load, client, ports[name], plans[name][workload][1], plan, plan.http_warmup
                )
                if warm.non2xx or warm.socket_errors:
                    doc["failures"].append(f"HTTP peers {workload} warm-up on {name}: {warm}")
            order = list(sides)
            for round_ in range(1 if plan.quick else 2):
                for name in order if round_ % 2 == 0 else order[::-1]:
                    async with Watch(dsn) as watch:
                        loads[name].append(
                            await asyncio.to_thread(
                                _load,
                                client,
                                ports[name],
                                plans[name][workload][1],
                                plan,
                                plan.http_peer_duration,
                            )
                        )
                    watches[name].append(watch)
            found = {name: _combine(loads[name]) for name in sides}
            for name, result in found.items():
                result.update(flush_report(probe, watches[name]))
                if result["non2xx"] or result["socket_errors"]:
                    doc["failures"].append(
                        f"HTTP peers {workload} on {name}: {result['non2xx']} non-2xx, "
                        f"{result['socket_errors']} socket errors"
                    )
            peer_rate = found["fastapi_sqlmodel"]["throughput"]
            ratio = found["chatstore"]["throughput"] / peer_rate if peer_rate else 0.0
            doc["results"].append(
                {"workload": workload, "title": title, "results": found, "ratio": round(ratio, 3)}
            )
            print(
                f"  http {workload}: chatstore {found['chatstore']['throughput']:,.0f} req/s "
                f"(p99 {found['chatstore']['p99_ms']:.1f} ms), FastAPI+SQLModel "
                f"{peer_rate:,.0f} req/s (p99 {found['fastapi_sqlmodel']['p99_ms']:.1f} ms), "
                f"x{ratio:.2f}",
                flush=True,
            )
    finally:
        await asyncio.gather(asyncio.to_thread(chatstore.stop), asyncio.to_thread(peer.stop))
    return doc
