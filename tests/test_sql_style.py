"""SQL is checked like code: sqlfluff (.sqlfluff) formats and lints sql/ and
migrations/, squawk (.squawk.toml) lints the migrations for locking hazards.

The first two tests are CI's lint stage, so that ``scripts/test`` catches a
finding too; the others show that each linter, with the repository's config,
really refuses what it is there to refuse (so the clean runs mean something)
and accepts the house style on purpose (header, ``:name`` parameters, casts).
No database: both linters read files only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SQLFLUFF_CONFIG = ROOT / ".sqlfluff"
SQUAWK_CONFIG = ROOT / ".squawk.toml"


def run(tool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    exe = BIN / tool
    if not exe.exists():
        pytest.fail(f"{exe} is missing: the dev extra installs it (scripts/bootstrap)")
    return subprocess.run(
        [str(exe), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def sqlfluff_lint(*paths: str | Path) -> subprocess.CompletedProcess[str]:
    return run("sqlfluff", "lint", "--config", SQLFLUFF_CONFIG, *paths)


def squawk(*paths: str | Path) -> subprocess.CompletedProcess[str]:
    return run("squawk", "-c", SQUAWK_CONFIG, "--reporter", "gcc", *paths)


def test_sql_and_migrations_pass_sqlfluff() -> None:
    done = run("sqlfluff", "lint", "sql", "migrations")
    assert done.returncode == 0, (
        "sqlfluff findings; `.venv/bin/sqlfluff fix sql migrations` fixes most:\n" + done.stdout
    )


def test_migrations_pass_squawk() -> None:
    done = squawk(*sorted((ROOT / "migrations").glob("*.sql")))
    assert done.returncode == 0, "squawk findings (see .squawk.toml):\n" + done.stdout


QUERY = """\
-- name: {name} :many
-- A doc comment, kept as it is.
SELECT id, title
FROM conversations
WHERE user_id = :user_id
    AND (updated_at, id) < (:cursor_updated_at::timestamptz, :cursor_id::uuid)
ORDER BY updated_at DESC, id DESC
LIMIT :limit;
"""


def test_sqlfluff_accepts_header_named_parameters_and_casts(tmp_path: Path) -> None:
    good = tmp_path / "good.sql"
    good.write_text(QUERY.format(name="page"))
    done = sqlfluff_lint(good)
    assert done.returncode == 0, done.stdout


def test_sqlfluff_refuses_unformatted_sql(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sql"
    bad.write_text(
        QUERY.format(name="page")
        .replace("SELECT id", "select id")
        .replace("    AND", "AND")
        .replace(":cursor_id::uuid", "CAST(:cursor_id AS uuid)")
    )
    done = sqlfluff_lint(bad)
    assert done.returncode != 0
    for rule in ("CP01", "LT02", "CV11"):  # keyword case, indentation, cast style
        assert rule in done.stdout, done.stdout


def test_sqlfluff_fix_keeps_header_doc_and_parameters(tmp_path: Path) -> None:
    messy = tmp_path / "messy.sql"
    messy.write_text(QUERY.format(name="page").replace("    AND", "AND").replace("DESC", "desc"))
    done = run("sqlfluff", "fix", "--config", SQLFLUFF_CONFIG, messy)
    assert done.returncode == 0, done.stdout
    assert messy.read_text() == QUERY.format(name="page")


def test_new_migration_sets_lock_timeout_before_locking_a_table(tmp_path: Path) -> None:
    migration = tmp_path / "0099.example.sql"
    migration.write_text("ALTER TABLE messages ADD COLUMN note text;\n")
    done = squawk(migration)
    assert done.returncode != 0
    assert "require-lock-timeout" in done.stdout, done.stdout

    migration.write_text("SET LOCAL lock_timeout = '5s';\n" + migration.read_text())
    assert squawk(migration).returncode == 0


def test_new_index_on_existing_table_is_built_concurrently(tmp_path: Path) -> None:
    migration = tmp_path / "0099.example.sql"
    migration.write_text(
        "SET LOCAL lock_timeout = '5s';\n"
        "CREATE INDEX messages_note_idx ON messages (conversation_id);\n"
    )
    done = squawk(migration)
    assert done.returncode != 0
    assert "require-concurrent-index-creation" in done.stdout, done.stdout
