"""Hostile input 8: bodies and connections an attacker (or a broken client) sends.

All against a real ``chatstore serve`` (uvicorn, loopback, its own port,
CHATSTORE_BODY_TIMEOUT_SECONDS=3), over real sockets:

* malformed bodies on every endpoint that takes one -- invalid UTF-8,
  U+0000, lone surrogates, 10,000- and 100,000-deep nesting, huge numbers,
  duplicate keys, NaN/Infinity, a BOM, trailing garbage, wrong media types
  and charsets -- each a 4xx with the contract's error body, never a 5xx,
  and nothing stored;
* HTTP-level garbage (bad Content-Length, broken chunked encoding, a client
  that hangs up mid-body): a 4xx or a closed connection, never a 5xx and
  never a traceback in the server's log;
* 100 MiB bodies, with and without Content-Length: refused (413) while
  streaming, the server's resident memory (VmRSS) flat;
* slowloris: a body dripped a byte every 0.5 s gets 408 after the body
  timeout while other requests are served on time, also with 50 such
  clients at once; and clients dripping their *headers*, which uvicorn does
  not bound (no header timeout: see the test), do not stop anyone else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from support.contract import assert_error, error_of
from support.rawhttp import RawResponse, read_response, request_head
from support.requests import seed_messages
from support.serve import Server
from support.users import User, make_user

from adversity.hostile_support import (
    BODY_TIMEOUT_SECONDS,
    RssSampler,
    no_server_problems,
    running_server,
)
from chatstore.config import Settings
from chatstore.store import ChatStore

pytestmark = pytest.mark.adversity

MIB = 1024 * 1024
BIG_BODY = 100 * MIB
# "Memory flat": the server may buffer up to its 8 MiB cap, never the upload.
MAX_RSS_GROWTH_KIB = 20 * 1024
DRIP_EVERY = 0.5
SLOW_CLIENTS = 50
# A normal request while slow clients hang on must still be answered this fast.
NORMAL_LATENCY_LIMIT = 1.0


# -- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(database: str, settings: Settings) -> Iterator[Server]:
    with running_server(database, settings.auth_secret) as served:
        yield served


@pytest.fixture(scope="module")
async def user(store: ChatStore) -> User:
    return await make_user(store)


@pytest.fixture(scope="module")
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as opened:
        yield opened


# Tests that check the server's log themselves (and say what they expected).
CHECK_THEIR_OWN_LOG = {
    "test_http_garbage_is_refused_without_a_server_error",
    "test_client_hanging_up_mid_body_is_not_a_server_error",
}


@pytest.fixture(autouse=True)
def clean_server_log(request: pytest.FixtureRequest, server: Server) -> Iterator[None]:
    """No test may leave a traceback in the server's log."""
    if request.node.originalname in CHECK_THEIR_OWN_LOG:
        yield
        return
    with no_server_problems(server):
        yield


@dataclasses.dataclass(frozen=True)
class Target:
    """An endpoint that takes a JSON body, and where to put hostile values."""

    name: str
    method: str
    path: str
    # Whether the contract allows no body at all ({} is then assumed).
    empty_ok: bool
    # A valid body with a raw JSON value spliced in where a string goes.
    string_slot: Callable[[bytes], bytes]
    # ... where a metadata object goes.
    metadata_slot: Callable[[bytes], bytes]
    # ... where an integer goes (a string slot where the endpoint has none).
    integer_slot: Callable[[bytes], bytes]
    # The same key twice.
    duplicate_keys: bytes
    has_integer: bool = False

    @property
    def valid(self) -> bytes:
        return self.string_slot(b'"fine"')


def _conversation_body(value: bytes) -> bytes:
    return b'{"title": ' + value + b"}"


def _message_body(value: bytes) -> bytes:
    return b'{"role": "user", "content": ' + value + b"}"


def _chat_body(value: bytes) -> bytes:
    return b'{"content": ' + value + b"}"


def targets(conversation_id: str) -> dict[str, Target]:
    conversation = Target(
        "create_conversation",
        "POST",
        "/api/conversations",
        True,
        _conversation_body,
        lambda m: b'{"metadata": ' + m + b"}",
        _conversation_body,
        b'{"title": "a", "title": "b"}',
    )
    return {
        t.name: t
        for t in [
            conversation,
            dataclasses.replace(
                conversation,
                name="update_conversation",
                method="PATCH",
                path=f"/api/conversations/{conversation_id}",
                empty_ok=False,
            ),
            dataclasses.replace(conversation, name="chat_start", path="/api/chat/start"),
            Target(
                "append_message",
                "POST",
                f"/api/conversations/{conversation_id}/messages",
                False,
                _message_body,
                lambda m: b'{"role": "user", "content": "x", "metadata": ' + m + b"}",
                lambda n: (
                    b'{"messages": [{"role": "user", "content": "x"}], '
                    b'"expected_last_seq": ' + n + b"}"
                ),
                b'{"role": "user", "role": "tool", "content": "x"}',
                has_integer=True,
            ),
            Target(
                "chat_message",
                "POST",
                f"/api/chat/{conversation_id}/message",
                False,
                _chat_body,
                lambda m: b'{"content": "x", "metadata": ' + m + b"}",
                _chat_body,
                b'{"content": "a", "content": "b"}',
            ),
        ]
    }


TARGET_NAMES = [
    "create_conversation",
    "update_conversation",
    "append_message",
    "chat_start",
    "chat_message",
]


@dataclasses.dataclass(frozen=True)
class Hostile:
    """A hostile body for a target, and what the contract says it gets."""

    body: Callable[[Target], bytes]
    status: int
    code: str
    content_type: str | None = "application/json"


def _nested(depth: int, open_: bytes = b"[", close: bytes = b"]", inner: bytes = b"") -> bytes:
    return open_ * depth + inner + close * depth


INVALID = (400, "invalid_json")
VALIDATION = (422, "validation_error")
MEDIA = (415, "unsupported_media_type")


def hostile(
    body: Callable[[Target], bytes], expected: tuple[int, str], content_type: str | None = None
) -> Hostile:
    return Hostile(body, expected[0], expected[1], content_type or "application/json")


HOSTILE: dict[str, Hostile] = {
    # -- not UTF-8 ---------------------------------------------------------------
    "invalid_utf8": hostile(lambda t: t.string_slot(b'"\xff\xfe"'), INVALID),
    "overlong_utf8_slash": hostile(lambda t: t.string_slot(b'"\xc0\xaf"'), INVALID),
    "utf8_encoded_surrogate": hostile(lambda t: t.string_slot(b'"\xed\xa0\x80"'), INVALID),
    "truncated_utf8_sequence": hostile(lambda t: t.string_slot(b'"\xe2\x82"'), INVALID),
    "latin1_text": hostile(lambda t: t.string_slot(b'"caf\xe9"'), INVALID),
    "utf16_body": hostile(lambda t: t.valid.decode().encode("utf-16"), INVALID),
    "bom_prefix": hostile(lambda t: b"\xef\xbb\xbf" + t.valid, INVALID),
    # -- U+0000 and surrogates ---------------------------------------------------
    "nul_escape": hostile(lambda t: t.string_slot(b'"a\\u0000b"'), VALIDATION),
    "raw_nul_byte_in_string": hostile(lambda t: t.string_slot(b'"a\x00b"'), INVALID),
    "raw_control_character": hostile(lambda t: t.string_slot(b'"a\x01b"'), INVALID),
    "lone_high_surrogate": hostile(lambda t: t.string_slot(b'"\\ud800"'), VALIDATION),
    "lone_low_surrogate": hostile(lambda t: t.string_slot(b'"x\\udfff"'), VALIDATION),
    "reversed_surrogate_pair": hostile(lambda t: t.string_slot(b'"\\udc00\\ud800"'), VALIDATION),
    "metadata_key_nul": hostile(lambda t: t.metadata_slot(b'{"a\\u0000": "x"}'), VALIDATION),
    "metadata_value_surrogate": hostile(lambda t: t.metadata_slot(b'{"k": "\\ud800"}'), VALIDATION),
    # -- nesting -------------------------------------------------------------------
    "nested_10000_arrays_top_level": hostile(lambda t: _nested(10_000), INVALID),
    "nested_10000_arrays": hostile(lambda t: t.string_slot(_nested(10_000)), INVALID),
    "nested_100000_objects": hostile(
        lambda t: t.string_slot(_nested(100_000, b'{"a":', b"}", b"1")), INVALID
    ),
    "nested_900_in_metadata": hostile(lambda t: t.metadata_slot(_nested(900)), VALIDATION),
    # -- numbers -------------------------------------------------------------------
    "float_1e400": hostile(lambda t: t.integer_slot(b"1e400"), VALIDATION),
    "float_minus_1e400": hostile(lambda t: t.integer_slot(b"-1e400"), VALIDATION),
    "float_1e_minus_400": hostile(lambda t: t.integer_slot(b"1e-400"), VALIDATION),
    "minus_zero_float": hostile(lambda t: t.integer_slot(b"-0.0"), VALIDATION),
    "integral_float": hostile(lambda t: t.integer_slot(b"1.0"), VALIDATION),
    "integer_5000_digits": hostile(lambda t: t.integer_slot(b"9" * 5000), INVALID),
    "integer_4000_digits": hostile(lambda t: t.integer_slot(b"9" * 4000), VALIDATION),
    "integer_2_pow_63": hostile(lambda t: t.integer_slot(b"9223372036854775808"), VALIDATION),
    "integer_negative": hostile(lambda t: t.integer_slot(b"-1"), VALIDATION),
    # Where the target has no integer, its string slot gets a list instead.
    "integer_as_string": hostile(
        lambda t: t.integer_slot(b'"1"') if t.has_integer else t.string_slot(b'["1"]'), VALIDATION
    ),
    "integer_as_bool": hostile(lambda t: t.integer_slot(b"true"), VALIDATION),
    "nan": hostile(lambda t: t.integer_slot(b"NaN"), INVALID),
    "infinity": hostile(lambda t: t.integer_slot(b"Infinity"), INVALID),
    "minus_infinity": hostile(lambda t: t.integer_slot(b"-Infinity"), INVALID),
    # -- structure ---------------------------------------------------------------
    "duplicate_keys": hostile(lambda t: t.duplicate_keys, INVALID),
    "duplicate_metadata_keys": hostile(lambda t: t.metadata_slot(b'{"k": "a", "k": "b"}'), INVALID),
    "trailing_garbage": hostile(lambda t: t.valid + b" xyz", INVALID),
    "two_documents": hostile(lambda t: t.valid + t.valid, INVALID),
    "trailing_nul_byte": hostile(lambda t: t.valid + b"\x00", INVALID),
    "truncated_document": hostile(lambda t: t.valid[:-1], INVALID),
    "single_quotes": hostile(lambda t: t.valid.replace(b'"', b"'"), INVALID),
    "comment": hostile(lambda t: t.valid[:-1] + b" /* hi */}", INVALID),
    # Not JSON, and not the empty body the contract allows on creates.
    "whitespace_only": hostile(lambda t: b" \t\r\n", INVALID),
    "top_level_array": hostile(lambda t: b"[" + t.valid + b"]", VALIDATION),
    "top_level_string": hostile(lambda t: b'"hello"', VALIDATION),
    "top_level_number": hostile(lambda t: b"1", VALIDATION),
    "top_level_null": hostile(lambda t: b"null", VALIDATION),
    "top_level_true": hostile(lambda t: b"true", VALIDATION),
    "unknown_field": hostile(lambda t: t.valid[:-1] + b', "is_admin": true}', VALIDATION),
    "metadata_10000_keys": hostile(
        lambda t: t.metadata_slot(json.dumps({f"k{i}": "v" for i in range(10_000)}).encode()),
        VALIDATION,
    ),
    "string_1000001_chars": hostile(
        lambda t: t.string_slot(b'"' + b"x" * 1_000_001 + b'"'), VALIDATION
    ),
    "body_over_8_mib": Hostile(
        lambda t: t.string_slot(b'"' + b"x" * (8 * MIB) + b'"'), 413, "payload_too_large"
    ),
    # -- media types -------------------------------------------------------------
    "no_content_type": Hostile(lambda t: t.valid, *MEDIA, content_type=None),
    "text_plain": hostile(lambda t: t.valid, MEDIA, "text/plain"),
    "charset_latin1": hostile(lambda t: t.valid, MEDIA, "application/json; charset=latin-1"),
    "charset_utf16": hostile(lambda t: t.valid, MEDIA, "application/json; charset=utf-16"),
    "form_urlencoded": hostile(lambda t: b"title=x", MEDIA, "application/x-www-form-urlencoded"),
    "json_lookalike": hostile(lambda t: t.valid, MEDIA, "application/jsonx"),
}


@pytest.fixture(scope="module")
async def victim(client: httpx.AsyncClient, user: User) -> dict[str, Any]:
    """The caller's conversation the hostile bodies aim at, with a history."""
    created = await client.post(
        "/api/conversations", json={"title": "victim"}, headers=user.headers
    )
    assert created.status_code == 201, created.text
    conversation = created.json()
    appended = await client.post(
        f"/api/conversations/{conversation['id']}/messages",
        json={"messages": seed_messages("victim")},
        headers=user.headers,
    )
    assert appended.status_code == 201, appended.text
    return {"id": conversation["id"], "caller": user, "before": await _snapshot(client, user)}


async def _snapshot(client: httpx.AsyncClient, user: User) -> list[Any]:
    """Everything the caller has: conversations and all their messages."""
    listed = await client.get("/api/conversations", params={"limit": 100}, headers=user.headers)
    assert listed.status_code == 200, listed.text
    snapshot: list[Any] = []
    for conversation in listed.json()["data"]:
        messages = await client.get(
            f"/api/conversations/{conversation['id']}/messages",
            params={"limit": 1000},
            headers=user.headers,
        )
        assert messages.status_code == 200, messages.text
        snapshot.append([conversation, messages.json()])
    return snapshot


# -- malformed bodies --------------------------------------------------------------


@pytest.mark.parametrize("body_name", sorted(HOSTILE))
@pytest.mark.parametrize("target_name", TARGET_NAMES)
async def test_hostile_body_is_4xx_with_the_error_body(
    client: httpx.AsyncClient,
    user: User,
    victim: dict[str, Any],
    target_name: str,
    body_name: str,
) -> None:
    target = targets(victim["id"])[target_name]
    case = HOSTILE[body_name]
    headers = dict(user.headers)
    if case.content_type is not None:
        headers["content-type"] = case.content_type
    response = await client.request(
        target.method, target.path, content=case.body(target), headers=headers
    )
    error = assert_error(response)
    assert (response.status_code, error["code"]) == (case.status, case.code), (
        f"{target.method} {target.path} with {body_name}: "
        f"{response.status_code} {response.text[:300]}"
    )


@pytest.mark.parametrize("target_name", TARGET_NAMES)
async def test_empty_body_is_allowed_only_where_the_contract_says(
    client: httpx.AsyncClient, store: ChatStore, victim: dict[str, Any], target_name: str
) -> None:
    target = targets(victim["id"])[target_name]
    if target.empty_ok:
        # It creates something: as another user, so the caller's data stays put.
        bystander = await make_user(store)
        headers = {**bystander.headers, "content-type": "application/json"}
        response = await client.request(target.method, target.path, content=b"", headers=headers)
        assert response.status_code == 201, response.text
        return
    headers = {**victim["caller"].headers, "content-type": "application/json"}
    response = await client.request(target.method, target.path, content=b"", headers=headers)
    error = assert_error(response, 400)
    assert error["code"] == "invalid_json"


async def test_minus_zero_is_the_integer_zero(
    client: httpx.AsyncClient, user: User, victim: dict[str, Any]
) -> None:
    """JSON ``-0`` is an integer, zero: ``expected_last_seq: -0`` on a
    conversation that has messages is a seq conflict, and stores nothing."""
    target = targets(victim["id"])["append_message"]
    response = await client.post(
        target.path,
        content=target.integer_slot(b"-0"),
        headers={**user.headers, "content-type": "application/json"},
    )
    error = assert_error(response, 409)
    assert error["code"] == "seq_conflict"


IDEMPOTENCY_KEYS: dict[str, bytes] = {
    "empty": b"",
    "256_characters": b"k" * 256,
    "delete_character": b"key\x7f",
    "tab_inside": b"a\tb",
    "utf8_bytes": "ключ".encode(),
    "latin1_byte": b"caf\xe9",
    "nul_byte": b"a\x00b",
    "1000_characters": b"k" * 1000,
}


@pytest.mark.parametrize("name", sorted(IDEMPOTENCY_KEYS))
async def test_hostile_idempotency_key_is_4xx(
    server: Server, user: User, victim: dict[str, Any], name: str
) -> None:
    """Sent raw: httpx refuses most of these header values itself."""
    body = b'{"title": "keyed"}'
    head = request_head(
        "POST",
        "/api/conversations",
        server.port,
        {**user.json_headers(), "content-length": str(len(body))},
    )
    head = head[:-2] + b"Idempotency-Key: " + IDEMPOTENCY_KEYS[name] + b"\r\n\r\n"
    response = await _exchange(server, head + body)
    assert 400 <= response.status < 500, response
    if response.headers.get("content-type", "").startswith("application/json"):
        error = error_of(response.status, response.headers, response.body, name)
        assert error["code"] == "validation_error", response
    else:
        # Refused by uvicorn's HTTP parser before the app saw it.
        assert response.status == 400, response


# -- HTTP-level garbage ----------------------------------------------------------------


async def _exchange(server: Server, data: bytes) -> RawResponse:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(read_response(reader), 10)
    finally:
        writer.close()


def _post_head(server: Server, user: User, **extra: str) -> bytes:
    return request_head("POST", "/api/conversations", server.port, {**user.json_headers(), **extra})


PROTOCOL_GARBAGE: dict[str, Callable[[bytes], bytes]] = {
    "content_length_not_a_number": lambda h: h[:-2] + b"Content-Length: abc\r\n\r\n{}",
    "content_length_negative": lambda h: h[:-2] + b"Content-Length: -1\r\n\r\n{}",
    "content_length_absurd": lambda h: h[:-2] + b"Content-Length: " + b"9" * 30 + b"\r\n\r\n{}",
    "content_length_twice_differing": lambda h: (
        h[:-2] + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    ),
    "chunk_size_not_hex": lambda h: (
        h[:-2] + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
    ),
    "chunk_longer_than_declared": lambda h: (
        h[:-2] + b"Transfer-Encoding: chunked\r\n\r\n1\r\n{}\r\n0\r\n\r\n"
    ),
    "transfer_encoding_unknown": lambda h: h[:-2] + b"Transfer-Encoding: gzip\r\n\r\n{}",
    "header_without_colon": lambda h: h[:-2] + b"Garbage\r\nContent-Length: 2\r\n\r\n{}",
    "header_name_with_space": lambda h: h[:-2] + b"Bad Name: x\r\nContent-Length: 2\r\n\r\n{}",
    "request_line_http_0_9": lambda h: b"GET /healthz\r\n\r\n",
    "request_line_garbage": lambda h: (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64
    ),
    # A head over 16 KiB is answered 431, whole or unfinished
    # (chatstore/http/head_limit.py; tests/features/test_request_head.py).
    "headers_64_kib": lambda h: (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n"
    ),
    "headers_64_kib_in_pieces": lambda h: (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " * 10_000
    ),
}


@pytest.mark.parametrize("name", sorted(PROTOCOL_GARBAGE))
async def test_http_garbage_is_refused_without_a_server_error(
    server: Server, user: User, name: str
) -> None:
    """uvicorn's parser (httptools) refuses these with its own ``400`` or ``431`` (a
    text/plain body, not the contract's: the app never sees the request)
    or the app refuses them with the contract's body; either way no 5xx and
    nothing in the server's log (the autouse fixture)."""
    data = PROTOCOL_GARBAGE[name](_post_head(server, user))
    offset = server.log_size()
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(data)
        await writer.drain()
        try:
            response: RawResponse | None = await asyncio.wait_for(read_response(reader), 10)
        except (asyncio.IncompleteReadError, ConnectionError):
            response = None  # closed without an answer: also a refusal
    finally:
        writer.close()
    # Let the server finish whatever the request started before the log is read.
    await asyncio.sleep(0.3)
    if response is not None:
        assert response.status < 500, response
        assert response.status != 201, f"{name} was accepted: {response}"
    problems = server.problems_since(offset)
    assert not problems, (
        f"{name}: the server logged an error (starlette.requests.ClientDisconnect escaping "
        "read_body as a 500 once uvicorn dropped the connection):\n" + server.tail(offset, 2500)
    )


@pytest.mark.parametrize("framing", ["content_length", "chunked"])
async def test_client_hanging_up_mid_body_is_not_a_server_error(
    server: Server, user: User, framing: str
) -> None:
    """A client that sends half a body and disconnects (a crashed browser
    tab, a flaky mobile link, or an attacker filling the error log): the
    server has no one to answer, and nothing to log as its own failure."""
    if framing == "chunked":
        data = _post_head(server, user, **{"transfer-encoding": "chunked"}) + b'5\r\n{"tit'
    else:
        data = _post_head(server, user, **{"content-length": "100"}) + b'{"tit'
    offset = server.log_size()
    _reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(data)
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()
    await asyncio.sleep(0.5)
    problems = server.problems_since(offset)
    assert not problems, (
        "a client hanging up mid-body made the server log an error "
        "(starlette.requests.ClientDisconnect escaping read_body as a 500):\n"
        + server.tail(offset, 2500)
    )


# -- 100 MiB bodies ----------------------------------------------------------------------


@dataclasses.dataclass
class Upload:
    status: int | None
    answered_after: float | None
    sent_bytes: int
    baseline_kib: int
    peak_growth_kib: int


async def _upload(server: Server, user: User, chunked: bool) -> Upload:
    """Send a 100 MiB body as fast as the server takes it, reading the
    answer concurrently; samples the server's RSS throughout."""
    framing = {"transfer-encoding": "chunked"} if chunked else {"content-length": str(BIG_BODY)}
    reader, writer = await asyncio.open_connection(server.host, server.port)
    chunk = b"[" + b" " * (MIB - 1)
    frame = (b"%x\r\n" % len(chunk)) + chunk + b"\r\n" if chunked else chunk
    started = time.monotonic()
    answer = asyncio.create_task(read_response(reader))
    sent = 0
    async with RssSampler(server) as sampler:
        writer.write(_post_head(server, user, **framing))
        try:
            while sent < BIG_BODY:
                writer.write(frame)
                await asyncio.wait_for(writer.drain(), 10)
                sent += len(chunk)
        except (ConnectionError, TimeoutError):
            pass  # the server stopped reading: refused
        try:
            response: RawResponse | None = await asyncio.wait_for(answer, 10)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            response = None
    answered = time.monotonic() - started if response is not None else None
    writer.close()
    return Upload(
        status=response.status if response else None,
        answered_after=answered,
        sent_bytes=sent,
        baseline_kib=sampler.baseline_kib,
        peak_growth_kib=sampler.peak_growth_kib,
    )


@pytest.mark.parametrize("framing", ["content_length", "chunked"])
async def test_100_mib_body_is_refused_while_streaming_with_flat_memory(
    server: Server, user: User, framing: str
) -> None:
    upload = await _upload(server, user, chunked=framing == "chunked")
    print(
        f"100 MiB {framing}: {upload.status} after {upload.answered_after} s, "
        f"{upload.sent_bytes / MIB:.0f} MiB sent, server RSS {upload.baseline_kib / 1024:.1f} MiB "
        f"grew by at most {upload.peak_growth_kib / 1024:.1f} MiB"
    )
    assert upload.status == 413, upload
    assert upload.peak_growth_kib < MAX_RSS_GROWTH_KIB, upload
    server.assert_alive()


async def test_100_mib_content_length_is_refused_before_the_body(
    server: Server, user: User
) -> None:
    """A declared Content-Length over the cap is answered 413 before a single
    byte of the body is sent."""
    head = _post_head(server, user, **{"content-length": str(BIG_BODY)})
    started = time.monotonic()
    response = await _exchange(server, head)
    assert time.monotonic() - started < 2.0
    error = error_of(response.status, response.headers, response.body, "100 MiB head")
    assert (response.status, error["code"]) == (413, "payload_too_large"), response


# -- slowloris -------------------------------------------------------------------------


@dataclasses.dataclass
class Latencies:
    values: list[float] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)

    def describe(self) -> str:
        if not self.values:
            return f"no normal request answered; failures {self.failures[:5]}"
        median = statistics.median(self.values) * 1000
        return (
            f"{len(self.values)} normal requests: median {median:.0f} ms, "
            f"max {max(self.values) * 1000:.0f} ms; failures {self.failures[:5]}"
        )


async def _normal_traffic(
    client: httpx.AsyncClient, user: User, stop: asyncio.Event, latencies: Latencies
) -> None:
    """A well-behaved client: list conversations every 100 ms."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            response = await client.get(
                "/api/conversations", params={"limit": 5}, headers=user.headers, timeout=10
            )
            if response.status_code == 200:
                latencies.values.append(time.monotonic() - started)
            else:
                latencies.failures.append(f"{response.status_code} {response.text[:100]}")
        except httpx.HTTPError as error:
            latencies.failures.append(repr(error))
        await asyncio.sleep(0.1)


async def _drip_body(server: Server, user: User) -> tuple[RawResponse | None, float, int]:
    """A JSON body declared 1,000 bytes long and sent one byte every 0.5 s.
    Returns the answer, when it came, and how many bytes were sent."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(_post_head(server, user, **{"content-length": "1000"}))
    await writer.drain()
    started = time.monotonic()
    answer = asyncio.create_task(read_response(reader))
    sent = 0
    body = b'{"title": "' + b"x" * 985 + b'"}'
    try:
        while not answer.done() and time.monotonic() - started < BODY_TIMEOUT_SECONDS * 4:
            writer.write(body[sent : sent + 1])
            await writer.drain()
            sent += 1
            await asyncio.wait([answer], timeout=DRIP_EVERY)
        response = answer.result() if answer.done() else None
    except (ConnectionError, asyncio.IncompleteReadError):
        response = None
    finally:
        answer.cancel()
        writer.close()
    return response, time.monotonic() - started, sent


async def _with_normal_traffic(
    client: httpx.AsyncClient, user: User, work: Any
) -> tuple[Any, Latencies]:
    stop = asyncio.Event()
    latencies = Latencies()
    traffic = asyncio.create_task(_normal_traffic(client, user, stop, latencies))
    try:
        result = await work
    finally:
        stop.set()
        await traffic
    return result, latencies


def _assert_served(latencies: Latencies) -> None:
    assert not latencies.failures, latencies.describe()
    assert len(latencies.values) >= 5, latencies.describe()
    assert max(latencies.values) < NORMAL_LATENCY_LIMIT, latencies.describe()


def _assert_timed_out(response: RawResponse | None, after: float, sent: int) -> None:
    assert response is not None, f"no answer after {after:.1f} s ({sent} bytes dripped)"
    error = error_of(response.status, response.headers, response.body, "slow body")
    assert (response.status, error["code"]) == (408, "request_timeout"), response
    assert BODY_TIMEOUT_SECONDS - 0.5 <= after <= BODY_TIMEOUT_SECONDS + 1.5, after


async def test_slow_drip_body_gets_408_while_others_are_served(
    server: Server, client: httpx.AsyncClient, user: User
) -> None:
    (response, after, sent), latencies = await _with_normal_traffic(
        client, user, _drip_body(server, user)
    )
    print(
        f"slow body: {response.status if response else None} after {after:.2f} s; "
        f"{latencies.describe()}"
    )
    _assert_timed_out(response, after, sent)
    _assert_served(latencies)


async def test_50_slow_drip_bodies_get_408_while_others_are_served(
    server: Server, client: httpx.AsyncClient, user: User
) -> None:
    drips = asyncio.gather(*(_drip_body(server, user) for _ in range(SLOW_CLIENTS)))
    results, latencies = await _with_normal_traffic(client, user, drips)
    print(
        f"{SLOW_CLIENTS} slow bodies: answered after "
        f"{min(r[1] for r in results):.2f}-{max(r[1] for r in results):.2f} s; "
        f"{latencies.describe()}"
    )
    for response, after, sent in results:
        _assert_timed_out(response, after, sent)
    _assert_served(latencies)


async def _hold_headers(server: Server, drip: bytes | None, seconds: float) -> tuple[str, float]:
    """Open a connection, send part of a request head and then (``drip``)
    one more byte every 0.5 s; how it ended and after how long."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    started = time.monotonic()
    try:
        if drip is not None:
            writer.write(b"POST /api/conversations HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            await writer.drain()
        while time.monotonic() - started < seconds:
            try:
                got = await asyncio.wait_for(reader.read(100), DRIP_EVERY)
            except TimeoutError:
                got = None
            if got == b"":
                return "closed by the server", time.monotonic() - started
            if got:
                return f"answered {got[:40]!r}", time.monotonic() - started
            if drip is not None:
                writer.write(drip)
                await writer.drain()
        return "still open", time.monotonic() - started
    except ConnectionError as error:
        return f"reset ({error!r})", time.monotonic() - started
    finally:
        writer.close()


HOLD_SECONDS = 3 * BODY_TIMEOUT_SECONDS


async def test_slow_headers_are_ended_at_the_head_timeout_while_others_are_served(
    server: Server, client: httpx.AsyncClient, user: User
) -> None:
    """Slowloris on the request head: 50 clients dripping a header byte
    every 0.5 s and 50 that connect and send nothing, for up to 9 s.

    uvicorn has no timeout for a request head that has not arrived (its
    keep-alive timeout is armed only after a response, and the app, with
    its body timeout, is not called before the head is complete), so
    chatstore's protocol has one (chatstore/http/head_limit.py): each
    dripping head gets ``408`` and each silent connection is closed once
    the head timeout (3 s here) has passed, dripping or not. Meanwhile
    everyone else is served on time.
    """
    holders = asyncio.gather(
        *(_hold_headers(server, b"x", HOLD_SECONDS) for _ in range(SLOW_CLIENTS)),
        *(_hold_headers(server, None, HOLD_SECONDS) for _ in range(SLOW_CLIENTS)),
    )
    async with RssSampler(server, every=0.5) as sampler:
        outcomes, latencies = await _with_normal_traffic(client, user, holders)
    ended: dict[str, int] = {}
    for outcome, _after in outcomes:
        ended[outcome] = ended.get(outcome, 0) + 1
    print(
        f"slow headers, {2 * SLOW_CLIENTS} connections: {ended}, after "
        f"{min(a for _, a in outcomes):.2f}-{max(a for _, a in outcomes):.2f} s; server RSS "
        f"grew by {sampler.peak_growth_kib} KiB; {latencies.describe()}"
    )
    dripped, silent = outcomes[:SLOW_CLIENTS], outcomes[SLOW_CLIENTS:]
    # A dripper whose next byte crossed the server's close gets a reset
    # instead of reading its 408: ended by the server all the same.
    assert all(o.startswith(("answered b'HTTP/1.1 408", "reset")) for o, _ in dripped), ended
    assert any(o.startswith("answered b'HTTP/1.1 408") for o, _ in dripped), ended
    assert all(o == "closed by the server" for o, _ in silent), ended
    # Timed from each connection's start: none outlives the timeout by much.
    timeout = BODY_TIMEOUT_SECONDS
    assert all(timeout - 0.5 < after < timeout + 3 for _, after in outcomes), outcomes
    _assert_served(latencies)
    server.assert_alive()


# -- afterwards ----------------------------------------------------------------------


async def test_hostile_requests_changed_nothing(
    client: httpx.AsyncClient, user: User, victim: dict[str, Any]
) -> None:
    """Every request above was refused: the caller's conversations and
    messages are exactly as they were (no conversation created by a refused
    create, no message by a refused append, nothing half-stored)."""
    assert await _snapshot(client, user) == victim["before"]
