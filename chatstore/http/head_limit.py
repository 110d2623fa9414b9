"""uvicorn's httptools protocol, with the request head bounded.

``chatstore serve`` parses HTTP/1.1 with httptools (llhttp) rather than
h11: a request costs the worker about a fifth less CPU (BENCHMARKS.md,
"Issue 11's targets").
But httptools, unlike h11, puts no bound on a request head: a client that
sends headers without ever ending them (or one enormous header) grows the
parser's buffer for as long as it likes. This protocol restores the bound
h11 had, and tightens it:

* a head still open after a read counts every byte read since it began;
  past ``HEAD_LIMIT`` the connection gets ``431`` and is closed, so an
  unfinished head holds at most ``HEAD_LIMIT`` plus one read (the event
  loop reads at most 256 KiB at a time);
* a head that arrived whole is measured when it completes (request line
  and headers), and one over ``HEAD_LIMIT`` is refused the same way before
  the app sees it. h11 served such heads when they came in one read.

A read that also ended the message before it (a body's tail, or whole
pipelined requests) is not counted towards the head that began in it, so a
large body is never mistaken for a large head; that head's bytes in that
read go uncounted, which the bound's "plus one read" covers.

What httptools refuses that h11 let through: a control character other
than tab in a header (RFC 9110, section 5.5: they are invalid in a field
value; NUL, CR and LF are refused by both) is answered with uvicorn's own
``400`` before the app runs, where h11 passed it to the app (a ``401`` for
a credential). docs/http-api.md, and tests/adversity/test_auth_attacks.py.

It also bounds a request head in time (chatstore/http/head_bounds.py, as the
h11 protocol does), which neither parser does by itself: a head
not complete ``CHATSTORE_HEAD_TIMEOUT_SECONDS`` after its first byte is
answered ``408`` and the connection closed, and a new connection that has
sent nothing for that long is closed. Without it, a client that opens
connections and never finishes a request (slowloris) held each one for as
long as it liked. Between requests, uvicorn's keep-alive timeout applies,
and a response that takes long (an event stream) is never cut by it.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from chatstore.http.head_bounds import TIMED_OUT, HeadTimer, head_timeout_seconds, plain_answer

# As h11's limit on an incomplete event and Node.js's on a request head.
HEAD_LIMIT = 16 * 1024

# The request line's bytes besides the method and target ("  HTTP/1.1\r\n")
# and a header line's besides its name and value (": " and "\r\n").
_REQUEST_LINE_EXTRA = 12
_HEADER_LINE_EXTRA = 4

_TOO_LARGE = b"Request head too large."

log = logging.getLogger("chatstore.http")


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a refused request."""


class BoundedHttpToolsProtocol(HeadTimer, HttpToolsProtocol):
    """``HttpToolsProtocol`` that answers ``431`` to a head over ``HEAD_LIMIT``
    and ``408`` to one not complete within the head timeout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bytes read while the current head was open (see the module's doc).
        self._head_bytes = 0
        self._head_open = True
        # Whether a byte of the current head has arrived.
        self._head_started = False
        # Whether a message ended during the read being parsed.
        self._message_ended = False
        self._refused = False

    def data_received(self, data: bytes) -> None:
        self._message_ended = False
        super().data_received(data)
        if not self._head_open or self._message_ended or self._refused:
            return
        self._head_bytes += len(data)
        if self._head_bytes > HEAD_LIMIT:
            self._refuse(431, _TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        if self._head_timer is None:
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._cancel_head_timer()
        size = len(self.url) + len(self.parser.get_method()) + _REQUEST_LINE_EXTRA
        for name, value in self.headers:
            size += len(name) + len(value) + _HEADER_LINE_EXTRA
        if size > HEAD_LIMIT:
            # uvicorn's data_received catches the parser error this becomes
            # and calls send_400_response, which answers 431 instead.
            self._refused = True
            raise _HeadTooLarge
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_open = True
        self._head_started = False
        self._head_bytes = 0
        self._message_ended = True

    def send_400_response(self, msg: str) -> None:
        if self._refused:
            self._answer(431, _TOO_LARGE)
        else:
            super().send_400_response(msg)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._head_open:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A response is still being sent (the next request's head came
            # early, pipelined): that head's time starts after it.
            self._arm_head_timer()
        elif not self._head_started:
            self.transport.close()  # not a byte of a request: nothing to answer
        else:
            self._refuse(408, TIMED_OUT)

    def _refuse(self, status: int, body: bytes) -> None:
        self._refused = True
        self._answer(status, body)

    def _answer(self, status: int, body: bytes) -> None:
        if status == 431:
            log.warning("request head over %d bytes refused with 431", HEAD_LIMIT)
        else:
            log.info("request head not complete after %g s: %d", head_timeout_seconds(), status)
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head behind a response still being sent: an answer
            # now would land inside that response's body. Closing is all.
            self.transport.close()
            return
        self.transport.write(
            plain_answer(STATUS_LINE[status], self.server_state.default_headers, body)
        )
        self.transport.close()
