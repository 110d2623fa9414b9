"""Authentication (http-api.md): bearer tokens and better-auth's signed cookies,
validated against the session table; everything else is a 401."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac

import httpx
import pytest
from support.app import app_client
from support.contract import assert_error
from support.users import User, make_user

from chatstore.auth import COOKIE_NAMES, cookie_value, new_token, sign_token
from chatstore.config import Settings
from chatstore.store import ChatStore

PLAIN_COOKIE, SECURE_COOKIE = COOKIE_NAMES
PROBE = "/api/conversations"

# Every endpoint of the contract under /api (method, path); {id} is a uuid.
ANY_ID = "00000000-0000-4000-8000-000000000000"
API_ENDPOINTS = [
    ("POST", "/api/conversations"),
    ("GET", "/api/conversations"),
    ("GET", f"/api/conversations/{ANY_ID}"),
    ("PATCH", f"/api/conversations/{ANY_ID}"),
    ("DELETE", f"/api/conversations/{ANY_ID}"),
    ("POST", f"/api/conversations/{ANY_ID}/messages"),
    ("GET", f"/api/conversations/{ANY_ID}/messages"),
    ("DELETE", f"/api/conversations/{ANY_ID}/messages?from_seq=1"),
    ("GET", f"/api/conversations/{ANY_ID}/messages/1"),
    ("DELETE", f"/api/conversations/{ANY_ID}/messages/1"),
    ("POST", "/api/chat/start"),
    ("POST", f"/api/chat/{ANY_ID}/message"),
    ("GET", f"/api/chat/{ANY_ID}/history"),
]


def assert_unauthorized(response: httpx.Response) -> None:
    assert_error(response, 401, "unauthorized")
    assert response.headers.get("www-authenticate") == "Bearer", response.headers


def cookie(name: str, value: str) -> dict[str, str]:
    # A Cookie header, not httpx's per-request cookies= (deprecated).
    return {"Cookie": f"{name}={value}"}


async def fresh_token(store: ChatStore) -> str:
    return (await make_user(store)).token


async def expire(store: ChatStore, token: str) -> None:
    await store.pool.execute(
        """UPDATE "session" SET "expiresAt" = now() - interval '1 minute' WHERE token = $1""",
        token,
    )


# -- 401 ------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), API_ENDPOINTS)
async def test_every_api_endpoint_without_credentials_is_401(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, json={"content": "x"})
    assert_unauthorized(response)


async def test_no_credentials_is_401_with_www_authenticate(client: httpx.AsyncClient) -> None:
    assert_unauthorized(await client.get(PROBE))


async def test_unknown_bearer_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get(PROBE, headers={"Authorization": f"Bearer {new_token()}"})
    assert_unauthorized(response)


async def test_empty_bearer_is_401(client: httpx.AsyncClient) -> None:
    assert_unauthorized(await client.get(PROBE, headers={"Authorization": "Bearer "}))


async def test_expired_session_is_401(client: httpx.AsyncClient, store: ChatStore) -> None:
    token = await fresh_token(store)
    await expire(store, token)  # never used: nothing cached
    assert_unauthorized(await client.get(PROBE, headers={"Authorization": f"Bearer {token}"}))


async def test_expired_session_cookie_is_401(
    client: httpx.AsyncClient, store: ChatStore, settings: Settings
) -> None:
    token = await fresh_token(store)
    await expire(store, token)
    assert settings.auth_secret is not None
    headers = cookie(PLAIN_COOKIE, cookie_value(token, settings.auth_secret))
    assert_unauthorized(await client.get(PROBE, headers=headers))


async def test_session_expired_after_use_is_401_when_not_cached(
    store: ChatStore, settings: Settings
) -> None:
    uncached = dataclasses.replace(settings, auth_cache_seconds=0)
    token = await fresh_token(store)
    headers = {"Authorization": f"Bearer {token}"}
    async with app_client(uncached, store) as client:
        assert (await client.get(PROBE, headers=headers)).status_code == 200
        await expire(store, token)
        assert_unauthorized(await client.get(PROBE, headers=headers))


async def test_deleted_session_is_401_when_not_cached(store: ChatStore, settings: Settings) -> None:
    uncached = dataclasses.replace(settings, auth_cache_seconds=0)
    token = await fresh_token(store)
    headers = {"Authorization": f"Bearer {token}"}
    async with app_client(uncached, store) as client:
        assert (await client.get(PROBE, headers=headers)).status_code == 200
        await store.pool.execute('DELETE FROM "session" WHERE token = $1', token)
        assert_unauthorized(await client.get(PROBE, headers=headers))


async def test_forged_cookie_signature_is_401(
    client: httpx.AsyncClient, user: User, settings: Settings
) -> None:
    # Right shape (44 base64 characters ending in "="), wrong HMAC.
    forged = base64.b64encode(hashlib.sha256(user.token.encode()).digest()).decode()
    assert len(forged) == 44 and forged.endswith("=")
    for name in COOKIE_NAMES:
        response = await client.get(PROBE, headers=cookie(name, f"{user.token}.{forged}"))
        assert_unauthorized(response)


async def test_cookie_signed_with_wrong_secret_is_401(
    client: httpx.AsyncClient, user: User
) -> None:
    value = cookie_value(user.token, "not-the-secret-" + "y" * 20)
    for name in COOKIE_NAMES:
        assert_unauthorized(await client.get(PROBE, headers=cookie(name, value)))


async def test_cookie_without_signature_is_401(client: httpx.AsyncClient, user: User) -> None:
    # A live session's raw token in the cookie: unsigned, so rejected.
    for name in COOKIE_NAMES:
        assert_unauthorized(await client.get(PROBE, headers=cookie(name, user.token)))
        assert_unauthorized(await client.get(PROBE, headers=cookie(name, f"{user.token}.")))


async def test_cookie_signature_of_another_token_is_401(
    client: httpx.AsyncClient, user: User, other_user: User, settings: Settings
) -> None:
    assert settings.auth_secret is not None
    bobs_signature = sign_token(other_user.token, settings.auth_secret).rpartition(".")[2]
    value = f"{user.token}.{bobs_signature}"
    assert_unauthorized(await client.get(PROBE, headers=cookie(PLAIN_COOKIE, value)))


async def test_signed_bearer_with_bad_signature_is_401(
    client: httpx.AsyncClient, user: User
) -> None:
    signature = base64.b64encode(hmac.new(b"wrong", user.token.encode(), "sha256").digest())
    headers = {"Authorization": f"Bearer {user.token}.{signature.decode()}"}
    assert_unauthorized(await client.get(PROBE, headers=headers))


async def test_signed_cookie_of_unknown_token_is_401(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    assert settings.auth_secret is not None
    value = cookie_value(new_token(), settings.auth_secret)
    assert_unauthorized(await client.get(PROBE, headers=cookie(PLAIN_COOKIE, value)))


# -- 200 ------------------------------------------------------------------------


async def test_raw_bearer_token_is_accepted(client: httpx.AsyncClient, user: User) -> None:
    response = await client.get(PROBE, headers={"Authorization": f"Bearer {user.token}"})
    assert response.status_code == 200, response.text
    assert response.json() == {"data": [], "next_cursor": None}


async def test_signed_bearer_token_is_accepted(
    client: httpx.AsyncClient, user: User, settings: Settings
) -> None:
    assert settings.auth_secret is not None
    for credential in (
        sign_token(user.token, settings.auth_secret),
        # better-auth's bearer plugin hands out the URL-encoded form.
        cookie_value(user.token, settings.auth_secret),
    ):
        response = await client.get(PROBE, headers={"Authorization": f"Bearer {credential}"})
        assert response.status_code == 200, (credential, response.text)


@pytest.mark.parametrize("name", COOKIE_NAMES)
async def test_signed_session_cookie_is_accepted(
    client: httpx.AsyncClient, user: User, settings: Settings, name: str
) -> None:
    assert settings.auth_secret is not None
    value = cookie_value(user.token, settings.auth_secret)
    response = await client.get(PROBE, headers=cookie(name, value))
    assert response.status_code == 200, response.text


async def test_caller_is_the_sessions_user(
    client: httpx.AsyncClient, user: User, other_user: User, settings: Settings
) -> None:
    # A conversation made through alice's cookie is alice's, not bob's.
    assert settings.auth_secret is not None
    headers = cookie(PLAIN_COOKIE, cookie_value(user.token, settings.auth_secret))
    created = await client.post("/api/conversations", json={"title": "mine"}, headers=headers)
    assert created.status_code == 201, created.text
    conversation_id = created.json()["id"]
    mine = await client.get(f"/api/conversations/{conversation_id}", headers=user.headers)
    assert mine.status_code == 200
    theirs = await client.get(f"/api/conversations/{conversation_id}", headers=other_user.headers)
    assert_error(theirs, 404, "not_found")
