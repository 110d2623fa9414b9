"""Errors on the /v1 routes, in OpenAI's shape: the same errors as elsewhere
(chatstore/http/errors.py decides which), told the way OpenAI's API tells
them, so that the official client raises its usual exceptions
(``openai.NotFoundError``, ``BadRequestError``, ...)::

    {"error": {"message": "...", "type": "invalid_request_error",
               "param": "items[0].role" | null, "code": "not_found" | null}}

What differs from the /api contract: a well-formed request that breaks a
rule is a 400 (OpenAI has no 422), the field at fault is ``param``, and an
unknown or missing session is code ``invalid_api_key`` (the session token is
the client's api_key). The machine codes are chatstore's otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

PREFIX = "/v1/"

# The client retries a 409 unless told not to: a used Idempotency-Key stays used.
_FINAL_CODES = frozenset({"idempotency_conflict"})


def speaks_openai(request: Request) -> bool:
    """Whether ``request`` is one of the /v1 routes (or would be)."""
    path: str = request.scope.get("path", "")
    return path.startswith(PREFIX) or path == PREFIX.rstrip("/")


def error_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    if status == 429:
        return "rate_limit_error"
    return "invalid_request_error"


def param_of(details: Sequence[Mapping[str, Any]] | None) -> str | None:
    """The field at fault as OpenAI names it: ``items[3].content``; None when
    the error is not about one field."""
    if not details:
        return None
    loc = [part for part in details[0].get("loc", ()) if part not in ("body", "query", "header")]
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or None


def openai_error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    if status == 422:
        status = 400
    if code == "unauthorized":
        code = "invalid_api_key"
    sent = dict(headers or {})
    if code in _FINAL_CODES:
        sent["x-should-retry"] = "false"
    body = {
        "error": {
            "message": message,
            "type": error_type(status),
            "param": param_of(details),
            "code": code,
        }
    }
    return JSONResponse(body, status_code=status, headers=sent)
