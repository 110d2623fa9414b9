"""The opaque keyset cursor of conversation listings.

A cursor is the (updated_at, id) of the last conversation of a page, as
URL-safe base64 of a small JSON array. It is opaque to clients; anything that
does not decode to exactly that shape is refused, never guessed at.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid

from chatstore.errors import ValidationError

_MAX_CURSOR_CHARS = 200


def encode(updated_at: dt.datetime, id: uuid.UUID) -> str:
    raw = json.dumps([updated_at.isoformat(), str(id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    invalid = ValidationError.at(["query", "cursor"], "cursor is not one this server issued")
    if not cursor or len(cursor) > _MAX_CURSOR_CHARS:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        updated_at_text, id_text = json.loads(raw)
        if not isinstance(updated_at_text, str) or not isinstance(id_text, str):
            raise invalid
        updated_at = dt.datetime.fromisoformat(updated_at_text)
        if updated_at.tzinfo is None:
            raise invalid
        # In UTC here, as the database will: an instant off the calendar
        # there (year 1 at +14:00) must fail now, not in the driver.
        updated_at = updated_at.astimezone(dt.UTC)
        id = uuid.UUID(id_text)
    except (binascii.Error, ValueError, TypeError, OverflowError):
        raise invalid from None
    return updated_at, id
