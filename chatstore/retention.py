"""Retention: conversations idle for CHATSTORE_RETENTION_DAYS are deleted
(sql/retention.sql).

Idle means no activity: updated_at, which every append and every change
(title, metadata, archive) moves. Every server process runs the job
(run_retention, started by the app's lifespan when the setting is on); the
batches are bounded and SKIP LOCKED, so processes never wait on each other
or on a writer, and each row is deleted once. ``chatstore purge`` runs it
once, or (--dry-run) lists what it would delete.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field

from chatstore.database import Source, database_of
from chatstore.errors import Unavailable
from chatstore.metrics import RETENTION_DELETED

BATCH = 500
EVERY_SECONDS = 60.0

log = logging.getLogger("chatstore.retention")


def cutoff(days: int, now: dt.datetime | None = None) -> dt.datetime:
    """Conversations last active before this go."""
    return (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=days)


@dataclass
class Purged:
    """What one run deleted: conversations and messages, per user."""

    conversations: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)
    ids: dict[str, list[uuid.UUID]] = field(default_factory=dict)

    def add(self, user_id: str, conversation_id: uuid.UUID, messages: int) -> None:
        self.conversations[user_id] += 1
        self.messages[user_id] += messages
        self.ids.setdefault(user_id, []).append(conversation_id)

    @property
    def total(self) -> int:
        return sum(self.conversations.values())


async def delete_batch(source: Source, before: dt.datetime, batch: int = BATCH) -> Purged:
    """One bounded batch of the conversations idle since before ``before``."""
    rows = await database_of(source).many("delete_idle_conversations", cutoff=before, batch=batch)
    purged = Purged()
    for row in rows:
        purged.add(row["user_id"], row["id"], row["message_count"])
    RETENTION_DELETED.inc(len(rows))
    return purged


async def purge(source: Source, days: int, batch: int = BATCH) -> Purged:
    """Every conversation idle for ``days``, a batch at a time (each batch
    its own transaction: a long purge holds no lock for long)."""
    before = cutoff(days)
    total = Purged()
    while True:
        done = await delete_batch(source, before, batch)
        for user_id, ids in done.ids.items():
            total.ids.setdefault(user_id, []).extend(ids)
        total.conversations.update(done.conversations)
        total.messages.update(done.messages)
        if done.total < batch:
            return total


async def would_purge(source: Source, days: int) -> Purged:
    """What purge would delete now, deleting nothing (``--dry-run``)."""
    rows = await database_of(source).many("idle_conversations", cutoff=cutoff(days))
    found = Purged()
    for row in rows:
        found.add(row["user_id"], row["id"], row["message_count"])
    return found


def log_run(purged: Purged, days: int) -> None:
    """One line per run that deleted something (none for a run that did not)."""
    if purged.total:
        log.info(
            "retention: deleted %d conversations (%d messages) of %d users idle for %d days",
            purged.total,
            sum(purged.messages.values()),
            len(purged.conversations),
            days,
        )


async def run_retention(source: Source, days: int, every: float = EVERY_SECONDS) -> None:
    """The background job: a purge every ``every`` seconds, until cancelled."""
    while True:
        try:
            log_run(await purge(source, days), days)
        except Unavailable:
            log.warning("retention run skipped: database unavailable")
        await asyncio.sleep(every)
