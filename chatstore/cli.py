"""The `chatstore` command: serve, migrate, token, purge, erase, queries."""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import os
import signal
import sys
import webbrowser
from collections.abc import Sequence
from types import FrameType
from urllib.parse import quote

from chatstore import migrations
from chatstore.config import Settings
from chatstore.embedded import ClusterError, database_url


def _serve(args: argparse.Namespace, settings: Settings) -> None:
    from chatstore import logs, serving

    # This process's own lines (the migrations applied) in the same format as
    # the server's; uvicorn applies the same configuration in each worker.
    log_config = logs.config(settings.log_format, args.log_level)
    logging.config.dictConfig(log_config)
    with database_url(settings) as url:
        applied = migrations.apply(settings.direct_database_url or url)
        if applied:
            logging.getLogger("chatstore.cli").info("applied migrations %s", ", ".join(applied))
        # Workers are separate processes: they find the database in their
        # environment, whether it is the configured one or the embedded one.
        os.environ["CHATSTORE_DATABASE_URL"] = url
        if settings.database_url is None:
            _print_sign_in_line(settings, url, args.host, args.port)
        # uvicorn re-raises the SIGTERM it handled once it has shut down;
        # turning it into SystemExit lets the embedded cluster stop cleanly.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        serving.run(
            "chatstore.http.app:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            # chatstore's and uvicorn's loggers, in CHATSTORE_LOG_FORMAT, in
            # every worker process (chatstore/logs.py). chatstore logs one
            # line a request itself (chatstore/http/middleware.py), so
            # uvicorn's access log stays off unless --access-log.
            log_config=log_config,
            access_log=args.access_log,
            # Event streams never end by themselves: after this long, a
            # stopping server cancels them (their clients reconnect with
            # Last-Event-ID, to another process, and miss nothing).
            timeout_graceful_shutdown=args.shutdown_timeout,
            # uvloop and httptools unless the settings opt out (issue 11
            # measured them; BENCHMARKS.md).
            loop=settings.serve_loop,
            http=serving.HTTP_PROTOCOLS[settings.serve_http],
        )


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _migrate(args: argparse.Namespace, settings: Settings) -> None:
    with database_url(settings) as pooled:
        url = settings.direct_database_url or pooled
        if args.action == "apply":
            done = migrations.apply(url)
            print(f"applied: {', '.join(done)}" if done else "nothing to apply")
        elif args.action == "rollback":
            done = migrations.rollback(url, None if args.all else args.count)
            print(f"rolled back: {', '.join(done)}" if done else "nothing to roll back")
        elif args.action == "break-lock":
            migrations.break_lock(url)
            print("migration lock removed")
        else:
            for state in migrations.status(url):
                print(f"{'applied' if state.applied else 'pending'}  {state.id}")


def _new_session(settings: Settings, url: str, email: str, name: str | None = None) -> str:
    """A session token for the user with ``email`` (created if new)."""
    from chatstore import sessions
    from chatstore.store import ChatStore

    async def make() -> str:
        async with ChatStore(url, settings=settings) as store:
            _user_id, token = await sessions.create_session(store, email, name=name)
            return token

    return asyncio.run(make())


def sign_in_link(base_url: str, token: str) -> str:
    """The page's sign-in link. The token rides in the fragment: browsers
    never send a fragment to the server, so it stays out of access logs and
    Referer headers; the page moves it into its storage and out of the
    address bar (chatstore/web/api.js)."""
    return f"{base_url.rstrip('/')}/#token={quote(token, safe='')}"


def page_url(host: str, port: int) -> str:
    """Where a browser on this machine reaches `serve --host host --port port`."""
    if host in ("", "0.0.0.0", "::"):  # every interface: loopback is one of them
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def open_in_browser(link: str) -> bool:
    """Opens ``link`` where a person has a graphical browser. On a Linux box
    without a display, webbrowser would start a text browser (lynx, w3m) in
    this very terminal, so there it is left to the person to copy the link."""
    linux = sys.platform.startswith("linux")
    if linux and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        return webbrowser.open(link)
    except webbrowser.Error:
        return False


def _token(args: argparse.Namespace, settings: Settings) -> None:
    with database_url(settings) as url:
        migrations.apply(url)
        token = _new_session(settings, url, args.email, args.name)
    if not args.open:
        print(token)
        return
    link = sign_in_link(args.url, token)
    print(link)
    opened = open_in_browser(link)
    print(
        "opened in your browser" if opened else "open this link in a browser to sign it in",
        file=sys.stderr,
    )


# The local user `chatstore serve` signs in on its embedded database.
LOCAL_EMAIL = "you@localhost"


def _print_sign_in_line(settings: Settings, url: str, host: str, port: int) -> None:
    """On the embedded default only, a link that signs a browser in as a
    local user: the database is this machine's own. A configured
    CHATSTORE_DATABASE_URL is someone's real user base: never a token there."""
    link = sign_in_link(page_url(host, port), _new_session(settings, url, LOCAL_EMAIL))
    # print, not the log: the token belongs on this terminal, not in log files.
    print(f"chatstore: open {link} to sign in as {LOCAL_EMAIL}", flush=True)


def _purge(args: argparse.Namespace, settings: Settings) -> None:
    """Retention once: what is idle for the days given (or configured) goes,
    or with --dry-run is listed, per user: counts, then the ids."""
    from chatstore import retention
    from chatstore.store import ChatStore

    days = args.days if args.days is not None else settings.retention_days
    if days is None or days < 1:
        raise ValueError("give --days N (1 or more) or set CHATSTORE_RETENTION_DAYS")

    async def run() -> retention.Purged:
        async with ChatStore(url, settings=settings) as store:
            if args.dry_run:
                return await store.idle_conversations(days)
            return await store.purge_idle(days)

    with database_url(settings) as url:
        purged = asyncio.run(run())
    verb = "would delete" if args.dry_run else "deleted"
    print(
        f"{verb} {purged.total} conversations ({sum(purged.messages.values())} messages) "
        f"idle for {days} days, of {len(purged.conversations)} users"
    )
    for user_id in sorted(purged.ids):
        print(
            f"user {user_id}: {purged.conversations[user_id]} conversations, "
            f"{purged.messages[user_id]} messages"
        )
        for conversation_id in purged.ids[user_id]:
            print(f"  {conversation_id}")


def _erase(args: argparse.Namespace, settings: Settings) -> None:
    """DELETE /api/me/data for the user with this id, from the shell."""
    from chatstore.store import ChatStore

    async def run() -> str:
        async with ChatStore(url, settings=settings) as store:
            return (await store.erase_user_data(args.user)).model_dump_json()

    with database_url(settings) as url:
        print(asyncio.run(run()))


def _queries(args: argparse.Namespace, settings: Settings) -> None:
    from chatstore.queries import Queries
    from chatstore.resources import sql_dir

    print("\n".join(Queries.load(sql_dir()).describe()))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="chatstore", description="PostgreSQL persistence for LLM chatbots."
    )
    commands = top.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="apply pending migrations, then serve HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=False)
    serve.add_argument(
        "--shutdown-timeout",
        type=float,
        default=5.0,
        help="seconds open requests and event streams get to finish on shutdown",
    )
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="apply, roll back or list migrations")
    migrate.add_argument(
        "action", nargs="?", default="status", choices=["apply", "rollback", "status", "break-lock"]
    )
    how_many = migrate.add_mutually_exclusive_group()
    how_many.add_argument("--count", type=int, default=1, help="rollback: how many (default 1)")
    how_many.add_argument("--all", action="store_true", help="rollback: every migration")
    migrate.set_defaults(run=_migrate)

    token = commands.add_parser("token", help="print a bearer token for a (new) user")
    token.add_argument("--email", required=True)
    token.add_argument("--name", default=None)
    token.add_argument(
        "--open",
        action="store_true",
        help="print a link that signs a browser in to the chat page (and open it where possible)",
    )
    token.add_argument(
        "--url",
        default="http://127.0.0.1:8000",
        help="--open: where the page is served (default http://127.0.0.1:8000)",
    )
    token.set_defaults(run=_token)

    purge = commands.add_parser(
        "purge", help="delete the conversations idle for CHATSTORE_RETENTION_DAYS, once"
    )
    purge.add_argument(
        "--days", type=int, default=None, help="idle for this many days (default: the setting)"
    )
    purge.add_argument(
        "--dry-run", action="store_true", help="list what would go, per user; delete nothing"
    )
    purge.set_defaults(run=_purge)

    erase = commands.add_parser(
        "erase", help="delete everything a user stored (not the user, not their sessions)"
    )
    erase.add_argument("--user", required=True, help="the user's id")
    erase.set_defaults(run=_erase)

    queries = commands.add_parser("queries", help="list every named SQL query")
    queries.set_defaults(run=_queries)
    return top


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        args.run(args, settings)
    except (ClusterError, migrations.MigrationLocked, ValueError) as error:
        # One clear sentence, no traceback: these are the user's to fix.
        print(f"chatstore: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
