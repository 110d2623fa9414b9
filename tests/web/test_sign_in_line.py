"""`chatstore serve` prints a sign-in link for the page on the embedded
default, and never a token for a configured database; the link's shape."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from support.serve import Server, clean_env

from chatstore.cli import page_url, sign_in_link
from chatstore.embedded import Cluster

READY_SECONDS = 90
LINK = re.compile(r"chatstore: open (http://127\.0\.0\.1:\d+/#token=(\S+)) to sign in as (\S+)")


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


def serve(scratch: Path, **env: str) -> Server:
    """``chatstore serve`` as an operator runs it (the CLI's own worker count)."""
    server = Server(log=scratch / "serve.log", env=clean_env(**env), workers=None)
    server.start()
    return server


def test_serve_on_the_embedded_default_prints_a_link_that_signs_in(scratch: Path) -> None:
    server = serve(scratch, CHATSTORE_DATA_DIR=str(scratch))
    base_url, log = server.base_url, server.log
    try:
        server.wait_ready_blocking(READY_SECONDS)
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
        server.stop()


def test_serve_on_a_configured_database_prints_no_token(database: str, scratch: Path) -> None:
    server = serve(scratch, CHATSTORE_DATABASE_URL=database)
    try:
        server.wait_ready_blocking(READY_SECONDS)
    finally:
        server.stop()
    output = server.log.read_text()
    assert "token" not in output.lower(), output


def test_the_sign_in_link_carries_the_token_in_the_fragment() -> None:
    assert sign_in_link("http://127.0.0.1:8000/", "a+b/c") == (
        "http://127.0.0.1:8000/#token=a%2Bb%2Fc"
    )
    assert page_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert page_url("::", 8000) == "http://127.0.0.1:8000"
    assert page_url("::1", 9000) == "http://[::1]:9000"
    assert page_url("example.test", 80) == "http://example.test:80"
