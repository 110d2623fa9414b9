"""Tests of chatstore.queries: the named-parameter tokenizer and the query registry.

No database here: the real queries are prepared against PostgreSQL elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatstore.queries import (
    Queries,
    Query,
    QueryKindError,
    QueryParameterError,
    QuerySyntaxError,
    parse_sql,
    to_positional,
)

# --- tokenizer rules ----------------------------------------------------------


def test_parameter_becomes_numbered_placeholder() -> None:
    assert to_positional("WHERE a = :a AND b = :b_2") == ("WHERE a = $1 AND b = $2", ("a", "b_2"))


def test_repeated_parameter_reuses_number() -> None:
    assert to_positional(":a, :b, :a") == ("$1, $2, $1", ("a", "b"))


def test_cast_is_not_a_parameter() -> None:
    assert to_positional(":x::jsonb, now()::date") == ("$1::jsonb, now()::date", ("x",))


def test_single_quoted_string_untouched() -> None:
    sql = "'it''s :no' || :yes"
    assert to_positional(sql) == ("'it''s :no' || $1", ("yes",))


def test_e_string_backslash_escape() -> None:
    # In a plain string a backslash is literal, so 'a\' ends there; in E'' it escapes.
    assert to_positional(r"E'it\'s :no' :y") == (r"E'it\'s :no' $1", ("y",))
    assert to_positional(r"e'x\\' :y") == (r"e'x\\' $1", ("y",))
    assert to_positional(r"'a\' :y") == (r"'a\' $1", ("y",))


def test_dollar_quoted_string_untouched() -> None:
    assert to_positional("$$ ':a' :b $$ :c") == ("$$ ':a' :b $$ $1", ("c",))


def test_tagged_dollar_quote_untouched() -> None:
    sql = "$fn$ $$ :a $x$ $fn$ :b"
    assert to_positional(sql) == ("$fn$ $$ :a $x$ $fn$ $1", ("b",))


def test_identifier_with_dollar_is_not_a_dollar_quote() -> None:
    assert to_positional("foo$bar$ :a") == ("foo$bar$ $1", ("a",))


def test_quoted_identifier_untouched() -> None:
    sql = '"user:Id""x" = :id AND "userId" = :uid'
    assert to_positional(sql) == ('"user:Id""x" = $1 AND "userId" = $2', ("id", "uid"))


def test_line_comment_untouched() -> None:
    assert to_positional("-- where :x\n:y -- :z") == ("-- where :x\n$1 -- :z", ("y",))


def test_nested_block_comment_untouched() -> None:
    sql = "/* a /* :x */ :y */ :z /**/ /*/ :w */"
    assert to_positional(sql) == ("/* a /* :x */ :y */ $1 /**/ /*/ :w */", ("z",))


def test_array_slice_untouched() -> None:
    sql = "a[1:2], a[lo:hi], a[lo:hi][1:2], a[f(x):y], b[a[1]:n]"
    assert to_positional(sql) == (sql, ())


def test_parameter_inside_brackets() -> None:
    # After `[`, whitespace or an operator, `:name` is a parameter; after an operand, a slice.
    sql = "a[:i], a[1: :hi], a[:lo:hi], ARRAY[:p,:q], a[:i + 1]"
    expected = "a[$1], a[1: $2], a[$3:hi], ARRAY[$4,$5], a[$1 + 1]"
    assert to_positional(sql) == (expected, ("i", "hi", "lo", "p", "q"))


def test_colon_equals_named_argument_untouched() -> None:
    assert to_positional("f(a := 1, b:=:c)") == ("f(a := 1, b:=$1)", ("c",))


def test_positional_placeholder_is_an_error() -> None:
    with pytest.raises(QuerySyntaxError, match=r"positional parameter.*line 2, column 5"):
        to_positional("SELECT\nx = $1")


@pytest.mark.parametrize(
    ("sql", "what"),
    [
        ("'abc", "string literal"),
        ("'abc''", "string literal"),
        (r"E'abc\'", "string literal"),
        ("$$abc", "dollar-quoted string"),
        ("$t$abc$$", "dollar-quoted string"),
        ('"abc', "quoted identifier"),
        ("/* abc", "block comment"),
        ("/* /* */", "block comment"),
    ],
)
def test_unterminated_string_is_an_error(sql: str, what: str) -> None:
    with pytest.raises(QuerySyntaxError, match=f"unterminated {what}"):
        to_positional(sql)


# --- property: the output is the input with only the parameters replaced -------


@dataclass(frozen=True)
class Param:
    name: str


Piece = str | Param
Fragment = tuple[Piece, ...]

# Characters that tempt a tokenizer: colons, quotes, dollars, comment starts, brackets.
TRICKY = "ax :$'\"\\-/*[]\n;E"
names = st.sampled_from(["a", "b", "user_id", "x1", "_p"])
tricky = st.text(alphabet=TRICKY, max_size=12)


def _dollar_quoted(tag: str, body: str) -> str:
    return f"${tag}${body}${tag}$"


def _e_string(chars: list[str]) -> str:
    out = []
    for c in chars:
        if c == "\\":
            out.append("\\\\")
        elif c == "'":
            out.append("\\'" if len(out) % 2 else "''")
        else:
            out.append(c)
    return "E'" + "".join(out) + "'"


def _body_ok(tag: str, body: str) -> bool:
    delim = f"${tag}$"
    return (body + delim).find(delim) == len(body)


block_comments: st.SearchStrategy[str] = st.recursive(
    st.text(alphabet="ax :$'\"-[]\n", max_size=8).map(lambda s: f"/*{s}*/"),
    lambda inner: st.tuples(st.text(alphabet="ax :'", max_size=4), inner).map(
        lambda t: f"/*{t[0]}{t[1]}{t[0]}*/"
    ),
    max_leaves=3,
)

fragments: st.SearchStrategy[Fragment] = st.one_of(
    st.sampled_from(["SELECT", "m.seq", "FROM", "=", "<>", ",", "(", ")", "1", "3.5", ";"]).map(
        lambda s: (s,)
    ),
    st.sampled_from(["E", "e", "x$y", "now()", "->>", "ARRAY", "||"]).map(lambda s: (s,)),
    st.sampled_from(["x::int", "now()::date", "'1'::int", "a::text[]"]).map(lambda s: (s,)),
    st.sampled_from(["f(a := 1)", "f(a:=1)"]).map(lambda s: (s,)),
    st.sampled_from(["arr[1:2]", "arr[lo:hi]", "arr[lo:hi][1:2]", "a[f(x):y]"]).map(lambda s: (s,)),
    names.map(lambda n: (Param(n),)),
    names.map(lambda n: (Param(n), "::jsonb")),
    names.map(lambda n: ("arr[", Param(n), "]")),
    names.map(lambda n: ("arr[1: ", Param(n), "]")),
    names.map(lambda n: ("arr[", Param(n), ":hi]")),
    tricky.map(lambda s: ("'" + s.replace("'", "''") + "'",)),
    st.lists(st.sampled_from(TRICKY), max_size=12).map(lambda cs: (_e_string(cs),)),
    st.tuples(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,4}", fullmatch=True) | st.just(""), tricky)
    .filter(lambda t: _body_ok(*t))
    .map(lambda t: (_dollar_quoted(*t),)),
    st.text(alphabet=TRICKY, min_size=1, max_size=8).map(
        lambda s: ('"' + s.replace('"', '""') + '"',)
    ),
    st.text(alphabet=TRICKY.replace("\n", ""), max_size=10).map(lambda s: (f"--{s}\n",)),
    block_comments.map(lambda s: (s,)),
)
separators = st.sampled_from([" ", "\n", "\t", "  "])


def render(frags: list[Fragment], seps: list[str]) -> tuple[str, str, tuple[str, ...]]:
    """The source text, the expected conversion and the expected parameter names."""
    source, expected, numbers = [], [], dict[str, int]()
    for frag, sep in zip(frags, seps, strict=True):
        for piece in frag:
            if isinstance(piece, Param):
                source.append(":" + piece.name)
                expected.append(f"${numbers.setdefault(piece.name, len(numbers) + 1)}")
            else:
                source.append(piece)
                expected.append(piece)
        source.append(sep)
        expected.append(sep)
    return "".join(source), "".join(expected), tuple(numbers)


sql_texts = st.lists(st.tuples(fragments, separators), max_size=12).map(
    lambda pairs: render([p[0] for p in pairs], [p[1] for p in pairs])
)


@settings(max_examples=300, deadline=None)
@given(sql_texts)
def test_only_parameters_are_replaced(case: tuple[str, str, tuple[str, ...]]) -> None:
    source, expected, params = case
    assert to_positional(source) == (expected, params)


@settings(max_examples=300, deadline=None)
@given(sql_texts)
def test_output_has_no_named_parameters_left(case: tuple[str, str, tuple[str, ...]]) -> None:
    source, _, params = case
    converted, _ = to_positional(source)
    if params:  # what is left are the $n placeholders, which a second pass refuses
        with pytest.raises(QuerySyntaxError, match="positional parameter"):
            to_positional(converted)
    else:
        assert to_positional(converted) == (source, ())


@settings(max_examples=100, deadline=None)
@given(sql_texts)
def test_parsed_query_is_file_text_with_only_substitution(
    case: tuple[str, str, tuple[str, ...]],
) -> None:
    source, expected, params = case
    text = f"-- name: q :many\n-- Why.\nSELECT {source}\n"
    (query,) = parse_sql(text, "f.sql")
    assert (query.sql, query.params, query.doc) == (f"SELECT {expected}".strip(), params, "Why.")


# --- parsing files -------------------------------------------------------------

FILE = """\
-- Messages of a conversation.

-- name: list_messages :many
-- Why: the page of a conversation, in seq order.
--   Filtered by owner.
SELECT m.seq, m.role
FROM messages AS m
WHERE m.conversation_id = :conversation_id
  AND m.user_id = :user_id -- owner check
ORDER BY m.seq
LIMIT :limit;

-- name: delete_message :execrows
DELETE FROM messages WHERE id = :id AND user_id = :user_id
"""


def test_parse_header_doc_and_body() -> None:
    first, second = parse_sql(FILE, "messages.sql")
    assert first == Query(
        name="list_messages",
        kind="many",
        sql=(
            "SELECT m.seq, m.role\nFROM messages AS m\nWHERE m.conversation_id = $1\n"
            "  AND m.user_id = $2 -- owner check\nORDER BY m.seq\nLIMIT $3;"
        ),
        params=("conversation_id", "user_id", "limit"),
        doc="Why: the page of a conversation, in seq order.\nFiltered by owner.",
        file="messages.sql",
        line=3,
    )
    assert (second.name, second.kind, second.line, second.doc) == (
        "delete_message",
        "execrows",
        13,
        "",
    )


def test_body_is_file_text_verbatim() -> None:
    for query in parse_sql(FILE, "messages.sql"):
        text = query.sql
        for number, name in reversed(list(enumerate(query.params, 1))):
            text = text.replace(f"${number}", f":{name}")
        assert text in FILE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "-- name: q :many\nSELECT 1;\n-- name: q :one\nSELECT 2;",
            r"f\.sql:3: duplicate query 'q'",
        ),
        ("-- name: q :rows\nSELECT 1;", r"f\.sql:1: unknown kind :rows"),
        ("-- name: q\nSELECT 1;", r"f\.sql:1: malformed header"),
        ("-- name: 1q :one\nSELECT 1;", r"f\.sql:1: malformed header"),
        ("-- name: q :one\n-- only a comment\n\n-- name: r :one\nSELECT 1;", r"f\.sql:1: .*no SQL"),
        ("-- name: q :one\n/* only a comment */", r"f\.sql:1: .*no SQL"),
        ("SELECT 1;\n-- name: q :one\nSELECT 1;", r"f\.sql:1: SQL outside any query"),
        (
            "-- name: q :one\nSELECT\n  'abc\n",
            r"f\.sql:3: unterminated string literal in query 'q'",
        ),
    ],
    ids=["duplicate", "kind", "no-kind", "bad-name", "empty", "comment-only", "outside", "string"],
)
def test_malformed_file_is_an_error(text: str, message: str) -> None:
    with pytest.raises(QuerySyntaxError, match=message):
        parse_sql(text, "f.sql")


def test_duplicate_query_name_is_an_error() -> None:
    with pytest.raises(QuerySyntaxError, match="duplicate query 'q'"):
        parse_sql("-- name: q :one\nSELECT 1;\n-- name: q :one\nSELECT 1;\n", "f.sql")


def test_duplicate_query_name_across_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("-- name: q :one\nSELECT 1;\n")
    (tmp_path / "b.sql").write_text("\n-- name: q :one\nSELECT 2;\n")
    with pytest.raises(
        QuerySyntaxError, match=r"b\.sql:2: duplicate query 'q' \(also at a\.sql:1\)"
    ):
        Queries.load(tmp_path)


def test_load_reads_sql_files_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.sql").write_text("-- name: second :scalar\nSELECT :x::int;\n")
    (tmp_path / "a.sql").write_text("\ufeff-- name: first :one\nSELECT 1;\n")
    (tmp_path / "notes.txt").write_text("-- name: ignored :one\nSELECT 1;\n")
    (tmp_path / "dir.sql").mkdir()
    queries = Queries.load(tmp_path)
    assert list(queries) == ["first", "second"]
    assert len(queries) == 2 and "first" in queries and "ignored" not in queries
    assert queries["second"].file == "b.sql" and queries["second"].sql == "SELECT $1::int;"


def test_repository_sql_files_parse() -> None:
    sql_dir = Path(__file__).resolve().parent.parent / "sql"
    files = sorted(f.name for f in sql_dir.glob("*.sql"))
    assert files, f"no SQL files in {sql_dir}"
    queries = Queries.load(sql_dir)
    # Every file contributes at least one query, and the store's hot ones are there.
    assert {q.file for q in queries.values()} == set(files)
    assert {"append_messages", "list_messages_desc", "session_user"} <= set(queries)


# --- running -------------------------------------------------------------------


class FakeExecutor:
    """Records calls; only the argument plumbing is under test, not data behaviour."""

    def __init__(self, status: str = "DELETE 3") -> None:
        self.calls: list[tuple[str, str, tuple[object, ...]]] = []
        self.status = status

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        self.calls.append(("fetch", query, args))
        return []

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        self.calls.append(("fetchrow", query, args))
        return None

    async def fetchval(self, query: str, *args: object) -> object:
        self.calls.append(("fetchval", query, args))
        return 42

    async def execute(self, query: str, *args: object) -> str:
        self.calls.append(("execute", query, args))
        return self.status


@pytest.fixture
def queries() -> Queries:
    return Queries(
        parse_sql(
            "-- name: get :one\nSELECT :b, :a\n"
            "-- name: page :many\nSELECT :name\n"
            "-- name: count :scalar\nSELECT 1\n"
            "-- name: touch :exec\nUPDATE t SET x = :x\n"
            "-- name: purge :execrows\nDELETE FROM t WHERE x = :x\n",
            "t.sql",
        )
    )


async def test_run_methods_pass_sql_and_positional_args(queries: Queries) -> None:
    db = FakeExecutor()
    assert await queries.one(db, "get", a=1, b=2) is None
    assert await queries.many(db, "page", name="n") == []  # `name` is free: positional-only
    assert await queries.scalar(db, "count") == 42
    await queries.exec(db, "touch", x=None)
    assert await queries.execrows(db, "purge", x=5) == 3
    assert db.calls == [
        ("fetchrow", "SELECT $1, $2", (2, 1)),
        ("fetch", "SELECT $1", ("n",)),
        ("fetchval", "SELECT 1", ()),
        ("execute", "UPDATE t SET x = $1", (None,)),
        ("execute", "DELETE FROM t WHERE x = $1", (5,)),
    ]


def test_missing_parameter_is_an_error(queries: Queries) -> None:
    with pytest.raises(
        QueryParameterError, match=r"'get' \(t\.sql:1\): missing a \(parameters: b, a\)"
    ):
        queries["get"].args({"b": 1})


def test_unknown_parameter_is_an_error(queries: Queries) -> None:
    with pytest.raises(QueryParameterError, match="missing b; unknown c, d"):
        queries["get"].args({"a": 1, "d": 2, "c": 3})


def test_a_wrong_name_among_as_many_parameters_is_an_error(queries: Queries) -> None:
    # As many names as the query's, one of them wrong: not taken for a match.
    with pytest.raises(QueryParameterError, match="missing b; unknown c"):
        queries["get"].args({"a": 1, "c": 2})


async def test_parameters_checked_before_the_database(queries: Queries) -> None:
    db = FakeExecutor()
    with pytest.raises(QueryParameterError):
        await queries.one(db, "get", a=1)
    with pytest.raises(TypeError):  # a QueryParameterError is a TypeError, like a bad call
        await queries.scalar(db, "count", extra=1)
    assert db.calls == []


async def test_kind_mismatch_is_an_error(queries: Queries) -> None:
    db = FakeExecutor()
    with pytest.raises(QueryKindError, match=r"'get' \(t\.sql:1\) is :one, not :many"):
        await queries.many(db, "get", a=1, b=2)
    assert db.calls == []


async def test_unknown_query_name_is_a_key_error(queries: Queries) -> None:
    with pytest.raises(KeyError, match="no query named 'nope'"):
        await queries.one(FakeExecutor(), "nope")


@pytest.mark.parametrize(
    ("status", "rows"), [("DELETE 3", 3), ("UPDATE 0", 0), ("INSERT 0 5", 5), ("MERGE 12", 12)]
)
async def test_execrows_parses_command_status(queries: Queries, status: str, rows: int) -> None:
    assert await queries.execrows(FakeExecutor(status), "purge", x=1) == rows


async def test_execrows_without_row_count_is_an_error(queries: Queries) -> None:
    with pytest.raises(ValueError, match="no row count"):
        await queries.execrows(FakeExecutor("CREATE TABLE"), "purge", x=1)


def test_describe_aligns_columns(queries: Queries) -> None:
    assert queries.describe() == [
        "get    :one       (b, a)  t.sql:1",
        "page   :many      (name)  t.sql:3",
        "count  :scalar    ()      t.sql:5",
        "touch  :exec      (x)     t.sql:7",
        "purge  :execrows  (x)     t.sql:9",
    ]
