"""Read replicas (chatstore/replicas.py) on a real hot standby made here:
``pg_basebackup -R`` from a primary of this module's own, streaming over
loopback, its own postmaster on a free port (one standby for the module).

The rules: reads go to a caught-up replica; a client never misses its own
write (the Chatstore-LSN header, the store's consistency scope); a replica
whose replay is paused serves no read it cannot show and is reported
lagging; a killed replica is skipped (metric, one log line, never a 5xx)
and serves again once back. Live updates LISTEN on the primary, untouched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

import asyncpg
import httpx
import pytest
from support.app import app_client
from support.cluster import ThrowawayCluster, throwaway
from support.databases import create_database, database_url
from support.requests import user_message
from support.users import User, make_user

from chatstore import metrics, migrations
from chatstore.config import Settings
from chatstore.errors import NotFound, ValidationError
from chatstore.replicas import Replica, consistent, format_lsn, parse_lsn
from chatstore.store import ChatStore

TIMEOUT = 20.0  # a bound on waiting for the standby, never an assertion


@pytest.fixture(scope="module")
def primary() -> Iterator[ThrowawayCluster]:
    cluster = throwaway()
    cluster.start()
    try:
        cluster.allow_replication()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
async def primary_url(primary: ThrowawayCluster) -> str:
    url = await create_database(primary.dsn(), "chatstore_replicas")
    await asyncio.to_thread(migrations.apply, url)
    return url


@pytest.fixture(scope="module")
def standby(primary: ThrowawayCluster, primary_url: str) -> Iterator[ThrowawayCluster]:
    cluster = primary.standby()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()  # pg_ctl stop by the postmaster's pid file, then the files


@pytest.fixture(scope="module")
def replica_url(standby: ThrowawayCluster, primary_url: str) -> str:
    return database_url(standby.dsn(), primary_url.rsplit("/", 1)[1])


@pytest.fixture(scope="module")
async def replicated(
    settings: Settings, primary_url: str, replica_url: str
) -> AsyncIterator[ChatStore]:
    chosen = dataclasses.replace(settings, replica_urls=(replica_url,), replica_max_lag_seconds=1.0)
    async with ChatStore(primary_url, settings=chosen) as opened:
        yield opened


@pytest.fixture
async def patient(
    settings: Settings, primary_url: str, replica_url: str
) -> AsyncIterator[ChatStore]:
    """Another process's store, whose replica is never too far behind
    (60 s allowed): a paused standby keeps serving it, stale."""
    chosen = dataclasses.replace(
        settings, replica_urls=(replica_url,), replica_max_lag_seconds=60.0
    )
    async with ChatStore(primary_url, settings=chosen) as opened:
        yield opened


@contextmanager
def paused(standby: ThrowawayCluster) -> Iterator[None]:
    standby.psql("SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        standby.psql("SELECT pg_wal_replay_resume()")


@pytest.fixture(scope="module")
async def client(settings: Settings, replicated: ChatStore) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(replicated.settings, replicated) as opened:
        yield opened


@pytest.fixture
async def person(replicated: ChatStore) -> User:
    return await make_user(replicated)


def replica_of(store: ChatStore) -> Replica:
    assert store.db.replicas is not None
    (replica,) = store.db.replicas.replicas
    return replica


def reads(server: str) -> float:
    value = metrics.REGISTRY.get_sample_value("chatstore_reads_total", {"server": server})
    return value or 0.0


def serving_gauge() -> float | None:
    return metrics.REGISTRY.get_sample_value("chatstore_replica_serving", {"replica": "0"})


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while True:
            if condition():
                return
            await asyncio.sleep(0.05)


async def replayed_past(standby: ThrowawayCluster, replica_url: str, lsn: str) -> None:
    """Wait until the standby has replayed ``lsn``."""
    connection = await asyncpg.connect(replica_url)
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                text = await connection.fetchval("SELECT pg_last_wal_replay_lsn()::text")
                if parse_lsn(text) >= parse_lsn(lsn):
                    return
                await asyncio.sleep(0.02)
    finally:
        await connection.close()


def test_replica_settings_are_a_comma_list_of_postgres_urls_and_a_positive_lag() -> None:
    chosen = Settings.from_env(
        {
            "CHATSTORE_REPLICA_URLS": " postgresql://a/db , ,postgres://b:6432/db",
            "CHATSTORE_REPLICA_MAX_LAG_SECONDS": "2.5",
        }
    )
    assert chosen.replica_urls == ("postgresql://a/db", "postgres://b:6432/db")
    assert chosen.replica_max_lag_seconds == 2.5
    assert Settings.from_env({}).replica_urls == ()
    with pytest.raises(ValueError, match="CHATSTORE_REPLICA_URLS"):
        Settings.from_env({"CHATSTORE_REPLICA_URLS": "replica1:5432"})
    for bad in ("0", "-1", "soon", "nan"):
        with pytest.raises(ValueError, match="CHATSTORE_REPLICA_MAX_LAG_SECONDS"):
            Settings.from_env({"CHATSTORE_REPLICA_MAX_LAG_SECONDS": bad})


def test_an_lsn_reads_as_postgresql_prints_it_and_orders_like_it() -> None:
    assert parse_lsn("0/0") == 0
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert parse_lsn("1/0") > parse_lsn("0/FFFFFFFF")
    for bad in ("", "16", "16/", "/1", "1/2/3", "G/0", "123456789/0", "0x1/0"):
        with pytest.raises(ValueError):
            parse_lsn(bad)
    with pytest.raises(ValidationError), consistent("yesterday"):
        pass


async def test_reads_go_to_the_replica_when_it_is_caught_up(
    replicated: ChatStore, person: User, standby: ThrowawayCluster, replica_url: str
) -> None:
    await until(lambda: replica_of(replicated).serving)
    with replicated.consistent():
        made = await replicated.create_conversation(person.user_id, title="on the standby")
        written = replicated.last_write_lsn
    assert written is not None
    await replayed_past(standby, replica_url, written)
    before = reads("replica"), reads("primary")
    with replicated.consistent(written):
        page = await replicated.list_conversations(person.user_id)
    assert [c.id for c in page.data] == [made.id]
    assert (reads("replica"), reads("primary")) == (before[0] + 1, before[1])
    # And the standby itself ran it: its pool's sessions are there, as chatstore.
    connection = await asyncpg.connect(replica_url)
    try:
        names = await connection.fetch(
            "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
    finally:
        await connection.close()
    assert "chatstore" in {row["application_name"] for row in names}


async def test_reads_inside_a_transaction_run_on_its_connection_on_the_primary(
    replicated: ChatStore, person: User
) -> None:
    await until(lambda: replica_of(replicated).serving)
    before = reads("replica")
    async with replicated.transaction():
        made = await replicated.create_conversation(person.user_id, title="uncommitted")
        # Only the transaction's own connection can see its uncommitted row.
        page = await replicated.list_conversations(person.user_id)
        assert [c.id for c in page.data] == [made.id]
        assert (await replicated.get_conversation(person.user_id, made.id)).id == made.id
    assert reads("replica") == before


async def test_a_write_returns_its_commit_lsn_in_the_header_and_a_read_presenting_it_sees_it(
    client: httpx.AsyncClient, person: User
) -> None:
    created = await client.post("/api/conversations", json={}, headers=person.headers)
    assert created.status_code == 201
    path = f"/api/conversations/{created.json()['id']}/messages"
    appended = await client.post(
        path, json={"messages": [user_message("mine")]}, headers=person.headers
    )
    assert appended.status_code == 201
    lsn = appended.headers["Chatstore-LSN"]
    assert parse_lsn(lsn) >= parse_lsn(created.headers["Chatstore-LSN"])
    listed = await client.get(path, headers={**person.headers, "Chatstore-LSN": lsn})
    assert listed.status_code == 200
    assert [m["content"] for m in listed.json()["data"]] == ["mine"]
    assert "Chatstore-LSN" not in listed.headers  # a read wrote nothing


async def test_an_export_streams_from_the_replica_once_it_has_the_writes(
    client: httpx.AsyncClient,
    replicated: ChatStore,
    person: User,
    standby: ThrowawayCluster,
    replica_url: str,
) -> None:
    await until(lambda: replica_of(replicated).serving)
    created = await client.post("/api/conversations", json={}, headers=person.headers)
    path = f"/api/conversations/{created.json()['id']}"
    appended = await client.post(
        f"{path}/messages",
        json={"messages": [user_message("one"), user_message("two")]},
        headers=person.headers,
    )
    lsn = appended.headers["Chatstore-LSN"]
    await replayed_past(standby, replica_url, lsn)
    before = reads("replica"), reads("primary")
    exported = await client.get(
        f"{path}/export",
        params={"format": "jsonl"},
        headers={**person.headers, "Chatstore-LSN": lsn},
    )
    assert exported.status_code == 200, exported.text
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert [line["content"] for line in lines] == ["one", "two"]
    # Two reads, the ownership check and the export's snapshot, both there.
    assert (reads("replica"), reads("primary")) == (before[0] + 2, before[1])


async def test_a_malformed_lsn_header_is_a_400(client: httpx.AsyncClient, person: User) -> None:
    for bad in ("yesterday", "1/2/3", "G/0", "123456789/0", ""):
        response = await client.get(
            "/api/conversations", headers={**person.headers, "Chatstore-LSN": bad}
        )
        assert response.status_code == 400, bad
        assert response.json()["error"]["code"] == "bad_request"


async def test_a_malformed_lsn_header_on_v1_is_a_400_in_openais_shape(
    client: httpx.AsyncClient, person: User
) -> None:
    response = await client.get(
        "/v1/conversations/conv_00000000000000000000000000000000",
        headers={**person.headers, "Chatstore-LSN": "yesterday"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "bad_request",
        None,
    )


async def test_read_your_writes_under_concurrent_load(
    replicated: ChatStore, client: httpx.AsyncClient, person: User
) -> None:
    """Many write-then-read pairs at once, each its own client (its own
    task, its own request): none misses its write, whichever server reads."""
    await until(lambda: replica_of(replicated).serving)
    conversation = await replicated.create_conversation(person.user_id)
    path = f"/api/conversations/{conversation.id}/messages"
    before = reads("replica"), reads("primary")

    async def python_client(n: int) -> bool:
        stored = await replicated.append_message(
            person.user_id, conversation.id, {"role": "user", "content": f"py{n}"}
        )
        got = await replicated.get_message(person.user_id, conversation.id, stored.seq)
        page = await replicated.list_messages(
            person.user_id, conversation.id, after=stored.seq - 1, limit=1
        )
        return got.content == f"py{n}" and [m.seq for m in page.data] == [stored.seq]

    async def http_client(n: int) -> bool:
        appended = await client.post(
            path, json={"messages": [user_message(f"http{n}")]}, headers=person.headers
        )
        assert appended.status_code == 201, appended.text
        seq = appended.json()["data"][0]["seq"]
        fetched = await client.get(
            f"{path}/{seq}",
            headers={**person.headers, "Chatstore-LSN": appended.headers["Chatstore-LSN"]},
        )
        assert fetched.status_code == 200, fetched.text
        return bool(fetched.json()["content"] == f"http{n}")

    for _ in range(3):
        outcomes = await asyncio.gather(
            *(python_client(n) for n in range(20)), *(http_client(n) for n in range(20))
        )
        assert all(outcomes)
    served = reads("replica") - before[0], reads("primary") - before[1]
    assert sum(served) >= 180  # every read was routed (3 rounds of 20 * 2 + 20)
    print(
        f"reads after their own write: {served[0]:g} by the replica, {served[1]:g} by the primary"
    )


def gathered() -> tuple[float, float]:
    """Append statements so far, and the appends they carried."""
    count = metrics.REGISTRY.get_sample_value("chatstore_appends_per_statement_count")
    total = metrics.REGISTRY.get_sample_value("chatstore_appends_per_statement_sum")
    return count or 0.0, total or 0.0


async def test_read_your_writes_after_gathered_appends(replicated: ChatStore, person: User) -> None:
    """Appends to 20 conversations at once, so that most wait and go
    together in one statement (chatstore/appends.py), run outside their
    callers' tasks: each caller still reads its own write."""
    await until(lambda: replica_of(replicated).serving)
    conversations = [(await replicated.create_conversation(person.user_id)).id for _ in range(20)]
    statements, appends = gathered()

    async def python_client(n: int, conversation: uuid.UUID) -> bool:
        stored = await replicated.append_message(
            person.user_id, conversation, {"role": "user", "content": f"gathered {n}"}
        )
        got = await replicated.get_message(person.user_id, conversation, stored.seq)
        return got.content == f"gathered {n}"

    for _ in range(3):
        outcomes = await asyncio.gather(*(python_client(n, c) for n, c in enumerate(conversations)))
        assert all(outcomes)
    after = gathered()
    assert after[1] - appends == 60
    assert after[0] - statements < 60  # some statements carried several appends


async def test_a_paused_replica_sends_newer_reads_to_the_primary_and_is_reported_lagging(
    replicated: ChatStore,
    person: User,
    standby: ThrowawayCluster,
    replica_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="chatstore.replicas")
    await until(lambda: replica_of(replicated).serving)
    standby.psql("SELECT pg_wal_replay_pause()")
    try:
        with replicated.consistent():
            made = await replicated.create_conversation(person.user_id, title="after the pause")
            before = reads("replica"), reads("primary")
            fetched = await replicated.get_conversation(person.user_id, made.id)
        assert fetched.title == "after the pause"
        assert (reads("replica"), reads("primary")) == (before[0], before[1] + 1)
        # The primary moved on and the standby does not follow: lagging, skipped.
        await until(lambda: replica_of(replicated).state == "lagging")
        assert serving_gauge() == 0
        with replicated.consistent():  # even a read that needs no write of its own
            primary_reads = reads("primary")
            await replicated.list_conversations(person.user_id)
            assert reads("primary") == primary_reads + 1
    finally:
        standby.psql("SELECT pg_wal_replay_resume()")
    await until(lambda: replica_of(replicated).serving)
    assert serving_gauge() == 1
    told = [r.getMessage() for r in caplog.records if r.name == "chatstore.replicas"]
    assert len([line for line in told if "is lagging" in line]) == 1, told
    assert len([line for line in told if "serves reads again" in line]) == 1, told


async def test_a_write_read_elsewhere_with_its_lsn_is_seen_though_the_replica_is_behind(
    replicated: ChatStore, patient: ChatStore, person: User, standby: ThrowawayCluster
) -> None:
    """The LSN is what carries a write to another process: without it the
    other process reads the paused (stale, not yet too late) replica."""
    await until(lambda: replica_of(patient).serving)
    with paused(standby):
        with replicated.consistent():
            made = await replicated.create_conversation(person.user_id, title="carried")
            lsn = replicated.last_write_lsn
        with patient.consistent(), pytest.raises(NotFound):  # not replayed there yet
            await patient.get_conversation(person.user_id, made.id)
        with patient.consistent(lsn):
            assert (await patient.get_conversation(person.user_id, made.id)).title == "carried"
        assert replica_of(patient).serving  # behind, but not past its 60 s


async def test_live_updates_listen_and_read_on_the_primary_while_the_replica_is_behind(
    replicated: ChatStore, patient: ChatStore, person: User, standby: ThrowawayCluster
) -> None:
    """A follower woken by a notification reads the notified rows from the
    primary: the paused replica has not got them."""
    await until(lambda: replica_of(patient).serving)
    conversation = await replicated.create_conversation(person.user_id)
    hub = patient.message_events()
    try:
        await hub.start()
        # after=0: whether it reads it as a replay or on the notification,
        # the follower reads it from the table, while the replica lacks it.
        follower = patient.follow(hub, person.user_id, conversation.id, after=0, idle_seconds=5)
        with paused(standby):
            first = asyncio.ensure_future(anext(follower))
            await replicated.append_message(
                person.user_id, conversation.id, {"role": "user", "content": "live"}
            )
            async with asyncio.timeout(TIMEOUT):
                item = await first
                while item is None:  # a heartbeat
                    item = await anext(follower)
            assert item.content == "live"
            assert replica_of(patient).serving  # the replica was there to take it, stale
        await follower.aclose()  # type: ignore[attr-defined]
    finally:
        await hub.stop()


@pytest.mark.adversity
async def test_a_killed_replica_is_skipped_without_a_5xx_and_serves_again_once_back(
    replicated: ChatStore,
    client: httpx.AsyncClient,
    person: User,
    standby: ThrowawayCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="chatstore.replicas")
    await until(lambda: replica_of(replicated).serving)
    created = await client.post("/api/conversations", json={}, headers=person.headers)
    path = f"/api/conversations/{created.json()['id']}"
    # Connections of the replica's pool, warm and idle, die with it.
    for _ in range(4):
        assert (await client.get(path, headers=person.headers)).status_code == 200
    standby.kill()
    try:
        statuses = [(await client.get(path, headers=person.headers)).status_code for _ in range(30)]
        assert set(statuses) == {200}
        await until(lambda: replica_of(replicated).state == "down")
        assert serving_gauge() == 0
        statuses = [
            (await client.get("/api/conversations", headers=person.headers)).status_code
            for _ in range(10)
        ]
        assert set(statuses) == {200}
    finally:
        standby.start()
    await until(lambda: replica_of(replicated).serving)
    before = reads("replica")
    assert (await client.get(path, headers=person.headers)).status_code == 200
    assert reads("replica") == before + 1
    told = [r.getMessage() for r in caplog.records if r.name == "chatstore.replicas"]
    assert len([line for line in told if "is down" in line]) == 1, told
    assert len([line for line in told if "serves reads again" in line]) == 1, told
