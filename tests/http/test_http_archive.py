"""Archive (http-api.md, "Archive"): PATCH {"archived": true|false}; the
listing leaves archived conversations out unless ?archived=true (then it
lists only them); search includes them unless ?archived=exclude|only says
otherwise."""

from __future__ import annotations

from typing import Any

import httpx
from support.contract import assert_conversation, assert_validation_error
from support.requests import append, create_conversation, user_message
from support.users import User

from chatstore.store import ChatStore


async def _archive(
    client: httpx.AsyncClient, user: User, conversation_id: str, archived: bool = True
) -> dict[str, Any]:
    response = await client.patch(
        f"/api/conversations/{conversation_id}", json={"archived": archived}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    return assert_conversation(response.json())


async def _listed(client: httpx.AsyncClient, user: User, **params: Any) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/api/conversations", params=query, headers=user.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        ids += [c["id"] for c in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids


async def test_a_new_conversation_is_not_archived(client: httpx.AsyncClient, user: User) -> None:
    created = await create_conversation(client, user)
    assert created["archived"] is False


async def test_patch_archived_sets_and_clears_it(client: httpx.AsyncClient, user: User) -> None:
    created = await create_conversation(client, user, {"title": "kept"})
    archived = await _archive(client, user, created["id"])
    assert archived["archived"] is True
    assert archived["title"] == "kept"  # nothing else changed
    fetched = await client.get(f"/api/conversations/{created['id']}", headers=user.headers)
    assert fetched.json()["archived"] is True
    assert (await _archive(client, user, created["id"], False))["archived"] is False


async def test_patch_archived_null_or_not_a_boolean_is_422(
    client: httpx.AsyncClient, user: User
) -> None:
    created = await create_conversation(client, user)
    for value in (None, "true", 1):
        response = await client.patch(
            f"/api/conversations/{created['id']}", json={"archived": value}, headers=user.headers
        )
        assert_validation_error(response, "archived")


async def test_listing_leaves_archived_out_and_archived_true_lists_only_them(
    client: httpx.AsyncClient, user: User
) -> None:
    ids = [(await create_conversation(client, user))["id"] for _ in range(7)]
    archived = {ids[1], ids[3], ids[4]}
    for conversation_id in archived:
        await _archive(client, user, conversation_id)
    # Paged two at a time: the keyset cursor stays within its listing.
    assert set(await _listed(client, user, limit=2)) == set(ids) - archived
    assert set(await _listed(client, user, limit=2, archived="true")) == archived
    assert set(await _listed(client, user, limit=2, archived="false")) == set(ids) - archived


async def test_listing_archived_must_be_true_or_false(
    client: httpx.AsyncClient, user: User
) -> None:
    response = await client.get("/api/conversations?archived=yes", headers=user.headers)
    assert_validation_error(response, "query", "archived")


async def test_appending_to_an_archived_conversation_keeps_it_archived(
    client: httpx.AsyncClient, user: User
) -> None:
    created = await create_conversation(client, user)
    await _archive(client, user, created["id"])
    await append(client, user, created["id"], user_message())
    fetched = await client.get(f"/api/conversations/{created['id']}", headers=user.headers)
    assert fetched.json()["archived"] is True


async def test_search_includes_archived_by_default_and_can_exclude_or_only(
    client: httpx.AsyncClient, user: User
) -> None:
    kept = await create_conversation(client, user)
    put_away = await create_conversation(client, user)
    await append(client, user, kept["id"], user_message("zebrafinch in the garden"))
    await append(client, user, put_away["id"], user_message("zebrafinch in the attic"))
    await _archive(client, user, put_away["id"])

    async def found(**params: str) -> set[str]:
        response = await client.get(
            "/api/search", params={"q": "zebrafinch", **params}, headers=user.headers
        )
        assert response.status_code == 200, response.text
        return {hit["conversation_id"] for hit in response.json()["data"]}

    assert await found() == {kept["id"], put_away["id"]}
    assert await found(archived="include") == {kept["id"], put_away["id"]}
    assert await found(archived="exclude") == {kept["id"]}
    assert await found(archived="only") == {put_away["id"]}
    response = await client.get(
        "/api/search", params={"q": "zebrafinch", "archived": "all"}, headers=user.headers
    )
    assert_validation_error(response, "query", "archived")


async def test_archive_of_another_users_conversation_is_404(
    client: httpx.AsyncClient, user: User, other_user: User
) -> None:
    created = await create_conversation(client, user)
    response = await client.patch(
        f"/api/conversations/{created['id']}", json={"archived": True}, headers=other_user.headers
    )
    assert response.status_code == 404, response.text
    fetched = await client.get(f"/api/conversations/{created['id']}", headers=user.headers)
    assert fetched.json()["archived"] is False


async def test_python_update_conversation_archived_and_list_archived(
    store: ChatStore, user_id: str
) -> None:
    created = await store.create_conversation(user_id)
    archived = await store.update_conversation(user_id, created.id, archived=True)
    assert archived.archived is True
    assert created.id not in [c.id for c in (await store.list_conversations(user_id)).data]
    assert [c.id for c in (await store.list_conversations(user_id, archived=True)).data] == [
        created.id
    ]
    restored = await store.update_conversation(user_id, created.id, archived=False)
    assert restored.archived is False
