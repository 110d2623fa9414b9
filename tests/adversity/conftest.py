"""Fixtures of the adversity suite (tests/adversity).

Every test owns its throwaway PostgreSQL cluster (fsync on) and its
``chatstore serve`` processes through a ``Lab``, taken down after the test
whatever happened. A failed test shows the servers' output and the tail of
the PostgreSQL log.

The suite is its own CI stage: ``scripts/test tests/adversity``; the main
stage runs with ``--ignore=tests/adversity``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator

import pytest

from adversity.harness import Lab


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and isinstance(item, pytest.Function):
        lab = item.funcargs.get("lab")
        if isinstance(lab, Lab):
            report.sections.append(("server and postgres logs", lab.logs()))
    return report


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    opened = Lab()
    try:
        yield opened
    finally:
        await asyncio.to_thread(opened.close)
