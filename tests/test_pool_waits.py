"""PoolExecutor's bounded waits (chatstore/pool.py), on a real pool."""

from __future__ import annotations

import dataclasses

import pytest

from chatstore.config import Settings
from chatstore.store import ChatStore


async def test_an_acquire_timeout_does_not_renew_the_pools_connections(
    database: str, settings: Settings
) -> None:
    # One connection, held; a second caller times out waiting for it. That
    # says nothing about the held connection: once released it is handed out
    # again, not closed (it was, when every TimeoutError renewed the pool).
    tight = dataclasses.replace(
        settings, pool_min_size=1, pool_max_size=1, acquire_timeout_seconds=0.2
    )
    async with ChatStore(database, settings=tight) as store:
        async with store.connection() as held:
            pid = held.get_server_pid()
            with pytest.raises(TimeoutError):
                async with store.connection():
                    pass
        async with store.connection() as again:
            assert again.get_server_pid() == pid
