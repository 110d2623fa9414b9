"""Whether this process can serve: the database answers and every
migration is applied (GET /readyz)."""

from __future__ import annotations

import asyncpg

from chatstore.database import Database
from chatstore.errors import Unavailable
from chatstore.migrations import known_ids


async def unready_reason(db: Database) -> str | None:
    """None when ready, else why not, in words for the operator."""
    try:
        rows = await db.many("applied_migrations")
    except Unavailable:
        return "the database does not answer"
    except asyncpg.UndefinedTableError:
        return "no migration has been applied"
    missing = sorted(set(known_ids()) - {row["migration_id"] for row in rows})
    if missing:
        return f"migrations not applied: {', '.join(missing)}"
    return None
