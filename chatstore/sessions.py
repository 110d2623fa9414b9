"""better-auth sessions in the database: who is calling, and new sessions.

The token parsing and signature checks are chatstore/auth.py (no I/O);
this module is the store side of it (sql/auth.sql).
"""

from __future__ import annotations

import datetime as dt

from chatstore.auth import DEFAULT_SESSION_TTL, SessionUser, new_id, new_token
from chatstore.database import Source, database_of


async def session_user(source: Source, token: str) -> SessionUser | None:
    """The user behind a live session token, in one round trip."""
    row = await database_of(source).one("session_user", token=token)
    if row is None:
        return None
    return SessionUser(
        session_id=row["session_id"], user_id=row["user_id"], expires_at=row["expires_at"]
    )


async def create_session(
    source: Source,
    email: str,
    *,
    name: str | None = None,
    ttl: dt.timedelta = DEFAULT_SESSION_TTL,
) -> tuple[str, str]:
    """Find or create the user with ``email`` and open a session; returns
    (user_id, raw token) — the way to try the API by hand."""
    db = database_of(source)
    async with db.transaction():
        user_id: str = await db.scalar(
            "upsert_user_by_email",
            id=new_id(),
            name=name or email.partition("@")[0],
            email=email,
        )
        token: str = await db.scalar(
            "create_session",
            id=new_id(),
            token=new_token(),
            user_id=user_id,
            expires_at=dt.datetime.now(dt.UTC) + ttl,
        )
    return user_id, token
