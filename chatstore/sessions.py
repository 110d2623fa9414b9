"""better-auth sessions in the database: who is calling, and new sessions.

The token parsing and signature checks are chatstore/auth.py (no I/O);
this module is the store side of it (sql/auth.sql).
"""

from __future__ import annotations

import datetime as dt

from chatstore.auth import DEFAULT_SESSION_TTL, SessionUser, new_id, new_token
from chatstore.dberrors import translate_errors
from chatstore.store import ChatStore


async def session_user(store: ChatStore, token: str) -> SessionUser | None:
    """The user behind a live session token, in one round trip."""
    with translate_errors():
        row = await store.queries.one(store.executor, "session_user", token=token)
    if row is None:
        return None
    return SessionUser(
        session_id=row["session_id"], user_id=row["user_id"], expires_at=row["expires_at"]
    )


async def create_session(
    store: ChatStore,
    email: str,
    *,
    name: str | None = None,
    ttl: dt.timedelta = DEFAULT_SESSION_TTL,
) -> tuple[str, str]:
    """Find or create the user with ``email`` and open a session; returns
    (user_id, raw token) — the way to try the API by hand."""
    async with store.transaction() as connection:
        with translate_errors():
            user_id: str = await store.queries.scalar(
                connection,
                "upsert_user_by_email",
                id=new_id(),
                name=name or email.partition("@")[0],
                email=email,
            )
            token: str = await store.queries.scalar(
                connection,
                "create_session",
                id=new_id(),
                token=new_token(),
                user_id=user_id,
                expires_at=dt.datetime.now(dt.UTC) + ttl,
            )
    return user_id, token
