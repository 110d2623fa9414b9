"""Database failures turned into chatstore's typed errors, in one place.

A lost or refused connection, a server shutting down or restarting, a pool
that cannot hand out a connection in time, a statement past its timeout:
all mean "not now" to the caller, so they become Unavailable (HTTP 503 with
Retry-After). Constraint violations that input validation could not foresee
(a reused tool call id) become ValidationError. Anything else is a bug and
propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from chatstore import metrics
from chatstore.availability import DATABASE
from chatstore.errors import Unavailable, ValidationError

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    asyncio.TimeoutError,  # connect or acquire timed out
    asyncpg.PostgresConnectionError,  # class 08: connection exceptions
    asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.AdminShutdownError,  # 57P01: fast shutdown / pg_terminate_backend
    asyncpg.CrashShutdownError,  # 57P02: a backend crashed, all reset
    asyncpg.TooManyConnectionsError,  # 53300
    asyncpg.QueryCanceledError,  # 57014: statement_timeout or a cancel
    asyncpg.DeadlockDetectedError,  # 40P01: retryable by the caller
    asyncpg.SerializationError,  # 40001: retryable by the caller
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,  # "connection is closed" and friends
    asyncpg.InternalClientError,  # a connection that died idle in the pool (chatstore/pool.py)
)


@contextmanager
def translate_errors() -> Iterator[None]:
    try:
        yield
    except asyncpg.UniqueViolationError as error:
        if error.constraint_name == "message_tool_calls_pkey":
            raise ValidationError.at(
                ["messages", "tool_calls"],
                "a tool call id is already used by an earlier message of this conversation",
            ) from None
        raise
    except _UNAVAILABLE as error:
        metrics.DATABASE_ERRORS.labels(type(error).__name__).inc()
        raise Unavailable() from error
    else:
        # The database answered: an outage, if one was logged, is over.
        DATABASE.available()
