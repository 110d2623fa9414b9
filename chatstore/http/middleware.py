"""Every HTTP request observed once: metrics, a log line, a request id.

Pure ASGI (not Starlette's BaseHTTPMiddleware, which runs the app in a task
and buffers through a stream): it only wraps ``send``, so a streamed
response (JSONL export, Server-Sent Events) passes through untouched.

It sits outside everything else of the app (chatstore/http/app.py), so
it also sees the 500 that Starlette's ServerErrorMiddleware answers for a
bug, and that response carries the request id too.

Labels are ROUTE TEMPLATES (``/api/conversations/{id}``), never raw paths:
every distinct label value is a time series held in memory for the life of
the process, and raw paths would make one per conversation id (or per
scanner probe). Paths that match no route share one label, ``<unmatched>``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatstore import metrics
from chatstore.logs import REQUEST_ID

UNMATCHED = "<unmatched>"
CANCELLED = 499
HEADER = b"x-request-id"
# A client's X-Request-ID is kept when it is 1 to 128 visible ASCII
# characters (no spaces or controls: it lands in log lines); otherwise the
# request gets a generated one.
MAX_REQUEST_ID = 128
# The method label is bounded like the route: any other method (a client may
# send anything) is counted as "OTHER".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

log = logging.getLogger("chatstore.requests")

# A generated request id: 128 random bits as 32 hex digits. From random's
# generator, not the system's (uuid4 asks the kernel for 16 bytes: a system
# call per request): a request id names a request in logs, it guards
# nothing (a client may choose its own). random's shared generator is seeded
# from the system's in each process, and again in a forked child.
_random_bits = random.getrandbits

# The metrics' children by (route, method, status): prometheus_client's
# labels() checks and locks on every call. As bounded as the labels.
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def request_id_from(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == HEADER:
            if 0 < len(value) <= MAX_REQUEST_ID and all(0x21 <= byte <= 0x7E for byte in value):
                return bytes(value).decode("ascii")
            break
    return f"{_random_bits(128):032x}"


def route_template(scope: Scope) -> str:
    # Starlette's router records the route it matched (fully, or by path
    # only for a 405) in the scope it was given, which is this one.
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestObserver:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(scope)
        token = REQUEST_ID.set(request_id)
        status: int | None = None

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start" and status is None:
                status = int(message["status"])
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != HEADER
                ]
                headers.append((HEADER, request_id.encode("ascii")))
                message = {**message, "headers": headers}
                self._observe(scope, status, started, request_id)
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except asyncio.CancelledError:
            # Cancelled before any response (a server stopping): counted as
            # 499, "client closed request" as nginx says, not as a 500.
            if status is None:
                self._observe(scope, CANCELLED, started, request_id)
            raise
        except BaseException:
            if status is None:  # no response started: the server answers 500
                self._observe(scope, 500, started, request_id)
            raise
        finally:
            REQUEST_ID.reset(token)

    @staticmethod
    def _observe(scope: Scope, status: int, started: float, request_id: str) -> None:
        """Counted and logged when the response starts: for a stream that is
        when its headers go out, not when it ends."""
        elapsed = time.perf_counter() - started
        route = route_template(scope)
        method = scope["method"] if scope["method"] in METHODS else "OTHER"
        children = _children.get((route, method, status))
        if children is None:
            children = _children[(route, method, status)] = (
                metrics.HTTP_REQUESTS.labels(route, method, str(status)),
                metrics.HTTP_DURATION.labels(route, method),
            )
        children[0].inc()
        children[1].observe(elapsed)
        duration_ms = round(elapsed * 1000, 1)
        log.info(
            "%s %s %d %.1f ms",
            method,
            route,
            status,
            duration_ms,
            extra={
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": duration_ms,
                "request_id": request_id,
            },
        )
