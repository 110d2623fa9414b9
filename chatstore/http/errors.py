"""Every error leaves the app in the contract's body, from this one module."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chatstore.availability import DATABASE
from chatstore.errors import (
    ChatStoreError,
    IdempotencyConflict,
    IdempotencyInProgress,
    NotFound,
    ResponderError,
    ResponderTimeout,
    SeqConflict,
    Unavailable,
    ValidationError,
)
from chatstore.http.v1_errors import openai_error_response, speaks_openai

log = logging.getLogger("chatstore.http")

RETRY_AFTER_SECONDS = "1"

_STATUS: dict[type[ChatStoreError], int] = {
    NotFound: 404,
    SeqConflict: 409,
    IdempotencyConflict: 409,
    IdempotencyInProgress: 409,
    ValidationError: 422,
    ResponderError: 502,
    ResponderTimeout: 504,
    Unavailable: 503,
}

# Starlette's own HTTP errors (routing, methods) in the contract's vocabulary.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class HTTPError(Exception):
    """An error the HTTP layer itself finds (auth, media type, size, JSON)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def unauthorized(message: str = "a valid session is required") -> HTTPError:
    return HTTPError(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = list(details)
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def respond(
    request: Request,
    status: int,
    code: str,
    message: str,
    *,
    details: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The error in the body of the API asked: OpenAI's on /v1 (chatstore/http/v1_errors.py)."""
    if speaks_openai(request):
        return openai_error_response(status, code, message, details=details, headers=headers)
    return error_response(status, code, message, details=details, headers=headers)


async def handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return respond(request, exc.status, exc.code, exc.message, headers=exc.headers)


async def handle_store_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ChatStoreError)
    status = _STATUS.get(type(exc), 500)
    if isinstance(exc, ValidationError):
        return respond(request, status, exc.code, str(exc), details=exc.details)
    if isinstance(exc, Unavailable):
        # Logged once an outage, not once a request (chatstore/availability.py).
        DATABASE.unavailable(exc.__cause__)
        return respond(
            request, status, exc.code, str(exc), headers={"Retry-After": RETRY_AFTER_SECONDS}
        )
    if isinstance(exc, IdempotencyInProgress):
        return respond(
            request, status, exc.code, str(exc), headers={"Retry-After": RETRY_AFTER_SECONDS}
        )
    return respond(request, status, exc.code, str(exc))


async def handle_starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    return respond(request, exc.status_code, code, str(exc.detail), headers=exc.headers)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    # A bug: log it with its traceback; the client gets the contract's body.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return respond(request, 500, "internal_error", "an unexpected error occurred")


EXCEPTION_HANDLERS = {
    HTTPError: handle_http_error,
    ChatStoreError: handle_store_error,
    HTTPException: handle_starlette_error,
    Exception: handle_unexpected,
}
