"""Fixtures of the adversity suite (tests/adversity).

Every test owns its throwaway PostgreSQL cluster (fsync on) and its
``chatstore serve`` processes through a ``Lab``, taken down after the test
whatever happened. A failed test shows the servers' output and the tail of
the PostgreSQL log (the ``Lab`` shows its logs: support/fixtures.py).

The suite is its own CI stage: ``scripts/test tests/adversity``; the main
stage runs with ``--ignore=tests/adversity``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adversity.harness import Lab


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    opened = Lab()
    try:
        yield opened
    finally:
        await asyncio.to_thread(opened.close)
