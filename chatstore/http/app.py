"""The Starlette app: routes, error handlers, and a lifespan owning the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from starlette.applications import Starlette
from starlette.types import ASGIApp

from chatstore import metrics
from chatstore.config import Settings
from chatstore.gctune import tune_for_serving
from chatstore.http.auth import Authenticator
from chatstore.http.consistency import ReadYourWrites
from chatstore.http.context import Context
from chatstore.http.endpoints import routes
from chatstore.http.errors import EXCEPTION_HANDLERS
from chatstore.http.middleware import RequestObserver
from chatstore.http.openapi import openapi_document
from chatstore.http.streams import StreamSlots
from chatstore.http.web import routes as web_routes
from chatstore.responder import Responder, load_responder
from chatstore.store import ChatStore


def create_app(
    settings: Settings | None = None,
    *,
    store: ChatStore | None = None,
    responder: Responder | None = None,
    tune_gc: bool = False,
) -> Starlette:
    """The HTTP API. Without ``store``, the lifespan opens one on
    ``settings.database_url`` and closes it on shutdown. ``tune_gc``: a
    serving process's garbage collector settings once started
    (chatstore/gctune.py)."""
    settings = settings or Settings.from_env()
    if store is None and settings.database_url is None:
        raise ValueError(
            "set CHATSTORE_DATABASE_URL (or run `chatstore serve`, which starts "
            "an embedded PostgreSQL when no URL is given)"
        )
    chosen_responder = responder or load_responder(settings.responder, settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        opened = store or ChatStore(settings.database_url, settings=settings)
        await opened.open()
        hub = opened.message_events()
        app.state.streams = StreamSlots(
            settings.max_streams_per_user, "event streams", metrics.EVENT_STREAMS
        )
        app.state.exports = StreamSlots(settings.max_exports_per_user, "exports")
        purger = asyncio.create_task(
            opened.purge_idempotency_keys_forever(), name="chatstore-purge"
        )
        retention = (
            None
            if settings.retention_days is None
            else asyncio.create_task(
                opened.retain_forever(settings.retention_days), name="chatstore-retention"
            )
        )
        try:
            # Listening from the start: the session cache is trusted only
            # while revocations can be heard (chatstore/http/auth.py).
            await hub.start()
            app.state.context = Context(
                settings=settings,
                store=opened,
                auth=Authenticator(
                    opened,
                    settings.auth_secret,
                    hub,
                    cache_seconds=settings.auth_cache_seconds,
                ),
                responder=chosen_responder,
                events=hub,
            )
            if tune_gc:
                tune_for_serving()
            yield
        finally:
            for job in (purger, retention):
                if job is not None:
                    job.cancel()
                    with suppress(asyncio.CancelledError):
                        await job
            await hub.stop()
            if responder is None:
                # The responder this app loaded (the openai one's HTTP client).
                closer = getattr(chosen_responder, "aclose", None)
                if closer is not None:
                    await closer()
            if store is None:
                await opened.close()

    app = _ObservedStarlette(
        # The API's endpoints (one table), and the web page's (no API).
        routes=[*routes(), *web_routes()],
        exception_handlers=dict(EXCEPTION_HANDLERS),
        lifespan=lifespan,
    )
    app.state.openapi = openapi_document()
    return app


class _ObservedStarlette(Starlette):
    """Starlette with RequestObserver (metrics, request log, request id)
    outside its whole stack: a middleware given to Starlette runs inside
    ServerErrorMiddleware, and would miss the 500 it answers for a bug.
    ReadYourWrites (the Chatstore-LSN header) sits just inside it."""

    def build_middleware_stack(self) -> ASGIApp:
        return RequestObserver(ReadYourWrites(super().build_middleware_stack()))


def app_from_env() -> Starlette:
    """Factory for uvicorn workers: ``chatstore.http.app:app_from_env``."""
    return create_app(Settings.from_env(), tune_gc=True)
