"""Reading a JSON request body: media type, size cap while streaming, strict JSON.

The cap is enforced as the body arrives: a declared Content-Length over the
cap is refused before a byte is read, and a chunked or lying upload is cut
off at the first chunk past the cap, so a 100 MiB upload never sits in memory.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

from starlette.requests import ClientDisconnect, Request

from chatstore.http.errors import HTTPError

_MAX_DEPTH_MESSAGE = "JSON nested too deeply"


class BodyLimits(Protocol):
    @property
    def max_body_bytes(self) -> int: ...

    @property
    def body_timeout_seconds(self) -> float: ...


def _check_media_type(request: Request) -> None:
    raw = request.headers.get("content-type")
    if raw is None:
        raise HTTPError(415, "unsupported_media_type", "send the body as application/json")
    media_type, _, params = raw.partition(";")
    if media_type.strip().lower() != "application/json":
        raise HTTPError(
            415, "unsupported_media_type", f"send the body as application/json, not {raw!r}"
        )
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise HTTPError(415, "unsupported_media_type", "JSON bodies must be UTF-8")


def _too_large(max_bytes: int) -> HTTPError:
    return HTTPError(
        413, "payload_too_large", f"the body is larger than the limit of {max_bytes} bytes"
    )


async def read_body(request: Request, max_bytes: int, seconds: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    try:
        # The whole body within `seconds`: a client dripping a byte at a
        # time (slowloris) does not hold the request open forever.
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(max_bytes)
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPError(
            408, "request_timeout", f"the body did not arrive within {seconds:g} seconds"
        ) from None
    except ClientDisconnect:
        # The client hung up (or broke the chunked framing) mid-body: nobody
        # is left to answer, and it is not the server's error.
        raise HTTPError(400, "bad_request", "the connection closed before the body ended") from None
    return b"".join(chunks)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # {"role": "user", "role": "tool"} means two things; refuse to guess.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no NaN/Infinity."""
    try:
        text = body.decode("utf-8")
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except UnicodeDecodeError:
        raise HTTPError(400, "invalid_json", "the body is not valid UTF-8") from None
    except RecursionError:
        raise HTTPError(400, "invalid_json", _MAX_DEPTH_MESSAGE) from None
    except ValueError as error:
        raise HTTPError(400, "invalid_json", f"the body is not valid JSON: {error}") from None


async def read_json(request: Request, limits: BodyLimits, *, empty: Any = None) -> Any:
    """The parsed body. ``empty`` is returned for a missing body when the
    endpoint allows one (e.g. ``{}``); otherwise a missing body is invalid."""
    if empty is not None and _has_no_body(request):
        return empty
    _check_media_type(request)
    body = await read_body(request, limits.max_body_bytes, limits.body_timeout_seconds)
    if not body and empty is not None:
        return empty
    return parse_json(body)


def _has_no_body(request: Request) -> bool:
    return request.headers.get("content-length") in (None, "0") and (
        "transfer-encoding" not in request.headers
    )
