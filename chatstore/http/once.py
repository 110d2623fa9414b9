"""The Idempotency-Key header on the POST endpoints (chatstore/idempotency.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from chatstore import idempotency
from chatstore.http.context import JSON, Context

T = TypeVar("T")

REPLAYED_HEADER = "Idempotent-Replayed"


async def respond_once(
    request: Request,
    ctx: Context,
    user_id: str,
    body: Any,
    work: Callable[[], Awaitable[T]],
    adapter: TypeAdapter[T],
    status: int = 201,
) -> Response:
    """Run ``work`` and answer with its result; with an Idempotency-Key, at
    most once per key, replaying the first answer to repeats."""
    key = request.headers.get("idempotency-key")
    if key is None:
        result = await work()
        return Response(adapter.dump_json(result), status_code=status, media_type=JSON)
    # The parsed body, canonicalised: whitespace or key order is not a
    # different request.
    asked = idempotency.fingerprint(request.method, request.url.path, body)
    result, replayed = await idempotency.run_once(
        ctx.store, user_id, key, asked, work, adapter, status=status
    )
    headers = {REPLAYED_HEADER: "true"} if replayed else None
    return Response(adapter.dump_json(result), status_code=status, media_type=JSON, headers=headers)
