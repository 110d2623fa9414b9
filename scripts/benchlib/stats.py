"""The timing loop, percentiles, and the A/B alternation of two implementations.

Every operation is timed with ``time.perf_counter``. A measurement runs
``concurrency`` tasks in one event loop, each issuing operations back to
back until a fixed deadline (a closed loop). Two implementations of one
workload are measured in alternating order (A B, B A, A B, ...), so that a
machine getting slower or faster during the run (other jobs, a checkpoint)
weighs on both; the ratio is the median of the per-pair ratios.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

# One operation: (worker index, iteration of that worker) -> anything.
Op = Callable[[int, int], Awaitable[object]]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of ``values``, linearly interpolated."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(slots=True)
class Run:
    """One timed stretch of one implementation."""

    ops: int
    seconds: float
    cpu_seconds: float  # this process's CPU time meanwhile (time.process_time)
    latencies: list[float] = field(repr=False)
    # WAL the server wrote meanwhile, when measured (the peers: one store at a time).
    wal_bytes: int | None = None

    @property
    def throughput(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Summary:
    """What the report shows for one implementation of one workload."""

    throughput: float  # operations per second over all its slices
    p50_ms: float  # over every operation
    p99_ms: float
    cpu_us_per_op: float  # this process's CPU time per operation
    ops: int
    seconds: float
    wal_bytes_per_op: float | None = None  # when every run measured its WAL

    @classmethod
    def of(cls, runs: Sequence[Run]) -> Summary:
        latencies = [x for run in runs for x in run.latencies]
        ops = sum(run.ops for run in runs)
        seconds = sum(run.seconds for run in runs)
        cpu = sum(run.cpu_seconds for run in runs)
        wal = [run.wal_bytes for run in runs]
        return cls(
            throughput=ops / seconds if seconds else 0.0,
            p50_ms=percentile(latencies, 50) * 1000,
            p99_ms=percentile(latencies, 99) * 1000,
            cpu_us_per_op=cpu / ops * 1e6 if ops else math.nan,
            ops=ops,
            seconds=seconds,
            wal_bytes_per_op=(
                sum(w for w in wal if w is not None) / ops
                if ops and wal and None not in wal
                else None
            ),
        )


async def measure(
    op: Op, concurrency: int, seconds: float, resume: dict[int, int] | None = None
) -> Run:
    """Run ``op`` from ``concurrency`` tasks until ``seconds`` have passed.

    ``resume`` holds each worker's next iteration and is advanced, so that
    successive slices of a workload walk on through its data (users,
    conversations, search terms) instead of starting over.
    """
    latencies: list[float] = []
    clock = time.perf_counter
    deadline = clock() + seconds
    cursor = resume if resume is not None else {}

    async def worker(index: int) -> None:
        iteration = cursor.get(index, 0)
        record = latencies.append
        while clock() < deadline:
            started = clock()
            await op(index, iteration)
            record(clock() - started)
            iteration += 1
        cursor[index] = iteration

    cpu = time.process_time()
    started = clock()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = clock() - started
    cpu = time.process_time() - cpu
    return Run(ops=len(latencies), seconds=elapsed, cpu_seconds=cpu, latencies=latencies)


@dataclass(frozen=True, slots=True)
class Comparison:
    a: Summary
    b: Summary
    ratio: float  # a / b throughput: median of the per-pair ratios
    ratio_low: float  # 25th percentile of the per-pair ratios (the noise)
    ratio_high: float  # 75th percentile
    cpu_ratio: float  # b / a CPU per operation: the overhead alone, robust to CPU theft
    pairs: int


async def compare(
    a: Op,
    b: Op,
    *,
    concurrency: int,
    warmup: float,
    seconds: float,
    slice_seconds: float = 0.25,
) -> Comparison:
    """``seconds`` of each, in alternating slices: A B, B A, A B, ...

    Short slices put both implementations under the same background load
    (this machine is shared): a burst of someone else's work hits a few
    slices of each rather than one whole repeat of one of them.
    """
    resume_a: dict[int, int] = {}
    resume_b: dict[int, int] = {}
    if warmup > 0:
        await measure(a, concurrency, warmup, resume_a)
        await measure(b, concurrency, warmup, resume_b)
    runs_a: list[Run] = []
    runs_b: list[Run] = []
    ratios: list[float] = []
    pairs = max(1, round(seconds / slice_seconds))
    for pair in range(pairs):
        if pair % 2 == 0:
            run_a = await measure(a, concurrency, slice_seconds, resume_a)
            run_b = await measure(b, concurrency, slice_seconds, resume_b)
        else:
            run_b = await measure(b, concurrency, slice_seconds, resume_b)
            run_a = await measure(a, concurrency, slice_seconds, resume_a)
        runs_a.append(run_a)
        runs_b.append(run_b)
        if run_b.throughput > 0:
            ratios.append(run_a.throughput / run_b.throughput)
    summary_a, summary_b = Summary.of(runs_a), Summary.of(runs_b)
    return Comparison(
        a=summary_a,
        b=summary_b,
        ratio=statistics.median(ratios) if ratios else math.nan,
        ratio_low=percentile(ratios, 25),
        ratio_high=percentile(ratios, 75),
        cpu_ratio=summary_b.cpu_us_per_op / summary_a.cpu_us_per_op,
        pairs=pairs,
    )


async def interleave(
    ops: dict[str, Op], *, concurrency: int, warmup: float, seconds: float, slice_seconds: float
) -> dict[str, Summary]:
    """``seconds`` of each op, in slices taken round-robin (the order rotating
    every round), so that every op sees the same background load."""
    names = list(ops)
    resume: dict[str, dict[int, int]] = {name: {} for name in names}
    runs: dict[str, list[Run]] = {name: [] for name in names}
    if warmup > 0:
        for name in names:
            await measure(ops[name], concurrency, warmup, resume[name])
    rounds = max(1, round(seconds / slice_seconds))
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].append(await measure(ops[name], concurrency, slice_seconds, resume[name]))
    return {name: Summary.of(runs[name]) for name in names}
