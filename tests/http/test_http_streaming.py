"""BoundedStreamingResponse (chatstore/http/streaming.py) as an ASGI app.

The server side is played by hand here, to control exactly when a write is
taken: a ``send`` that never returns is a client that never reads. The
whole path over real sockets and a real database is
tests/adversity/test_stalled_readers.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import Message

from chatstore.errors import Unavailable
from chatstore.http.streaming import BoundedStreamingResponse

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "method": "GET",
    "path": "/",
    "headers": [],
}


class Stream:
    """A body that records whether it was closed, and the response's lease."""

    def __init__(self, *, fail_after_first: bool = False) -> None:
        self.fail_after_first = fail_after_first
        self.closed = False
        self.released = 0

    async def body(self) -> AsyncIterator[bytes]:
        try:
            for n in range(1_000):
                if n and self.fail_after_first:
                    raise Unavailable()
                yield b"x" * 1000
        finally:
            self.closed = True

    async def release(self) -> None:
        self.released += 1


async def never_disconnects() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_a_stream_whose_client_takes_nothing_ends_at_the_send_timeout() -> None:
    stream = Stream()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        if len(sent) > 2:  # the client took the head and one chunk, then nothing
            await asyncio.Event().wait()

    response = BoundedStreamingResponse(
        stream.body(), send_timeout=0.2, on_close=stream.release, media_type="text/plain"
    )
    async with asyncio.timeout(10):
        await response(SCOPE, never_disconnects, send)

    assert stream.closed and stream.released == 1
    # Cut short: no final empty chunk that would make the body look whole.
    assert [message.get("more_body") for message in sent[1:]] == [True, True], sent[1:]


async def test_a_stream_whose_database_goes_away_ends_cut_short_not_with_an_error() -> None:
    stream = Stream(fail_after_first=True)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    response = BoundedStreamingResponse(
        stream.body(), send_timeout=5, on_close=stream.release, media_type="text/plain"
    )
    await response(SCOPE, never_disconnects, send)

    assert stream.closed and stream.released == 1
    assert sent[0]["type"] == "http.response.start"
    assert [message.get("more_body") for message in sent[1:]] == [True], sent[1:]


async def test_a_finished_stream_releases_its_lease_once() -> None:
    stream = Stream()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    response = BoundedStreamingResponse(
        stream.body(), send_timeout=5, on_close=stream.release, media_type="text/plain"
    )
    await response(SCOPE, never_disconnects, send)
    await response.close()

    assert stream.closed and stream.released == 1
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert len(sent) == 1 + 1_000 + 1


async def test_a_stream_whose_client_disconnects_stops_at_its_next_write_not_mid_query() -> None:
    # StreamingResponse cancelled the stream wherever it was, typically in
    # the body's database query (cancelled over a new connection, the
    # transaction left to the pool's reset). Now the body is closed at a
    # yield: its own cleanup (the rollback) runs normally.
    hit: list[str] = []
    released: list[bool] = []
    disconnected = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"x" * 1000
                disconnected.set()
                await asyncio.sleep(0.05)  # the page query
        except asyncio.CancelledError:
            hit.append("cancelled mid-query")
            raise
        except GeneratorExit:
            hit.append("closed at a yield")
            raise

    async def receive() -> Message:
        await disconnected.wait()
        return {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def release() -> None:
        released.append(True)

    response = BoundedStreamingResponse(
        body(), send_timeout=5, on_close=release, media_type="text/plain"
    )
    async with asyncio.timeout(10):
        await response(SCOPE, receive, send)

    assert hit == ["closed at a yield"], hit
    assert released == [True]
    assert all(message.get("more_body", True) for message in sent), sent


async def test_a_stream_with_no_write_coming_is_cancelled_soon_after_its_client_disconnects() -> (
    None
):
    # An idle event stream waits for its next event: it would otherwise
    # outlive its client until that event (or heartbeat) came.
    closed: list[bool] = []
    released: list[bool] = []
    started = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        try:
            yield b": connected\n\n"
            started.set()
            await asyncio.Event().wait()  # no event, ever
            yield b"never"
        finally:
            closed.append(True)

    async def receive() -> Message:
        await started.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        pass

    async def release() -> None:
        released.append(True)

    response = BoundedStreamingResponse(
        body(), send_timeout=60, on_close=release, media_type="text/event-stream"
    )
    async with asyncio.timeout(10):
        await response(SCOPE, receive, send)

    assert closed == [True] and released == [True]


async def test_a_stream_past_its_longest_duration_ends_cut_short_though_its_client_reads() -> None:
    # A reader that takes every write (just inside the send timeout, say)
    # must not keep an export's snapshot open for ever: max_seconds ends it.
    stream = Stream()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        await asyncio.sleep(0.01)  # a steady, slow reader

    response = BoundedStreamingResponse(
        stream.body(),
        send_timeout=5,
        max_seconds=0.3,
        on_close=stream.release,
        media_type="text/plain",
    )
    async with asyncio.timeout(10):
        await response(SCOPE, never_disconnects, send)

    assert stream.closed and stream.released == 1
    # Ended well before the body's 1,000 chunks, and cut short: no final chunk.
    assert 1 < len(sent) < 1_000, len(sent)
    assert all(message.get("more_body") for message in sent[1:]), sent[-1]
