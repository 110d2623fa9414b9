"""Fixtures of the HTTP suite (tests/http), loaded as a pytest plugin.

Why not tests/http/conftest.py: tests/ has no ``__init__.py``, so mypy (run on
``tests`` per pyproject) would name both conftest files ``conftest`` and refuse
to check anything ("Duplicate module named 'conftest'"); an ``__init__.py``
here would make this folder the package ``http`` and shadow the standard
library. So every test module of this folder says
``pytest_plugins = ["http_fixtures"]`` and imports helpers from http_helpers.

The app is the real one (``create_app``) with its lifespan running over the
suite's migrated database; callers are fresh better-auth users with real
sessions. Nothing is mocked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from http_helpers import MakeUser, User, make_user, open_app, open_client
from starlette.applications import Starlette

from chatstore.config import Settings
from chatstore.store import ChatStore

# -- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="session")
async def app(settings: Settings, store: ChatStore) -> AsyncIterator[Starlette]:
    async with open_app(settings, store) as running:
        yield running


@pytest.fixture(scope="session")
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with open_client(app) as opened:
        yield opened


@pytest.fixture(scope="session")
def new_http_user(store: ChatStore) -> MakeUser:
    async def make() -> User:
        return await make_user(store)

    return make


@pytest.fixture
async def alice(new_http_user: MakeUser) -> User:
    return await new_http_user()


@pytest.fixture
async def bob(new_http_user: MakeUser) -> User:
    return await new_http_user()
