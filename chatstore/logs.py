"""Logging of ``chatstore serve``: one format for every line, text or JSON.

``config()`` is a ``logging.config.dictConfig`` dictionary handed to
uvicorn as its ``log_config``: uvicorn applies it in every process it runs
(each ``--workers`` process is spawned, so configuring the parent alone would
leave the workers unconfigured). chatstore's loggers and uvicorn's share one
handler on stderr, so a JSON deployment gets JSON from both.

The request id of the request being answered (chatstore/http/middleware.py
sets it) is on every record made while answering it, so an error logged
deep in a request can be joined with that request's log line.
"""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")

# The request being answered, for every record logged while answering it.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "chatstore_request_id", default=None
)

# Fields a record may carry (logging's ``extra=``) that the formats show.
FIELDS = ("method", "route", "status", "duration_ms", "request_id")

# The attributes every LogRecord has: what is not among them came as extra=.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class RequestIdFilter(logging.Filter):
    """Stamps the current request's id on each record (when there is one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            request_id = REQUEST_ID.get()
            if request_id is not None:
                record.request_id = request_id
        return True


class QuietPoolRetries(logging.Filter):
    """Drops asyncpg's "Failed to restore the pool connection floor" warnings.

    asyncpg logs one, with a traceback, each time it retries to reconnect
    its pool's minimum during an outage (at 1, 2, 4, ... seconds). The outage
    is already told twice, when it starts and when it ends
    (chatstore/availability.py); with DEBUG on, they still show.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "asyncpg.pool" and str(record.msg).startswith(
            "Failed to restore the pool connection floor"
        ):
            return logging.getLogger("chatstore").isEnabledFor(logging.DEBUG)
        return True


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value...`` for the fields a record carries."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            first, newline, rest = line.partition("\n")  # before a traceback
            line = f"{first} request_id={request_id}{newline}{rest}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the record's
    extra fields, and a traceback (as a string, so still one line)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key != "color_message":
                entry[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def check_format(value: str) -> str:
    if value not in FORMATS:
        raise ValueError(f"CHATSTORE_LOG_FORMAT must be one of {', '.join(FORMATS)}, got {value!r}")
    return value


def config(log_format: str = "text", level: str = "info") -> dict[str, Any]:
    """A dictConfig for chatstore's and uvicorn's loggers (uvicorn's
    ``log_config``). uvicorn still sets its own loggers' level from
    ``--log-level`` and silences uvicorn.access unless ``--access-log``."""
    formatter = JsonFormatter if check_format(log_format) == "json" else TextFormatter
    handler = {"handlers": ["stderr"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"chatstore": {"()": f"{__name__}.{formatter.__name__}"}},
        "filters": {
            "request_id": {"()": f"{__name__}.{RequestIdFilter.__name__}"},
            "pool_retries": {"()": f"{__name__}.{QuietPoolRetries.__name__}"},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "chatstore",
                "filters": ["request_id", "pool_retries"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            # uvicorn's "trace" is finer than any level chatstore logs at.
            "chatstore": {**handler, "level": "DEBUG" if level == "trace" else level.upper()},
            "uvicorn": handler,
            "uvicorn.error": {"level": "INFO"},  # propagates to "uvicorn"
            "uvicorn.access": handler,
        },
        # Libraries' records (asyncpg, asyncio) on the same handler.
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
