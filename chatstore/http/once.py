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


def asked(request: Request, body: Any, path: str | None = None) -> bytes:
    # The parsed body, canonicalised: whitespace or key order is not a
    # different request. ``path``: the request's path in one spelling, when
    # it has several (a /v1 conversation's two ids).
    return idempotency.fingerprint(request.method, path or request.url.path, body)


def answer(result: T, adapter: TypeAdapter[T], status: int, replayed: bool) -> Response:
    headers = {REPLAYED_HEADER: "true"} if replayed else None
    return Response(adapter.dump_json(result), status_code=status, media_type=JSON, headers=headers)


async def respond_once(
    request: Request,
    ctx: Context,
    user_id: str,
    body: Any,
    work: Callable[[], Awaitable[T]],
    adapter: TypeAdapter[T],
    *,
    holds_of: idempotency.HoldsOf[T],
    status: int = 201,
    conversation_id: str | None = None,
    path: str | None = None,
) -> Response:
    """Run ``work`` (short: it runs inside the key's claim) and answer with
    its result; with an Idempotency-Key, at most once per key, replaying the
    first answer to repeats. ``holds_of`` says what content the answer holds
    (idempotency.Holds): deleting it forgets the answer. ``conversation_id``:
    the existing conversation the work writes to (locked before the key);
    ``path``: the request's path as the key remembers it (see ``asked``)."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return answer(await work(), adapter, status, replayed=False)
    result, replayed = await ctx.store.run_once(
        user_id,
        key,
        asked(request, body, path),
        work,
        adapter,
        status=status,
        holds_of=holds_of,
        conversation_id=conversation_id,
    )
    return answer(result, adapter, status, replayed)
