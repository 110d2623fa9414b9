"""Retention (README, "Retention"): conversations idle for
CHATSTORE_RETENTION_DAYS are deleted by a background job in bounded,
SKIP LOCKED batches; `chatstore purge [--dry-run]` does it once.

The suite's database is shared: the conversations here are made idle by
moving their updated_at 4,000 days back, and the tests ask for 3,650 days,
so nothing another test stored is ever old enough to go."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import subprocess
import uuid

import pytest
from support.app import app_client
from support.serve import chatstore_command, serve_env
from support.users import MakeUser

from chatstore import retention
from chatstore.config import Settings
from chatstore.erasure import erase_user_data
from chatstore.errors import NotFound
from chatstore.metrics import RETENTION_DELETED
from chatstore.store import ChatStore

DAYS = 3650


async def _idle(store: ChatStore, user_id: str, count: int = 1) -> list[uuid.UUID]:
    """Conversations of ``user`` with a message each, last active 4,000 days ago."""
    ids = []
    for _ in range(count):
        created = await store.create_conversation(user_id)
        await store.append_message(user_id, created.id, {"role": "user", "content": "old"})
        ids.append(created.id)
    async with store.pool.acquire() as connection:
        await connection.execute(
            "UPDATE conversations SET updated_at = now() - interval '4000 days'"
            " WHERE id = ANY($1::uuid[])",
            ids,
        )
    return ids


async def _exists(store: ChatStore, user_id: str, conversation: uuid.UUID) -> bool:
    try:
        await store.get_conversation(user_id, conversation)
    except NotFound:
        return False
    return True


async def _sweep(store: ChatStore) -> None:
    """Leftovers of an earlier test go first, so counts here are this test's."""
    await retention.purge(store, DAYS)


async def test_retention_deletes_conversations_idle_longer_than_the_setting(
    store: ChatStore, user_id: str
) -> None:
    await _sweep(store)
    idle = await _idle(store, user_id, 3)
    recent = await store.create_conversation(user_id)
    purged = await retention.purge(store, DAYS)
    assert purged.conversations == {user_id: 3}
    assert purged.messages == {user_id: 3}
    assert sorted(purged.ids[user_id]) == sorted(idle)
    assert not any([await _exists(store, user_id, c) for c in idle])
    assert await _exists(store, user_id, recent.id)


async def test_retention_keeps_a_conversation_active_since(store: ChatStore, user_id: str) -> None:
    await _sweep(store)
    (touched,) = await _idle(store, user_id)
    await store.append_message(user_id, touched, {"role": "user", "content": "still here"})
    (archived,) = await _idle(store, user_id)
    await store.update_conversation(user_id, archived, archived=True)  # a change is activity
    assert (await retention.purge(store, DAYS)).total == 0
    assert await _exists(store, user_id, touched) and await _exists(store, user_id, archived)


async def test_retention_leaves_no_idempotency_key_of_a_deleted_conversation(
    store: ChatStore, user_id: str
) -> None:
    await _sweep(store)
    created = await store.create_conversation(user_id, idempotency_key="ret-create")
    await store.append_message(
        user_id, created.id, {"role": "user", "content": "x"}, idempotency_key="ret-append"
    )
    async with store.pool.acquire() as connection:
        await connection.execute(
            "UPDATE conversations SET updated_at = now() - interval '4000 days' WHERE id = $1",
            created.id,
        )
    assert (await retention.purge(store, DAYS)).total == 1
    async with store.pool.acquire() as connection:
        keys = await connection.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE user_id = $1", user_id
        )
    assert keys == 0  # by ON DELETE CASCADE (migrations/0007)
    # A repeat is new work, not a replay of the deleted conversation.
    again = await store.create_conversation(user_id, idempotency_key="ret-create")
    assert again.id != created.id


async def test_retention_batches_are_bounded_and_skip_locked_rows(
    store: ChatStore, user_id: str
) -> None:
    await _sweep(store)
    idle = await _idle(store, user_id, 5)
    async with store.pool.acquire() as holder, holder.transaction():
        # Another process (or a writer) holds one of them.
        await holder.execute("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", idle[0])
        first = await retention.delete_batch(store, retention.cutoff(DAYS), batch=2)
        assert first.total == 2
        rest = await asyncio.wait_for(retention.purge(store, DAYS, batch=2), 30)
        # Not waited for, not deleted: left for a later run.
        assert idle[0] not in first.ids[user_id] + rest.ids.get(user_id, [])
        assert first.total + rest.total == 4
    assert (await retention.purge(store, DAYS)).ids == {user_id: [idle[0]]}


async def test_retention_runs_concurrently_without_deleting_twice(
    store: ChatStore, user_id: str
) -> None:
    await _sweep(store)
    idle = await _idle(store, user_id, 12)
    runs = await asyncio.gather(*(retention.purge(store, DAYS, batch=3) for _ in range(4)))
    deleted = [c for run in runs for c in run.ids.get(user_id, [])]
    assert sorted(deleted) == sorted(idle)  # each once, all of them


async def test_retention_counts_deleted_conversations_in_its_metric(
    store: ChatStore, user_id: str
) -> None:
    await _sweep(store)
    await _idle(store, user_id, 2)
    before = RETENTION_DELETED._value.get()
    await retention.purge(store, DAYS)
    assert RETENTION_DELETED._value.get() - before == 2


async def test_retention_logs_one_line_per_run_that_deleted_something(
    store: ChatStore, user_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    await _sweep(store)
    await _idle(store, user_id, 2)
    with caplog.at_level(logging.INFO, logger="chatstore.retention"):
        retention.log_run(await retention.purge(store, DAYS), DAYS)
        retention.log_run(await retention.purge(store, DAYS), DAYS)  # nothing left: no line
    lines = [r.getMessage() for r in caplog.records if r.name == "chatstore.retention"]
    assert lines == [
        f"retention: deleted 2 conversations (2 messages) of 1 users idle for {DAYS} days"
    ]


async def test_retention_job_runs_in_the_app_when_set(
    settings: Settings, store: ChatStore, user_id: str
) -> None:
    await _sweep(store)
    (idle,) = await _idle(store, user_id)
    async with app_client(dataclasses.replace(settings, retention_days=DAYS), store):
        for _ in range(100):
            if not await _exists(store, user_id, idle):
                break
            await asyncio.sleep(0.1)
    assert not await _exists(store, user_id, idle)


async def test_retention_is_off_by_default() -> None:
    assert Settings.from_env({}).retention_days is None
    assert Settings.from_env({"CHATSTORE_RETENTION_DAYS": "30"}).retention_days == 30


async def test_purge_dry_run_lists_per_user_and_deletes_nothing(
    database: str, settings: Settings, store: ChatStore, new_user: MakeUser
) -> None:
    await _sweep(store)
    users = [(await new_user()).user_id, (await new_user()).user_id]
    idle = {u: await _idle(store, u, n) for u, n in zip(users, (2, 1), strict=True)}
    env = serve_env(database, settings.auth_secret)
    dry = await asyncio.to_thread(
        subprocess.run,
        chatstore_command("purge", "--days", str(DAYS), "--dry-run"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 0, dry.stderr
    assert (
        f"would delete 3 conversations (3 messages) idle for {DAYS} days, of 2 users" in dry.stdout
    )
    for u, ids in idle.items():
        assert f"user {u}: {len(ids)} conversations, {len(ids)} messages" in dry.stdout
        assert all(str(c) in dry.stdout for c in ids)
        assert all([await _exists(store, u, c) for c in ids])

    done = await asyncio.to_thread(
        subprocess.run,
        chatstore_command("purge", "--days", str(DAYS)),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("deleted 3 conversations"), done.stdout
    for u, ids in idle.items():
        assert not any([await _exists(store, u, c) for c in ids])


async def test_purge_without_days_or_setting_is_refused(database: str, settings: Settings) -> None:
    env = serve_env(database, settings.auth_secret)
    env.pop("CHATSTORE_RETENTION_DAYS", None)
    result = await asyncio.to_thread(
        subprocess.run,
        chatstore_command("purge", "--dry-run"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "CHATSTORE_RETENTION_DAYS" in result.stderr


async def test_erase_command_erases_the_users_data(
    database: str, settings: Settings, store: ChatStore, user_id: str
) -> None:
    created = await store.create_conversation(user_id)
    await store.append_message(user_id, created.id, {"role": "user", "content": "x"})
    result = await asyncio.to_thread(
        subprocess.run,
        chatstore_command("erase", "--user", user_id),
        env=serve_env(database, settings.auth_secret),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        '{"deleted":{"conversations":1,"messages":1,"idempotency_keys":0}}'
    )
    assert not await _exists(store, user_id, created.id)
    assert (await erase_user_data(store, user_id)).deleted.conversations == 0
