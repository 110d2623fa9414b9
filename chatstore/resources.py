"""Where the SQL files and the migrations are, installed or in a checkout.

A wheel carries them inside the package (chatstore/_sql, chatstore/_migrations,
see pyproject.toml); a source checkout or an editable install has them at the
top of the tree.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _find(installed: str, checkout: str) -> Path:
    for candidate in (_PACKAGE / installed, _PACKAGE.parent / checkout):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"chatstore cannot find its {checkout}/ folder next to {_PACKAGE}")


def sql_dir() -> Path:
    return _find("_sql", "sql")


def migrations_dir() -> Path:
    return _find("_migrations", "migrations")
