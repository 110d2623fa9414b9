"""The shape of the package (docs/architecture.md), kept true by tests.

Each rule is checked by a function that takes a package directory, run on
chatstore/ and on a small package built to break the rule, so each test is
seen to fail when its rule is broken.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import chatstore

PACKAGE = Path(chatstore.__file__).parent

# What routes must not import: the database layer and the driver.
DATABASE_MODULES = (
    "chatstore.database",
    "chatstore.queries",
    "chatstore.pool",
    "chatstore.dberrors",
    "asyncpg",
)
MAX_LINES = 300
LONG_BECAUSE = "Long because:"


def _modules(package: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``module`` imports at run time (anywhere in it, but not
    under ``if TYPE_CHECKING:``, which runs only for the type checker).
    ``from a import b`` imports the module a.b when ``known`` has it, else a."""
    tree = ast.parse(path.read_text("utf-8"))
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
        for inner in ast.iter_child_nodes(node):
            visit(inner)

    visit(tree)
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    modules = dict(_modules(package))
    known = set(modules)
    return {
        module: {name for name in _imports(module, path, known) if name in known and name != module}
        for module, path in modules.items()
    }


def import_cycles(package: Path) -> list[list[str]]:
    """One cycle per strongly connected group of modules that import each other."""
    graph = import_graph(package)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return cycles


def routes_reaching_the_database(package: Path) -> list[str]:
    """Modules of <package>.http that import the database layer or asyncpg."""
    http = f"{package.name}.http"
    modules = dict(_modules(package))
    found = []
    for module, path in modules.items():
        if module != http and not module.startswith(http + "."):
            continue
        for name in sorted(_imports(module, path, set(modules))):
            if any(name == banned or name.startswith(banned + ".") for banned in DATABASE_MODULES):
                found.append(f"{module} imports {name}")
    return found


def long_modules_without_a_reason(package: Path) -> list[str]:
    found = []
    for module, path in _modules(package):
        text = path.read_text("utf-8")
        lines = text.count("\n")
        if lines <= MAX_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if LONG_BECAUSE not in docstring:
            found.append(f"{module}: {lines} lines and no '{LONG_BECAUSE}' in its docstring")
    return found


def _package(root: Path, files: dict[str, str]) -> Path:
    """A throwaway package named chatstore under ``root``."""
    package = root / "chatstore"
    for name, text in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


# -- the rules -------------------------------------------------------------------


def test_no_import_cycles_in_chatstore() -> None:
    assert import_cycles(PACKAGE) == []


def test_no_import_cycles_detects_a_cycle(tmp_path: Path) -> None:
    broken = _package(
        tmp_path,
        {
            "store.py": "from chatstore import idempotency\n",
            "idempotency.py": "from chatstore.store import ChatStore\n",
            "typed.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from chatstore.store import ChatStore\n",
        },
    )
    assert import_cycles(broken) == [["chatstore.idempotency", "chatstore.store"]]


def test_routes_import_no_sql_or_database_layer() -> None:
    assert routes_reaching_the_database(PACKAGE) == []


def test_routes_import_no_sql_detects_a_route_with_sql(tmp_path: Path) -> None:
    broken = _package(
        tmp_path,
        {
            "http/__init__.py": "",
            "http/routes/__init__.py": "",
            "http/routes/service.py": "import asyncpg\nfrom chatstore.queries import Queries\n",
            "http/app.py": "from chatstore import database\n",
            "database.py": "",
            "queries.py": "",
        },
    )
    assert routes_reaching_the_database(broken) == [
        "chatstore.http.app imports chatstore.database",
        "chatstore.http.routes.service imports asyncpg",
        "chatstore.http.routes.service imports chatstore.queries",
    ]


def test_no_module_over_300_lines_without_a_reason() -> None:
    assert long_modules_without_a_reason(PACKAGE) == []


def test_no_module_over_300_lines_detects_a_long_module(tmp_path: Path) -> None:
    body = "x = 1\n" * MAX_LINES
    broken = _package(
        tmp_path,
        {
            "long.py": '"""A module."""\n' + body,
            "explained.py": f'"""A module.\n\n{LONG_BECAUSE} a table.\n"""\n' + body,
            "short.py": body,
        },
    )
    assert long_modules_without_a_reason(broken) == [
        f"chatstore.long: {MAX_LINES + 1} lines and no '{LONG_BECAUSE}' in its docstring"
    ]


# -- one declaration per endpoint (chatstore/http/endpoints.py) ------------------


def queries_parsed_off_their_row(package: Path) -> list[str]:
    """Handlers whose ``query(request, Model)`` names another model than
    their endpoint row's ``query=`` (or parse one with no row naming it).
    Read from the source: a row and its handler must agree before any
    request exercises them."""
    rows: dict[str, str | None] = {}
    endpoints = ast.parse((package / "http" / "endpoints.py").read_text("utf-8"))
    for call in ast.walk(endpoints):
        if isinstance(call, ast.Call) and ast.unparse(call.func) == "Endpoint":
            handler = ast.unparse(call.args[2]).rpartition(".")[2]
            model = next((ast.unparse(k.value) for k in call.keywords if k.arg == "query"), None)
            rows[handler] = model
    found = []
    for path in sorted((package / "http" / "routes").glob("*.py")):
        for function in ast.walk(ast.parse(path.read_text("utf-8"))):
            if not isinstance(function, ast.AsyncFunctionDef):
                continue
            parsed = {
                ast.unparse(call.args[1])
                for call in ast.walk(function)
                if isinstance(call, ast.Call) and ast.unparse(call.func) == "query"
            }
            declared = rows.get(function.name)
            if parsed and parsed != {declared}:
                found.append(f"{function.name} parses {sorted(parsed)}, its row says {declared}")
            elif declared is not None and not parsed:
                found.append(f"{function.name} never parses its row's {declared}")
    return found


def test_handlers_parse_the_query_model_of_their_endpoint_row() -> None:
    assert queries_parsed_off_their_row(PACKAGE) == []


def test_handlers_parse_the_query_model_detects_a_mismatch(tmp_path: Path) -> None:
    broken = _package(
        tmp_path,
        {
            "http/__init__.py": "",
            "http/endpoints.py": "ROWS = (\n"
            "    Endpoint('get', '/a', search.search, query=SearchQuery),\n"
            "    Endpoint('get', '/b', search.other, query=OtherQuery),\n"
            "    Endpoint('get', '/c', search.plain),\n"
            ")\n",
            "http/routes/__init__.py": "",
            "http/routes/search.py": "async def search(request):\n"
            "    return query(request, LimitQuery)\n"
            "async def other(request):\n"
            "    return None\n"
            "async def plain(request):\n"
            "    return query(request, SearchQuery)\n",
        },
    )
    assert queries_parsed_off_their_row(broken) == [
        "search parses ['LimitQuery'], its row says SearchQuery",
        "other never parses its row's OtherQuery",
        "plain parses ['SearchQuery'], its row says None",
    ]
