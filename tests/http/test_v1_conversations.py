"""OpenAI's Conversations API at /v1 (docs/http-api.md), driven by the official
``openai`` client (AsyncOpenAI with base_url .../v1 and a session token as
api_key) over the real app, and by raw requests where the wire is the point."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import httpx
import httpx2
import openai
import pytest
from openai import AsyncOpenAI
from starlette.applications import Starlette
from support.app import BASE_URL
from support.users import User, new_key

from chatstore.http.endpoints import ENDPOINTS
from chatstore.store import ChatStore

OpenAIFor = Callable[[User | None], AsyncOpenAI]


@pytest.fixture
async def openai_for(app: Starlette) -> AsyncIterator[OpenAIFor]:
    """An official client of the app's /v1 for a user (None: a wrong key).
    No retries: an error is seen as the server sent it."""
    # openai 3 speaks httpx2 (httpx's successor), with the same ASGI transport.
    transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport) as http:

        def make(user: User | None) -> AsyncOpenAI:
            return AsyncOpenAI(
                base_url=f"{BASE_URL}/v1",
                api_key="not-a-session" if user is None else user.token,
                http_client=http,
                max_retries=0,
            )

        yield make


@pytest.fixture
def oai(openai_for: OpenAIFor, user: User) -> AsyncOpenAI:
    return openai_for(user)


def openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error body, exactly its four fields; returns the inner object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    expected_type = "server_error" if status >= 500 else "invalid_request_error"
    assert error["type"] == expected_type, error
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


def first_text(item: Any) -> str:
    """The text of a message item's first content part."""
    return str(item.content[0].text)


def uuid_of(conversation_id: str) -> uuid.UUID:
    assert conversation_id.startswith("conv_") and len(conversation_id) == 37, conversation_id
    return uuid.UUID(hex=conversation_id.removeprefix("conv_"))


# -- conversations --------------------------------------------------------------------


async def test_create_retrieve_update_delete_with_the_official_client(oai: AsyncOpenAI) -> None:
    created = await oai.conversations.create(metadata={"topic": "trip"})
    assert created.object == "conversation"
    assert created.metadata == {"topic": "trip"}
    uuid_of(created.id)

    fetched = await oai.conversations.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump()

    updated = await oai.conversations.update(created.id, metadata={"topic": "work", "n": "2"})
    assert (updated.id, updated.metadata) == (created.id, {"topic": "work", "n": "2"})
    assert (await oai.conversations.retrieve(created.id)).metadata == updated.metadata

    deleted = await oai.conversations.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (
        created.id,
        "conversation.deleted",
        True,
    )
    with pytest.raises(openai.NotFoundError):
        await oai.conversations.retrieve(created.id)


async def test_created_at_is_unix_seconds(oai: AsyncOpenAI, client: httpx.AsyncClient) -> None:
    created = await oai.conversations.create()
    assert isinstance(created.created_at, int)
    now = dt.datetime.now(dt.UTC).timestamp()
    assert abs(created.created_at - now) < 24 * 3600  # seconds, not milliseconds


async def test_the_same_conversation_through_api_and_v1(
    oai: AsyncOpenAI, client: httpx.AsyncClient, user: User
) -> None:
    made_here = await oai.conversations.create(metadata={"via": "v1"})
    there = await client.get(f"/api/conversations/{uuid_of(made_here.id)}", headers=user.headers)
    assert there.status_code == 200, there.text
    assert there.json()["metadata"] == {"via": "v1"}
    assert there.json()["created_at"].startswith(
        dt.datetime.fromtimestamp(made_here.created_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    )

    made_there = await client.post(
        "/api/conversations", json={"metadata": {"via": "api"}}, headers=user.headers
    )
    api_id = made_there.json()["id"]
    by_v1_id = await oai.conversations.retrieve(f"conv_{uuid.UUID(api_id).hex}")
    by_uuid = await oai.conversations.retrieve(api_id)  # a /v1 path takes either form
    assert by_v1_id.id == by_uuid.id == f"conv_{uuid.UUID(api_id).hex}"
    assert by_uuid.metadata == {"via": "api"}


async def test_update_with_null_metadata_clears_it(oai: AsyncOpenAI) -> None:
    created = await oai.conversations.create(metadata={"a": "1"})
    cleared = await oai.conversations.update(created.id, metadata=None)
    assert cleared.metadata == {}


# -- auth and ownership ---------------------------------------------------------------


async def test_no_valid_session_is_401(openai_for: OpenAIFor) -> None:
    with pytest.raises(openai.AuthenticationError) as raised:
        await openai_for(None).conversations.create()
    assert raised.value.status_code == 401
    assert raised.value.code == "invalid_api_key"


V1_ENDPOINTS = [
    (op.method.upper(), op.path.format(conversation_id="conv_" + "0" * 32, item_id="msg_1"))
    for op in ENDPOINTS
    if op.openai
]


@pytest.mark.parametrize(("method", "path"), V1_ENDPOINTS)
async def test_every_v1_endpoint_without_a_session_is_401(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, json={"items": [], "metadata": {}})
    openai_error(response, 401, "invalid_api_key")


async def test_an_expired_session_is_401(
    client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    await store.pool.execute(
        """UPDATE "session" SET "expiresAt" = now() - interval '1 minute' WHERE token = $1""",
        user.token,
    )
    response = await client.get(f"/v1/conversations/conv_{'0' * 32}", headers=user.headers)
    openai_error(response, 401, "invalid_api_key")


async def test_missing_bearer_is_401_in_openai_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/conversations", json={})
    openai_error(response, 401, "invalid_api_key")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_another_users_conversation_is_404(
    openai_for: OpenAIFor, user: User, other_user: User
) -> None:
    mine = await openai_for(user).conversations.create(metadata={"secret": "yes"})
    theirs = openai_for(other_user)
    with pytest.raises(openai.NotFoundError):
        await theirs.conversations.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        await theirs.conversations.update(mine.id, metadata={"secret": "no"})
    with pytest.raises(openai.NotFoundError):
        await theirs.conversations.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        await theirs.conversations.items.create(mine.id, items=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        await theirs.conversations.items.list(mine.id)
    unchanged = await openai_for(user).conversations.retrieve(mine.id)
    assert unchanged.metadata == {"secret": "yes"}


@pytest.mark.parametrize(
    "bad_id",
    ["conv_123", "conv_" + "g" * 32, "nope", "conv_" + "0" * 33, "{" + str(uuid.UUID(int=1)) + "}"],
)
async def test_malformed_conversation_id_is_404(
    client: httpx.AsyncClient, user: User, bad_id: str
) -> None:
    response = await client.get(f"/v1/conversations/{bad_id}", headers=user.headers)
    openai_error(response, 404, "not_found")


async def test_unknown_v1_path_is_openai_404(client: httpx.AsyncClient, user: User) -> None:
    response = await client.get("/v1/responses", headers=user.headers)
    openai_error(response, 404)


# -- bad input --------------------------------------------------------------------------


async def test_more_than_20_items_at_create_is_400_and_creates_nothing(
    oai: AsyncOpenAI, client: httpx.AsyncClient, user: User
) -> None:
    before = (await client.get("/api/conversations", headers=user.headers)).json()["data"]
    items: Any = [{"role": "user", "content": str(n)} for n in range(21)]
    with pytest.raises(openai.BadRequestError) as raised:
        await oai.conversations.create(items=items)
    assert raised.value.param == "items"
    after = (await client.get("/api/conversations", headers=user.headers)).json()["data"]
    assert after == before


async def test_more_than_20_items_per_call_is_400(oai: AsyncOpenAI) -> None:
    created = await oai.conversations.create()
    items: Any = [{"role": "user", "content": str(n)} for n in range(21)]
    with pytest.raises(openai.BadRequestError):
        await oai.conversations.items.create(created.id, items=items)


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{n}": "v" for n in range(17)},
        {"k" * 65: "v"},
        {"k": "v" * 513},
        {"k": 1},
        {"": "v"},
        ["k", "v"],
    ],
    ids=["17-pairs", "key-65-chars", "value-513-chars", "value-not-a-string", "empty-key", "list"],
)
async def test_metadata_over_openai_limits_is_400(
    client: httpx.AsyncClient, user: User, metadata: Any
) -> None:
    response = await client.post(
        "/v1/conversations", json={"metadata": metadata}, headers=user.headers
    )
    error = openai_error(response, 400, "validation_error")
    assert error["param"] is not None and error["param"].startswith("metadata")


async def test_metadata_at_openai_limits_is_accepted(oai: AsyncOpenAI) -> None:
    metadata = {f"{n:02d}" + "k" * 62: "v" * 512 for n in range(16)}
    created = await oai.conversations.create(metadata=metadata)
    assert created.metadata == metadata


async def test_unknown_body_field_is_400(client: httpx.AsyncClient, user: User) -> None:
    response = await client.post("/v1/conversations", json={"title": "t"}, headers=user.headers)
    assert openai_error(response, 400, "validation_error")["param"] == "title"


async def test_update_without_metadata_is_400(
    oai: AsyncOpenAI, client: httpx.AsyncClient, user: User
) -> None:
    created = await oai.conversations.create()
    response = await client.post(f"/v1/conversations/{created.id}", json={}, headers=user.headers)
    assert openai_error(response, 400, "validation_error")["param"] == "metadata"


async def test_invalid_json_is_400_in_openai_shape(client: httpx.AsyncClient, user: User) -> None:
    response = await client.post("/v1/conversations", content=b"{", headers=user.json_headers())
    openai_error(response, 400, "invalid_json")


async def test_items_not_objects_is_400(
    oai: AsyncOpenAI, client: httpx.AsyncClient, user: User
) -> None:
    created = await oai.conversations.create()
    response = await client.post(
        f"/v1/conversations/{created.id}/items", json={"items": ["hi"]}, headers=user.headers
    )
    assert openai_error(response, 400, "validation_error")["param"] == "items[0]"


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "order=up"])
async def test_bad_list_query_is_400(
    oai: AsyncOpenAI, client: httpx.AsyncClient, user: User, query: str
) -> None:
    created = await oai.conversations.create()
    response = await client.get(
        f"/v1/conversations/{created.id}/items?{query}", headers=user.headers
    )
    assert openai_error(response, 400, "validation_error")["param"] == query.partition("=")[0]


# -- idempotency ------------------------------------------------------------------------


async def test_idempotency_key_replays_a_create(
    client: httpx.AsyncClient, user: User, store: ChatStore
) -> None:
    headers = user.with_key(new_key())
    first = await client.post("/v1/conversations", json={"metadata": {"a": "1"}}, headers=headers)
    again = await client.post("/v1/conversations", json={"metadata": {"a": "1"}}, headers=headers)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    other = await client.post("/v1/conversations", json={"metadata": {"a": "2"}}, headers=headers)
    openai_error(other, 409, "idempotency_conflict")
    assert other.headers["x-should-retry"] == "false"  # the official client must not retry it


async def test_idempotency_key_replays_an_update(
    oai: AsyncOpenAI, client: httpx.AsyncClient, user: User
) -> None:
    conversation = await oai.conversations.create(metadata={"a": "0"})
    path = f"/v1/conversations/{conversation.id}"
    headers = user.with_key(new_key())
    first = await client.post(path, json={"metadata": {"a": "1"}}, headers=headers)
    # Changed in between: a replay answers what the first request answered.
    await oai.conversations.update(conversation.id, metadata={"a": "x"})
    again = await client.post(path, json={"metadata": {"a": "1"}}, headers=headers)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json()
    assert first.json()["metadata"] == {"a": "1"}
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert (await oai.conversations.retrieve(conversation.id)).metadata == {"a": "x"}
    other = await client.post(path, json={"metadata": {"a": "2"}}, headers=headers)
    openai_error(other, 409, "idempotency_conflict")
    assert (await oai.conversations.retrieve(conversation.id)).metadata == {"a": "x"}


# -- items ------------------------------------------------------------------------------


async def test_items_create_list_retrieve_delete_with_the_official_client(
    oai: AsyncOpenAI,
) -> None:
    conversation = await oai.conversations.create()
    added = await oai.conversations.items.create(
        conversation.id,
        items=[
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi there"},
        ],
    )
    assert added.object == "list"
    assert [item.type for item in added.data] == ["message", "message"]
    assert added.first_id == added.data[0].id and added.last_id == added.data[1].id
    assert added.has_more is False

    listed = [item async for item in oai.conversations.items.list(conversation.id)]
    assert [item.id for item in listed] == [added.data[1].id, added.data[0].id]  # desc

    fetched = await oai.conversations.items.retrieve(
        added.data[0].id, conversation_id=conversation.id
    )
    assert fetched.model_dump() == added.data[0].model_dump()

    after_delete = await oai.conversations.items.delete(
        added.data[0].id, conversation_id=conversation.id
    )
    assert (after_delete.object, after_delete.id) == ("conversation", conversation.id)
    left = [item async for item in oai.conversations.items.list(conversation.id)]
    assert [item.id for item in left] == [added.data[1].id]
    with pytest.raises(openai.NotFoundError):
        await oai.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id)


async def test_items_come_back_normalised_as_openai_does(
    client: httpx.AsyncClient, user: User, oai: AsyncOpenAI
) -> None:
    conversation = await oai.conversations.create()
    sent: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Part"}]},
        {"type": "function_call", "call_id": "call_n", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_n", "output": "ok"},
        {"type": "reasoning", "id": "rs_68ab", "summary": [], "encrypted_content": "opaque"},
    ]
    response = await client.post(
        f"/v1/conversations/{conversation.id}/items", json={"items": sent}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    ids = [item.pop("id") for item in data]
    assert all(isinstance(i, str) and i for i in ids) and len(set(ids)) == len(ids)
    assert ids[-1] == "rs_68ab"  # an item's own id is kept
    assert data == [
        {
            "type": "message",
            "role": "system",
            "status": "completed",
            "content": [{"type": "input_text", "text": "Be brief."}],
        },
        {
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_text", "text": "Hi"}],
        },
        {
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Hello", "annotations": []}],
        },
        {**sent[3], "status": "completed"},
        {**sent[4], "status": "completed"},
        {**sent[5], "status": "completed"},
        {key: value for key, value in sent[6].items() if key != "id"},
    ]
    # The official client reads them as its own types.
    items = [item async for item in oai.conversations.items.list(conversation.id, order="asc")]
    assert [item.type for item in items] == [
        "message",
        "message",
        "message",
        "message",
        "function_call",
        "function_call_output",
        "reasoning",
    ]


async def test_create_conversation_with_items(oai: AsyncOpenAI) -> None:
    conversation = await oai.conversations.create(
        items=[{"role": "user", "content": "first"}, {"role": "assistant", "content": "second"}],
        metadata={"k": "v"},
    )
    items = [item async for item in oai.conversations.items.list(conversation.id, order="asc")]
    texts = [first_text(item) for item in items if item.type == "message"]
    assert texts == ["first", "second"]


async def test_an_invalid_item_at_create_creates_nothing(
    oai: AsyncOpenAI, client: httpx.AsyncClient, user: User
) -> None:
    before = (await client.get("/api/conversations", headers=user.headers)).json()["data"]
    items: Any = [
        {"role": "user", "content": "fine"},
        {"type": "function_call_output", "call_id": "never_called", "output": "x"},
    ]
    with pytest.raises(openai.BadRequestError):
        await oai.conversations.create(items=items)
    after = (await client.get("/api/conversations", headers=user.headers)).json()["data"]
    assert after == before


async def test_an_invalid_item_adds_nothing(oai: AsyncOpenAI) -> None:
    conversation = await oai.conversations.create(items=[{"role": "user", "content": "kept"}])
    items: Any = [
        {"role": "user", "content": "not kept"},
        {"type": "function_call_output", "call_id": "never_called", "output": "x"},
    ]
    with pytest.raises(openai.BadRequestError):
        await oai.conversations.items.create(conversation.id, items=items)
    left = [item async for item in oai.conversations.items.list(conversation.id)]
    assert len(left) == 1


async def test_list_pages_with_auto_pagination_in_both_orders(oai: AsyncOpenAI) -> None:
    conversation = await oai.conversations.create()
    for start in range(0, 45, 15):
        await oai.conversations.items.create(
            conversation.id,
            items=[{"role": "user", "content": f"m{n}"} for n in range(start, start + 15)],
        )
    expected = [f"m{n}" for n in range(45)]

    ascending = oai.conversations.items.list(conversation.id, order="asc", limit=10)
    assert [first_text(item) async for item in ascending] == expected
    descending = oai.conversations.items.list(conversation.id, limit=7)  # desc: OpenAI's default
    assert [first_text(item) async for item in descending] == expected[::-1]


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_auto_pagination_over_reused_ids_returns_each_item_once(
    oai: AsyncOpenAI, limit: int
) -> None:
    """The Agents SDK's placeholder id repeated, and the README's
    ScriptedModel id stored twice: each item is listed once, in both
    orders, under an id of its own."""
    conversation = await oai.conversations.create()
    sent: Any = [
        {"id": "__fake_id__", "type": "message", "role": "assistant", "content": f"a{n}"}
        for n in range(4)
    ] + [
        {"id": "scripted-message", "type": "message", "role": "assistant", "content": f"s{n}"}
        for n in range(2)
    ]
    for start in (0, 3):
        await oai.conversations.items.create(conversation.id, items=sent[start : start + 3])
    expected = ["a0", "a1", "a2", "a3", "s0", "s1"]
    orders: list[tuple[Literal["asc", "desc"], list[str]]] = [
        ("asc", expected),
        ("desc", expected[::-1]),
    ]
    for order, want in orders:
        got: list[Any] = []
        async for item in oai.conversations.items.list(conversation.id, order=order, limit=limit):
            got.append(item)
            assert len(got) <= len(sent), "pagination does not end"
        assert [first_text(item) for item in got] == want, order
        assert len({item.id for item in got}) == len(got)
    # Each id names its own item.
    for item in got:
        assert item.id is not None
        fetched = await oai.conversations.items.retrieve(item.id, conversation_id=conversation.id)
        assert first_text(fetched) == first_text(item)
    ids = {first_text(item): item.id for item in got}
    assert ids["a0"] == "__fake_id__" and ids["s0"] == "scripted-message"
    await oai.conversations.items.delete(ids["a2"], conversation_id=conversation.id)
    left = [item async for item in oai.conversations.items.list(conversation.id, order="asc")]
    assert [first_text(item) for item in left] == ["a0", "a1", "a3", "s0", "s1"]


async def test_an_item_id_with_a_slash_gets_a_routable_id(
    oai: AsyncOpenAI, client: httpx.AsyncClient, user: User
) -> None:
    conversation = await oai.conversations.create()
    sent: Any = [{"id": "a/b", "type": "message", "role": "user", "content": "slash"}]
    (shown,) = (await oai.conversations.items.create(conversation.id, items=sent)).data
    assert shown.id == "msg_1"
    response = await client.get(
        f"/v1/conversations/{conversation.id}/items/{shown.id}", headers=user.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "msg_1"
    await oai.conversations.items.delete("msg_1", conversation_id=conversation.id)
    assert [item async for item in oai.conversations.items.list(conversation.id)] == []


async def test_list_envelope_after_and_has_more(
    oai: AsyncOpenAI, client: httpx.AsyncClient, user: User
) -> None:
    conversation = await oai.conversations.create(
        items=[{"role": "user", "content": str(n)} for n in range(5)]
    )
    url = f"/v1/conversations/{conversation.id}/items"
    first = (
        await client.get(url, params={"limit": 2, "order": "asc"}, headers=user.headers)
    ).json()
    assert first["object"] == "list" and first["has_more"] is True
    assert (
        first["first_id"] == first["data"][0]["id"] and first["last_id"] == first["data"][1]["id"]
    )
    rest = await client.get(
        url, params={"order": "asc", "after": first["last_id"]}, headers=user.headers
    )
    assert [item["content"][0]["text"] for item in rest.json()["data"]] == ["2", "3", "4"]
    assert rest.json()["has_more"] is False

    empty = await oai.conversations.create()
    nothing = await client.get(f"/v1/conversations/{empty.id}/items", headers=user.headers)
    assert nothing.json() == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


async def test_include_is_accepted_and_ignored(oai: AsyncOpenAI) -> None:
    conversation = await oai.conversations.create()
    added = await oai.conversations.items.create(
        conversation.id,
        items=[{"role": "user", "content": "x"}],
        include=["message.output_text.logprobs"],
    )
    page = await oai.conversations.items.list(
        conversation.id, include=["reasoning.encrypted_content"]
    )
    assert [item.id for item in page.data] == [added.data[0].id]


async def test_messages_appended_through_api_are_items(
    oai: AsyncOpenAI, client: httpx.AsyncClient, user: User
) -> None:
    conversation = await oai.conversations.create()
    api_id = uuid_of(conversation.id)
    appended = await client.post(
        f"/api/conversations/{api_id}/messages",
        json={"role": "user", "content": "from /api"},
        headers=user.headers,
    )
    assert appended.status_code == 201, appended.text
    items = [item async for item in oai.conversations.items.list(str(api_id))]
    assert [(item.type, first_text(item)) for item in items] == [("message", "from /api")]


async def test_another_users_items_are_404(
    openai_for: OpenAIFor, user: User, other_user: User
) -> None:
    mine = openai_for(user)
    conversation = await mine.conversations.create(items=[{"role": "user", "content": "mine"}])
    item_id = str((await mine.conversations.items.list(conversation.id)).data[0].id)
    theirs = openai_for(other_user)
    with pytest.raises(openai.NotFoundError):
        await theirs.conversations.items.retrieve(item_id, conversation_id=conversation.id)
    with pytest.raises(openai.NotFoundError):
        await theirs.conversations.items.delete(item_id, conversation_id=conversation.id)
    assert (
        await mine.conversations.items.retrieve(item_id, conversation_id=conversation.id)
    ).id == item_id


async def test_unknown_item_is_404(oai: AsyncOpenAI, client: httpx.AsyncClient, user: User) -> None:
    conversation = await oai.conversations.create()
    response = await client.get(
        f"/v1/conversations/{conversation.id}/items/msg_nope", headers=user.headers
    )
    openai_error(response, 404, "not_found")


async def test_idempotency_key_adds_items_once(
    oai: AsyncOpenAI, client: httpx.AsyncClient, user: User
) -> None:
    conversation = await oai.conversations.create()
    key = new_key()
    body = {"items": [{"role": "user", "content": "once"}]}
    by_v1_id = f"/v1/conversations/{conversation.id}/items"
    by_uuid = f"/v1/conversations/{uuid_of(conversation.id)}/items"
    first = await client.post(by_v1_id, json=body, headers=user.with_key(key))
    # The same request with the other spelling of the id is the same request.
    again = await client.post(by_uuid, json=body, headers=user.with_key(key))
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    listed = [item async for item in oai.conversations.items.list(conversation.id)]
    assert len(listed) == 1


async def test_idempotency_key_through_the_official_client(oai: AsyncOpenAI) -> None:
    """The client passes an Idempotency-Key as an extra header: a repeat whose
    first answer was lost stores nothing twice."""
    conversation = await oai.conversations.create()
    key = new_key()
    items: Any = [{"role": "user", "content": "retried"}]
    for _ in range(2):
        response = await oai.conversations.items.with_raw_response.create(
            conversation.id, items=items, extra_headers={"Idempotency-Key": key}
        )
        assert response.http_response.status_code == 200
    listed = [item async for item in oai.conversations.items.list(conversation.id)]
    assert len(listed) == 1


@pytest.mark.parametrize(
    "path",
    [
        "/items/%00",
        "/items/" + "x" * 5000,
        "/items?after=%00",
        "/items?after=nope",
        "/items?limit=99999999999999999999999",
    ],
)
async def test_hostile_item_ids_and_cursors_are_4xx(
    oai: AsyncOpenAI, client: httpx.AsyncClient, user: User, path: str
) -> None:
    conversation = await oai.conversations.create(items=[{"role": "user", "content": "x"}])
    response = await client.get(f"/v1/conversations/{conversation.id}{path}", headers=user.headers)
    assert 400 <= response.status_code < 500, response.text
    openai_error(response, response.status_code)


async def test_one_item_of_a_chat_message_with_several_is_not_deleted_alone(
    oai: AsyncOpenAI, client: httpx.AsyncClient, user: User
) -> None:
    conversation = await oai.conversations.create()
    call = {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    appended = await client.post(
        f"/api/conversations/{uuid_of(conversation.id)}/messages",
        json={"role": "assistant", "content": "Let me check.", "tool_calls": [call]},
        headers=user.headers,
    )
    assert appended.status_code == 201, appended.text
    items = (await oai.conversations.items.list(conversation.id, order="asc")).data
    assert [item.type for item in items] == ["message", "function_call"]
    response = await client.delete(
        f"/v1/conversations/{conversation.id}/items/{items[1].id}", headers=user.headers
    )
    openai_error(response, 400, "validation_error")


async def test_idempotency_key_creates_a_conversation_with_items_once(
    oai: AsyncOpenAI, client: httpx.AsyncClient, user: User
) -> None:
    headers = user.with_key(new_key())
    body = {"items": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    first = await client.post("/v1/conversations", json=body, headers=headers)
    again = await client.post("/v1/conversations", json=body, headers=headers)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json()
    items = [item async for item in oai.conversations.items.list(first.json()["id"])]
    assert [first_text(item) for item in items] == ["b", "a"]
    listed = (await client.get("/api/conversations", headers=user.headers)).json()["data"]
    assert [c["id"] for c in listed] == [str(uuid_of(first.json()["id"]))]


async def test_concurrent_item_adds_lose_nothing(openai_for: OpenAIFor, user: User) -> None:
    clients = [openai_for(user) for _ in range(8)]
    conversation = await clients[0].conversations.create()
    await asyncio.gather(
        *(
            oai.conversations.items.create(
                conversation.id,
                items=[
                    {"role": "user", "content": f"c{n}-0"},
                    {"role": "assistant", "content": f"c{n}-1"},
                ],
            )
            for n, oai in enumerate(clients)
        )
    )
    listed = [
        first_text(item)
        async for item in clients[0].conversations.items.list(conversation.id, order="asc")
    ]
    assert sorted(listed) == sorted(f"c{n}-{i}" for n in range(8) for i in range(2))
    # Each call's items stay together, in order: a call is one atomic append.
    for n in range(8):
        assert listed.index(f"c{n}-1") == listed.index(f"c{n}-0") + 1
