"""uvicorn's h11 protocol, with the request head bounded in time.

``CHATSTORE_SERVE_HTTP=h11`` parses HTTP/1.1 with h11 (pure Python) instead
of httptools (chatstore/http/head_limit.py). h11 bounds the size of an
unfinished head (16 KiB), but neither it nor uvicorn bounds its time: a
client that opens connections and never finishes a request (slowloris)
held each one for as long as it liked. This protocol applies the same head
timeout as the httptools one: a head not complete
``CHATSTORE_HEAD_TIMEOUT_SECONDS`` after its first byte is answered ``408``
and the connection closed, and a new connection that has sent nothing for
that long is closed. Between requests uvicorn's keep-alive timeout
applies, and a response that takes long (an event stream) is never cut.

The head is open while h11 still waits for the client's request (the
client's state is ``IDLE``); h11 leaves that state once it has the whole
request line and headers. A head pipelined behind a response still being
sent is buffered by h11 and timed from its next byte after that response,
or closed by uvicorn's keep-alive timeout when none comes.
"""

from __future__ import annotations

import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from chatstore.http.head_bounds import TIMED_OUT, HeadTimer, head_timeout_seconds, plain_answer

_STATUS_LINE = b"HTTP/1.1 408 Request Timeout\r\n"

log = logging.getLogger("chatstore.http")


class BoundedH11Protocol(HeadTimer, H11Protocol):
    """``H11Protocol`` that answers ``408`` to a head not complete within
    the head timeout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Whether a byte of the current head has arrived.
        self._head_started = False

    def data_received(self, data: bytes) -> None:
        if data and self.conn.their_state is h11.IDLE:
            self._head_started = True
            if self._head_timer is None:
                self._arm_head_timer()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            # h11 has the whole head (or the connection is done with): the
            # next head's time starts from its own first byte.
            self._head_started = False
            self._cancel_head_timer()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if not self._head_started:
            self.transport.close()  # not a byte of a request: nothing to answer
            return
        log.info("request head not complete after %g s: 408", head_timeout_seconds())
        self.transport.write(
            plain_answer(_STATUS_LINE, self.server_state.default_headers, TIMED_OUT)
        )
        self.transport.close()
