"""Users: the one way tests make one, a better-auth user with a live session."""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from collections.abc import Awaitable, Callable

from chatstore import sessions
from chatstore.store import ChatStore

JSON_HEADERS = {"content-type": "application/json"}


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    """A better-auth user with a live session."""

    user_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def json_headers(self) -> dict[str, str]:
        return {**self.headers, **JSON_HEADERS}

    def with_key(self, key: str) -> dict[str, str]:
        """Headers of a request made idempotent by ``key``."""
        return {**self.headers, "Idempotency-Key": key}


MakeUser = Callable[[], Awaitable[User]]


async def make_user(store: ChatStore, *, ttl: dt.timedelta | None = None) -> User:
    """A fresh user (unique e-mail) and a session for them (for ``ttl``, else
    better-auth's default lifetime)."""
    email = f"{secrets.token_hex(8)}@example.test"
    if ttl is None:
        user_id, token = await sessions.create_session(store, email)
    else:
        user_id, token = await sessions.create_session(store, email, ttl=ttl)
    return User(user_id=user_id, token=token)


def new_key() -> str:
    """A fresh Idempotency-Key."""
    return f"key-{secrets.token_hex(8)}"
