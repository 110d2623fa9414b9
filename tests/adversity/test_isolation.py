"""Isolation 9: broken object-level authorization (OWASP API #1), as a matrix.

User A has conversations with messages (tool calls included, a deleted
message leaving a gap), a chat session, and used idempotency keys on every
endpoint that takes them. User B then acts on A's objects through every
endpoint and method of the served OpenAPI document that names an object:
by id, by seq (existing, deleted, beyond the end), with A's idempotency
keys, A's tool call ids, Last-Event-ID, both export formats... and every
answer must be exactly what B gets for a random id that exists nowhere
(same status, same headers that matter, same body once the id is masked):
404. The ones that name no object are covered as filters and keys:
search narrowed to A's conversation (no hits), A's listing cursor (only
B's conversations), A's idempotency keys on create (B's own new objects,
never A's replayed response), and the live event stream (B's stream never
carries A's messages).

The matrix is built from openapi.json, so a new endpoint is in it the day
it is documented: an operation with a path parameter is tried with a
request template (or, without one, a default request built from the
document), and one without must be listed in ``NO_OBJECT`` with the test
that covers it. Afterwards A's rows (conversations, messages, idempotency
keys) are byte-identical to a snapshot taken before, read from the database
itself.

Against a real ``chatstore serve`` with the session cache off.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.requests import seed_messages, tool_call
from support.serve import Server
from support.users import User, make_user

from adversity.hostile_support import no_server_problems, running_server
from chatstore.config import Settings
from chatstore.store import ChatStore

pytestmark = pytest.mark.adversity

REPO = Path(__file__).resolve().parents[2]
DOCUMENT = json.loads((REPO / "openapi.json").read_text())
DOCUMENTED = {
    (method, path)
    for path, item in DOCUMENT["paths"].items()
    for method in item
    if method in ("get", "post", "put", "patch", "delete", "head", "options")
}

# Operations that name no object, and the test that covers each instead.
NO_OBJECT = {
    ("get", "/healthz"): "public, no user data",
    ("get", "/readyz"): "public, no user data",
    ("get", "/openapi.json"): "public, no user data",
    ("get", "/metrics"): "public, counts only (no user data, no raw paths)",
    ("get", "/api/conversations"): "test_another_users_cursor_lists_only_your_own",
    ("post", "/api/conversations"): "test_another_users_idempotency_key_is_not_replayed",
    ("post", "/api/chat/start"): "test_another_users_idempotency_key_is_not_replayed",
    ("get", "/api/search"): "test_search_narrowed_to_another_users_conversation_finds_nothing",
    ("post", "/api/conversations/import"): "test_another_users_idempotency_key_is_not_replayed",
    ("delete", "/api/me/data"): "test_erasing_your_data_never_touches_another_users",
    ("post", "/v1/conversations"): "test_another_users_v1_idempotency_key_is_not_replayed",
}

SECRET_WORD = "zanzibarquokka"  # in A's messages only: what B must never find


@dataclasses.dataclass(frozen=True)
class Req:
    """One request of the matrix, minus the conversation id (and seq)."""

    query: dict[str, str] = dataclasses.field(default_factory=dict)
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: Any = None
    note: str = ""


@dataclasses.dataclass
class World:
    """What A owns, and the keys and ids B will try."""

    a: User
    b: User
    conversation: str  # A's, with messages, tool calls and a gap
    session: str  # A's chat session
    b_conversation: str  # B's own, so that B is a real user with data
    tool_call_id: str  # the id of a tool call in A's conversation
    gap_seq: int  # a deleted message's seq in A's conversation
    last_seq: int
    message_key: str  # A's Idempotency-Key on an append to A's conversation
    message_body: dict[str, Any]
    chat_key: str  # A's Idempotency-Key on a chat message
    chat_body: dict[str, Any]
    create_key: str  # A's Idempotency-Key on POST /api/conversations
    create_body: dict[str, Any]
    start_key: str  # A's Idempotency-Key on POST /api/chat/start
    start_body: dict[str, Any]
    import_key: str  # A's Idempotency-Key on POST /api/conversations/import
    import_body: dict[str, Any]
    a_cursor: str  # a next_cursor from A's listing
    v1_items_key: str  # A's Idempotency-Key on POST /v1/.../items to A's conversation
    v1_items_body: dict[str, Any]
    item_ids: list[str]  # ids of items in A's conversation (own and derived) and one of none


def templates(world: World) -> dict[tuple[str, str], list[Req]]:
    """Meaningful requests per operation; every one is valid for the owner."""
    one = {"role": "user", "content": "B was here"}
    return {
        ("get", "/api/conversations/{id}"): [Req()],
        ("patch", "/api/conversations/{id}"): [
            Req(body={"title": "pwned"}),
            Req(body={"metadata": {}}, note="clear metadata"),
            Req(body={"title": None}, note="clear title"),
            Req(body={"archived": True}, note="archive"),
        ],
        ("delete", "/api/conversations/{id}"): [Req()],
        ("get", "/api/conversations/{id}/messages"): [
            Req(),
            Req(query={"order": "desc", "limit": "2"}),
            Req(query={"after": "1", "before": str(world.last_seq)}),
        ],
        ("post", "/api/conversations/{id}/messages"): [
            Req(body=one),
            Req(body={"messages": [one], "expected_last_seq": world.last_seq}),
            Req(body={"messages": [one], "expected_last_seq": 0}),
            Req(
                body={"role": "tool", "tool_call_id": world.tool_call_id, "content": "42"},
                note="answer A's tool call",
            ),
            Req(
                body=world.message_body,
                headers={"Idempotency-Key": world.message_key},
                note="A's idempotency key, A's body",
            ),
            Req(body={"messages": [one], "parent_seq": 1}, note="branch from A's message"),
            Req(body={**one, "parent_seq": 0}, note="a new first message in A's"),
        ],
        ("delete", "/api/conversations/{id}/messages"): [
            Req(query={"from_seq": "1"}),
            Req(query={"from_seq": str(world.gap_seq)}),
        ],
        ("get", "/api/conversations/{id}/messages/{seq}"): [Req()],
        ("get", "/api/conversations/{id}/messages/{seq}/siblings"): [Req()],
        ("put", "/api/conversations/{id}/active"): [
            Req(body={"leaf_seq": 1}, note="switch A's branch"),
            Req(body={"leaf_seq": world.last_seq}),
        ],
        ("delete", "/api/conversations/{id}/messages/{seq}"): [Req()],
        ("get", "/api/conversations/{id}/export"): [
            Req(query={"format": "openai"}),
            Req(query={"format": "jsonl"}),
        ],
        ("get", "/api/conversations/{id}/events"): [
            Req(),
            Req(headers={"Last-Event-ID": "0"}, note="replay everything"),
        ],
        ("post", "/api/chat/{session_id}/message"): [
            Req(body={"content": "B was here"}),
            Req(
                body=world.chat_body,
                headers={"Idempotency-Key": world.chat_key},
                note="A's idempotency key, A's body",
            ),
        ],
        ("get", "/api/chat/{session_id}/history"): [
            Req(),
            Req(query={"limit": "1", "before": str(world.last_seq)}),
        ],
        # OpenAI's Conversations API: {conversation_id} is A's uuid (a /v1
        # path takes it as well as conv_<hex>); {item_id} each of item_ids.
        ("post", "/v1/conversations/{conversation_id}"): [
            Req(body={"metadata": {"owner": "b"}}),
            Req(body={"metadata": None}, note="clear metadata"),
        ],
        ("post", "/v1/conversations/{conversation_id}/items"): [
            Req(body={"items": [one]}),
            Req(
                body={
                    "items": [
                        {
                            "type": "function_call_output",
                            "call_id": world.tool_call_id,
                            "output": "42",
                        }
                    ]
                },
                note="answer A's tool call",
            ),
            Req(
                body=world.v1_items_body,
                headers={"Idempotency-Key": world.v1_items_key},
                note="A's idempotency key, A's body",
            ),
        ],
        ("get", "/v1/conversations/{conversation_id}/items"): [
            Req(),
            Req(query={"order": "asc", "limit": "1"}),
            Req(query={"after": world.item_ids[0]}, note="after A's item"),
        ],
    }


def default_request(method: str, path: str) -> Req:
    """A request built from the document alone, for an operation without a
    template: required query parameters at a valid value, an empty object
    as body."""
    operation = DOCUMENT["paths"][path][method]
    query: dict[str, str] = {}
    for parameter in operation.get("parameters", []):
        if parameter["in"] != "query" or not parameter.get("required"):
            continue
        schema = parameter.get("schema", {})
        value = schema.get("default", (schema.get("enum") or [schema.get("minimum", 1)])[0])
        query[parameter["name"]] = str(value)
    body: dict[str, Any] | None = {} if "requestBody" in operation else None
    return Req(query=query, body=body, note="default request from the document")


@dataclasses.dataclass(frozen=True)
class Seen:
    """A response as compared: the id of the target masked out."""

    status: int
    content_type: str
    headers: tuple[tuple[str, str], ...]
    body: Any

    def describe(self) -> str:
        return f"{self.status} {self.content_type} {self.headers} {str(self.body)[:300]}"


# Response headers that would tell the two cases apart if they differed.
COMPARED_HEADERS = ("www-authenticate", "allow", "retry-after", "idempotent-replayed")


async def send(
    client: httpx.AsyncClient,
    user: User,
    method: str,
    path: str,
    conversation_id: str,
    seq: int | str | None,
    req: Req,
) -> Seen:
    url = (
        path.replace("{id}", conversation_id)
        .replace("{session_id}", conversation_id)
        .replace("{conversation_id}", conversation_id)
    )
    if seq is not None:  # a seq, or an item id
        url = url.replace("{seq}", str(seq)).replace("{item_id}", str(seq))
    headers = {**user.headers, **req.headers}
    kwargs: dict[str, Any] = {"params": req.query, "headers": headers}
    if req.body is not None:
        kwargs["json"] = req.body
    async with client.stream(method.upper(), url, **kwargs) as response:
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("text/event-stream"):
            # A stream that opened: never ends, so its first bytes will do.
            chunk = await asyncio.wait_for(anext(response.aiter_raw()), 5)
            body: Any = f"<event stream opened: {chunk[:200]!r}>"
        else:
            raw = (await response.aread()).decode(errors="replace")
            masked = raw.replace(conversation_id, "<ID>")
            try:
                body = json.loads(masked)
            except ValueError:
                body = masked
        headers_seen = tuple(
            (name, response.headers[name]) for name in COMPARED_HEADERS if name in response.headers
        )
        return Seen(response.status_code, content_type, headers_seen, body)


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(database: str, settings: Settings) -> Iterator[Server]:
    with running_server(database, settings.auth_secret) as served:
        yield served


@pytest.fixture(scope="module")
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as opened:
        yield opened


@pytest.fixture(autouse=True)
def clean_server_log(server: Server) -> Iterator[None]:
    with no_server_problems(server):
        yield


async def _ok(response: httpx.Response, status: int = 201) -> Any:
    assert response.status_code == status, f"{response.request.url} {response.text[:300]}"
    return response.json()


@pytest.fixture(scope="module")
async def world(client: httpx.AsyncClient, store: ChatStore) -> World:
    a, b = await make_user(store), await make_user(store)
    create_key, start_key, message_key, chat_key, import_key = (
        f"a-{secrets.token_hex(8)}" for _ in range(5)
    )
    create_body = {"title": "A's secret plans", "metadata": {"owner": "a"}}
    conversation = await _ok(
        await client.post(
            "/api/conversations",
            json=create_body,
            headers={**a.headers, "Idempotency-Key": create_key},
        )
    )
    history = seed_messages(SECRET_WORD)
    stored = await _ok(
        await client.post(
            f"/api/conversations/{conversation['id']}/messages",
            json={"messages": history},
            headers=a.headers,
        )
    )
    tool_call_id = history[2]["tool_calls"][0]["id"]
    # A second tool call whose answer comes later, and a gap: a deleted message.
    pending = f"call_{secrets.token_hex(4)}"
    message_body = {
        "role": "assistant",
        "content": None,
        "tool_calls": [tool_call(pending, "search", '{"q": "' + SECRET_WORD + '"}')],
    }
    await _ok(
        await client.post(
            f"/api/conversations/{conversation['id']}/messages",
            json=message_body,
            headers={**a.headers, "Idempotency-Key": message_key},
        )
    )
    extra = await _ok(
        await client.post(
            f"/api/conversations/{conversation['id']}/messages",
            json={"role": "user", "content": "delete me"},
            headers=a.headers,
        )
    )
    deleted = await client.delete(
        f"/api/conversations/{conversation['id']}/messages/{extra['seq']}", headers=a.headers
    )
    assert deleted.status_code == 204, deleted.text
    # Items through /v1: one with an id of its own, one without a chat form.
    v1_items_key = f"a-{secrets.token_hex(8)}"
    v1_items_body = {
        "items": [
            {
                "type": "reasoning",
                "id": "rs_a_secret",
                "summary": [],
                "encrypted_content": SECRET_WORD,
            },
            {"id": "msg_a_secret", "role": "user", "content": f"items {SECRET_WORD}"},
        ]
    }
    added = await _ok(
        await client.post(
            f"/v1/conversations/{conversation['id']}/items",
            json=v1_items_body,
            headers={**a.headers, "Idempotency-Key": v1_items_key},
        ),
        200,
    )
    assert [item["id"] for item in added["data"]] == ["rs_a_secret", "msg_a_secret"]
    last = await _ok(
        await client.post(
            f"/api/conversations/{conversation['id']}/messages",
            json={"role": "tool", "tool_call_id": pending, "content": "found " + SECRET_WORD},
            headers=a.headers,
        )
    )
    start_body = {"title": "A's chat"}
    session = await _ok(
        await client.post(
            "/api/chat/start", json=start_body, headers={**a.headers, "Idempotency-Key": start_key}
        )
    )
    chat_body = {"content": f"tell me about {SECRET_WORD}"}
    await _ok(
        await client.post(
            f"/api/chat/{session['session_id']}/message",
            json=chat_body,
            headers={**a.headers, "Idempotency-Key": chat_key},
        )
    )
    import_body = {"title": "A's import", "messages": seed_messages(SECRET_WORD)}
    await _ok(
        await client.post(
            "/api/conversations/import",
            json=import_body,
            headers={**a.headers, "Idempotency-Key": import_key},
        )
    )
    listed = await _ok(
        await client.get("/api/conversations", params={"limit": 1}, headers=a.headers), 200
    )
    b_conversation = await _ok(
        await client.post("/api/conversations", json={"title": "B's own"}, headers=b.headers)
    )
    await _ok(
        await client.post(
            f"/api/conversations/{b_conversation['id']}/messages",
            json={"role": "user", "content": "B's own message"},
            headers=b.headers,
        )
    )
    assert len(stored["data"]) == len(history)
    return World(
        a=a,
        b=b,
        conversation=conversation["id"],
        session=session["session_id"],
        b_conversation=b_conversation["id"],
        tool_call_id=tool_call_id,
        gap_seq=extra["seq"],
        last_seq=last["seq"],
        message_key=message_key,
        message_body=message_body,
        chat_key=chat_key,
        chat_body=chat_body,
        create_key=create_key,
        create_body=create_body,
        start_key=start_key,
        start_body=start_body,
        import_key=import_key,
        import_body=import_body,
        a_cursor=listed["next_cursor"],
        v1_items_key=v1_items_key,
        v1_items_body=v1_items_body,
        # A's own ids, ids derived from A's messages (the first, the tool
        # call of the third), and one that names nothing.
        item_ids=["msg_a_secret", "rs_a_secret", "msg_1", "fc_3_0", "msg_999999"],
    )


async def db_snapshot(store: ChatStore, user_id: str) -> dict[str, list[str]]:
    """The user's rows as the database holds them, every column."""
    queries = {
        "conversations": "SELECT to_jsonb(c)::text FROM conversations c "
        "WHERE user_id = $1 ORDER BY id",
        "messages": "SELECT to_jsonb(m)::text FROM messages m "
        "WHERE user_id = $1 ORDER BY conversation_id, seq",
        "idempotency_keys": "SELECT to_jsonb(k)::text FROM idempotency_keys k "
        "WHERE user_id = $1 ORDER BY key",
    }
    snapshot: dict[str, list[str]] = {}
    async with store.pool.acquire() as connection:
        for table, query in queries.items():
            snapshot[table] = [row[0] for row in await connection.fetch(query, user_id)]
    return snapshot


@pytest.fixture(scope="module")
async def a_before(world: World, store: ChatStore) -> dict[str, list[str]]:
    return await db_snapshot(store, world.a.user_id)


# -- the matrix ------------------------------------------------------------------------


def test_every_documented_operation_is_in_the_matrix_or_listed() -> None:
    with_object = {(method, path) for method, path in DOCUMENTED if "{" in path}
    without = DOCUMENTED - with_object
    assert without == set(NO_OBJECT), (
        "an operation without a path parameter must be listed in NO_OBJECT with the test "
        f"that covers it: unlisted {sorted(without - set(NO_OBJECT))}, "
        f"gone {sorted(set(NO_OBJECT) - without)}"
    )
    assert with_object, "no operation names an object"


def matrix_rows(world: World) -> list[tuple[str, str, str, int | str | None, Req]]:
    """(label, method, path, seq, request) for every documented operation
    that names an object, and the methods the document does not list for
    those paths (they too must not tell A's ids from random ones)."""
    known = templates(world)
    rows: list[tuple[str, str, str, int | str | None, Req]] = []
    paths = sorted({path for _method, path in DOCUMENTED if "{" in path})
    for path in paths:
        seqs: list[int | str | None] = [None]
        if "{seq}" in path:
            seqs = [1, 3, world.gap_seq, world.last_seq, world.last_seq + 1, 2**63 - 1]
        elif "{item_id}" in path:
            seqs = list(world.item_ids)
        for method in ("get", "post", "put", "patch", "delete"):
            if (method, path) in DOCUMENTED:
                reqs = known.get((method, path)) or [default_request(method, path)]
                tried = seqs
            else:
                reqs = [Req(note="undocumented method")]
                tried = seqs[:1]
            for req in reqs:
                for seq in tried:
                    label = f"{method.upper()} {path}"
                    label += f" seq={seq}" if seq is not None else ""
                    label += f" {req.query or ''} {req.note}".rstrip()
                    rows.append((label, method, path, seq, req))
    return rows


async def test_another_users_objects_answer_exactly_like_missing_ones(
    client: httpx.AsyncClient, world: World, a_before: dict[str, list[str]], store: ChatStore
) -> None:
    rows = matrix_rows(world)
    differences: list[str] = []
    leaks: list[str] = []
    statuses: dict[int, int] = {}
    for label, method, path, seq, req in rows:
        target = world.session if "{session_id}" in path else world.conversation
        stranger_id = str(uuid.uuid4())
        on_a = await send(client, world.b, method, path, target, seq, req)
        on_nothing = await send(client, world.b, method, path, stranger_id, seq, req)
        statuses[on_a.status] = statuses.get(on_a.status, 0) + 1
        if on_a != on_nothing:
            differences.append(
                f"{label}\n    on A's: {on_a.describe()}\n    on none: {on_nothing.describe()}"
            )
        documented = (method, path) in DOCUMENTED
        code = on_a.body.get("error", {}).get("code") if isinstance(on_a.body, dict) else None
        if documented and (on_a.status, code) != (404, "not_found"):
            leaks.append(f"{label}: {on_a.describe()}")
        if not documented and on_a.status != 405:
            leaks.append(f"{label} (undocumented): {on_a.describe()}")
    print(f"isolation matrix: {len(rows)} rows, {2 * len(rows)} requests; B on A's: {statuses}")
    assert not differences, "\n".join(differences)
    assert not leaks, "\n".join(leaks)
    # ... and nothing of A's moved: not a row, not a timestamp.
    assert await db_snapshot(store, world.a.user_id) == a_before


# -- the operations that name no object ------------------------------------------------


async def test_search_narrowed_to_another_users_conversation_finds_nothing(
    client: httpx.AsyncClient, world: World
) -> None:
    # The word is there: A finds it (so the empty answers below mean something).
    mine = await _ok(
        await client.get("/api/search", params={"q": SECRET_WORD}, headers=world.a.headers), 200
    )
    assert mine["data"], mine
    narrowed = {"q": SECRET_WORD, "conversation_id": world.conversation}
    for params in (
        {"q": SECRET_WORD},
        narrowed,
        {**narrowed, "limit": "100"},
        {"q": f'"{SECRET_WORD}" or town', "conversation_id": world.session},
        {"q": "town", "conversation_id": world.conversation},
    ):
        on_a = await client.get("/api/search", params=params, headers=world.b.headers)
        assert on_a.status_code == 200, on_a.text
        assert on_a.json() == {"data": []}, (params, on_a.text)
    nowhere = await client.get(
        "/api/search",
        params={"q": SECRET_WORD, "conversation_id": str(uuid.uuid4())},
        headers=world.b.headers,
    )
    assert nowhere.status_code == 200 and nowhere.json() == {"data": []}, nowhere.text


async def test_another_users_cursor_lists_only_your_own(
    client: httpx.AsyncClient, world: World
) -> None:
    mine = await _ok(
        await client.get("/api/conversations", params={"limit": 100}, headers=world.b.headers), 200
    )
    b_ids = {c["id"] for c in mine["data"]}
    assert world.b_conversation in b_ids
    for limit, archived in (("1", "false"), ("20", "false"), ("100", "false"), ("100", "true")):
        paged = await client.get(
            "/api/conversations",
            params={"cursor": world.a_cursor, "limit": limit, "archived": archived},
            headers=world.b.headers,
        )
        assert paged.status_code == 200, paged.text
        ids = {c["id"] for c in paged.json()["data"]}
        assert ids <= b_ids, f"A's cursor showed B {ids - b_ids}"
        assert world.conversation not in ids and world.session not in ids
    # And B's listing never holds A's.
    assert not b_ids & {world.conversation, world.session}


@pytest.mark.parametrize(
    "path", ["/api/conversations", "/api/chat/start", "/api/conversations/import"]
)
async def test_another_users_idempotency_key_is_not_replayed(
    client: httpx.AsyncClient, world: World, store: ChatStore, path: str
) -> None:
    """Keys are per user: B sending A's key with A's very body creates B's
    own object (no replay of A's response, which would hand B A's ids), and
    a different body under that key is no conflict for B either."""
    key, body = {
        "/api/conversations": (world.create_key, world.create_body),
        "/api/chat/start": (world.start_key, world.start_body),
        "/api/conversations/import": (world.import_key, world.import_body),
    }[path]
    c = await make_user(store)
    a_replayed = await client.post(
        path, json=body, headers={**world.a.headers, "Idempotency-Key": key}
    )
    assert a_replayed.status_code == 201 and a_replayed.headers.get("idempotent-replayed") == "true"
    a_id = _created_id(a_replayed.json())

    first = await client.post(path, json=body, headers={**c.headers, "Idempotency-Key": key})
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers, first.headers
    c_id = _created_id(first.json())
    assert c_id != a_id
    again = await client.post(path, json=body, headers={**c.headers, "Idempotency-Key": key})
    assert again.headers.get("idempotent-replayed") == "true" and _created_id(again.json()) == c_id
    # The object is C's: A cannot see it, C can.
    assert (
        await client.get(f"/api/conversations/{c_id}", headers=world.a.headers)
    ).status_code == 404
    assert (await client.get(f"/api/conversations/{c_id}", headers=c.headers)).status_code == 200

    other = await make_user(store)
    different = await client.post(
        path,
        json={**body, "title": "something else"},
        headers={**other.headers, "Idempotency-Key": key},
    )
    assert different.status_code == 201, different.text
    assert _created_id(different.json()) not in (a_id, c_id)


async def test_another_users_v1_idempotency_key_is_not_replayed(
    client: httpx.AsyncClient, world: World, store: ChatStore
) -> None:
    """POST /v1/conversations: B sending A's key with A's very body creates
    B's own conversation (with B's items), never a replay of A's."""
    key = f"a-{secrets.token_hex(8)}"
    body = {"metadata": {"owner": "a"}, "items": [{"role": "user", "content": SECRET_WORD}]}
    a_made = await _ok(
        await client.post(
            "/v1/conversations", json=body, headers={**world.a.headers, "Idempotency-Key": key}
        ),
        200,
    )
    c = await make_user(store)
    first = await client.post(
        "/v1/conversations", json=body, headers={**c.headers, "Idempotency-Key": key}
    )
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers, first.headers
    c_id = first.json()["id"]
    assert c_id != a_made["id"]
    again = await client.post(
        "/v1/conversations", json=body, headers={**c.headers, "Idempotency-Key": key}
    )
    assert again.headers.get("idempotent-replayed") == "true" and again.json()["id"] == c_id
    for user, conversation_id, status in (
        (world.a, c_id, 404),
        (c, a_made["id"], 404),
        (c, c_id, 200),
    ):
        seen = await client.get(f"/v1/conversations/{conversation_id}/items", headers=user.headers)
        assert seen.status_code == status, seen.text


def _created_id(body: dict[str, Any]) -> str:
    value = body.get("id") or body["session_id"]
    assert isinstance(value, str)
    return value


async def test_erasing_your_data_never_touches_another_users(
    client: httpx.AsyncClient, world: World, store: ChatStore
) -> None:
    """DELETE /api/me/data takes no id: the user is the session's. D erases
    (twice) and every row of A's is as it was; D's own are gone."""
    d = await make_user(store)
    own = await _ok(await client.post("/api/conversations", json={}, headers=d.headers))
    await _ok(
        await client.post(
            f"/api/conversations/{own['id']}/messages",
            json={"role": "user", "content": "D's"},
            headers={**d.headers, "Idempotency-Key": world.message_key},
        )
    )
    a_before = await db_snapshot(store, world.a.user_id)
    for expected in ({"conversations": 1, "messages": 1, "idempotency_keys": 1}, None):
        erased = await client.request(
            "DELETE",
            "/api/me/data",
            params={"user_id": world.a.user_id},
            headers={**d.headers, "X-User-Id": world.a.user_id},
        )
        assert erased.status_code == 200, erased.text
        if expected is not None:
            assert erased.json() == {"deleted": expected}
    assert await db_snapshot(store, world.a.user_id) == a_before
    assert await db_snapshot(store, d.user_id) == {
        "conversations": [],
        "messages": [],
        "idempotency_keys": [],
    }


async def test_another_users_message_key_on_your_own_conversation_is_yours(
    client: httpx.AsyncClient, world: World, store: ChatStore
) -> None:
    """C appends to C's own conversation with A's key and A's body: C's
    message is stored (no 409 from A's fingerprint, no replay of A's)."""
    c = await make_user(store)
    own = await _ok(await client.post("/api/conversations", json={}, headers=c.headers))
    appended = await client.post(
        f"/api/conversations/{own['id']}/messages",
        json={"role": "user", "content": "C's"},
        headers={**c.headers, "Idempotency-Key": world.message_key},
    )
    assert appended.status_code == 201, appended.text
    assert "idempotent-replayed" not in appended.headers
    assert appended.json()["conversation_id"] == own["id"]


async def test_event_stream_never_carries_another_users_messages(
    client: httpx.AsyncClient, world: World, store: ChatStore
) -> None:
    """B follows B's own conversation while A appends to A's: B's stream
    carries B's message and nothing of A's (the events hub fans out
    PostgreSQL notifications by conversation)."""
    b = await make_user(store)
    own = await _ok(await client.post("/api/conversations", json={}, headers=b.headers))
    received: list[bytes] = []

    async def follow(stop: asyncio.Event) -> None:
        async with client.stream(
            "GET", f"/api/conversations/{own['id']}/events", headers=b.headers
        ) as stream:
            assert stream.status_code == 200
            async for chunk in stream.aiter_raw():
                received.append(chunk)
                if b"B-only" in b"".join(received) or stop.is_set():
                    return

    stop = asyncio.Event()
    follower = asyncio.create_task(follow(stop))
    await asyncio.sleep(0.5)
    for index in range(3):
        await _ok(
            await client.post(
                f"/api/conversations/{world.b_conversation}/messages",
                json={"role": "user", "content": f"noise {index}"},
                headers=world.b.headers,
            )
        )
        c = await make_user(store)
        c_own = await _ok(await client.post("/api/conversations", json={}, headers=c.headers))
        await _ok(
            await client.post(
                f"/api/conversations/{c_own['id']}/messages",
                json={"role": "user", "content": f"{SECRET_WORD} {index}"},
                headers=c.headers,
            )
        )
    await _ok(
        await client.post(
            f"/api/conversations/{own['id']}/messages",
            json={"role": "user", "content": "B-only"},
            headers=b.headers,
        )
    )
    try:
        await asyncio.wait_for(follower, 10)
    finally:
        stop.set()
        follower.cancel()
    text = b"".join(received).decode()
    assert "B-only" in text, text
    assert SECRET_WORD not in text and "noise" not in text, text
    assert text.count("event: message") == 1, text
