"""A closed-loop HTTP/1.1 load generator on asyncio, run as its own process.

``python -m scripts.benchlib.loadgen SPEC.json`` reads the target, the number
of connections, the duration and a list of raw requests, keeps one
keep-alive connection per simulated client, sends the requests round-robin
and prints one JSON line with the counts and latency percentiles. It is the
fallback when ``wrk`` is absent, and the bench's yardstick for how much CPU
a Python client takes from the server it measures (see BENCHMARKS.md).
Stdlib only, and only what this needs: Content-Length and chunked bodies.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = -1
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length > 0:
        await reader.readexactly(length)
    return status


async def _client(
    host: str, port: int, requests: list[bytes], offset: int, deadline: float, tally: Tally
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    clock = time.perf_counter
    i = offset
    try:
        while clock() < deadline:
            request = requests[i % len(requests)]
            i += 1
            started = clock()
            try:
                writer.write(request)
                status = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                tally.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            tally.latencies.append(clock() - started)
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
    finally:
        writer.close()


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    requests = [r.encode("latin-1") for r in spec["requests"]]
    connections = int(spec["connections"])
    tally = Tally()
    started = time.perf_counter()
    deadline = started + float(spec["duration"])
    step = max(1, len(requests) // connections)
    await asyncio.gather(
        *(
            _client(spec["host"], int(spec["port"]), requests, c * step, deadline, tally)
            for c in range(connections)
        )
    )
    seconds = time.perf_counter() - started
    ordered = sorted(tally.latencies)
    return {
        "requests": len(ordered),
        "seconds": seconds,
        "p50_ms": _percentile(ordered, 50) * 1000,
        "p99_ms": _percentile(ordered, 99) * 1000,
        "max_ms": (ordered[-1] if ordered else math.nan) * 1000,
        "non2xx": sum(n for status, n in tally.statuses.items() if not 200 <= status <= 299),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "socket_errors": tally.errors,
    }


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    print("BENCHJSON " + json.dumps(asyncio.run(run(spec))), flush=True)


if __name__ == "__main__":
    main()
