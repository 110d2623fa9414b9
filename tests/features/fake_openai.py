"""A scripted OpenAI-compatible model server for the chat tests.

It speaks the chat-completions API over real HTTP on loopback
(``POST /v1/chat/completions``; with ``"stream": true``, SSE lines
``data: {chunk}`` and ``data: [DONE]``), in a thread of its own with its own
event loop (uvicorn), so that the real responder talks to it through the real
``openai`` client. Each request takes the next Script (the default one when
none is left) and is recorded, body and headers, for the test to check.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chatstore.embedded import free_port

MODEL = "fake-model"
# Bounded waits, generous for a loaded machine.
PATIENCE_SECONDS = 60.0


@dataclasses.dataclass
class Script:
    """What the model does for one request."""

    chunks: list[str] = dataclasses.field(default_factory=lambda: ["Hello", ", ", "world"])
    # Seconds before each chunk.
    delay: float = 0.0
    # An error status (with an OpenAI-style error body) instead of a reply.
    status: int = 200
    # After this many chunks: drop the connection (a model failing halfway) ...
    fail_after: int | None = None
    # ... or say nothing more until the client goes (a model that hangs).
    hang_after: int | None = None
    # After this many chunks, wait until the gate is set.
    gate: threading.Event | None = None
    gate_after: int = 1
    # Tool calls sent (streamed as two pieces each) after the text.
    tool_calls: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Recorded:
    body: dict[str, Any]
    headers: dict[str, str]


class FakeOpenAI:
    def __init__(self) -> None:
        self.scripts: deque[Script] = deque()
        self.default = Script()
        self.requests: list[Recorded] = []
        self.streaming = 0  # streamed replies under way right now
        self._lock = threading.Lock()
        self.port = free_port()
        self.closing = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    def _next(self) -> Script:
        with self._lock:
            return self.scripts.popleft() if self.scripts else self.default

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(Recorded(body, dict(request.headers)))
        script = self._next()
        if script.status != 200:
            return JSONResponse(
                {"error": {"message": "scripted failure", "type": "server_error"}},
                status_code=script.status,
            )
        if not body.get("stream"):
            return JSONResponse(_completion(script))
        return StreamingResponse(self._stream(script), media_type="text/event-stream")

    async def _stream(self, script: Script) -> AsyncIterator[bytes]:
        with self._lock:
            self.streaming += 1
        try:
            for index, text in enumerate(script.chunks):
                if index == script.fail_after:
                    raise ConnectionAbortedError("scripted: the model fails halfway")
                if index == script.hang_after:
                    await self._until(lambda: False)
                if script.gate is not None and index == script.gate_after:
                    gate = script.gate
                    await self._until(gate.is_set)
                if script.delay:
                    await asyncio.sleep(script.delay)
                yield _sse(_chunk({"content": text}))
            for index, call in enumerate(script.tool_calls):
                head = {"index": index, "id": call["id"], "type": "function"}
                head["function"] = {"name": call["function"]["name"], "arguments": ""}
                yield _sse(_chunk({"tool_calls": [head]}))
                rest = {"index": index, "function": {"arguments": call["function"]["arguments"]}}
                yield _sse(_chunk({"tool_calls": [rest]}))
            finish = "tool_calls" if script.tool_calls else "stop"
            yield _sse(_chunk({}, finish_reason=finish))
            yield b"data: [DONE]\n\n"
        finally:
            with self._lock:
                self.streaming -= 1

    async def _until(self, condition: Any) -> None:
        deadline = time.monotonic() + PATIENCE_SECONDS
        # Set from the test's thread: polled, not awaited.
        while not condition() and not self.closing and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    def wait_streaming(self, count: int) -> None:
        deadline = time.monotonic() + PATIENCE_SECONDS
        while self.streaming < count:
            assert time.monotonic() < deadline, f"{self.streaming} of {count} replies streaming"
            time.sleep(0.01)


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def _completion(script: Script) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(script.chunks)}
    if script.tool_calls:
        message["tool_calls"] = script.tool_calls
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if script.tool_calls else "stop",
            }
        ],
    }


@contextmanager
def running_fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    app = Starlette(routes=[Route("/v1/chat/completions", fake.completions, methods=["POST"])])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=fake.port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="fake-openai", daemon=True)
    thread.start()
    deadline = time.monotonic() + PATIENCE_SECONDS
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the fake model did not start"
        time.sleep(0.01)
    try:
        yield fake
    finally:
        fake.closing = True
        server.should_exit = True
        server.force_exit = True
        thread.join(PATIENCE_SECONDS)
