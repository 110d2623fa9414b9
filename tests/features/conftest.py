"""Fixtures shared by the feature tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chatstore import events
from chatstore.store import ChatStore


@pytest.fixture
async def hub(store: ChatStore) -> AsyncIterator[events.MessageEvents]:
    """A process's live-update hub (its LISTEN connection), stopped after the test."""
    running = events.MessageEvents(store)
    try:
        yield running
    finally:
        await running.stop()
