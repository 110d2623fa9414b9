"""Service endpoints (http-api.md, Service): no authentication."""

from __future__ import annotations

import httpx
from support.users import User


async def test_healthz_is_200_ok_without_auth(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"status": "ok"}


async def test_readyz_is_200_without_auth_on_the_migrated_database(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text


async def test_service_endpoints_ignore_bad_credentials(client: httpx.AsyncClient) -> None:
    headers = {"Authorization": "Bearer not-a-session", "Cookie": "better-auth.session_token=x"}
    assert (await client.get("/healthz", headers=headers)).status_code == 200
    assert (await client.get("/readyz", headers=headers)).status_code == 200


async def test_openapi_document_is_served_without_auth(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200, response.text
    document = response.json()
    assert str(document["openapi"]).startswith("3.1")


async def test_openapi_document_describes_the_endpoints(client: httpx.AsyncClient) -> None:
    # "the OpenAPI 3.1 document of everything above": at least the endpoints
    # of the sections this suite covers, each with its methods.
    paths = (await client.get("/openapi.json")).json()["paths"]
    expected = {
        "/api/conversations": {"get", "post"},
        "/api/conversations/{id}": {"get", "patch", "delete"},
        "/api/conversations/{id}/messages": {"get", "post", "delete"},
        "/api/conversations/{id}/messages/{seq}": {"get", "delete"},
        "/api/chat/start": {"post"},
        "/api/chat/{session_id}/message": {"post"},
        "/api/chat/{session_id}/history": {"get"},
        "/healthz": {"get"},
        "/readyz": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, (path, sorted(paths))
        assert methods <= set(paths[path]), (path, sorted(paths[path]))


async def test_api_answers_json_with_utf8(client: httpx.AsyncClient, user: User) -> None:
    response = await client.get("/api/conversations", headers=user.headers)
    media_type, _, params = response.headers["content-type"].partition(";")
    assert media_type.strip() == "application/json"
    assert params.strip().lower() in ("", "charset=utf-8")
