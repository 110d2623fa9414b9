"""Who is calling: better-auth credentials checked against the database.

One lookup per token per few seconds, not one per request: a valid session
is remembered in-process for ``cache_seconds`` (default 5) and never past its
own expiry, so an authenticated request costs one database round trip (the
operation's own) most of the time. Set CHATSTORE_AUTH_CACHE_SECONDS=0 to
look every request up.

A session is valid while its row exists, so remembering one must not
outlive its revocation. The database says when a session is deleted,
re-keyed or cut short (a trigger NOTIFYs its id, migrations/0008), and the
process's LISTEN connection (chatstore/events.py) hands each id to
:meth:`Authenticator.revoke`, which forgets every token of that session:
the next request looks it up and gets its 401.

That is only as good as the LISTEN connection. A revocation sent while it
is down is lost, so an entry is trusted only while the connection is up
*and* it was remembered during the same connection (its ``epoch``):
entries from before an outage are never used again, and while the
connection is down (or not yet up after start) every request is looked up.
A lookup that overlapped a revocation of any session is not remembered
either: its answer may predate the revocation that has just been handled.
The time limit stays as the last line of defence (a connection that hangs
without being seen to drop).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.requests import Request

from chatstore.auth import SessionUser, token_from_request
from chatstore.events import MessageEvents
from chatstore.http.errors import unauthorized
from chatstore.store import ChatStore


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated request: its session and the token that named it."""

    token: str
    session: SessionUser

    @property
    def user_id(self) -> str:
        return self.session.user_id


@dataclass(frozen=True, slots=True)
class _Entry:
    user: SessionUser
    until: float  # monotonic time until which it may be reused
    epoch: int  # the LISTEN connection it was remembered under


class Authenticator:
    def __init__(
        self,
        store: ChatStore,
        secret: str | None,
        events: MessageEvents,
        *,
        cache_seconds: float = 5.0,
        cache_size: int = 10_000,
    ) -> None:
        self._store = store
        self._secret = secret
        self._events = events
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        # session id -> its cached tokens (one, unless the token was replaced)
        self._tokens: dict[str, set[str]] = {}
        # Revocations heard so far: a lookup during which this moved is not
        # remembered.
        self._revocations = 0
        self.lookups = 0  # database lookups made (a measure of the cache)
        events.on_session_revoked(self.revoke)

    async def user_id(self, request: Request) -> str:
        """The caller's user id; raises a 401 HTTPError otherwise."""
        return (await self.caller(request)).user_id

    async def caller(self, request: Request) -> Caller:
        """The caller's session and token; raises a 401 HTTPError otherwise."""
        token = token_from_request(
            request.headers.get("authorization"), request.cookies, self._secret
        )
        if token is None:
            raise unauthorized()
        user = await self.session(token)
        if user is None:
            raise unauthorized("the session is unknown or expired")
        return Caller(token=token, session=user)

    async def session(self, token: str, *, fresh: bool = False) -> SessionUser | None:
        """The live session behind ``token``, from the cache when it may be
        trusted (and ``fresh`` is not asked for), else from the database;
        None when there is none."""
        user = None if fresh else self._cached(token)
        if user is not None:
            return user
        epoch, revocations = self._events.epoch, self._revocations
        self.lookups += 1
        user = await self._store.session_user(token)
        if user is not None and self._revocations == revocations:
            self._remember(token, user, epoch)
        return user

    def revoke(self, session_id: str) -> None:
        """Forget every token of ``session_id`` (a revocation was heard)."""
        self._revocations += 1
        for token in self._tokens.pop(session_id, ()):
            self._cache.pop(token, None)

    def _cached(self, token: str) -> SessionUser | None:
        entry = self._cache.get(token)
        if entry is None:
            return None
        if (
            entry.epoch != self._events.epoch
            or not self._events.listening
            or time.monotonic() >= entry.until
            or entry.user.expires_at <= dt.datetime.now(dt.UTC)
        ):
            self._forget(token, entry)
            return None
        return entry.user

    def _remember(self, token: str, user: SessionUser, epoch: int) -> None:
        if self._cache_seconds <= 0 or not self._events.listening:
            return
        if epoch != self._events.epoch:
            return  # the connection was lost (or made) during the lookup
        previous = self._cache.pop(token, None)
        if previous is not None:
            self._forget(token, previous)
        self._cache[token] = _Entry(user, time.monotonic() + self._cache_seconds, epoch)
        self._tokens.setdefault(user.session_id, set()).add(token)
        while len(self._cache) > self._cache_size:
            oldest, entry = self._cache.popitem(last=False)
            self._forget(oldest, entry)

    def _forget(self, token: str, entry: _Entry) -> None:
        self._cache.pop(token, None)
        tokens = self._tokens.get(entry.user.session_id)
        if tokens is not None:
            tokens.discard(token)
            if not tokens:
                del self._tokens[entry.user.session_id]
