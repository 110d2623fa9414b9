"""Fixtures of the feature tests (tests/features).

The app is the real one (``create_app``) with its lifespan running over the
suite's migrated database; callers are fresh better-auth users with real
sessions. Nothing is mocked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator

import httpx
import pytest

from chatstore.config import Settings
from chatstore.store import ChatStore
from features.helpers import Caller, MakeCaller, ServerLogs, make_caller, open_api


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that used server processes shows their output."""
    report = yield
    if report.failed and isinstance(item, pytest.Function):
        for value in item.funcargs.values():
            if isinstance(value, ServerLogs):
                report.sections.append(("chatstore serve output", value.logs()))
    return report


@pytest.fixture(scope="session")
async def api(settings: Settings, store: ChatStore) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app, in process (httpx's ASGITransport)."""
    async with open_api(settings, store) as client:
        yield client


@pytest.fixture(scope="session")
def new_caller(store: ChatStore) -> MakeCaller:
    async def make() -> Caller:
        return await make_caller(store)

    return make


@pytest.fixture
async def caller(new_caller: MakeCaller) -> Caller:
    return await new_caller()


@pytest.fixture
async def stranger(new_caller: MakeCaller) -> Caller:
    return await new_caller()
