"""The OpenAPI document: committed, valid, complete, and true to what the app returns."""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS31Validator, oas31_format_checker
from openapi_spec_validator import OpenAPIV31SpecValidator
from starlette.applications import Starlette
from starlette.routing import Route
from support.app import app_client, open_client
from support.users import make_user

from chatstore.config import Settings
from chatstore.http.app import create_app
from chatstore.http.openapi import openapi_document, render
from chatstore.store import ChatStore

COMMITTED = Path(__file__).resolve().parent.parent / "openapi.json"
BEARER_OR_COOKIE: list[dict[str, list[str]]] = [{"bearer": []}, {"cookie": []}]
MESSAGE = "#/components/schemas/Message"
STALE = "openapi.json is not what the app serves: run scripts/openapi and commit the result"


@pytest.fixture(scope="module")
def bare_app() -> Starlette:
    # /openapi.json needs neither the lifespan nor a database.
    return create_app(Settings(database_url="postgresql://unused"))


async def test_served_document_is_the_committed_one(bare_app: Starlette) -> None:
    async with open_client(bare_app) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == json.loads(COMMITTED.read_text()), STALE
    assert COMMITTED.read_text() == render(), STALE  # byte for byte: sorted, indented, newline


def test_document_is_valid_openapi_3_1() -> None:
    OpenAPIV31SpecValidator(openapi_document()).validate()


def test_every_route_is_documented_and_nothing_else(bare_app: Starlette) -> None:
    served = {
        (route.path, method.lower())
        for route in bare_app.routes
        # The chat page, /docs and their files are not API endpoints
        # (chatstore/http/web.py): they opt out with include_in_schema=False.
        if isinstance(route, Route) and route.include_in_schema
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {
        (path, method) for path, item in openapi_document()["paths"].items() for method in item
    }
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"


def test_security_on_every_api_and_v1_operation_only() -> None:
    document = openapi_document()
    ids = []
    for path, item in document["paths"].items():
        for operation in item.values():
            ids.append(operation["operationId"])
            expected = BEARER_OR_COOKIE if path.startswith(("/api/", "/v1/")) else None
            assert operation.get("security") == expected, path
    assert len(ids) == len(set(ids)), "operationIds must be unique"


# -- responses match the document -----------------------------------------------------------


class Conformance:
    """Checks every response against the operation it answers: a documented
    status, and a body valid against that status's schema."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.routes = [
            (re.compile("^" + re.sub(r"{\w+}", "[^/]+", path) + "$"), path)
            for path in document["paths"]
        ]
        self.covered: set[tuple[str, str]] = set()

    def check(self, response: httpx.Response, status: int) -> Any:
        method = response.request.method.lower()
        path = response.request.url.path
        assert response.status_code == status, (method, path, response.text)
        template = next(t for pattern, t in self.routes if pattern.match(path))
        operation = self.document["paths"][template][method]
        self.covered.add((template, method))
        documented = operation["responses"].get(str(status))
        assert documented is not None, f"{method} {template} does not document {status}"
        if "$ref" in documented:
            name = documented["$ref"].removeprefix("#/components/responses/")
            documented = self.document["components"]["responses"][name]
            for header in documented.get("headers", {}):  # what an error promises to carry
                assert header in response.headers, (method, template, status, header)
        if "idempotent-replayed" in response.headers:
            assert "Idempotent-Replayed" in documented.get("headers", {})
        if "content" not in documented:
            assert response.content == b""
            return None
        media_type = response.headers["content-type"].partition(";")[0]
        assert media_type in documented["content"], (method, template, status, media_type)
        if media_type == "text/plain":  # /metrics
            return response.text
        if media_type == "application/x-ndjson":  # one Message a line
            lines = response.text.splitlines()
            return [self.valid(json.loads(line), {"$ref": MESSAGE}) for line in lines]
        assert media_type == "application/json", (method, template, status, media_type)
        return self.valid(response.json(), documented["content"][media_type]["schema"])

    def valid(self, body: Any, schema: dict[str, Any]) -> Any:
        validator = OAS31Validator(
            {"components": self.document["components"], **schema},
            format_checker=oas31_format_checker,
        )
        errors = [error.message for error in validator.iter_errors(body)]
        assert errors == [], (schema, body)
        return body


@pytest.fixture
async def client(store: ChatStore, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    small = dataclasses.replace(settings, max_body_bytes=4096)
    async with app_client(small, store) as client:
        client.headers.update((await make_user(store)).headers)
        yield client


async def test_responses_match_the_document(client: httpx.AsyncClient) -> None:
    c = Conformance(openapi_document())
    api = "/api/conversations"

    c.check(await client.post(api), 201)
    conv = c.check(await client.post(api, json={"title": "t", "metadata": {"k": "v"}}), 201)
    cid = conv["id"]
    page = c.check(await client.get(api, params={"limit": 1}), 200)
    c.check(await client.get(api, params={"cursor": page["next_cursor"]}), 200)
    c.check(await client.get(f"{api}/{cid}"), 200)
    c.check(await client.patch(f"{api}/{cid}", json={"title": None}), 200)

    messages = f"{api}/{cid}/messages"
    c.check(await client.post(messages, json={"role": "user", "content": "hi"}), 201)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    batch = [
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "content": "42", "tool_call_id": "c1", "name": "f"},
    ]
    c.check(await client.post(messages, json={"messages": batch, "expected_last_seq": 1}), 201)
    c.check(await client.post(messages, json={"messages": batch, "expected_last_seq": 1}), 409)
    c.check(await client.get(messages), 200)
    c.check(await client.get(messages, params={"order": "desc", "limit": 1, "before": 3}), 200)
    c.check(await client.get(f"{messages}/2"), 200)
    c.check(await client.get(f"{messages}/2/siblings"), 200)
    c.check(await client.put(f"{api}/{cid}/active", json={"leaf_seq": 3}), 200)
    c.check(await client.put(f"{api}/{cid}/active", json={"leaf_seq": 99}), 404)
    c.check(await client.put(f"{api}/{cid}/active", json={}), 422)

    start = c.check(await client.post("/api/chat/start", json={"title": "chat"}), 201)
    chat = f"/api/chat/{start['session_id']}"
    c.check(await client.post(f"{chat}/message", json={"content": "hello"}), 201)
    c.check(await client.get(f"{chat}/history", params={"limit": 1}), 200)

    key = {"Idempotency-Key": secrets.token_hex(8)}
    c.check(await client.post(api, json={"title": "once"}, headers=key), 201)
    replayed = await client.post(api, json={"title": "once"}, headers=key)
    c.check(replayed, 201)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    c.check(await client.post(api, json={"title": "twice"}, headers=key), 409)
    c.check(await client.post(api, headers={"Idempotency-Key": ""}), 422)

    hits = c.check(await client.get("/api/search", params={"q": "hello"}), 200)
    assert hits["data"] != []
    c.check(await client.get("/api/search", params={"q": "x", "conversation_id": "no"}), 422)
    exported = c.check(await client.get(f"/api/conversations/{cid}/export"), 200)
    assert [m["role"] for m in exported["messages"]] == ["user", "assistant", "tool"]
    jsonl = f"/api/conversations/{cid}/export?format=jsonl"
    assert [m["seq"] for m in c.check(await client.get(jsonl), 200)] == [1, 2, 3]
    # (A 200 event stream never ends, so only its refusals are checked here.)
    events = f"/api/conversations/{cid}/events"
    c.check(await client.get(events, headers={"Last-Event-ID": "x"}), 422)
    c.check(await client.get(f"{api}/{uuid.uuid4()}/events"), 404)

    c.check(await client.delete(f"{messages}/1"), 204)
    c.check(await client.delete(messages, params={"from_seq": 3}), 200)

    # The errors, each where the document says it can happen.
    c.check(await client.get(api, headers={"Authorization": "Bearer nope"}), 401)
    c.check(await client.get(f"{api}/not-a-uuid"), 404)
    c.check(await client.get(f"{messages}/99"), 404)
    c.check(await client.get(messages, params={"limit": 0}), 422)
    c.check(await client.delete(messages), 422)
    c.check(await client.post(messages, json={"role": "robot", "content": "x"}), 422)
    json_body = {"content-type": "application/json"}
    c.check(await client.post(messages, content=b"{", headers=json_body), 400)
    c.check(await client.post(messages, content=b"{}", headers={"content-type": "text/plain"}), 415)
    c.check(await client.post(messages, content=b" " * 5000, headers=json_body), 413)

    imported = c.check(await client.post(f"{api}/import", json=exported), 201)
    assert imported["message_count"] == 3
    ndjson = {"content-type": "application/x-ndjson"}
    lines = (await client.get(jsonl)).content
    c.check(await client.post(f"{api}/import", content=lines, headers=ndjson), 201)
    c.check(await client.post(f"{api}/import", json={"messages": [{"role": "x"}]}), 422)

    # OpenAI's Conversations API (/v1): its answers and its errors, in OpenAI's body.
    v1 = "/v1/conversations"
    made = c.check(await client.post(v1, json={"items": [{"role": "user", "content": "hi"}]}), 200)
    conversation = f"{v1}/{made['id']}"
    c.check(await client.post(v1), 200)
    c.check(await client.get(conversation), 200)
    c.check(await client.post(conversation, json={"metadata": {"k": "v"}}), 200)
    added = c.check(
        await client.post(
            f"{conversation}/items", json={"items": [{"role": "user", "content": "x"}]}
        ),
        200,
    )
    c.check(await client.get(f"{conversation}/items", params={"limit": 1}), 200)
    item = f"{conversation}/items/{added['data'][0]['id']}"
    c.check(await client.get(item), 200)
    c.check(await client.delete(item), 200)
    c.check(await client.get(item), 404)
    c.check(await client.get(conversation, headers={"Authorization": "Bearer nope"}), 401)
    c.check(await client.post(v1, json={"metadata": {"k": 1}}), 400)
    c.check(await client.post(v1, content=b"{", headers=json_body), 400)
    c.check(await client.post(v1, content=b"{}", headers={"content-type": "text/plain"}), 415)
    c.check(await client.post(v1, content=b" " * 5000, headers=json_body), 413)
    c.check(await client.get(f"{conversation}/items", params={"order": "up"}), 400)
    v1_key = {"Idempotency-Key": secrets.token_hex(8)}
    c.check(await client.post(v1, json={}, headers=v1_key), 200)
    c.check(await client.post(v1, json={"metadata": {"a": "b"}}, headers=v1_key), 409)
    c.check(await client.delete(conversation), 200)

    c.check(await client.get("/healthz"), 200)
    c.check(await client.get("/readyz"), 200)
    c.check(await client.get("/openapi.json"), 200)
    c.check(await client.get("/metrics"), 200)
    c.check(await client.delete(f"{api}/{cid}"), 204)
    c.check(await client.delete("/api/me/data"), 200)

    every = {(path, method) for path, item in c.document["paths"].items() for method in item}
    assert every - c.covered == set(), "operations this test does not exercise"
