"""Erasure (http-api.md, "Erase my data"): DELETE /api/me/data deletes
everything the caller stored but the user row and the sign-in (session,
account), leaves no copy anywhere, and says what it deleted."""

from __future__ import annotations

import secrets

import httpx
import pytest
from support.requests import append, create_conversation, tool_call
from support.users import MakeUser, User

from chatstore.erasure import erase_user_data
from chatstore.errors import NotFound
from chatstore.store import ChatStore

# The tables with a column naming a user, and what erasure does with each.
# A new one fails test_erasure_accounts_for_every_table_keyed_by_a_user
# until erasure (sql/erasure.sql) and this list say what becomes of it.
ERASED = {"conversations", "messages", "message_tool_calls", "idempotency_keys"}
KEPT = {"session", "account"}  # the sign-in itself: the caller stays signed in


async def _store_everything(client: httpx.AsyncClient, user: User, word: str) -> None:
    """One of each thing a user can store, every one holding ``word``."""
    keyed = {**user.headers, "Idempotency-Key": f"k-{secrets.token_hex(6)}"}
    created = await client.post(
        "/api/conversations",
        json={"title": f"about {word}", "metadata": {"k": word}},
        headers=keyed,
    )
    assert created.status_code == 201, created.text
    conversation = created.json()["id"]
    await append(
        client,
        user,
        conversation,
        {"role": "user", "content": f"tell me of {word}"},
        {"role": "assistant", "tool_calls": [tool_call(f"call_{word}", arguments=word)]},
        {"role": "tool", "tool_call_id": f"call_{word}", "content": word},
    )
    appended = await client.post(
        f"/api/conversations/{conversation}/messages",
        json={"role": "assistant", "content": f"{word} indeed", "metadata": {"w": word}},
        headers={**user.headers, "Idempotency-Key": f"m-{secrets.token_hex(6)}"},
    )
    assert appended.status_code == 201, appended.text
    started = await client.post(
        "/api/chat/start",
        json={"title": word},
        headers={**user.headers, "Idempotency-Key": f"s-{secrets.token_hex(6)}"},
    )
    assert started.status_code == 201, started.text
    said = await client.post(
        f"/api/chat/{started.json()['session_id']}/message",
        json={"content": f"{word}?"},
        headers={**user.headers, "Idempotency-Key": f"c-{secrets.token_hex(6)}"},
    )
    assert said.status_code == 201, said.text
    imported = await client.post(
        "/api/conversations/import",
        json={"title": word, "messages": [{"role": "user", "content": word}]},
        headers={**user.headers, "Idempotency-Key": f"i-{secrets.token_hex(6)}"},
    )
    assert imported.status_code == 201, imported.text


async def _copies(store: ChatStore, word: str) -> dict[str, int]:
    """Rows of every table of the schema whose text holds ``word``."""
    found: dict[str, int] = {}
    async with store.pool.acquire() as connection:
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        for row in tables:
            table = row["tablename"]
            count = await connection.fetchval(
                f'SELECT count(*) FROM "{table}" AS t WHERE t::text LIKE $1', f"%{word}%"
            )
            if count:
                found[table] = count
    return found


async def test_erasure_leaves_no_copy_of_the_callers_data_in_any_table(
    client: httpx.AsyncClient, user: User, other_user: User, store: ChatStore
) -> None:
    mine, theirs = f"alicesecret{secrets.token_hex(4)}", f"bobsecret{secrets.token_hex(4)}"
    await _store_everything(client, user, mine)
    await _store_everything(client, other_user, theirs)
    before = await _copies(store, mine)
    assert {"conversations", "messages", "idempotency_keys"} <= set(before), before
    bob_before = await _copies(store, theirs)

    response = await client.delete("/api/me/data", headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "deleted": {"conversations": 3, "messages": 7, "idempotency_keys": 5}
    }
    assert await _copies(store, mine) == {}
    assert await _copies(store, theirs) == bob_before


async def test_erasure_is_idempotent(client: httpx.AsyncClient, user: User) -> None:
    await create_conversation(client, user)
    first = await client.delete("/api/me/data", headers=user.headers)
    assert first.json()["deleted"]["conversations"] == 1
    again = await client.delete("/api/me/data", headers=user.headers)
    assert again.status_code == 200, again.text
    assert again.json() == {"deleted": {"conversations": 0, "messages": 0, "idempotency_keys": 0}}


async def test_erasure_keeps_the_caller_signed_in(client: httpx.AsyncClient, user: User) -> None:
    await create_conversation(client, user)
    assert (await client.delete("/api/me/data", headers=user.headers)).status_code == 200
    listed = await client.get("/api/conversations", headers=user.headers)
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"data": [], "next_cursor": None}
    assert (await client.post("/api/conversations", headers=user.headers)).status_code == 201


async def test_erasure_needs_a_signed_in_caller(client: httpx.AsyncClient) -> None:
    assert (await client.delete("/api/me/data")).status_code == 401


async def test_erasure_accounts_for_every_table_keyed_by_a_user(store: ChatStore) -> None:
    async with store.pool.acquire() as connection:
        rows = await connection.fetch(
            """
            SELECT DISTINCT c.table_name
            FROM information_schema.columns AS c
            JOIN information_schema.tables AS t USING (table_schema, table_name)
            WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
                AND c.column_name IN ('user_id', 'userId')
            """
        )
    assert {row["table_name"] for row in rows} == ERASED | KEPT


async def test_deleting_the_user_still_cascades_everything(
    client: httpx.AsyncClient, new_user: MakeUser, store: ChatStore
) -> None:
    carol = await new_user()
    word = f"carolsecret{secrets.token_hex(4)}"
    await _store_everything(client, carol, word)
    async with store.pool.acquire() as connection:
        await connection.execute('DELETE FROM "user" WHERE id = $1', carol.user_id)
    assert await _copies(store, word) == {}


async def test_python_erase_user_data_counts_what_it_deleted(
    store: ChatStore, user_id: str
) -> None:
    created = await store.create_conversation(user_id, idempotency_key="py-erase")
    await store.append_messages(user_id, created.id, [{"role": "user", "content": "x"}] * 3)
    erased = await erase_user_data(store, user_id)
    assert erased.model_dump() == {
        "deleted": {"conversations": 1, "messages": 3, "idempotency_keys": 1}
    }
    with pytest.raises(NotFound):
        await store.get_conversation(user_id, created.id)
