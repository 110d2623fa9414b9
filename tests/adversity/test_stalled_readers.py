"""Stalled readers: exports on sockets that never read cannot take the service down.

The outside review's reproduction (issue 9, item 1): twelve
``GET /api/conversations/{id}/export?format=jsonl`` of a conversation of
3,000 messages of 5 KB, each on a socket with a small receive buffer that
connects, sends its request and never reads. Before the fix every export
held a pooled connection ``idle in transaction`` for as long as its client
did not read, so another user's requests waited for the pool and got 503,
and /readyz turned 503 too.

The rules: a stream that cannot send within the send timeout ends, and its
connection and transaction with it; streams draw from their own budget (the
stream pool), so the other users' requests stay 200 throughout; a stream
that finds the budget spent is a clean 503 with Retry-After, never a 200
cut short that looks whole.
"""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from adversity.harness import DATABASE, Database, Lab, Writer, make_writers, now, record
from chatstore import export
from chatstore.errors import Unavailable
from chatstore.store import ChatStore

pytestmark = pytest.mark.adversity

STALLED = 12
MESSAGES = 3_000
MESSAGE_CHARS = 5_000
# Shorter than the default (30 s) to keep the test short; longer than the
# acquire timeout of the adversity servers (2 s), so that the exports left
# waiting for the stream pool get their 503 before the first ones let go.
SEND_TIMEOUT_S = 3
STREAM_POOL_SIZE = 4
# How long after the send timeout every stream must have let go of its
# connection: generous, for a loaded 2-core machine.
RELEASE_MARGIN_S = 10.0
# A bystander request slower than this counts as stuck, 200 or not: a
# generous bound for a loaded machine (they take well under 0.2 s). One
# starved of a connection is a 503 after the acquire timeout (2 s).
BYSTANDER_BOUND_S = 5.0
SMALL_RCVBUF = 4096


async def seed_big_conversation(database: Database, writer: Writer) -> None:
    """MESSAGES messages of MESSAGE_CHARS characters in the writer's
    conversation, in one set-based statement, counters kept in step."""
    connection = await database.connect()
    try:
        async with connection.transaction():
            await connection.execute(
                """
                INSERT INTO messages (conversation_id, seq, user_id, role, content, metadata,
                                      search_vector)
                SELECT $1::uuid, g, $2, CASE WHEN g % 2 = 1 THEN 'user' ELSE 'assistant' END,
                       format('%s %s', g, repeat('x', $4::int)), '{}'::jsonb,
                       to_tsvector('simple', g::text)
                FROM generate_series(1, $3::bigint) AS g
                """,
                writer.conversation_id,
                writer.user_id,
                MESSAGES,
                MESSAGE_CHARS,
            )
            await connection.execute(
                "UPDATE conversations SET last_seq = $2::integer, message_count = $2::integer"
                " WHERE id = $1::uuid",
                writer.conversation_id,
                MESSAGES,
            )
    finally:
        await connection.close()


def stalled_export(port: int, writer: Writer) -> socket.socket:
    """A socket that asks for the jsonl export and then never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Before connect, so that the window the server sees is small from the start.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        (
            f"GET /api/conversations/{writer.conversation_id}/export?format=jsonl HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {writer.token}\r\n"
            "\r\n"
        ).encode()
    )
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sent, up to its close (the client reads at last)."""
    chunks = []
    try:
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    finally:
        sock.close()
    return b"".join(chunks)


def judge(response: bytes) -> str:
    """'503' or '429' for a clean refusal, 'cut' for a 200 visibly cut short,
    else what it was."""
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0]
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:])
    }
    if status.startswith("HTTP/1.1 503"):
        if headers.get("retry-after", "").isdigit() and b'"unavailable"' in body:
            return "503"
        return f"503 without Retry-After or the contract's body: {response[:300]!r}"
    if status.startswith("HTTP/1.1 429"):
        if headers.get("retry-after", "").isdigit() and b'"too_many_streams"' in body:
            return "429"
        return f"429 without Retry-After or the contract's body: {response[:300]!r}"
    if status.startswith("HTTP/1.1 200"):
        # Chunked: a whole body ends with the zero-length chunk.
        if headers.get("transfer-encoding") == "chunked" and not body.endswith(b"0\r\n\r\n"):
            return "cut"
        return f"a 200 that looks whole ({len(body)} bytes of body)"
    return f"unexpected: {response[:300]!r}"


async def backends(database: Database, state: str) -> set[int]:
    """The pids of the server's backends in this state (LIKE pattern) right now."""
    connection = await database.connect()
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = $1 AND application_name = 'chatstore' AND state LIKE $2",
            DATABASE,
            state,
        )
        return {row["pid"] for row in rows}
    finally:
        await connection.close()


class Bystander:
    """Another user listing their conversations, and a load balancer
    probing /readyz, again and again until stopped."""

    def __init__(self, base_url: str, writer: Writer) -> None:
        self.base_url = base_url
        self.writer = writer
        self.answers: list[tuple[str, int | str, float]] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.writer.token}"}
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as client:
            while not self._stop.is_set():
                for path in ("/api/conversations", "/readyz"):
                    started = now()
                    try:
                        status: int | str = (await client.get(path, headers=headers)).status_code
                    except httpx.TransportError as error:
                        status = type(error).__name__
                    self.answers.append((path, status, now() - started))
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()

    def failures(self) -> list[tuple[str, int | str, float]]:
        return [
            answer for answer in self.answers if answer[1] != 200 or answer[2] > BYSTANDER_BOUND_S
        ]


async def test_a_client_that_stops_reading_cannot_hold_a_connection_or_starve_other_users(
    lab: Lab,
) -> None:
    database = await lab.database()
    server = await lab.serve(
        database,
        CHATSTORE_STREAM_SEND_TIMEOUT_SECONDS=str(SEND_TIMEOUT_S),
        CHATSTORE_STREAM_POOL_SIZE=str(STREAM_POOL_SIZE),
        # The per-user cap off (as high as the attack): this test is about the
        # stream pool's budget; test_one_user_cannot_take_the_whole_export_pool
        # is about the cap.
        CHATSTORE_MAX_EXPORTS_PER_USER=str(STALLED),
    )
    attacker, victim = await make_writers(database, 2)
    await seed_big_conversation(database, attacker)

    bystander = Bystander(server.base_url, victim)
    watching = asyncio.create_task(bystander.run())
    sockets: list[socket.socket] = []
    peak_in_transaction = 0
    stalled_backends: set[int] = set()
    released_after: float | None = None
    try:
        started = now()
        for _ in range(STALLED):
            sockets.append(await asyncio.to_thread(stalled_export, server.port, attacker))
        # Until every stream has let go: no backend of the app idle in a
        # transaction. Before the fix this never came.
        deadline = started + SEND_TIMEOUT_S + RELEASE_MARGIN_S
        seen_streaming = False
        while now() < deadline:
            in_transaction = await backends(database, "idle in transaction%")
            stalled_backends |= in_transaction
            peak_in_transaction = max(peak_in_transaction, len(in_transaction))
            seen_streaming = seen_streaming or bool(in_transaction)
            if seen_streaming and not in_transaction and now() - started > SEND_TIMEOUT_S:
                released_after = now() - started
                break
            await asyncio.sleep(0.1)
        # The bystander keeps going a little after the release.
        await asyncio.sleep(1.0)
    finally:
        bystander.stop()
        await watching

    # The app let go of them (rolled back, returned them to the stream pool),
    # not PostgreSQL's backstop (idle_in_transaction_session_timeout, which
    # would have ended those sessions).
    still_idle = await backends(database, "idle")
    # The stream budget is free again: as many exports as it holds, read by
    # clients that do read, all complete. Before the stalled sockets are
    # read: reading them would let a stream stuck in its write go on.
    headers = {"Authorization": f"Bearer {victim.token}"}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        again = await asyncio.gather(
            *(
                client.get(
                    f"/api/conversations/{victim.conversation_id}/export",
                    params={"format": "jsonl"},
                    headers=headers,
                )
                for _ in range(STREAM_POOL_SIZE)
            )
        )

    outcomes = await asyncio.gather(*(asyncio.to_thread(read_to_end, s) for s in sockets))
    verdicts = [judge(outcome) for outcome in outcomes]

    slowest = max((answer[2] for answer in bystander.answers), default=0.0)
    figures = {
        "what": f"{STALLED} jsonl exports of {MESSAGES} messages of {MESSAGE_CHARS} characters"
        f" on sockets that never read; send timeout {SEND_TIMEOUT_S} s,"
        f" stream pool {STREAM_POOL_SIZE}, main pool 10",
        "bystander_requests": len(bystander.answers),
        "bystander_failures": len(bystander.failures()),
        "bystander_slowest_s": round(slowest, 3),
        "peak_backends_idle_in_transaction": peak_in_transaction,
        "all_released_after_s": None if released_after is None else round(released_after, 3),
        "released_backends_kept_idle": len(stalled_backends & still_idle),
        "stalled_outcomes": {v: verdicts.count(v) for v in sorted(set(verdicts))},
    }
    record("stalled-readers", figures)
    print(figures)

    assert seen_streaming, f"no export ever started streaming: {figures}\n{server.logs()}"
    assert not bystander.failures(), (bystander.failures()[:10], figures)
    assert released_after is not None, (
        f"backends still idle in transaction {SEND_TIMEOUT_S + RELEASE_MARGIN_S} s"
        f" after the stalled exports began: {figures}"
    )
    assert peak_in_transaction <= STREAM_POOL_SIZE, figures
    assert stalled_backends <= still_idle, (stalled_backends, still_idle, figures)
    assert set(verdicts) <= {"503", "cut"}, verdicts
    assert verdicts.count("503") >= 1 and verdicts.count("cut") >= 1, verdicts
    assert [response.status_code for response in again] == [200] * STREAM_POOL_SIZE, [
        response.text[:200] for response in again
    ]
    assert server.problems() == [], server.logs()


async def test_an_export_left_idle_in_its_transaction_is_ended_by_postgresql(
    store: ChatStore, user_id: str
) -> None:
    # The backstop, should the send timeout ever not fire: an export whose
    # consumer stops between two pages loses its session after idle_seconds.
    conversation = await store.create_conversation(user_id)
    await store.append_messages(
        user_id, conversation.id, [{"role": "user", "content": "x" * 1000}] * 3
    )
    async with store.stream_connection() as connection:
        pid = connection.get_server_pid()
        pages = export.pages(
            store, user_id, conversation.id, connection=connection, idle_seconds=0.5, page_bytes=1
        )
        assert len(await anext(pages)) == 1
        await asyncio.sleep(2.0)
        with pytest.raises(Unavailable):
            await anext(pages)
        await pages.aclose()
    async with store.stream_connection() as connection:
        assert connection.get_server_pid() != pid


async def test_one_user_cannot_take_the_whole_export_pool(lab: Lab) -> None:
    """With the default per-user cap (2) below the stream pool (4), one user's
    stalled exports past the cap are 429 too_many_streams at once, and
    another user's exports still get stream connections meanwhile."""
    database = await lab.database()
    server = await lab.serve(
        database,
        CHATSTORE_STREAM_SEND_TIMEOUT_SECONDS=str(SEND_TIMEOUT_S),
        CHATSTORE_STREAM_POOL_SIZE=str(STREAM_POOL_SIZE),
    )
    attacker, victim = await make_writers(database, 2)
    await seed_big_conversation(database, attacker)
    sockets = [await asyncio.to_thread(stalled_export, server.port, attacker) for _ in range(6)]
    try:
        # While the attacker's two streams are stalled: the victim's two exports
        # (read by a client that reads) complete.
        headers = {"Authorization": f"Bearer {victim.token}"}
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            mine = await asyncio.gather(
                *(
                    client.get(
                        f"/api/conversations/{victim.conversation_id}/export",
                        params={"format": "jsonl"},
                        headers=headers,
                    )
                    for _ in range(2)
                )
            )
    finally:
        outcomes = await asyncio.gather(*(asyncio.to_thread(read_to_end, s) for s in sockets))
    verdicts = sorted(judge(outcome) for outcome in outcomes)
    assert [response.status_code for response in mine] == [200, 200], [
        response.text[:200] for response in mine
    ]
    # Two admitted (a 200: cut short by the send timeout, or whole when read
    # before it), the other four refused at once.
    refused, admitted = verdicts[:4], verdicts[4:]
    assert refused == ["429"] * 4, verdicts
    assert all(v == "cut" or v.startswith("a 200 that looks whole") for v in admitted), verdicts
    assert server.problems() == [], server.logs()
