"""Shared machinery of the hostile-input and isolation tests (tests/adversity).

Helpers only, no fixtures: each test module defines its own (a
module-scoped server from ``running_server``). The server, users and the
error contract come from tests/support; this adds what only these tests
need: their server settings and a memory sampler (raw HTTP over a socket is
support/rawhttp.py).

Everything is real: ``chatstore serve`` (uvicorn, one worker: its pid is the
process that serves, so its VmRSS is the server's memory) runs as a
subprocess on its own loopback port, over the suite's migrated database
(support/fixtures.py ``database``); callers are better-auth users with real
sessions. Nothing is mocked.

Pytest does not rewrite the asserts of this module: every check says what
it saw.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from support import serve
from support.serve import Server

# The server refuses a body, or a request head, that has not fully arrived
# after this long (408).
BODY_TIMEOUT_SECONDS = 3

# Every hostile server: short body timeout, and no session cache, so that a
# session deleted or expired in the database is refused on the next request.
SERVER_ENV = {
    "CHATSTORE_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT_SECONDS),
    "CHATSTORE_HEAD_TIMEOUT_SECONDS": str(BODY_TIMEOUT_SECONDS),
    "CHATSTORE_AUTH_CACHE_SECONDS": "0",
    "CHATSTORE_POOL_MAX_SIZE": "10",
    "CHATSTORE_STATEMENT_TIMEOUT_MS": "10000",
}


@contextmanager
def running_server(database_url: str, secret: str | None, **env: str) -> Iterator[Server]:
    """``chatstore serve`` with the hostile settings (SERVER_ENV, then ``env``)
    for the duration of the block."""
    with serve.running_server(database_url, secret, **{**SERVER_ENV, **env}) as server:
        yield server


@contextmanager
def no_server_problems(server: Server) -> Iterator[None]:
    """Fails if the server logged a traceback while the block ran."""
    offset = server.log_size()
    yield
    problems = server.problems_since(offset)
    assert not problems, "\n".join(problems) + "\n" + server.tail(offset)


# -- a memory sampler ---------------------------------------------------------------


class RssSampler:
    """Samples a server's VmRSS (KiB) every ``every`` seconds while it runs."""

    def __init__(self, server: Server, every: float = 0.02) -> None:
        self._server = server
        self._every = every
        self.samples: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RssSampler:
        self.samples.append(self._server.rss_bytes() // 1024)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task
        self.samples.append(self._server.rss_bytes() // 1024)

    async def _run(self) -> None:
        while True:
            self.samples.append(self._server.rss_bytes() // 1024)
            await asyncio.sleep(self._every)

    @property
    def baseline_kib(self) -> int:
        return self.samples[0]

    @property
    def peak_growth_kib(self) -> int:
        return max(self.samples) - self.samples[0]
