"""Auth 10: credentials an attacker forges, replays, truncates or inflates.

Against a real ``chatstore serve`` (session cache off, so a session deleted
or expired in the database is refused on the next request), over raw
sockets so that every byte of the ``Authorization`` and ``Cookie`` headers
is the attacker's choice (httpx refuses control characters itself).

Every forged, expired, deleted, truncated or oversized token and cookie
gets ``401`` with ``WWW-Authenticate: Bearer`` and the contract's error body
-- except header bytes that HTTP itself forbids (NUL, and the other control
characters but tab: RFC 9110, section 5.5), which the HTTP parser
(httptools) refuses with ``400`` before the app sees them -- on every endpoint
under /api; the genuine credentials next to them get 200, so the 401s mean
something. The signature check is constant-time by construction:
``verify_signed`` compares with ``hmac.compare_digest`` and nowhere with
``==`` (checked on its syntax tree, not with a stopwatch).
"""

from __future__ import annotations

import ast
import asyncio
import base64
import dataclasses
import datetime as dt
import hmac
import inspect
import json
import secrets
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from support.contract import error_of
from support.rawhttp import RawResponse, read_response, request_head
from support.serve import Server
from support.users import User, make_user

import chatstore.auth
from adversity.hostile_support import no_server_problems, running_server
from chatstore.auth import cookie_value, new_token, sign_token
from chatstore.config import Settings
from chatstore.store import ChatStore

pytestmark = pytest.mark.adversity

REPO = Path(__file__).resolve().parents[2]
DOCUMENT = json.loads((REPO / "openapi.json").read_text())
PLAIN = "better-auth.session_token"
SECURE = "__Secure-better-auth.session_token"
WRONG_SECRET = "not-the-secret-" + "z" * 24


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(database: str, settings: Settings) -> Iterator[Server]:
    with running_server(database, settings.auth_secret) as served:
        yield served


@pytest.fixture(autouse=True)
def clean_server_log(server: Server) -> Iterator[None]:
    with no_server_problems(server):
        yield


@pytest.fixture(scope="module")
def secret(settings: Settings) -> str:
    assert settings.auth_secret is not None
    return settings.auth_secret


@pytest.fixture(scope="module")
async def user(store: ChatStore) -> User:
    return await make_user(store)


@pytest.fixture(scope="module")
async def other_user(store: ChatStore) -> User:
    return await make_user(store)


async def _expire(store: ChatStore, token: str) -> None:
    async with store.pool.acquire() as connection:
        await connection.execute(
            'UPDATE "session" SET "expiresAt" = now() - interval \'1 second\' WHERE token = $1',
            token,
        )


async def _delete_session(store: ChatStore, token: str) -> None:
    async with store.pool.acquire() as connection:
        await connection.execute('DELETE FROM "session" WHERE token = $1', token)


async def _delete_user(store: ChatStore, user_id: str) -> None:
    async with store.pool.acquire() as connection:
        await connection.execute('DELETE FROM "user" WHERE id = $1', user_id)


async def get(server: Server, path: str, headers: list[bytes]) -> RawResponse:
    """GET ``path`` with these raw header lines, on a fresh connection."""
    head = request_head("GET", path, server.port, {})[:-2] + b"".join(h + b"\r\n" for h in headers)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(head + b"\r\n")
        await writer.drain()
        return await asyncio.wait_for(read_response(reader), 10)
    finally:
        writer.close()


def bearer(value: str | bytes) -> bytes:
    raw = value if isinstance(value, bytes) else value.encode()
    return b"Authorization: Bearer " + raw


def cookie(name: str, value: str | bytes) -> bytes:
    raw = value if isinstance(value, bytes) else value.encode()
    return b"Cookie: " + name.encode() + b"=" + raw


PROBE = "/api/conversations"


def assert_401(response: RawResponse, what: str) -> None:
    assert response.status == 401, f"{what}: {response}"
    assert response.headers.get("www-authenticate") == "Bearer", f"{what}: {response.headers}"
    error = error_of(response.status, response.headers, response.body, what)
    assert error["code"] == "unauthorized", f"{what}: {error}"


# -- the attacks ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Attack:
    """Header lines to send, built from a live user, the secret, and others."""

    build: Callable[[User, User, str], list[bytes]]
    # HTTP itself forbids the bytes: the parser (httptools) answers 400 first.
    forbidden_bytes: bool = False


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _signature(user: User, secret: str) -> str:
    return sign_token(user.token, secret).rpartition(".")[2]


ATTACKS: dict[str, Attack] = {
    # -- bearer: tokens that name no live session ----------------------------------
    "unknown_token": Attack(lambda a, b, s: [bearer(new_token())]),
    "truncated_token_by_one": Attack(lambda a, b, s: [bearer(a.token[:-1])]),
    "truncated_token_to_half": Attack(lambda a, b, s: [bearer(a.token[:16])]),
    "token_with_one_more_character": Attack(lambda a, b, s: [bearer(a.token + "x")]),
    "token_case_flipped": Attack(lambda a, b, s: [bearer(a.token.swapcase())]),
    "token_of_1025_characters": Attack(lambda a, b, s: [bearer("A" * 1025)]),
    "token_of_10_kib": Attack(lambda a, b, s: [bearer("A" * 10_240)]),
    "token_of_10_kib_with_live_prefix": Attack(lambda a, b, s: [bearer(a.token + "A" * 10_240)]),
    "empty_bearer": Attack(lambda a, b, s: [b"Authorization: Bearer "]),
    "bare_scheme": Attack(lambda a, b, s: [b"Authorization: Bearer"]),
    "spaces_only": Attack(lambda a, b, s: [b"Authorization: Bearer      "]),
    "space_inside_token": Attack(lambda a, b, s: [bearer(a.token[:10] + " " + a.token[10:])]),
    "tab_inside_token": Attack(lambda a, b, s: [bearer(a.token[:10] + "\t" + a.token[10:])]),
    # Control characters: h11 passed them on (a 401 from the app); httptools,
    # as RFC 9110 allows, refuses the request (chatstore/http/head_limit.py).
    "control_character": Attack(
        lambda a, b, s: [bearer(a.token[:10] + "\x01" + a.token[10:])], forbidden_bytes=True
    ),
    "delete_character": Attack(lambda a, b, s: [bearer(a.token + "\x7f")], forbidden_bytes=True),
    "nul_byte": Attack(lambda a, b, s: [bearer(a.token + "\x00")], forbidden_bytes=True),
    "unicode_garbage": Attack(lambda a, b, s: [bearer("✓☃🔑" * 8)]),
    "latin1_garbage": Attack(lambda a, b, s: [bearer(b"\xe9\xff" * 16)]),
    "sql_injection": Attack(lambda a, b, s: [bearer("' OR '1'='1")]),
    "sql_injection_no_spaces": Attack(lambda a, b, s: [bearer("'OR'1'='1'--")]),
    "wildcard": Attack(lambda a, b, s: [bearer("%")]),
    "other_scheme_basic": Attack(
        lambda a, b, s: [b"Authorization: Basic " + _b64(b"a:b").encode()]
    ),
    "other_scheme_with_live_token": Attack(
        lambda a, b, s: [b"Authorization: Token " + a.token.encode()]
    ),
    "token_with_trailing_dot": Attack(lambda a, b, s: [bearer(a.token + ".")]),
    # -- bearer: the signed form ---------------------------------------------------
    "forged_signature": Attack(
        lambda a, b, s: [bearer(f"{a.token}.{_b64(secrets.token_bytes(32))}")]
    ),
    "wrong_secret": Attack(lambda a, b, s: [bearer(sign_token(a.token, WRONG_SECRET))]),
    "wrong_secret_url_encoded": Attack(
        lambda a, b, s: [bearer(cookie_value(a.token, WRONG_SECRET))]
    ),
    "truncated_signature": Attack(lambda a, b, s: [bearer(sign_token(a.token, s)[:-1])]),
    "truncated_signature_repadded": Attack(
        lambda a, b, s: [bearer(sign_token(a.token, s)[:-2] + "=")]
    ),
    "signature_without_padding": Attack(
        lambda a, b, s: [bearer(sign_token(a.token, s).rstrip("="))]
    ),
    "signature_bit_flipped": Attack(
        lambda a, b, s: [bearer(f"{a.token}.{_flip(_signature(a, s))}")]
    ),
    "signature_of_another_user": Attack(lambda a, b, s: [bearer(f"{a.token}.{_signature(b, s)}")]),
    "signature_of_empty_token": Attack(lambda a, b, s: [bearer(sign_token("x", s)[1:])]),
    "signature_twice": Attack(
        lambda a, b, s: [bearer(f"{sign_token(a.token, s)}.{_signature(a, s)}")]
    ),
    # -- cookies ---------------------------------------------------------------------
    "cookie_unsigned_live_token": Attack(lambda a, b, s: [cookie(PLAIN, a.token)]),
    "cookie_unsigned_live_token_secure": Attack(lambda a, b, s: [cookie(SECURE, a.token)]),
    "cookie_forged_signature": Attack(
        lambda a, b, s: [cookie(PLAIN, quote(f"{a.token}.{_b64(secrets.token_bytes(32))}"))]
    ),
    "cookie_wrong_secret": Attack(
        lambda a, b, s: [cookie(PLAIN, cookie_value(a.token, WRONG_SECRET))]
    ),
    "cookie_signed_unknown_token": Attack(
        lambda a, b, s: [cookie(PLAIN, cookie_value(new_token(), s))]
    ),
    "cookie_truncated_signature": Attack(
        lambda a, b, s: [cookie(PLAIN, cookie_value(a.token, s)[:-3])]
    ),
    "cookie_truncated_token": Attack(
        lambda a, b, s: [cookie(PLAIN, quote(f"{a.token[:-1]}.{_signature(a, s)}"))]
    ),
    "cookie_of_10_kib": Attack(lambda a, b, s: [cookie(PLAIN, "A" * 10_240)]),
    "cookie_of_10_kib_signed": Attack(
        lambda a, b, s: [cookie(PLAIN, cookie_value("A" * 10_240, s))]
    ),
    "cookie_bad_percent_encoding": Attack(lambda a, b, s: [cookie(PLAIN, "%ZZ%ff%fe.abc")]),
    "cookie_percent_encoded_invalid_utf8": Attack(
        lambda a, b, s: [cookie(PLAIN, quote(a.token) + "%ff." + quote(_signature(a, s)))]
    ),
    "cookie_empty": Attack(lambda a, b, s: [cookie(PLAIN, "")]),
    "cookie_unicode": Attack(lambda a, b, s: [cookie(PLAIN, "✓" * 20)]),
    # The __Secure- cookie is the only one judged when present: a valid plain
    # one does not rescue a forged secure one.
    "cookie_forged_secure_beside_valid_plain": Attack(
        lambda a, b, s: [
            b"Cookie: "
            + f"{SECURE}={cookie_value(a.token, WRONG_SECRET)}; "
            f"{PLAIN}={cookie_value(a.token, s)}".encode()
        ]
    ),
    # An Authorization header is the credential whenever present: a bad one
    # is a failure, never a reason to fall back to a good cookie.
    "bad_bearer_beside_valid_cookie": Attack(
        lambda a, b, s: [bearer(new_token()), cookie(PLAIN, cookie_value(a.token, s))]
    ),
    "forged_bearer_beside_valid_cookie": Attack(
        lambda a, b, s: [
            bearer(sign_token(a.token, WRONG_SECRET)),
            cookie(PLAIN, cookie_value(a.token, s)),
        ]
    ),
}


def _flip(signature: str) -> str:
    raw = bytearray(base64.b64decode(signature))
    raw[7] ^= 0x01
    return _b64(bytes(raw))


API_GETS = sorted(
    path.replace("{id}", str(uuid.uuid4()))
    .replace("{session_id}", str(uuid.uuid4()))
    .replace("{seq}", "1")
    for path, item in DOCUMENT["paths"].items()
    if path.startswith("/api/") and "get" in item
)


@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_attack_is_401(
    server: Server, user: User, other_user: User, secret: str, name: str
) -> None:
    attack = ATTACKS[name]
    headers = attack.build(user, other_user, secret)
    response = await get(server, PROBE, headers)
    if attack.forbidden_bytes:
        assert response.status == 400, f"{name}: {response}"
        return
    assert_401(response, name)


@pytest.mark.parametrize("path", API_GETS)
async def test_forged_credentials_are_401_on_every_api_get(
    server: Server, user: User, other_user: User, secret: str, path: str
) -> None:
    for name in ("forged_signature", "cookie_wrong_secret", "token_of_10_kib", "unknown_token"):
        assert_401(
            await get(server, path, ATTACKS[name].build(user, other_user, secret)), f"{name} {path}"
        )


async def test_forged_credentials_are_401_before_any_body_is_read(
    server: Server, user: User, other_user: User, secret: str
) -> None:
    """An unauthenticated upload is refused before its body: a forged
    session cannot make the server read (or buffer) a byte of it."""
    for name in ("forged_signature", "cookie_forged_signature", "unknown_token"):
        head = request_head(
            "POST",
            "/api/conversations",
            server.port,
            {"content-type": "application/json", "content-length": str(8 * 1024 * 1024)},
        )
        head = head[:-2] + b"".join(
            h + b"\r\n" for h in ATTACKS[name].build(user, other_user, secret)
        )
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            writer.write(head + b"\r\n")
            await writer.drain()
            response = await asyncio.wait_for(read_response(reader), 5)
        finally:
            writer.close()
        assert_401(response, name)


# -- genuine credentials, for contrast -----------------------------------------------------


GENUINE: dict[str, Callable[[User, str], list[bytes]]] = {
    "raw_bearer": lambda a, s: [bearer(a.token)],
    "lowercase_scheme": lambda a, s: [b"Authorization: bearer " + a.token.encode()],
    "signed_bearer": lambda a, s: [bearer(sign_token(a.token, s))],
    "signed_bearer_url_encoded": lambda a, s: [bearer(cookie_value(a.token, s))],
    "cookie": lambda a, s: [cookie(PLAIN, cookie_value(a.token, s))],
    "secure_cookie": lambda a, s: [cookie(SECURE, cookie_value(a.token, s))],
    "quoted_cookie": lambda a, s: [cookie(PLAIN, '"' + cookie_value(a.token, s) + '"')],
    "cookie_among_others": lambda a, s: [
        b"Cookie: theme=dark; " + f"{PLAIN}={cookie_value(a.token, s)}; lang=en".encode()
    ],
}


@pytest.mark.parametrize("name", sorted(GENUINE))
async def test_genuine_credentials_are_accepted(
    server: Server, user: User, secret: str, name: str
) -> None:
    response = await get(server, PROBE, GENUINE[name](user, secret))
    assert response.status == 200, f"{name}: {response}"


# -- sessions that end -----------------------------------------------------------------------

Ending = Callable[[ChatStore, str, str], Awaitable[None]]

ENDINGS: dict[str, Ending] = {
    "expired": lambda store, user_id, token: _expire(store, token),
    "deleted_session": lambda store, user_id, token: _delete_session(store, token),
    "deleted_user": lambda store, user_id, token: _delete_user(store, user_id),
}


@pytest.mark.parametrize("credential", ["bearer", "signed_bearer", "cookie"])
@pytest.mark.parametrize("ending", sorted(ENDINGS))
async def test_a_session_that_ended_is_401_at_once(
    server: Server, store: ChatStore, secret: str, ending: str, credential: str
) -> None:
    """Works, then the session expires / is deleted (logout) / its user is
    deleted in the database: the very next request is 401 (cache off)."""
    user = await make_user(store)
    user_id, token = user.user_id, user.token
    line = {
        "bearer": bearer(token),
        "signed_bearer": bearer(sign_token(token, secret)),
        "cookie": cookie(PLAIN, cookie_value(token, secret)),
    }[credential]
    assert (await get(server, PROBE, [line])).status == 200
    await ENDINGS[ending](store, user_id, token)
    assert_401(await get(server, PROBE, [line]), f"{ending} {credential}")


async def test_the_session_cache_never_outlives_the_session(
    database: str, secret: str, store: ChatStore
) -> None:
    """With the session cache on (60 s here, 5 s by default), a session that
    expires while cached is refused from its expiry on, not a minute later."""
    with running_server(database, secret, CHATSTORE_AUTH_CACHE_SECONDS="60") as cached:
        token = (await make_user(store, ttl=dt.timedelta(seconds=2))).token
        expires = time.monotonic() + 2
        assert (await get(cached, PROBE, [bearer(token)])).status == 200  # now cached
        await asyncio.sleep(expires - time.monotonic() + 0.3)
        assert_401(await get(cached, PROBE, [bearer(token)]), "expired while cached")


# -- constant time, by construction --------------------------------------------------------


def _function_tree(function: Callable[..., object]) -> ast.FunctionDef:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    node = tree.body[0]
    assert isinstance(node, ast.FunctionDef)
    return node


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def constant_time_violations(function: Callable[..., object]) -> list[str]:
    """How ``function`` could leak, through timing, how much of a presented
    ``signature`` matches the ``expected`` one; empty if it cannot."""
    tree = _function_tree(function)
    secret_derived = {"expected"}
    presented = {"signature"}
    problems: list[str] = []

    digests = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "compare_digest"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "hmac"
    ]
    if len(digests) != 1:
        problems.append(f"{len(digests)} calls of hmac.compare_digest")
    else:
        compared = set().union(*(_names(arg) for arg in digests[0].args))
        if not (secret_derived <= compared and presented <= compared):
            problems.append(f"compare_digest on something else: {ast.unparse(digests[0])}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                names = _names(operand)
                # len(signature) is the public shape, not the content.
                is_length = (
                    isinstance(operand, ast.Call)
                    and isinstance(operand.func, ast.Name)
                    and operand.func.id == "len"
                )
                if names & secret_derived or (names & presented and not is_length):
                    problems.append(f"compared directly: {ast.unparse(node)}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = _names(node.func.value)
            judged = target & (secret_derived | presented)
            prefix_test = node.func.attr in ("startswith", "find", "index", "count", "__eq__")
            # endswith("=") on the presented signature only: the padding
            # character, the same in every signature.
            padding = (
                node.func.attr == "endswith"
                and not target & secret_derived
                and [ast.literal_eval(a) for a in node.args] == ["="]
            )
            if judged and (prefix_test or (node.func.attr == "endswith" and not padding)):
                problems.append(f"compared by {node.func.attr}: {ast.unparse(node)}")
    return problems


def test_signature_is_compared_in_constant_time() -> None:
    """``verify_signed`` compares the expected and the presented signature
    with ``hmac.compare_digest`` (its time does not depend on where they
    differ) and never with ``==``, ``!=``, ``startswith``...: the only other
    checks on the presented signature are its length and its last
    character, the public shape of every signature (44 characters ending
    in "="), made before any HMAC is computed."""
    assert constant_time_violations(chatstore.auth.verify_signed) == []
    # The expected signature is an HMAC-SHA256 of the token under the secret.
    source = ast.unparse(_function_tree(chatstore.auth._signature))
    assert "hmac.new(" in source and "hashlib.sha256" in source, source


def _leaky_verify(value: str, secret: str) -> str | None:
    token, _, signature = value.rpartition(".")
    expected = chatstore.auth._signature(token, secret)
    if expected == signature:
        return token
    return None


def _leaky_prefix_verify(value: str, secret: str) -> str | None:
    token, _, signature = value.rpartition(".")
    expected = chatstore.auth._signature(token, secret)
    if hmac.compare_digest(expected, signature) and expected.startswith(signature):
        return token
    return None


def test_the_constant_time_check_is_not_vacuous() -> None:
    """The check flags verifiers that compare with ``==`` or a prefix test."""
    assert constant_time_violations(_leaky_verify)
    assert constant_time_violations(_leaky_prefix_verify)


def test_no_other_code_compares_signatures() -> None:
    """compare_digest is the only way a signature is judged in chatstore."""
    package = Path(chatstore.auth.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(
                ("signature" in name.lower() and not name.isupper()) or name == "expected"
                for operand in [node.left, *node.comparators]
                for name in _names(operand)
                if not (
                    isinstance(operand, ast.Call)
                    and isinstance(operand.func, ast.Name)
                    and operand.func.id == "len"
                )
            ):
                offenders.append(f"{path.relative_to(package)}:{node.lineno} {ast.unparse(node)}")
    assert not offenders, offenders
