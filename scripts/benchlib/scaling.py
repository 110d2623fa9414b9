"""Does a page cost the same however big the thing it pages through?

The newest 50 messages of conversations of 100, 10k and 1M messages, and the
first 20 conversations of users with 100, 10k and 100k conversations: each
timed through ChatStore and the floor (A/B, one operation at a time), and
explained on the server (``EXPLAIN (ANALYZE, BUFFERS)`` of the prepared
statement after it has had the executions that can switch it to a generic
plan, i.e. the plan asyncpg's cached statement really runs).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import asyncpg

from chatstore.store import ChatStore

from .api import NO_BEFORE, QUERIES, Floor, size_label
from .plan import Plan
from .seed import Fixture
from .stats import Op, interleave


@dataclass(frozen=True, slots=True)
class ScalingPoint:
    kind: str  # "page" or "list"
    size: int  # messages in the conversation, or conversations of the user
    chatstore_p50_ms: float
    chatstore_p99_ms: float
    floor_p50_ms: float
    floor_p99_ms: float
    server_ms: float  # EXPLAIN ANALYZE execution time
    buffers: int  # shared buffers hit + read by that execution
    plan: str  # the top nodes of the plan, one line


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _buffers(node: dict[str, Any]) -> int:
    own = int(node.get("Shared Hit Blocks", 0)) + int(node.get("Shared Read Blocks", 0))
    return own


def _shape(node: dict[str, Any], depth: int = 0) -> str:
    name = str(node.get("Node Type", "?"))
    index = node.get("Index Name")
    if index:
        name += f" {index}"
    children = [_shape(child, depth + 1) for child in node.get("Plans", [])]
    return name + (" > (" + ", ".join(children) + ")" if children else "")


async def explain(
    connection: asyncpg.Connection[Any], name: str, args: tuple[object, ...]
) -> tuple[float, int, str]:
    """Execution time, buffers and shape of the prepared statement's plan."""
    query = QUERIES[name]
    statement = f"bench_{name}"
    await connection.execute(f"DEALLOCATE ALL; PREPARE {statement} AS {query.sql}")
    call = f"EXECUTE {statement}({', '.join(_literal(a) for a in args)})"
    for _ in range(6):  # the sixth execution may switch to the generic plan
        await connection.execute(call)
    raw = await connection.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {call}")
    document = json.loads(raw) if isinstance(raw, str) else raw
    top = document[0]
    plan = top["Plan"]
    await connection.execute("DEALLOCATE ALL")
    return float(top["Execution Time"]), _buffers(plan), _shape(plan)


async def run(
    store: ChatStore, floor: Floor, fixture: Fixture, plan: Plan, dsn: str
) -> list[ScalingPoint]:
    """Every size of one kind is timed in the same interleaved stretch, so a
    burst of background load cannot make one size look dearer than another."""
    reader = fixture.reader_user
    page_ops: dict[str, Op] = {}
    for size, cid in fixture.conversations.items():

        def cs_page(w: int, i: int, cid: uuid.UUID = cid) -> Awaitable[object]:
            return store.list_messages(reader, cid, limit=50, order="desc")

        def fl_page(w: int, i: int, cid: uuid.UUID = cid) -> Awaitable[object]:
            return floor.page(reader, cid, 50)

        page_ops[f"chatstore {size}"] = cs_page
        page_ops[f"floor {size}"] = fl_page

    list_ops: dict[str, Op] = {}
    for size, user in fixture.list_users.items():

        def cs_list(w: int, i: int, user: str = user) -> Awaitable[object]:
            return store.list_conversations(user, limit=20)

        def fl_list(w: int, i: int, user: str = user) -> Awaitable[object]:
            return floor.conversations(user, 20)

        list_ops[f"chatstore {size}"] = cs_list
        list_ops[f"floor {size}"] = fl_list

    points: list[ScalingPoint] = []
    connection = await asyncpg.connect(dsn)
    try:
        for kind, ops, sizes in (
            ("page", page_ops, sorted(fixture.conversations)),
            ("list", list_ops, sorted(fixture.list_users)),
        ):
            found = await interleave(
                ops,
                concurrency=1,
                warmup=plan.warmup,
                seconds=plan.scaling_duration,
                slice_seconds=plan.slice,
            )
            for size in sizes:
                if kind == "page":
                    args: tuple[object, ...] = (
                        str(fixture.conversations[size]),
                        reader,
                        0,
                        NO_BEFORE,
                        51,
                    )
                    ms, buffers, shape = await explain(connection, "list_messages_desc", args)
                else:
                    args = (fixture.list_users[size], False, 21)
                    ms, buffers, shape = await explain(connection, "list_conversations_first", args)
                cs, fl = found[f"chatstore {size}"], found[f"floor {size}"]
                points.append(
                    ScalingPoint(
                        kind,
                        size,
                        cs.p50_ms,
                        cs.p99_ms,
                        fl.p50_ms,
                        fl.p99_ms,
                        ms,
                        buffers,
                        shape,
                    )
                )
                print(
                    f"  scaling {kind} {size_label(size)}: chatstore p50 {cs.p50_ms:.3f} ms, "
                    f"floor {fl.p50_ms:.3f} ms, server {ms:.3f} ms",
                    flush=True,
                )
    finally:
        await connection.close()
    return points
