"""Before/after measurements of the fixes BENCHMARKS.md proposes (``--experiments``).

chatstore itself is not changed: each "after" is the proposed change applied
in this process only (a patched method, restored at once) or in a wrapper
process (``serve_nodelay``). These reach into chatstore's internals, so an
experiment whose internals have moved on is reported as skipped rather than
failing the run.

- ``layers``: CPU time per operation of one page of 50, layer by layer, from
  a bare asyncpg connection up to ``ChatStore.list_messages``;
- ``models``: ``list_messages``/``list_conversations`` with rows turned into
  models without pydantic's ``model_construct``;
- ``acquire``: the pool acquired under ``asyncio.timeout()`` instead of
  ``Pool.acquire(timeout=)`` (which, on Python 3.11, wraps every acquire in
  an extra Task through ``asyncio.wait_for``);
- ``nodelay``: ``chatstore serve --workers 2`` with its listener made as
  IPPROTO_TCP, so that accepted connections get TCP_NODELAY;
- ``notify``: the floor's appends with the NOTIFY trigger of migration 0005
  enabled and disabled (in the bench's own database, re-enabled after): a
  transaction that notifies holds a database-wide lock from before its
  commit until after it, so notifying commits are serialised, WAL flush
  included, and cannot share a flush (group commit);
- ``gin``: search and append with the GIN search index as migrated
  (``fastupdate`` on: appends park their entries in a pending list of up to
  ``gin_pending_list_limit`` = 4 MB, which every search then scans in full)
  and with ``fastupdate = off`` (restored after).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import asyncpg

from chatstore import models
from chatstore import pool as chatstore_pool
from chatstore.store import ChatStore

from .api import NO_BEFORE, QUERIES, Floor
from .plan import Plan
from .seed import Fixture
from .server import Server
from .stats import Op, Summary, interleave
from .wrk import Request, have_wrk, run_loadgen, run_wrk

Thunk = Callable[[], Awaitable[object]]


def fast_from_row(cls: type[Any]) -> Callable[[Any], Any]:
    """A ``from_row`` that sets the instance dict directly (what
    ``model_construct`` ends up doing, without its per-field bookkeeping)."""
    names = tuple(cls.model_fields)
    fields = frozenset(names)
    set_attribute = object.__setattr__
    tool_call = getattr(models, "_tool_call", None)

    def from_row(row: Any) -> Any:
        values = {name: row[name] for name in names}
        calls = values.get("tool_calls")
        if calls is not None and tool_call is not None:
            values["tool_calls"] = [tool_call(call) for call in calls]
        instance = object.__new__(cls)
        set_attribute(instance, "__dict__", values)
        set_attribute(instance, "__pydantic_fields_set__", set(fields))
        set_attribute(instance, "__pydantic_extra__", None)
        set_attribute(instance, "__pydantic_private__", None)
        return instance

    return from_row


async def _cpu_per_op(thunk: Thunk, n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        await thunk()
    return (time.process_time() - started) / n * 1e6


async def layers(
    store: ChatStore, floor: Floor, fixture: Fixture, dsn: str, rounds: int
) -> list[dict[str, Any]]:
    """CPU us per page of 50 (concurrency 1), the best of ``rounds``."""
    sql = QUERIES["list_messages_desc"].sql
    big, user = fixture.big, fixture.reader_user
    connection = await asyncpg.connect(dsn)

    # asyncpg's default pool: RESET ALL, CLOSE ALL, UNLISTEN * on every release.
    resetting = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    assert resetting is not None
    original = models.Message.from_row
    fast = fast_from_row(models.Message)
    executor = getattr(store, "_pool_executor", None)

    async def with_fast_models() -> object:
        models.Message.from_row = fast  # type: ignore[assignment]
        try:
            return await store.list_messages(user, big, limit=50, order="desc")
        finally:
            models.Message.from_row = original  # type: ignore[method-assign]

    steps: list[tuple[str, Thunk]] = [
        (
            "asyncpg connection.fetch (no pool)",
            lambda: connection.fetch(sql, big, user, 0, NO_BEFORE, 51),
        ),
        (
            "asyncpg pool.fetch, default reset on release",
            lambda: resetting.fetch(sql, big, user, 0, NO_BEFORE, 51),
        ),
        ("asyncpg pool.fetch, no reset (the floor)", lambda: floor.page(user, big, 50)),
    ]
    if executor is not None and hasattr(executor, "fetch"):
        steps.append(
            (
                "chatstore PoolExecutor.fetch",
                lambda: executor.fetch(sql, big, user, 0, NO_BEFORE, 51),
            )
        )
    steps += [
        (
            "chatstore queries.many",
            lambda: store.queries.many(
                store.executor,
                "list_messages_desc",
                conversation_id=big,
                user_id=user,
                after=0,
                before=NO_BEFORE,
                limit=51,
            ),
        ),
        (
            "ChatStore.list_messages",
            lambda: store.list_messages(user, big, limit=50, order="desc"),
        ),
        ("ChatStore.list_messages, fast from_row", with_fast_models),
    ]
    best = {label: float("inf") for label, _ in steps}
    try:
        for _ in range(rounds):
            for label, thunk in steps:
                best[label] = min(best[label], await _cpu_per_op(thunk, 200))
    finally:
        await connection.close()
        await resetting.close()
    return [{"layer": label, "cpu_us": round(best[label], 1)} for label, _ in steps]


def _summary(s: Summary) -> dict[str, float]:
    return {
        "throughput": round(s.throughput, 1),
        "p50_ms": round(s.p50_ms, 3),
        "p99_ms": round(s.p99_ms, 3),
        "cpu_us_per_op": round(s.cpu_us_per_op, 1),
    }


async def patched_vs_as_is(
    name: str,
    apply: Callable[[], None],
    restore: Callable[[], None],
    cases: dict[str, tuple[int, Op]],
    plan: Plan,
) -> list[dict[str, Any]]:
    """Each case as is and patched, in interleaved slices (a slice is all one or all the other)."""
    found = []
    for case, (concurrency, op) in cases.items():

        def as_is(w: int, i: int, op: Op = op) -> Awaitable[object]:
            restore()
            return op(w, i)

        def patched(w: int, i: int, op: Op = op) -> Awaitable[object]:
            apply()
            return op(w, i)

        try:
            result = await interleave(
                {"as is": as_is, "patched": patched},
                concurrency=concurrency,
                warmup=plan.warmup,
                seconds=plan.duration,
                slice_seconds=plan.slice,
            )
        finally:
            restore()
        before, after = result["as is"], result["patched"]
        found.append(
            {
                "experiment": name,
                "case": case,
                "concurrency": concurrency,
                "as_is": _summary(before),
                "patched": _summary(after),
                "throughput_gain": round(after.throughput / before.throughput, 3),
            }
        )
        print(
            f"  {name} {case}: {before.throughput:,.0f} -> "
            f"{after.throughput:,.0f} ops/s, CPU {before.cpu_us_per_op:.0f} -> "
            f"{after.cpu_us_per_op:.0f} us/op",
            flush=True,
        )
    return found


async def run(
    store: ChatStore, floor: Floor, fixture: Fixture, plan: Plan, dsn: str, logs: Path
) -> dict[str, Any]:
    out: dict[str, Any] = {"skipped": []}
    print("  layers of a page of 50 (CPU per operation, best of 5) ...", flush=True)
    out["layers"] = await layers(store, floor, fixture, dsn, rounds=5)
    for row in out["layers"]:
        print(f"    {row['cpu_us']:7.1f} us  {row['layer']}", flush=True)

    reader, big, list_user = fixture.reader_user, fixture.big, fixture.big_list_user

    def page(w: int, i: int) -> Awaitable[object]:
        return store.list_messages(reader, big, limit=50, order="desc")

    def listing(w: int, i: int) -> Awaitable[object]:
        return store.list_conversations(list_user, limit=20)

    def floor_page(w: int, i: int) -> Awaitable[object]:
        return floor.page(reader, big, 50)

    reads: dict[str, tuple[int, Op]] = {
        "page50_big c1": (1, page),
        "page50_big c16": (16, page),
        "list20 c1": (1, listing),
        "list20 c16": (16, listing),
    }
    message_from_row = models.Message.from_row
    conversation_from_row = models.Conversation.from_row
    fast_message = fast_from_row(models.Message)
    fast_conversation = fast_from_row(models.Conversation)

    def models_on() -> None:
        models.Message.from_row = fast_message  # type: ignore[assignment]
        models.Conversation.from_row = fast_conversation  # type: ignore[assignment]

    def models_off() -> None:
        models.Message.from_row = message_from_row  # type: ignore[method-assign]
        models.Conversation.from_row = conversation_from_row  # type: ignore[method-assign]

    out["models"] = await patched_vs_as_is("fast from_row", models_on, models_off, reads, plan)
    # The floor over the same stretch, for the ratio the fix would give.
    floor_result = await interleave(
        {"floor": floor_page},
        concurrency=16,
        warmup=0,
        seconds=plan.duration / 2,
        slice_seconds=plan.slice,
    )
    out["floor_page50_c16"] = _summary(floor_result["floor"])

    executor_class = getattr(chatstore_pool, "PoolExecutor", None)
    if executor_class is None or not hasattr(executor_class, "connection"):
        out["skipped"].append("acquire: chatstore.pool.PoolExecutor.connection is gone")
    else:
        as_is_connection = executor_class.connection
        lost = getattr(chatstore_pool, "CONNECTION_LOST", (OSError,))

        @asynccontextmanager
        async def connection(self: Any) -> AsyncIterator[Any]:
            try:
                async with asyncio.timeout(self._acquire_timeout):
                    acquired = await self._pool.acquire()
                try:
                    yield acquired
                finally:
                    await self._pool.release(acquired)
            except lost:
                await self._pool.expire_connections()
                raise

        def acquire_on() -> None:
            executor_class.connection = connection

        def acquire_off() -> None:
            executor_class.connection = as_is_connection

        out["acquire"] = await patched_vs_as_is(
            "asyncio.timeout acquire", acquire_on, acquire_off, reads, plan
        )

    out["notify"] = await notify(floor, fixture, plan, dsn)
    out["gin"] = await gin(floor, fixture, plan, dsn)
    out["nodelay"] = await asyncio.to_thread(nodelay, store.dsn, fixture, plan, logs)
    return out


async def notify(floor: Floor, fixture: Fixture, plan: Plan, dsn: str) -> list[dict[str, Any]]:
    """The floor's one-message append, NOTIFY trigger on and off, in alternating blocks."""
    conversations = fixture.append_conversations
    user = fixture.append_user
    connection = await asyncpg.connect(dsn)
    found = []
    try:
        trigger = await connection.fetchval(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'messages'::regclass"
            " AND NOT tgisinternal AND tgname LIKE '%notify%'"
        )
        if trigger is None:
            return []
        for concurrency in (1, 16):
            share = [conversations[w::concurrency] for w in range(concurrency)]

            def append(w: int, i: int, share: list[list[Any]] = share) -> Awaitable[object]:
                mine = share[w]
                return floor.append(user, mine[i % len(mine)], [("user", "notify experiment")])

            runs: dict[str, list[Summary]] = {"trigger on": [], "trigger off": []}
            block = max(plan.slice * 4, plan.duration / 4)
            for round_ in range(4):
                for label in (
                    ("trigger on", "trigger off")
                    if round_ % 2 == 0
                    else (
                        "trigger off",
                        "trigger on",
                    )
                ):
                    state = "ENABLE" if label == "trigger on" else "DISABLE"
                    await connection.execute(f'ALTER TABLE messages {state} TRIGGER "{trigger}"')
                    result = await interleave(
                        {label: append},
                        concurrency=concurrency,
                        warmup=0.2,
                        seconds=block,
                        slice_seconds=block,
                    )
                    runs[label].append(result[label])
            row: dict[str, Any] = {"experiment": "notify", "concurrency": concurrency}
            for label, summaries in runs.items():
                ops = sum(s.ops for s in summaries)
                seconds = sum(s.seconds for s in summaries)
                row[label.replace(" ", "_")] = {
                    "throughput": round(ops / seconds, 1) if seconds else 0.0,
                    "p50_ms": round(sorted(s.p50_ms for s in summaries)[len(summaries) // 2], 3),
                    "p99_ms": round(max(s.p99_ms for s in summaries), 3),
                }
            found.append(row)
            on, off = row["trigger_on"]["throughput"], row["trigger_off"]["throughput"]
            print(
                f"  floor append c{concurrency}: trigger on {on:,.0f}/s, off {off:,.0f}/s",
                flush=True,
            )
    finally:
        await connection.execute("ALTER TABLE messages ENABLE TRIGGER ALL")
        await connection.close()
    return found


def nodelay(dsn: str, fixture: Fixture, plan: Plan, logs: Path) -> list[dict[str, Any]]:
    """``--workers 2`` as shipped against the listener made as IPPROTO_TCP."""
    requests = {
        "list20": [
            Request(
                "GET",
                "/api/conversations?limit=20",
                {"Authorization": f"Bearer {fixture.tokens[fixture.big_list_user]}"},
            )
        ],
        "page50": [
            Request(
                "GET",
                f"/api/conversations/{fixture.big}/messages?limit=50&order=desc",
                {"Authorization": f"Bearer {fixture.tokens[fixture.reader_user]}"},
            )
        ],
    }
    load = run_wrk if have_wrk() else run_loadgen
    found = []
    for label, command in (
        ("as is", None),
        ("IPPROTO_TCP listener", [sys.executable, "-m", "scripts.benchlib.serve_nodelay"]),
    ):
        server = Server(dsn, 2, logs / "serve-nodelay.log", command=command)
        server.start()
        try:
            for case, reqs in requests.items():
                load(server.port, reqs, connections=16, seconds=plan.http_warmup)
                result = load(server.port, reqs, connections=16, seconds=plan.http_duration)
                found.append(
                    {
                        "experiment": "nodelay",
                        "server": label,
                        "case": case,
                        **result.to_json(),
                    }
                )
                print(
                    f"  2 workers, {label}, {case}: {result.throughput:,.0f} req/s, "
                    f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms",
                    flush=True,
                )
        finally:
            server.stop()
    return found


async def gin(floor: Floor, fixture: Fixture, plan: Plan, dsn: str) -> list[dict[str, Any]]:
    """Appends, then searches, with the search index's fastupdate on (as
    migrated) and off; the pending list's size is read with pgstattuple."""
    connection = await asyncpg.connect(dsn)
    found: list[dict[str, Any]] = []
    conversations = fixture.append_conversations
    users, terms = fixture.search_users, fixture.search_terms

    def append(w: int, i: int) -> Awaitable[object]:
        mine = conversations[w::16]
        text = f"gin experiment {i} " + " ".join(terms[(i + k) % len(terms)] for k in range(8))
        return floor.append(fixture.append_user, mine[i % len(mine)], [("user", text)])

    def search(w: int, i: int) -> Awaitable[object]:
        n = w * 1_000_003 + i
        return floor.search(users[(n * 7919) % len(users)], terms[(n * 31) % len(terms)], 20)

    async def pending() -> int | None:
        try:
            value = await connection.fetchval(
                "SELECT pending_pages FROM pgstatginindex('messages_search_idx')"
            )
        except asyncpg.PostgresError:
            return None
        return int(value)

    try:
        with suppress(asyncpg.PostgresError):
            await connection.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        for setting in ("on", "off"):
            await connection.execute(
                f"ALTER INDEX messages_search_idx SET (fastupdate = {setting})"
            )
            await connection.fetchval("SELECT gin_clean_pending_list('messages_search_idx')")
            appended = await interleave(
                {"append": append},
                concurrency=16,
                warmup=0,
                seconds=plan.duration / 2,
                slice_seconds=plan.duration / 2,
            )
            pages = await pending()
            searched = await interleave(
                {"search": search},
                concurrency=16,
                warmup=0,
                seconds=plan.duration / 2,
                slice_seconds=plan.duration / 2,
            )
            row = {
                "experiment": "gin",
                "fastupdate": setting,
                "append_c16": _summary(appended["append"]),
                "pending_pages_after_appends": pages,
                "search_c16": _summary(searched["search"]),
            }
            found.append(row)
            print(
                f"  GIN fastupdate={setting}: append c16 {appended['append'].throughput:,.0f}/s, "
                f"then {pages} pending pages, search c16 {searched['search'].throughput:,.0f}/s "
                f"(p50 {searched['search'].p50_ms:.1f} ms)",
                flush=True,
            )
    finally:
        await connection.execute("ALTER INDEX messages_search_idx RESET (fastupdate)")
        await connection.close()
    return found
