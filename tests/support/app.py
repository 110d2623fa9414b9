"""The app in process: the real ``create_app`` with its lifespan running, and
an httpx client over ASGITransport (which runs no lifespan itself)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette

from chatstore.config import Settings
from chatstore.http.app import create_app
from chatstore.responder import Responder
from chatstore.store import ChatStore

BASE_URL = "http://test"


@asynccontextmanager
async def open_app(
    settings: Settings, store: ChatStore | None, *, responder: Responder | None = None
) -> AsyncIterator[Starlette]:
    """An app with its lifespan running (which opens a store of its own when
    ``store`` is None, as ``chatstore serve`` does)."""
    app = create_app(settings, store=store, responder=responder)
    async with app.router.lifespan_context(app):
        yield app


@asynccontextmanager
async def open_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    # raise_app_exceptions=False: a bug surfaces as the 500 a real client would
    # get (the traceback is logged by chatstore.http), not as an exception here.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client


@asynccontextmanager
async def app_client(
    settings: Settings, store: ChatStore | None, *, responder: Responder | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a separately configured app (other caps, cache, responder)."""
    async with open_app(settings, store, responder=responder) as app, open_client(app) as client:
        yield client
