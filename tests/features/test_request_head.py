"""`chatstore serve` parses HTTP with httptools and bounds each request head
(chatstore/http/head_limit.py): over 16 KiB, whole or unfinished, the
connection gets ``431`` and is closed before the app sees anything; not
complete within the head timeout, ``408`` (a connection that sent nothing
is closed). Under both bounds, around large bodies, pipelined requests,
idle keep-alive connections and long responses, everything is served.
The head timeout's tests run on h11 too (CHATSTORE_SERVE_HTTP=h11,
chatstore/http/h11_head.py).

Over raw sockets against a real ``chatstore serve``: every byte on the wire
is the test's choice, and how the server reads them (in one read or many)
is the event loop's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from support.rawhttp import RawResponse, read_response, request_head
from support.serve import Server, running_server
from support.users import User, make_user

from chatstore.config import Settings
from chatstore.http.head_limit import HEAD_LIMIT
from chatstore.store import ChatStore

ANSWER_WITHIN = 10.0
HEAD_TIMEOUT = 2


@pytest.fixture(scope="module")
def server(database: str, settings: Settings) -> Iterator[Server]:
    env = {"CHATSTORE_HEAD_TIMEOUT_SECONDS": str(HEAD_TIMEOUT)}
    with running_server(database, settings.auth_secret, **env) as served:
        yield served


@pytest.fixture(scope="module")
def h11_server(database: str, settings: Settings) -> Iterator[Server]:
    """``chatstore serve`` on h11 (CHATSTORE_SERVE_HTTP=h11), whose head
    is bounded in time as httptools' is (chatstore/http/h11_head.py)."""
    env = {"CHATSTORE_HEAD_TIMEOUT_SECONDS": str(HEAD_TIMEOUT), "CHATSTORE_SERVE_HTTP": "h11"}
    with running_server(database, settings.auth_secret, **env) as served:
        yield served


@pytest.fixture(params=["httptools", "h11"])
def timed_server(request: pytest.FixtureRequest) -> Server:
    """Each parser's server, for the head timeout's tests."""
    fixture = "server" if request.param == "httptools" else "h11_server"
    served: Server = request.getfixturevalue(fixture)
    return served


@pytest.fixture
async def user(store: ChatStore) -> User:
    return await make_user(store)


async def _exchange(
    server: Server, *writes: bytes, expect: int = 1, pause: float = 0.2
) -> list[RawResponse]:
    """Send ``writes`` one by one (``pause`` apart, so that the server reads
    them separately) and read up to ``expect`` responses, fewer if the
    server closes the connection first."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    responses: list[RawResponse] = []
    try:
        for k, data in enumerate(writes):
            if k:
                await asyncio.sleep(pause)
            writer.write(data)
            await writer.drain()
        while len(responses) < expect:
            try:
                responses.append(await asyncio.wait_for(read_response(reader), ANSWER_WITHIN))
            except (asyncio.IncompleteReadError, ConnectionError):
                break  # closed by the server
    finally:
        writer.close()
    return responses


@dataclasses.dataclass(frozen=True, slots=True)
class Dripped:
    response: RawResponse
    sent: int  # bytes written before the answer came
    after: float  # seconds from connecting to the answer
    rest: bytes  # what came after the answer, until the server closed


async def _drip(server: Server, pieces: list[bytes], every: float) -> Dripped:
    """Send ``pieces`` one every ``every`` seconds until the server answers;
    the answer, and what follows it until the connection closes."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    started = time.monotonic()
    sent = 0
    try:
        answer = asyncio.create_task(read_response(reader))
        for piece in pieces:
            if answer.done():
                break
            try:
                writer.write(piece)
                await writer.drain()
            except ConnectionError:
                break  # closed by the server while this piece was on its way
            sent += len(piece)
            await asyncio.sleep(every)
        response = await asyncio.wait_for(answer, ANSWER_WITHIN)
        after = time.monotonic() - started
        rest = await asyncio.wait_for(reader.read(), ANSWER_WITHIN)
    finally:
        writer.close()
    return Dripped(response, sent, after, rest)


def _get(server: Server, user: User, **extra: str) -> bytes:
    return request_head("GET", "/api/conversations", server.port, {**user.headers, **extra})


def _padded(server: Server, user: User, head_bytes: int) -> bytes:
    """A GET whose head is ``head_bytes`` long, padded with an X-Pad header."""
    bare = _get(server, user, **{"X-Pad": ""})
    return _get(server, user, **{"X-Pad": "p" * (head_bytes - len(bare))})


async def test_a_request_head_just_under_16_kib_is_served(server: Server, user: User) -> None:
    data = _padded(server, user, HEAD_LIMIT - 64)
    assert len(data) == HEAD_LIMIT - 64
    responses = await _exchange(server, data)
    assert [r.status for r in responses] == [200], responses


async def test_a_request_head_over_16_kib_sent_whole_is_refused_with_431(
    server: Server, user: User
) -> None:
    offset = server.log_size()
    responses = await _exchange(server, _padded(server, user, HEAD_LIMIT + 64))
    assert [r.status for r in responses] == [431], responses
    assert responses[0].headers["connection"] == "close"
    assert responses[0].body == b"Request head too large."
    # Refused before the app: the app logs only the request served after it.
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        assert (await client.get("/api/conversations", headers=user.headers)).status_code == 200
    await asyncio.sleep(0.2)
    log = server.tail(offset)
    assert log.count("GET /api/conversations ") == 1, log
    assert "GET /api/conversations 200" in log, log
    assert "request head over 16384 bytes refused with 431" in log, log


async def test_a_request_head_sent_without_end_is_refused_with_431_once_over_16_kib(
    server: Server, user: User
) -> None:
    """Headers that never end, in 1 KiB pieces: the server answers once the
    unfinished head passes the limit, and closes, instead of buffering it
    for as long as the client sends."""
    start = b"GET /api/conversations HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    dripped = await _drip(server, [start] + [b"s" * 1024] * 40, every=0.02)
    assert dripped.response.status == 431, dripped.response
    assert dripped.rest == b""
    # Answered once over the limit (a read or two later), long before the 40 KiB end.
    assert HEAD_LIMIT < dripped.sent <= HEAD_LIMIT + 8 * 1024, dripped.sent


async def test_a_large_body_before_a_pipelined_request_is_not_counted_as_its_head(
    server: Server, user: User, store: ChatStore
) -> None:
    """A 48 KiB message and, in the same write, the first half of the next
    request's head (the rest follows): the read that ends the body starts
    the next head, and its body bytes are not that head's."""
    conversation = await store.create_conversation(user.user_id, title="pipelined")
    body = json.dumps({"role": "user", "content": "b" * 48 * 1024}).encode()
    post = request_head(
        "POST",
        f"/api/conversations/{conversation.id}/messages",
        server.port,
        {**user.json_headers(), "Content-Length": str(len(body))},
    )
    get = _get(server, user)
    half = len(get) // 2
    responses = await _exchange(server, post + body + get[:half], get[half:], expect=2)
    assert [r.status for r in responses] == [201, 200], responses


async def test_a_control_character_in_a_header_is_refused_with_400_before_the_app(
    server: Server, user: User
) -> None:
    """RFC 9110, section 5.5: a control character other than tab is invalid
    in a field value. httptools refuses it; tab is served."""
    for value, status in (("a\x01b", 400), ("a\x7fb", 400), ("a\tb", 200)):
        responses = await _exchange(server, _get(server, user, **{"X-Note": value}))
        assert [r.status for r in responses] == [status], (value, responses)


async def test_keep_alive_requests_each_get_their_own_16_kib(server: Server, user: User) -> None:
    """The bound is per head: 30 requests of 12 KiB heads on one connection
    (360 KiB in all) are each served."""
    data = _padded(server, user, 12 * 1024)
    responses = await _exchange(server, *[data] * 30, expect=30, pause=0.01)
    assert [r.status for r in responses] == [200] * 30, [r.status for r in responses]


async def test_a_request_head_not_complete_within_the_head_timeout_gets_408(
    timed_server: Server, user: User
) -> None:
    """A byte every 0.25 s: the head is timed from its first byte, not from
    its last, so dripping does not keep it alive."""
    head = _get(timed_server, user)
    dripped = await _drip(timed_server, [bytes([byte]) for byte in head[:-4]], every=0.25)
    assert dripped.response.status == 408, dripped.response
    assert dripped.response.body == b"Request head not complete in time."
    assert dripped.rest == b""
    assert HEAD_TIMEOUT - 0.5 < dripped.after < HEAD_TIMEOUT + 3, dripped.after


async def test_a_connection_that_sends_nothing_is_closed_after_the_head_timeout(
    timed_server: Server,
) -> None:
    reader, writer = await asyncio.open_connection(timed_server.host, timed_server.port)
    started = time.monotonic()
    try:
        got = await asyncio.wait_for(reader.read(), ANSWER_WITHIN)
    finally:
        writer.close()
    after = time.monotonic() - started
    assert got == b"", got  # closed, nothing to answer
    assert HEAD_TIMEOUT - 0.5 < after < HEAD_TIMEOUT + 3, after


async def test_an_idle_keep_alive_connection_is_not_timed_by_the_head_timeout(
    timed_server: Server, user: User
) -> None:
    """Between requests uvicorn's keep-alive timeout (5 s) applies: idle
    longer than the head timeout, the connection still serves the next
    request."""
    data = _get(timed_server, user)
    responses = await _exchange(timed_server, data, data, expect=2, pause=HEAD_TIMEOUT + 1)
    assert [r.status for r in responses] == [200, 200], responses


async def test_a_response_longer_than_the_head_timeout_is_not_cut(
    timed_server: Server, user: User, store: ChatStore
) -> None:
    """An event stream stays open past the head timeout and still carries
    a message appended after it."""
    conversation = await store.create_conversation(user.user_id, title="long response")
    path = f"/api/conversations/{conversation.id}/events"
    async with (
        httpx.AsyncClient(
            base_url=timed_server.base_url, headers=user.headers, timeout=30
        ) as client,
        client.stream("GET", path) as stream,
    ):
        assert stream.status_code == 200
        await asyncio.sleep(HEAD_TIMEOUT + 1)
        await store.append_message(
            user.user_id, conversation.id, {"role": "user", "content": "late"}
        )
        async with asyncio.timeout(ANSWER_WITHIN):
            async for line in stream.aiter_lines():
                if line.startswith("data:") and '"late"' in line:
                    break


async def test_an_oversized_head_pipelined_behind_a_stream_closes_it_without_a_stray_answer(
    server: Server, user: User, store: ChatStore
) -> None:
    """A 20 KiB head sent on a connection whose event stream is still
    open: the connection is closed, and no 431 lands inside the stream."""
    conversation = await store.create_conversation(user.user_id, title="pipelined")
    events = request_head(
        "GET", f"/api/conversations/{conversation.id}/events", server.port, user.headers
    )
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(events)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ANSWER_WITHIN)
        assert head.startswith(b"HTTP/1.1 200"), head
        writer.write(_padded(server, user, HEAD_LIMIT + 4 * 1024))
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), ANSWER_WITHIN)
    finally:
        writer.close()
    assert b"431" not in rest and b"Request head too large" not in rest, rest
