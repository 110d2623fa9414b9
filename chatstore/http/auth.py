"""Who is calling: better-auth credentials checked against the database.

One lookup per token per few seconds, not one per request: a valid session
is remembered in-process for ``cache_seconds`` (default 5) and never past its
own expiry, so an authenticated request costs one database round trip (the
operation's own) most of the time. The price: a session deleted in the
database (logout) keeps working on a process for at most ``cache_seconds``.
Set CHATSTORE_AUTH_CACHE_SECONDS=0 to look every request up.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import OrderedDict

from starlette.requests import Request

from chatstore.auth import SessionUser, token_from_request
from chatstore.http.errors import unauthorized
from chatstore.sessions import session_user
from chatstore.store import ChatStore


class Authenticator:
    def __init__(
        self,
        store: ChatStore,
        secret: str | None,
        *,
        cache_seconds: float = 5.0,
        cache_size: int = 10_000,
    ) -> None:
        self._store = store
        self._secret = secret
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        # token -> (user, monotonic time until which it may be reused)
        self._cache: OrderedDict[str, tuple[SessionUser, float]] = OrderedDict()

    async def user_id(self, request: Request) -> str:
        """The caller's user id; raises a 401 HTTPError otherwise."""
        token = token_from_request(
            request.headers.get("authorization"), request.cookies, self._secret
        )
        if token is None:
            raise unauthorized()
        user = self._cached(token)
        if user is None:
            user = await session_user(self._store, token)
            if user is None:
                raise unauthorized("the session is unknown or expired")
            self._remember(token, user)
        return user.user_id

    def _cached(self, token: str) -> SessionUser | None:
        entry = self._cache.get(token)
        if entry is None:
            return None
        user, until = entry
        if time.monotonic() >= until or user.expires_at <= dt.datetime.now(dt.UTC):
            del self._cache[token]
            return None
        return user

    def _remember(self, token: str, user: SessionUser) -> None:
        if self._cache_seconds <= 0:
            return
        self._cache[token] = (user, time.monotonic() + self._cache_seconds)
        self._cache.move_to_end(token)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
