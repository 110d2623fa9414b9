"""`chatstore serve` prints a sign-in link for the page on the embedded
default, and never a token for a configured database; the link's shape."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from chatstore.cli import page_url, sign_in_link
from chatstore.embedded import Cluster, free_port

READY_SECONDS = 90
LINK = re.compile(r"chatstore: open (http://127\.0\.0\.1:\d+/#token=(\S+)) to sign in as (\S+)")


def serve(env: dict[str, str], cwd: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "chatstore", "serve", "--port", str(port)],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_ready(server: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"chatstore serve exited with {server.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"/readyz not 200 after {READY_SECONDS} s:\n{log.read_text()}")


def stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def scratch() -> Iterator[Path]:
    # Not tmp_path: it lies under a 0700 folder the postgres user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="chatstore-page-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        if (root / "pgdata" / "postmaster.pid").exists():
            Cluster.create(root / "pgdata").stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def environment(**extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("CHATSTORE_DATABASE_URL", "DATABASE_URL") and not name.startswith("PG")
    }
    return {**env, **extra}


def test_serve_on_the_embedded_default_prints_a_link_that_signs_in(scratch: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = scratch / "serve.log"
    server = serve(environment(CHATSTORE_DATA_DIR=str(scratch)), scratch, port, log)
    try:
        wait_ready(server, base_url, log)
        found = LINK.search(log.read_text())
        assert found is not None, log.read_text()
        link, token, email = found.groups()
        assert link.startswith(f"{base_url}/#token=")
        assert email == "you@localhost"
        auth = {"Authorization": f"Bearer {unquote(token)}"}
        listed = httpx.get(f"{base_url}/api/conversations", headers=auth, timeout=10)
        assert listed.status_code == 200, listed.text
        assert httpx.get(f"{base_url}/", timeout=10).status_code == 200
    finally:
        stop(server)


def test_serve_on_a_configured_database_prints_no_token(database: str, scratch: Path) -> None:
    port = free_port()
    log = scratch / "serve.log"
    server = serve(environment(CHATSTORE_DATABASE_URL=database), scratch, port, log)
    try:
        wait_ready(server, f"http://127.0.0.1:{port}", log)
    finally:
        stop(server)
    output = log.read_text()
    assert "token" not in output.lower(), output


def test_the_sign_in_link_carries_the_token_in_the_fragment() -> None:
    assert sign_in_link("http://127.0.0.1:8000/", "a+b/c") == (
        "http://127.0.0.1:8000/#token=a%2Bb%2Fc"
    )
    assert page_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert page_url("::", 8000) == "http://127.0.0.1:8000"
    assert page_url("::1", 9000) == "http://[::1]:9000"
    assert page_url("example.test", 80) == "http://example.test:80"
