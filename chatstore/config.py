"""Settings from the environment, validated once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from chatstore.logs import check_format
from chatstore.models import DEFAULT_MAX_CONTENT_CHARS


def _float(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum:  # also refuses nan
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def _urls(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of postgres:// URLs (blanks ignored)."""
    urls = tuple(part.strip() for part in (env.get(name) or "").split(",") if part.strip())
    for url in urls:
        if not url.startswith(("postgres://", "postgresql://")):
            raise ValueError(f"{name} holds URLs starting postgresql://, got one that does not")
    return urls


# The most messages a chat history window holds (chatstore/chat.py's MAX_HISTORY).
_MAX_RESPONDER_HISTORY = 1000


def _history_messages(env: Mapping[str, str]) -> int:
    name = "CHATSTORE_RESPONDER_HISTORY_MESSAGES"
    value = _int(env, name, 50, minimum=1)
    if value > _MAX_RESPONDER_HISTORY:
        raise ValueError(f"{name} must be at most {_MAX_RESPONDER_HISTORY}, got {value}")
    return value


SERVE_LOOPS = ("auto", "uvloop", "asyncio")
SERVE_HTTP = ("httptools", "h11")


MAX_FOLLOW_LEASE_SECONDS = 86_400


def _lease_seconds(env: Mapping[str, str]) -> int:
    # Bounded above: an interval of PostgreSQL's holds it, and a lease of a
    # day is already one that outlives its process by a day.
    seconds = _int(env, "CHATSTORE_FOLLOW_LEASE_SECONDS", 60, minimum=1)
    if seconds > MAX_FOLLOW_LEASE_SECONDS:
        raise ValueError(
            f"CHATSTORE_FOLLOW_LEASE_SECONDS must be at most {MAX_FOLLOW_LEASE_SECONDS},"
            f" got {seconds}"
        )
    return seconds


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or choices[0]
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    # None means: run on the embedded PostgreSQL cluster under data_dir.
    database_url: str | None = None
    # A direct (unpooled) URL to the same database, for what a transaction-
    # mode pooler (PgBouncer, Neon's "-pooler" host) cannot carry: LISTEN for
    # live updates, and migrations. Defaults to database_url.
    direct_database_url: str | None = None
    auth_secret: str | None = None
    data_dir: Path = field(default_factory=lambda: Path(".chatstore"))
    pool_min_size: int = 2
    pool_max_size: int = 10
    # 0 behind PgBouncer in transaction mode (unless PgBouncer >= 1.21 with
    # max_prepared_statements), where a prepared statement may land on
    # another server connection.
    statement_cache_size: int = 256
    # Server-side statement_timeout in milliseconds (0 = none): a stalled
    # statement becomes a clean error instead of holding a connection.
    statement_timeout_ms: int = 30_000
    # Bounded waits: for a new connection, and for a free one from the pool.
    connect_timeout_seconds: float = 5.0
    acquire_timeout_seconds: float = 5.0
    # A request body that has not fully arrived after this long is refused
    # (408), so a client dripping bytes cannot hold the request forever.
    body_timeout_seconds: float = 30.0
    # A request head (request line and headers) that has not fully arrived
    # this long after its first byte, or a new connection that has sent
    # nothing for this long, is answered 408 and closed by `chatstore serve`
    # (chatstore/http/head_limit.py): a connection is never held by a client
    # that does not finish its request.
    head_timeout_seconds: float = 30.0
    max_body_bytes: int = 8 * 1024 * 1024
    max_content_chars: int = DEFAULT_MAX_CONTENT_CHARS
    responder: str = "echo"
    # What a responder is shown of the conversation (chatstore/chat_turn.py):
    # at most this many messages before the user's new one, and at most this
    # many characters of content and tool-call arguments in all (0: no
    # character budget); the oldest go first.
    responder_history_messages: int = 50
    responder_history_chars: int = 100_000
    # A reply not complete after this long is cut off: 504 responder_timeout.
    responder_timeout_seconds: float = 120.0
    # Sent first, as the "system" message, by the openai responder.
    system_prompt: str | None = None
    # CHATSTORE_RESPONDER=openai: any OpenAI-compatible chat-completions
    # endpoint (None: the openai package's own default, api.openai.com).
    openai_base_url: str | None = None
    openai_api_key: str | None = None
    openai_model: str | None = None
    # Text-search configuration for new messages and for queries; 'simple'
    # works for every language (no stemming, no stop words).
    search_config: str = "simple"
    # Seconds between heartbeat comments on an idle event stream.
    heartbeat_seconds: float = 15.0
    # How long a checked session is trusted in-process (chatstore/http/auth.py).
    auth_cache_seconds: int = 5
    # A process that follows a conversation leases it for this long, and
    # renews the lease every third of it (chatstore/leases.py): appends are
    # announced only to leased conversations. A process that dies stops
    # renewing, and its leases lapse at most this long after.
    follow_lease_seconds: float = 60.0
    # `chatstore serve`'s log lines: "text" or "json" (one object a line).
    log_format: str = "text"
    # `chatstore serve`'s event loop and HTTP/1.1 parser, as uvicorn's loop
    # and http options. Loop: "auto" takes uvloop (a dependency where it
    # builds), "asyncio" opts out. Parser: "httptools" (llhttp, with the
    # request head bounded by chatstore/http/head_limit.py), or "h11", pure
    # Python and slower, which passes a control character in a header on to
    # the app where httptools answers 400 (docs/http-api.md, "Errors").
    serve_loop: str = "auto"
    serve_http: str = "httptools"
    # Plain appends: at most this many append statements of a process run
    # at once; appends that arrive while they all run go together, in one
    # statement and one commit, in the next (chatstore/appends.py). 0: no
    # limit, every append a statement of its own.
    append_statements: int = 2
    # Event streams (…/events) one user may hold open at once on a process.
    max_streams_per_user: int = 8
    # Streamed responses (exports) take their connection from a pool of
    # their own, this big, so that ordinary requests always find one in the
    # main pool however many streams are open or stalled.
    stream_pool_size: int = 4
    # A streamed response whose client takes nothing for this long (one
    # write cannot be handed to the socket) is ended, and with it its
    # connection and transaction (chatstore/http/streaming.py).
    stream_send_timeout_seconds: float = 30.0
    # Exports one user may run at once on a process: below the stream pool's
    # size, so that one user cannot take every stream connection.
    max_exports_per_user: int = 2
    # The longest an export may run, however steadily its client reads: its
    # snapshot holds back vacuum for the whole database while it is open.
    export_max_seconds: float = 600.0
    # Conversations with no activity (updated_at) for this many days are
    # deleted by a background job (chatstore/retention.py); None: kept forever.
    retention_days: int | None = None
    # Hot standbys that serve reads (chatstore/replicas.py); empty: none.
    replica_urls: tuple[str, ...] = ()
    # A replica further behind the primary than this is skipped until it
    # catches up (reads go to the primary).
    replica_max_lag_seconds: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            database_url=env.get("CHATSTORE_DATABASE_URL") or env.get("DATABASE_URL") or None,
            direct_database_url=env.get("CHATSTORE_DIRECT_DATABASE_URL") or None,
            auth_secret=env.get("BETTER_AUTH_SECRET") or None,
            data_dir=Path(env.get("CHATSTORE_DATA_DIR") or ".chatstore"),
            pool_min_size=_int(env, "CHATSTORE_POOL_MIN_SIZE", 2),
            pool_max_size=_int(env, "CHATSTORE_POOL_MAX_SIZE", 10, minimum=1),
            statement_cache_size=_int(env, "CHATSTORE_STATEMENT_CACHE_SIZE", 256),
            statement_timeout_ms=_int(env, "CHATSTORE_STATEMENT_TIMEOUT_MS", 30_000),
            connect_timeout_seconds=_int(env, "CHATSTORE_CONNECT_TIMEOUT_SECONDS", 5, minimum=1),
            acquire_timeout_seconds=_int(env, "CHATSTORE_ACQUIRE_TIMEOUT_SECONDS", 5, minimum=1),
            body_timeout_seconds=_int(env, "CHATSTORE_BODY_TIMEOUT_SECONDS", 30, minimum=1),
            head_timeout_seconds=_int(env, "CHATSTORE_HEAD_TIMEOUT_SECONDS", 30, minimum=1),
            max_body_bytes=_int(env, "CHATSTORE_MAX_BODY_BYTES", 8 * 1024 * 1024, minimum=1),
            max_content_chars=_int(
                env, "CHATSTORE_MAX_CONTENT_CHARS", DEFAULT_MAX_CONTENT_CHARS, minimum=1
            ),
            responder=env.get("CHATSTORE_RESPONDER") or "echo",
            responder_history_messages=_history_messages(env),
            responder_history_chars=_int(env, "CHATSTORE_RESPONDER_HISTORY_CHARS", 100_000),
            responder_timeout_seconds=_float(
                env, "CHATSTORE_RESPONDER_TIMEOUT_SECONDS", 120.0, minimum=0.001
            ),
            system_prompt=env.get("CHATSTORE_SYSTEM_PROMPT") or None,
            openai_base_url=env.get("CHATSTORE_OPENAI_BASE_URL") or None,
            openai_api_key=env.get("CHATSTORE_OPENAI_API_KEY") or None,
            openai_model=env.get("CHATSTORE_OPENAI_MODEL") or None,
            search_config=env.get("CHATSTORE_SEARCH_CONFIG") or "simple",
            auth_cache_seconds=_int(env, "CHATSTORE_AUTH_CACHE_SECONDS", 5),
            follow_lease_seconds=_lease_seconds(env),
            log_format=check_format(env.get("CHATSTORE_LOG_FORMAT") or "text"),
            serve_loop=_choice(env, "CHATSTORE_SERVE_LOOP", SERVE_LOOPS),
            serve_http=_choice(env, "CHATSTORE_SERVE_HTTP", SERVE_HTTP),
            append_statements=_int(env, "CHATSTORE_APPEND_STATEMENTS", 2),
            max_streams_per_user=_int(env, "CHATSTORE_MAX_STREAMS_PER_USER", 8, minimum=1),
            stream_pool_size=_int(env, "CHATSTORE_STREAM_POOL_SIZE", 4, minimum=1),
            max_exports_per_user=_int(env, "CHATSTORE_MAX_EXPORTS_PER_USER", 2, minimum=1),
            export_max_seconds=_int(env, "CHATSTORE_EXPORT_MAX_SECONDS", 600, minimum=1),
            stream_send_timeout_seconds=_int(
                env, "CHATSTORE_STREAM_SEND_TIMEOUT_SECONDS", 30, minimum=1
            ),
            retention_days=_int(env, "CHATSTORE_RETENTION_DAYS", 0) or None,
            replica_urls=_urls(env, "CHATSTORE_REPLICA_URLS"),
            replica_max_lag_seconds=_float(
                env, "CHATSTORE_REPLICA_MAX_LAG_SECONDS", 5.0, minimum=0.1
            ),
        )
