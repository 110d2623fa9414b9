"""py-spy on a server worker under load: where its CPU time goes.

``py-spy record --nonblocking --format raw`` samples the worker's Python
stacks without pausing it (idle samples, i.e. the event loop waiting in
epoll, are left out, so the shares are of the time it is busy). Each
sample is charged to the innermost frame's package ("self"), and to every
layer it passes through ("inclusive").
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# First match wins; tested on the frame's file path.
LAYERS: tuple[tuple[str, str], ...] = (
    ("asyncpg", "asyncpg"),
    ("pydantic", "pydantic"),
    ("starlette", "starlette"),
    ("/h11/", "h11 (HTTP parsing)"),
    ("/httptools/", "httptools (HTTP parsing)"),
    ("uvicorn", "uvicorn (its HTTP protocol)"),
    ("chatstore", "chatstore"),
    ("/json/", "json"),
    ("asyncio", "asyncio event loop"),
    ("uvloop", "asyncio event loop"),
    ("selectors", "asyncio event loop"),
)
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def layer(file: str) -> str:
    for needle, name in LAYERS:
        if needle in file:
            return name
    return "other (stdlib, builtins)"


@dataclass(frozen=True, slots=True)
class Profile:
    samples: int
    self_by_layer: dict[str, float]  # share of samples, innermost frame
    inclusive_by_layer: dict[str, float]  # share of samples passing through the layer
    top_functions: list[tuple[str, float]]  # innermost frames, share of samples


def record(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    """Start py-spy on ``pid`` for ``seconds``; None when py-spy is missing."""
    binary = py_spy()
    if binary is None:
        return None
    args = [binary, "record", "--pid", str(pid), "--duration", str(seconds)]
    args += ["--rate", "250", "--nonblocking", "--format", "raw", "--output", str(out)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def summarize(raw: Path) -> Profile:
    own: Counter[str] = Counter()
    through: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [FRAME.match(frame) for frame in stack.split(";")]
        parsed = [(m["function"], m["file"]) for m in frames if m is not None]
        if not parsed:
            continue
        total += count
        function, file = parsed[-1]
        own[layer(file)] += count
        functions[f"{function} ({Path(file).name})"] += count
        for name in {layer(f) for _, f in parsed}:
            through[name] += count
    if total == 0:
        return Profile(0, {}, {}, [])
    return Profile(
        samples=total,
        self_by_layer={k: round(v / total, 3) for k, v in own.most_common()},
        inclusive_by_layer={k: round(v / total, 3) for k, v in through.most_common()},
        top_functions=[(k, round(v / total, 3)) for k, v in functions.most_common(12)],
    )
