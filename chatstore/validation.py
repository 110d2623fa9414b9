"""Pydantic validation turned into chatstore's ValidationError with details."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import pydantic

from chatstore.config import Settings
from chatstore.errors import ValidationError

M = TypeVar("M", bound=pydantic.BaseModel)


def validate_model(
    model: type[M], data: Any, settings: Settings, *, loc: Sequence[str | int] = ()
) -> M:
    """Validate ``data`` (a mapping or an instance) against ``model``.

    An instance is validated again too: the content cap is a setting of the
    store, not of the model's defaults.
    """
    if isinstance(data, model):
        data = data.model_dump(exclude_unset=True)
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
