"""Pydantic validation turned into chatstore's ValidationError with details."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import pydantic

from chatstore.config import Settings
from chatstore.errors import ValidationError
from chatstore.models import MessageInput

M = TypeVar("M", bound=pydantic.BaseModel)


def validate_model(
    model: type[M], data: Any, settings: Settings, *, loc: Sequence[str | int] = ()
) -> M:
    """Validate ``data`` against ``model``; an instance was validated when it
    was made and is returned as it is (see ``check_content_cap``)."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data, context={"max_content_chars": settings.max_content_chars})
    except pydantic.ValidationError as error:
        raise from_pydantic(error, loc) from None


def from_pydantic(
    error: pydantic.ValidationError, loc: Sequence[str | int] = ()
) -> ValidationError:
    details = [
        {"loc": [*loc, *item["loc"]], "msg": _message(item)}
        for item in error.errors(include_url=False, include_context=False, include_input=False)
    ]
    first = details[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return ValidationError(f"{where}: {first['msg']}", details)


def _message(item: Any) -> str:
    message = str(item["msg"])
    # pydantic prefixes errors raised by our validators; the prefix adds nothing.
    return message.removeprefix("Value error, ")


def check_content_cap(message: MessageInput, max_chars: int, loc: Sequence[str | int] = ()) -> None:
    """The one rule that depends on settings, for messages built in Python
    (validated against the default cap, which the store's may undercut)."""
    if message.content is not None and len(message.content) > max_chars:
        raise ValidationError.at([*loc, "content"], f"must be at most {max_chars} characters")
    for index, call in enumerate(message.tool_calls or ()):
        if len(call.function.arguments) > max_chars:
            raise ValidationError.at(
                [*loc, "tool_calls", index, "function", "arguments"],
                f"must be at most {max_chars} characters",
            )


def check_limit(limit: int, maximum: int) -> None:
    """A page size: 1 to ``maximum``."""
    if not 1 <= limit <= maximum:
        raise ValidationError.at(["query", "limit"], f"limit must be between 1 and {maximum}")
