"""Named SQL queries, loaded from ``sql/*.sql`` (aiosql / sqlc style).

A file holds blocks headed ``-- name: <identifier> :<kind>``, kind being one of
``one`` (fetchrow), ``many`` (fetch), ``scalar`` (fetchval), ``exec`` (execute)
and ``execrows`` (execute, returning the row count of the command status).
``--`` comment lines directly under the header are the query's ``doc``; the body
is everything after them up to the next header (or end of file), stripped of
surrounding whitespace. A line starting with ``-- name:`` always opens a new
block, so never put one inside a string. Before the first header only blank and
comment lines are allowed.

The SQL sent to asyncpg is the body byte for byte, except that each ``:name``
parameter (``name`` a Python identifier) becomes ``$n``, numbered in order of
first appearance; a repeated name reuses its number. The scanner copies these
untouched:

- ``::`` casts (``:x::jsonb`` -> ``$1::jsonb``) and ``:=`` (``f(a := 1)``);
- ``'...'`` strings with ``''`` escapes, and ``E'...'`` strings, where a
  backslash also escapes the next character (``E'it\\'s :no'``);
- ``$$...$$`` and ``$tag$...$tag$`` dollar-quoted strings;
- ``"quoted"`` identifiers with ``""`` escapes;
- ``-- line`` comments and ``/* block */`` comments, which nest as in PostgreSQL;
- array slices: inside ``[...]`` a ``:`` directly after a character that ends
  an operand (identifier char, digit, ``)``, ``]``, ``'``, ``"``) is a slice
  separator, so ``a[lo:hi]`` is a slice on column ``hi``; after ``[``,
  whitespace or an operator ``:name`` is a parameter (``a[:i]``, ``a[1: :hi]``).

Outside brackets ``:name`` is always a parameter. A ``$1`` already in the text
is an error: mixing positional and named parameters is never intended.

Errors are programming errors: ``QuerySyntaxError`` (a ``ValueError``) for bad
files, ``QueryParameterError`` and ``QueryKindError`` (``TypeError``s, like a
call with wrong keyword arguments) for bad calls, raised before any I/O.

Long because: the SQL scanner's rules, each documented, and the registry
that uses them.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, Protocol, cast, get_args

import asyncpg

QueryKind = Literal["one", "many", "scalar", "exec", "execrows"]
KINDS: tuple[str, ...] = get_args(QueryKind)


class QueryError(Exception):
    """Base class of this module's errors."""


class QuerySyntaxError(QueryError, ValueError):
    """A malformed SQL file or query text."""


class QueryParameterError(QueryError, TypeError):
    """Missing or unknown parameters for a query."""


class QueryKindError(QueryError, TypeError):
    """A query run with the method of another kind (e.g. ``many`` on a ``:one``)."""


class Executor(Protocol):
    """What ``asyncpg.Pool``, ``asyncpg.Connection`` and ``PoolConnectionProxy`` share.

    Only the arguments this module passes are declared, so all three (and their
    ``timeout=``/``record_class=`` extras) satisfy it.
    """

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]: ...
    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None: ...
    async def fetchval(self, query: str, *args: object) -> Any: ...
    async def execute(self, query: str, *args: object) -> str: ...


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    kind: QueryKind
    sql: str  # what asyncpg receives ($n placeholders)
    params: tuple[str, ...]  # parameter names in $n order
    doc: str
    file: str  # file name relative to the sql directory
    line: int  # 1-based line of the `-- name:` header

    def args(self, values: Mapping[str, object]) -> tuple[object, ...]:
        """The positional arguments for ``sql``; every name must be given, no other."""
        if len(values) == len(self.params):
            # As many as the query's (distinct) names, and each of them
            # there: exactly its names. The common case, without the sets
            # that name what is wrong (about 2 µs a query).
            try:
                return tuple([values[p] for p in self.params])
            except KeyError:
                pass
        missing = [p for p in self.params if p not in values]
        unknown = sorted(set(values) - set(self.params))
        if missing or unknown:
            problems = []
            if missing:
                problems.append("missing " + ", ".join(missing))
            if unknown:
                problems.append("unknown " + ", ".join(unknown))
            expected = ", ".join(self.params) or "none"
            raise QueryParameterError(
                f"query {self.name!r} ({self.file}:{self.line}): "
                f"{'; '.join(problems)} (parameters: {expected})"
            )
        return tuple(values[p] for p in self.params)


class _ScanError(Exception):
    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.message, self.pos = message, pos


def _word_char(c: str) -> bool:
    # PostgreSQL identifiers continue with letters, digits, `_` and `$`.
    return c.isalnum() or c in "_$"


def _scan(sql: str) -> tuple[str, tuple[str, ...], bool]:
    """Convert ``sql``; also report whether it holds anything but comments."""
    out: list[str] = []
    params: dict[str, int] = {}
    depth = 0  # square-bracket nesting, for slices
    has_code = False
    i, n = 0, len(sql)

    while i < n:
        c, nxt = sql[i], sql[i + 1 : i + 2]
        j = i + 1  # end of the token starting at i, copied verbatim unless a parameter
        if c.isspace():
            out.append(c)
            i = j
            continue
        if c == "-" and nxt == "-":
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(sql[i:j])
            i = j
            continue
        if c == "/" and nxt == "*":
            level, j = 1, i + 2
            while level:  # block comments nest in PostgreSQL
                if j >= n:
                    raise _ScanError("unterminated block comment", i)
                pair = sql[j : j + 2]
                level += (pair == "/*") - (pair == "*/")
                j += 2 if pair in ("/*", "*/") else 1
            out.append(sql[i:j])
            i = j
            continue
        has_code = True
        # Words are consumed whole, so an `E` here is a word of its own: E'...'.
        if c == "'" or (c in "Ee" and nxt == "'"):
            backslash = c != "'"  # E'...' strings take backslash escapes
            j = i + 1 if c == "'" else i + 2
            while True:
                if j >= n:
                    raise _ScanError("unterminated string literal", i)
                if backslash and sql[j] == "\\":
                    j += 2
                elif sql[j] == "'":
                    j += 1
                    if sql[j : j + 1] != "'":
                        break
                    j += 1
                else:
                    j += 1
        elif c == '"':
            j = i + 1
            while True:
                j = sql.find('"', j) + 1
                if not j:
                    raise _ScanError("unterminated quoted identifier", i)
                if sql[j : j + 1] != '"':
                    break
                j += 1
        elif c == "$":
            if nxt.isdigit():
                raise _ScanError("positional parameter ($n) in named-parameter SQL", i)
            k = i + 1
            while k < n and (sql[k].isalnum() or sql[k] == "_"):  # a tag has no `$`
                k += 1
            if sql[k : k + 1] == "$":  # $$ or $tag$: skip to the same delimiter
                tag = sql[i : k + 1]
                j = sql.find(tag, k + 1)
                if j < 0:
                    raise _ScanError("unterminated dollar-quoted string", i)
                j += len(tag)
        elif _word_char(c):
            while j < n and _word_char(sql[j]):
                j += 1
        elif c == ":" and nxt == ":":
            j = i + 2  # a cast; its second colon must not start a parameter
        elif c == ":" and (nxt.isalpha() or nxt == "_"):
            prev = sql[i - 1] if i else ""
            if not (depth and (_word_char(prev) or prev in ")]'\"")):
                j = i + 1
                while j < n and (sql[j].isalnum() or sql[j] == "_"):
                    j += 1
                name = sql[i + 1 : j]
                number = params.setdefault(name, len(params) + 1)
                out.append(f"${number}")
                i = j
                continue
        elif c == "[":
            depth += 1
        elif c == "]":
            depth = max(depth - 1, 0)
        out.append(sql[i:j])
        i = j
    return "".join(out), tuple(params), has_code


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def to_positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """Replace ``:name`` parameters by ``$n``; return the SQL and the names in ``$n`` order."""
    try:
        converted, params, _ = _scan(sql)
    except _ScanError as e:
        line, col = _line_col(sql, e.pos)
        raise QuerySyntaxError(f"{e.message} at line {line}, column {col}") from None
    return converted, params


_HEADER_START = re.compile(r"\s*--\s*name\s*:")
_HEADER = re.compile(r"\s*--\s*name:\s*([A-Za-z_][A-Za-z0-9_]*)\s+:(\w+)\s*", re.ASCII)


def parse_sql(text: str, file: str) -> list[Query]:
    """Parse one SQL file's text; ``file`` names it in queries and error messages."""
    starts = [0]  # offset of each line; the last line may lack a newline
    for pos, ch in enumerate(text):
        if ch == "\n":
            starts.append(pos + 1)
    lines = [text[s : e - 1] for s, e in zip(starts, [*starts[1:], len(text) + 1], strict=True)]
    headers = [k for k, ln in enumerate(lines) if _HEADER_START.match(ln)]
    for k in range(headers[0] if headers else len(lines)):
        if lines[k].strip() and not lines[k].lstrip().startswith("--"):
            raise QuerySyntaxError(f"{file}:{k + 1}: SQL outside any query (no `-- name:` above)")
    queries: list[Query] = []
    seen: dict[str, int] = {}
    for h, stop in zip(headers, [*headers[1:], len(lines)], strict=True):
        where = f"{file}:{h + 1}"
        m = _HEADER.fullmatch(lines[h])
        if not m:
            raise QuerySyntaxError(f"{where}: malformed header, expected `-- name: <name> :<kind>`")
        name, kind = m.groups()
        if kind not in KINDS:
            raise QuerySyntaxError(f"{where}: unknown kind :{kind} (one of :{', :'.join(KINDS)})")
        if name in seen:
            raise QuerySyntaxError(
                f"{where}: duplicate query {name!r} (first at line {seen[name]})"
            )
        seen[name] = h + 1
        k, doc = h + 1, []
        while k < stop and (not lines[k].strip() or lines[k].lstrip().startswith("--")):
            if lines[k].strip():
                doc.append(lines[k].lstrip()[2:].strip())
            k += 1
        begin = starts[k] if k < len(starts) else len(text)
        end = starts[stop] if stop < len(starts) else len(text)
        chunk = text[begin:end]
        body_start = begin + len(chunk) - len(chunk.lstrip())
        body = chunk.strip()
        try:
            sql, params, has_code = _scan(body)
        except _ScanError as e:
            line = bisect.bisect_right(starts, body_start + e.pos)
            raise QuerySyntaxError(f"{file}:{line}: {e.message} in query {name!r}") from None
        if not has_code:
            raise QuerySyntaxError(f"{where}: query {name!r} has no SQL")
        kind_ = cast(QueryKind, kind)
        queries.append(Query(name, kind_, sql, params, "\n".join(doc), file, h + 1))
    return queries


def _rowcount(status: str) -> int:
    # "DELETE 3", "UPDATE 0", "INSERT 0 5" (oid, rows), "SELECT 2", "MERGE 1".
    last = status.rsplit(" ", 1)[-1]
    if not last.isdigit():
        raise ValueError(f"command status {status!r} carries no row count")
    return int(last)


class Queries(Mapping[str, Query]):
    """The registry of named queries, and the one way application code runs them."""

    def __init__(self, queries: Iterable[Query]) -> None:
        self._queries: dict[str, Query] = {}
        for q in queries:
            if (old := self._queries.get(q.name)) is not None:
                raise QuerySyntaxError(
                    f"{q.file}:{q.line}: duplicate query {q.name!r} (also at {old.file}:{old.line})"
                )
            self._queries[q.name] = q

    @classmethod
    def load(cls, directory: Path | Traversable) -> Queries:
        """All ``*.sql`` files directly in ``directory``, in name order."""
        files = sorted(
            (f for f in directory.iterdir() if f.name.endswith(".sql") and f.is_file()),
            key=lambda f: f.name,
        )
        # utf-8-sig: an editor's BOM is not part of the first query.
        return cls(q for f in files for q in parse_sql(f.read_text("utf-8-sig"), f.name))

    def __getitem__(self, name: str) -> Query:
        try:
            return self._queries[name]
        except KeyError:
            raise KeyError(f"no query named {name!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._queries)

    def __len__(self) -> int:
        return len(self._queries)

    def __contains__(self, name: object) -> bool:
        return name in self._queries

    def _prepare(self, kind: QueryKind, name: str) -> Query:
        query = self[name]
        if query.kind != kind:
            raise QueryKindError(
                f"query {name!r} ({query.file}:{query.line}) is :{query.kind}, "
                f"not :{kind}; run it with .{query.kind}()"
            )
        return query

    async def one(
        self, executor: Executor, name: str, /, **params: object
    ) -> asyncpg.Record | None:
        q = self._prepare("one", name)
        return await executor.fetchrow(q.sql, *q.args(params))

    async def many(
        self, executor: Executor, name: str, /, **params: object
    ) -> list[asyncpg.Record]:
        q = self._prepare("many", name)
        return await executor.fetch(q.sql, *q.args(params))

    async def scalar(self, executor: Executor, name: str, /, **params: object) -> Any:
        q = self._prepare("scalar", name)
        return await executor.fetchval(q.sql, *q.args(params))

    async def exec(self, executor: Executor, name: str, /, **params: object) -> None:
        q = self._prepare("exec", name)
        await executor.execute(q.sql, *q.args(params))

    async def execrows(self, executor: Executor, name: str, /, **params: object) -> int:
        q = self._prepare("execrows", name)
        return _rowcount(await executor.execute(q.sql, *q.args(params)))

    def describe(self) -> list[str]:
        """One aligned line per query: ``name  :kind  (p1, p2)  file:line``."""
        rows = [
            (q.name, f":{q.kind}", f"({', '.join(q.params)})", f"{q.file}:{q.line}")
            for q in self._queries.values()
        ]
        widths = [max((len(r[c]) for r in rows), default=0) for c in range(3)]
        return [
            "  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
            for r in rows
        ]
