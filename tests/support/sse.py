"""Server-sent events read off a streaming response, line by line."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator


async def read_block(lines: AsyncIterator[str], seconds: float) -> list[str]:
    """The lines of the next SSE block (up to its blank line), within ``seconds``."""
    block: list[str] = []
    async with asyncio.timeout(seconds):
        async for line in lines:
            if line == "":
                if block:
                    return block
                continue
            block.append(line)
    raise AssertionError(f"the event stream ended; partial block {block!r}")


async def read_event(lines: AsyncIterator[str], seconds: float) -> list[str]:
    """The next SSE block that is an event, within ``seconds`` (comment
    blocks such as ``: connected`` and ``: heartbeat`` are skipped)."""
    deadline = time.monotonic() + seconds
    while True:
        block = await read_block(lines, max(deadline - time.monotonic(), 0.001))
        if not all(line.startswith(":") for line in block):
            return block
