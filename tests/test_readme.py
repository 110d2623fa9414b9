"""The README's examples run as pasted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from support.serve import clean_env, running_server

from chatstore.config import Settings

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


def _openai_example() -> str:
    """The OpenAI Conversations API example: the whole bash block, token included."""
    found = re.search(
        r"```bash\n(TOKEN=[^\n]*<<'OPENAI'\n.*?\nOPENAI\n)```", README.read_text(), re.S
    )
    assert found is not None, "README.md has no OpenAI Conversations API example"
    return found.group(1)


def test_readme_openai_conversations_example_runs_as_pasted(
    database: str, settings: Settings
) -> None:
    with running_server(database, settings.auth_secret) as server:
        script = _openai_example().replace("http://127.0.0.1:8000", server.base_url)
        done = subprocess.run(
            ["bash", "-c", script],
            capture_output=True,
            text=True,
            env=clean_env(CHATSTORE_DATABASE_URL=database, PATH=os.environ["PATH"]),
            cwd=README.parent,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert [line.rstrip() for line in done.stdout.splitlines()] == [
        "True {'topic': 'maths'}",
        "6 x 7 = 42",
        "You asked about 6 x 7.",
        "message system",
        "message user",
        "function_call",
        "function_call_output",
        "message assistant",
        "message user",
        "message assistant",
    ]
