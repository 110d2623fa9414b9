"""Streamed responses that a client who stops reading cannot hold.

uvicorn's ``send`` waits, without limit, for the client to take what was
sent before (flow control). A client that connects, asks and never reads
therefore suspends the stream at its next write forever, and with it
whatever the stream holds: a pooled connection, a transaction.

BoundedStreamingResponse gives every write ``send_timeout`` seconds. A write
that cannot be handed over by then ends the stream: the body iterator is
closed at once (an export's transaction rolls back, its connection goes back
to the pool), ``on_close`` runs (the stream's lease), and the response ends
without its last chunk, so uvicorn closes the connection and the client
sees a body cut short (chunked encoding without its final chunk), never one
that looks whole. uvicorn logs "ASGI callable returned without completing
response." for it, after this module's own warning.

A client that disconnects ends the stream at its next write (or after
DISCONNECT_GRACE_SECONDS, when none is coming), and a database that goes
away mid-stream ends it cut short (a warning, not an error). The body
iterator and ``on_close`` are closed however the response ends: finished,
stalled, the client gone, or the server shutting down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping

import anyio  # Starlette's own dependency
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from chatstore.errors import Unavailable

log = logging.getLogger("chatstore.http")

# After its client disconnects, how long a stream gets to reach its next
# write (and stop there) before it is cancelled where it is.
DISCONNECT_GRACE_SECONDS = 1.0


class _Stalled(Exception):
    """A write did not complete within the send timeout."""


class _Gone(Exception):
    """The client disconnected."""


class _TooLong(Exception):
    """The stream ran past its longest allowed duration."""


class BoundedStreamingResponse(StreamingResponse):
    def __init__(
        self,
        content: AsyncIterable[bytes],
        *,
        send_timeout: float,
        max_seconds: float | None = None,
        on_close: Callable[[], Awaitable[object]] | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
    ) -> None:
        super().__init__(content, status_code=status_code, headers=headers, media_type=media_type)
        self.send_timeout = send_timeout
        # A reader that takes each write just inside the send timeout could
        # otherwise keep the stream (an export's snapshot, which holds back
        # vacuum for the whole database) for as long as it likes.
        self.max_seconds = max_seconds
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Unlike StreamingResponse, a client that disconnects does not cancel
        # the stream wherever it is (often inside the body's query, which
        # asyncpg then cancels over a new connection to the server, leaving
        # the transaction to the pool's reset): the stream stops at its next
        # write, with the body suspended at a yield, and closes it there. A
        # stream with no write coming (an idle event stream) is cancelled
        # after DISCONNECT_GRACE_SECONDS.
        gone = asyncio.Event()
        loop = asyncio.get_running_loop()
        deadline = None if self.max_seconds is None else loop.time() + self.max_seconds

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        async def send_within(message: Message) -> None:
            if gone.is_set():
                raise _Gone
            if deadline is not None and loop.time() >= deadline:
                raise _TooLong
            try:
                async with asyncio.timeout(self.send_timeout):
                    await send(message)
            except TimeoutError:
                raise _Stalled from None
            except OSError:  # ASGI 2.4 servers: the client is gone
                raise _Gone from None

        streaming = asyncio.create_task(self.stream_response(send_within))
        watcher = asyncio.create_task(watch())
        try:
            await asyncio.wait({streaming, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not streaming.done():
                await asyncio.wait({streaming}, timeout=DISCONNECT_GRACE_SECONDS)
        finally:
            watcher.cancel()
            streaming.cancel()  # a no-op once it is done
            # Shielded: a stream cancelled (server shutdown) still rolls
            # back and returns its connection.
            with anyio.CancelScope(shield=True):
                (ended,) = await asyncio.gather(streaming, return_exceptions=True)
                await self.close()
        if isinstance(ended, _Stalled):
            log.warning(
                "stream ended: its client took nothing for %s s (the send timeout)",
                self.send_timeout,
            )
        elif isinstance(ended, _TooLong):
            log.warning("stream ended: longer than its limit of %s s", self.max_seconds)
        elif isinstance(ended, Unavailable):
            # The database went away mid-stream: the status is sent, so the
            # body ends cut short, as above.
            log.warning("stream ended: database unavailable: %r", ended.__cause__)
        elif isinstance(ended, BaseException) and not isinstance(
            ended, _Gone | asyncio.CancelledError
        ):
            raise ended
        if self.background is not None:
            await self.background()

    async def close(self) -> None:
        """End the body iterator, then run on_close; once."""
        closer = getattr(self.body_iterator, "aclose", None)
        on_close, self._on_close = self._on_close, None
        try:
            if closer is not None:
                await closer()
        except Unavailable as error:
            # Its rollback failed with the connection: nothing is left open.
            log.warning("stream closed: database unavailable: %r", error.__cause__)
        finally:
            if on_close is not None:
                await on_close()
