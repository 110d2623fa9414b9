"""One store of ``peerstores`` in a process of its own, driven over stdin/stdout.

``python -m scripts.benchlib.peerworker NAME`` reads one JSON command per
line and answers one JSON line each (on the real stdout; anything a library
prints goes to stderr):

- ``{"cmd": "open", "dsn": ..., "append": 64, "sizes": [100, 10000]}``:
  create the store's schema in its (empty) database and seed it:
  conversations ``append-0`` .. ``append-63`` empty, ``read-<size>`` full;
  then VACUUM (ANALYZE) it (``_settle``);
- ``{"cmd": "run", "op": "append" | "newest", "target": "read-10000",
  "concurrency": c, "seconds": s}``: a closed loop of ``c`` tasks for ``s``
  seconds (``stats.measure``); answers ops, seconds, this process's CPU
  seconds and every latency;
- ``{"cmd": "close"}``.

Only the standard library and the store's own packages are imported here,
so the llama-index peer runs from its own venv.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import traceback
from typing import Any, TextIO

from .peerstores import STORES, Store, text_of
from .stats import Op, measure


def _appender(store: Store, conversations: int, concurrency: int) -> Op:
    # Worker w of c writes to conversations w, w+c, w+2c, ...: no two share one.
    shares = [
        list(range(w, conversations, concurrency)) or [w % conversations]
        for w in range(concurrency)
    ]

    async def op(worker: int, iteration: int) -> object:
        share = shares[worker]
        await store.append(f"append-{share[iteration % len(share)]}", text_of(worker, iteration))
        return None

    return op


def _reader(store: Store, target: str) -> Op:
    async def op(worker: int, iteration: int) -> object:
        if await store.newest(target) == 0:
            raise RuntimeError(f"{target}: read nothing")
        return None

    return op


async def serve(name: str, commands: TextIO, answers: TextIO) -> None:
    store: Store = STORES[name][0]()
    store.load()
    conversations = 0
    resume: dict[str, dict[int, int]] = {}
    loop = asyncio.get_running_loop()

    def answer(found: dict[str, Any]) -> None:
        answers.write(json.dumps(found) + "\n")
        answers.flush()

    while True:
        line = await loop.run_in_executor(None, commands.readline)
        if not line:
            break
        command = json.loads(line)
        try:
            if command["cmd"] == "open":
                started = time.perf_counter()
                await store.open(command["dsn"])
                conversations = command["append"]
                for k in range(conversations):
                    await store.seed(f"append-{k}", 0)
                for size in command["sizes"]:
                    await store.seed(f"read-{size}", size)
                await _settle(command["dsn"])
                answer({"ok": True, "seconds": round(time.perf_counter() - started, 2)})
            elif command["cmd"] == "run":
                concurrency = command["concurrency"]
                op = (
                    _appender(store, conversations, concurrency)
                    if command["op"] == "append"
                    else _reader(store, command["target"])
                )
                key = f"{command['op']}/{command.get('target')}/{concurrency}"
                run = await measure(op, concurrency, command["seconds"], resume.setdefault(key, {}))
                answer(
                    {
                        "ok": True,
                        "ops": run.ops,
                        "seconds": run.seconds,
                        "cpu_seconds": run.cpu_seconds,
                        "latencies": [round(x, 7) for x in run.latencies],
                    }
                )
            elif command["cmd"] == "close":
                await store.close()
                answer({"ok": True})
                break
        except Exception:
            answer({"ok": False, "error": traceback.format_exc()[-3000:]})


async def _settle(dsn: str) -> None:
    """VACUUM (ANALYZE) the store's database once it is seeded: the state a
    deployment reaches once autovacuum has been round, the same for every
    store. Without it a store whose statements were first planned while its
    tables were empty may keep those plans (a prepared statement's generic
    plan lives until an ANALYZE invalidates it) and be measured on them.
    asyncpg is in every store's venv (the llama-index one too)."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("VACUUM (ANALYZE)")
    finally:
        await connection.close()


def main() -> None:
    # Answers go to the real stdout; whatever a library prints, to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    asyncio.run(serve(sys.argv[1], sys.stdin, answers))


if __name__ == "__main__":
    main()
