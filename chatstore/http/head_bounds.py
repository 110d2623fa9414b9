"""What both HTTP parsers' protocols do with a request head that takes too
long (chatstore/http/head_limit.py for httptools, chatstore/http/h11_head.py
for h11): the time it has, and the answer written by the server itself,
before any app runs, when it runs out (or, with httptools, when the head is
too large). Plain text, and the connection closes after it.
"""

from __future__ import annotations

import asyncio
import functools

from chatstore.config import Settings

TIMED_OUT = b"Request head not complete in time."


@functools.cache
def head_timeout_seconds() -> float:
    """CHATSTORE_HEAD_TIMEOUT_SECONDS, read once a process."""
    return Settings.from_env().head_timeout_seconds


def plain_answer(
    status_line: bytes, default_headers: list[tuple[bytes, bytes]], body: bytes
) -> bytes:
    """The bytes of a response: ``status_line`` (``HTTP/1.1 408 ...\\r\\n``),
    uvicorn's default headers (server, date), then ``body`` as plain text
    with ``connection: close``."""
    content = [status_line]
    for name, value in default_headers:
        content.extend([name, b": ", value, b"\r\n"])
    content.extend(
        [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n",
            b"\r\n",
            body,
        ]
    )
    return b"".join(content)


class HeadTimer(asyncio.Protocol):
    """The head's timer, for a protocol that puts this class before
    uvicorn's: armed when a connection starts (and by the protocol when a
    head's first byte comes), cancelled when the head is complete or the
    connection lost. What a timed-out head gets is the protocol's own
    ``_head_timed_out``."""

    loop: asyncio.AbstractEventLoop
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(head_timeout_seconds(), self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        raise NotImplementedError
