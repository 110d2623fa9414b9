"""Database failures turned into chatstore's typed errors, in one place.

A lost or refused connection, a server shutting down or restarting, a pool
that cannot hand out a connection in time, a statement past its timeout, a
statement prepared before a migration changed what it returns:
all mean "not now" to the caller, so they become Unavailable (HTTP 503 with
Retry-After). Constraint violations that input validation could not foresee
(a reused tool call id) become ValidationError. Anything else is a bug and
propagates.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

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
    # 55P03: lock_timeout, chatstore's after a wait in line
    # (chatstore/writers.py) or one an operator set on the role
    asyncpg.LockNotAvailableError,
    asyncpg.DeadlockDetectedError,  # 40P01: retryable by the caller
    asyncpg.SerializationError,  # 40001: retryable by the caller
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,  # "connection is closed" and friends
    asyncpg.InternalClientError,  # a connection that died idle in the pool (chatstore/pool.py)
    # A statement prepared before a migration changed its result's types
    # (0A000 "cached plan must not change result type"; migrations/0017):
    # asyncpg prepares it again by itself, except inside a transaction,
    # which the error has broken. It has dropped the pool's cached
    # statements by then, so the retry works.
    asyncpg.InvalidCachedStatementError,
)


class _Translating:
    """What ``with translate_errors():`` enters. A class rather than a
    @contextmanager generator: every query enters it, and the generator
    cost about 1.5 µs of CPU each time."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None:
            # The database answered: an outage, if one was logged, is over.
            DATABASE.available()
            return
        if isinstance(error, asyncpg.UniqueViolationError):
            if error.constraint_name == "message_tool_calls_pkey":
                raise ValidationError.at(
                    ["messages", "tool_calls"],
                    "a tool call id is already used by an earlier message of this conversation",
                ) from None
            return
        if isinstance(error, _UNAVAILABLE):
            metrics.DATABASE_ERRORS.labels(type(error).__name__).inc()
            raise Unavailable() from error


_TRANSLATING = _Translating()


def translate_errors() -> _Translating:
    """Database failures raised inside the block become chatstore's errors."""
    return _TRANSLATING
