"""The README's examples run as pasted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_example() -> str:
    found = re.search(r"<<'PYTHON'\n(.*?)\nPYTHON\n", README.read_text(), re.S)
    assert found is not None, "README.md has no .venv/bin/python heredoc example"
    return found.group(1)


def test_readme_starts_with_the_serve_and_test_commands() -> None:
    lines = README.read_text().splitlines()
    first_block = lines[lines.index("```bash") + 1 : lines.index("```")]
    assert [line.split()[0] for line in first_block] == ["scripts/serve", "scripts/test"]


def test_readme_python_example_runs_as_pasted(database: str) -> None:
    env = {**os.environ, "CHATSTORE_DATABASE_URL": database}
    done = subprocess.run(
        [sys.executable, "-"],
        input=_python_example(),
        capture_output=True,
        text=True,
        env=env,
        cwd=README.parent,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "4 assistant 6 x 7 = 42",
        "3 tool 42",
        "4 6 x 7 = 42 False",
        "5 42 True",
        "another user's conversation does not exist for them",
    ]
