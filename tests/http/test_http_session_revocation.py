"""A session is valid while its row exists, even with the session cache on.

The cache (chatstore/http/auth.py, 5 s by default) forgets a session as
soon as the database says it was deleted, re-keyed or cut short (the
trigger of migrations/0008, heard on the process's LISTEN connection), and
is not trusted while that connection is down. Each test here runs the app
with a long cache time (CACHE_SECONDS) and waits at most REVOKED_WITHIN
(far under it) for the revocation to arrive, polling.

(Across processes, and for event streams: tests/features/test_sessions.py.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest
from support.app import open_app, open_client
from support.users import User, make_user

from chatstore import events, metrics
from chatstore.config import Settings
from chatstore.events import MessageEvents
from chatstore.http.auth import Authenticator
from chatstore.store import ChatStore

PROBE = "/api/conversations"
# The apps here trust a checked session for CACHE_SECONDS: a 401 within
# REVOKED_WITHIN, far less, is the revocation's doing, never the cache's
# expiry (a generous bound for a loaded machine; it takes milliseconds).
CACHE_SECONDS = 300
REVOKED_WITHIN = 20.0
WAIT = 10.0


class Running:
    def __init__(self, client: httpx.AsyncClient, auth: Authenticator, hub: MessageEvents):
        self.client = client
        self.auth = auth
        self.hub = hub

    async def status(self, user: User) -> int:
        return (await self.client.get(PROBE, headers=user.headers)).status_code

    async def cached(self, user: User) -> None:
        """A request that puts ``user``'s session in the cache, checked: the
        next one is answered without a lookup."""
        assert await self.status(user) == 200
        lookups = self.auth.lookups
        assert await self.status(user) == 200
        assert self.auth.lookups == lookups, "the session was not served from the cache"

    async def until_status(self, user: User, status: int, seconds: float) -> float:
        """Poll until a request gets ``status``; how long that took."""
        began = time.monotonic()
        while True:
            got = await self.status(user)
            elapsed = time.monotonic() - began
            if got == status:
                return elapsed
            assert elapsed < seconds, f"still {got} after {elapsed:.2f} s, want {status}"
            await asyncio.sleep(0.02)


async def until(condition: Callable[[], bool], seconds: float = WAIT) -> None:
    async with asyncio.timeout(seconds):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


@asynccontextmanager
async def running(settings: Settings, store: ChatStore) -> AsyncIterator[Running]:
    """An app of its own, with a long cache time, once it listens."""
    settings = dataclasses.replace(settings, auth_cache_seconds=CACHE_SECONDS)
    async with open_app(settings, store) as app, open_client(app) as client:
        ctx = app.state.context
        await until(lambda: ctx.events.listening)
        yield Running(client, ctx.auth, ctx.events)


async def test_a_deleted_session_is_401_at_once_although_the_cache_is_on(
    settings: Settings, store: ChatStore
) -> None:
    user = await make_user(store)
    async with running(settings, store) as app:
        await app.cached(user)
        await store.pool.execute('DELETE FROM "session" WHERE token = $1', user.token)
        await app.until_status(user, 401, REVOKED_WITHIN)


async def test_a_session_whose_expiry_moved_into_the_past_is_401_at_once(
    settings: Settings, store: ChatStore
) -> None:
    user = await make_user(store)
    async with running(settings, store) as app:
        await app.cached(user)
        await store.pool.execute(
            """UPDATE "session" SET "expiresAt" = now() - interval '1 second' WHERE token = $1""",
            user.token,
        )
        await app.until_status(user, 401, REVOKED_WITHIN)


async def test_deleting_a_user_revokes_their_cached_sessions(
    settings: Settings, store: ChatStore
) -> None:
    user = await make_user(store)
    async with running(settings, store) as app:
        await app.cached(user)
        # The foreign key cascades to "session"; its trigger runs for those rows too.
        await store.pool.execute('DELETE FROM "user" WHERE id = $1', user.user_id)
        await app.until_status(user, 401, REVOKED_WITHIN)


async def test_revoking_one_session_leaves_the_other_sessions_cached(
    settings: Settings, store: ChatStore
) -> None:
    signed_out, other = await make_user(store), await make_user(store)
    async with running(settings, store) as app:
        await app.cached(signed_out)
        await app.cached(other)
        await store.pool.execute('DELETE FROM "session" WHERE token = $1', signed_out.token)
        await app.until_status(signed_out, 401, REVOKED_WITHIN)
        # Extending a session is no revocation either (better-auth does it as
        # sessions are used).
        await store.pool.execute(
            """UPDATE "session" SET "expiresAt" = "expiresAt" + interval '1 day'
            WHERE token = $1""",
            other.token,
        )
        await asyncio.sleep(0.2)  # what a notification would take to arrive
        lookups = app.auth.lookups
        assert await app.status(other) == 200
        assert app.auth.lookups == lookups


async def test_the_cache_is_not_trusted_while_the_listen_connection_is_down(
    settings: Settings, store: ChatStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await make_user(store)
    async with running(settings, store) as app:
        await app.cached(user)
        # Down for the rest of the test: no reconnect for a minute.
        monkeypatch.setattr(events, "RECONNECT_SECONDS", 60.0)
        await drop_listen_connection(store, app.hub)
        await until(lambda: not app.hub.listening)
        # A revocation now would go unheard: every request is looked up ...
        lookups = app.auth.lookups
        assert await app.status(user) == 200
        assert await app.status(user) == 200
        assert app.auth.lookups == lookups + 2
        # ... so a sign-out is a 401 on the very next request, without any
        # notification.
        await store.pool.execute('DELETE FROM "session" WHERE token = $1', user.token)
        assert await app.status(user) == 401
        assert not app.hub.listening


async def test_a_revocation_missed_while_the_listen_connection_was_down_is_not_served_after(
    settings: Settings, store: ChatStore
) -> None:
    user = await make_user(store)
    async with running(settings, store) as app:
        await app.cached(user)
        reconnects = metrics.REGISTRY.get_sample_value("chatstore_listen_reconnects_total") or 0
        epoch = app.hub.epoch
        await drop_listen_connection(store, app.hub)
        await until(lambda: not app.hub.listening)
        # Signed out while nobody listens: the notification is lost.
        await store.pool.execute('DELETE FROM "session" WHERE token = $1', user.token)
        await until(lambda: app.hub.listening)
        assert app.hub.epoch > epoch
        # The entry cached before the outage is not trusted any more.
        assert await app.status(user) == 401
        after = metrics.REGISTRY.get_sample_value("chatstore_listen_reconnects_total") or 0
        assert after == reconnects + 1


async def drop_listen_connection(store: ChatStore, hub: MessageEvents) -> None:
    """Kill the hub's LISTEN backend from the server side, as a failover would."""
    pids = await store.pool.fetch(
        """SELECT pid FROM pg_stat_activity
        WHERE datname = current_database() AND query LIKE 'LISTEN%'
            AND pid <> pg_backend_pid()"""
    )
    connection = hub._connection  # the test needs that very connection's pid
    assert connection is not None
    pid = connection.get_server_pid()
    assert pid in {row["pid"] for row in pids}
    assert await store.pool.fetchval("SELECT pg_terminate_backend($1)", pid)


async def test_the_cache_still_spares_a_session_lookup_on_repeat_requests(
    settings: Settings, store: ChatStore
) -> None:
    # What the cache is for: one lookup per session per cache time, not per
    # request, revocations notwithstanding.
    user = await make_user(store)
    async with running(settings, store) as app:
        lookups = app.auth.lookups
        for _ in range(50):
            assert await app.status(user) == 200
        assert app.auth.lookups - lookups <= 2  # 1, or 2 if 5 s passed meanwhile


async def test_revocations_name_the_session_id_never_the_token(store: ChatStore) -> None:
    # Every connection listening on the database sees every payload.
    user = await make_user(store)
    session_id = await store.pool.fetchval('SELECT id FROM "session" WHERE token = $1', user.token)
    heard: asyncio.Queue[str] = asyncio.Queue()
    # LISTEN on a direct connection, as the app does: behind a transaction-mode
    # pooler (CHATSTORE_TEST_PGBOUNCER=1) a pooled one cannot keep a LISTEN.
    connection = await asyncpg.connect(store.settings.direct_database_url or store.dsn)
    try:
        await connection.add_listener("chatstore_sessions", lambda *args: heard.put_nowait(args[3]))
        await store.pool.execute('DELETE FROM "session" WHERE token = $1', user.token)
        async with asyncio.timeout(WAIT):
            payload = await heard.get()
    finally:
        await connection.close()
    assert payload == session_id
    assert user.token not in payload
