"""An installed wheel carries sql/, migrations/ and the chat page's files
(chatstore/web) and finds them without the source tree."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_installed_wheel_finds_its_sql_and_migrations() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        dist, target, elsewhere = (Path(scratch) / name for name in ("dist", "site", "cwd"))
        elsewhere.mkdir()
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), "."],
            cwd=ROOT,
            check=True,
            timeout=300,
        )
        (wheel,) = dist.glob("chatstore-*.whl")
        names = zipfile.ZipFile(wheel).namelist()
        shipped_sql = sorted(p.name for p in (ROOT / "sql").glob("*.sql"))
        shipped_migrations = sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
        assert sorted(n.rsplit("/", 1)[1] for n in names if "/_sql/" in n) == shipped_sql
        assert (
            sorted(n.rsplit("/", 1)[1] for n in names if "/_migrations/" in n) == shipped_migrations
        )
        shipped_web = sorted(p.name for p in (ROOT / "chatstore" / "web").iterdir())
        assert sorted(n.rsplit("/", 1)[1] for n in names if "chatstore/web/" in n) == shipped_web
        install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
        subprocess.run(
            [*install, "--target", str(target), str(wheel)],
            check=True,
            timeout=300,
        )
        probe = (
            "from chatstore.resources import sql_dir, migrations_dir\n"
            "from chatstore.store import ChatStore\n"
            "from chatstore.migrations import known_ids\n"
            "print(sql_dir()); print(migrations_dir())\n"
            "print(len(ChatStore.queries), len(known_ids()))\n"
            "from chatstore.http.web import WEB_DIR, load_files\n"
            "print(WEB_DIR); print(' '.join(sorted(load_files())))\n"
        )
        # The installed copy comes first on the path (ahead of the venv's
        # editable install of the checkout), and the checkout is not the
        # working directory: what it finds must be inside the installed copy.
        done = subprocess.run(
            [
                sys.executable,
                "-I",
                "-c",
                f"import sys; sys.path.insert(0, {str(target)!r})\n{probe}",
            ],
            cwd=elsewhere,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    sql, migrations, counts, web, web_files = done.stdout.splitlines()
    assert web.startswith(str(target)) and web_files.split() == shipped_web
    assert sql.startswith(str(target)) and sql.endswith("_sql")
    assert migrations.startswith(str(target)) and migrations.endswith("_migrations")
    queries, migration_ids = map(int, counts.split())
    assert migration_ids == len([n for n in shipped_migrations if ".rollback." not in n])
    assert queries > 0
