"""Path and query parameters, parsed strictly: a bad value is a 422 (query)
or a 404 (path: a malformed id names nothing)."""

from __future__ import annotations

from starlette.requests import Request

from chatstore.errors import NotFound, ValidationError
from chatstore.models import MAX_SEQ

__all__ = ["MAX_SEQ", "path_seq", "query_choice", "query_int"]


def query_int(
    request: Request, name: str, *, default: int | None, minimum: int, maximum: int
) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    # ASCII digits only: int() would also take " 5", "+5", "5_0" and other scripts' digits.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not minimum <= int(raw) <= maximum:
        raise ValidationError.at(
            ["query", name], f"{name} must be an integer from {minimum} to {maximum}"
        )
    return int(raw)


def query_choice(request: Request, name: str, choices: tuple[str, ...], default: str) -> str:
    raw = request.query_params.get(name, default)
    if raw not in choices:
        raise ValidationError.at(["query", name], f"{name} must be one of {', '.join(choices)}")
    return raw


def path_seq(request: Request) -> int:
    raw: str = request.path_params["seq"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > MAX_SEQ:
        raise NotFound("message")
    return int(raw)
