"""`chatstore serve` on the embedded PostgreSQL, end to end over a real socket:
start, migrate, serve, take a token from a second command, stop on SIGTERM
with the embedded cluster stopped too."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.serve import STOP_SECONDS, Server, chatstore_command, clean_env

from chatstore.embedded import Cluster, free_port


def embedded_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """No database URL: chatstore runs its own cluster in ``data_dir``."""
    return clean_env(CHATSTORE_DATA_DIR=str(data_dir), **extra)


def gone(pid: int) -> bool:
    """True once pid has exited (a zombie waiting for its parent to reap it counts)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return state.split()[1] in ("Z", "X")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: it lies under a 0700 folder the postgres user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="chatstore-e2e-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        pgdata = root / "pgdata"
        if (pgdata / "postmaster.pid").exists():  # a failed test left the cluster behind
            Cluster.create(pgdata).stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def test_serve_on_the_embedded_database(data_dir: Path) -> None:
    env = embedded_env(data_dir)
    # The CLI's own worker count (workers=None), as an operator runs it.
    server = Server(log=data_dir / "serve.log", env=env, workers=None)
    base_url, log = server.base_url, server.log
    server.start()
    try:
        server.wait_ready_blocking()
        token = subprocess.run(
            chatstore_command("token", "--email", "e2e@example.test"),
            env=env,
            cwd=data_dir,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()

        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base_url, headers=auth, timeout=10) as client:
            created = client.post("/api/conversations", json={"title": "e2e"})
            assert created.status_code == 201, created.text
            cid = created.json()["id"]
            appended = client.post(
                f"/api/conversations/{cid}/messages", json={"role": "user", "content": "hello"}
            )
            assert appended.status_code == 201, appended.text
            assert appended.json()["seq"] == 1
            listed = client.get(f"/api/conversations/{cid}/messages")
            assert listed.status_code == 200, listed.text
            assert [m["content"] for m in listed.json()["data"]] == ["hello"]
            chatted = client.post(f"/api/chat/{cid}/message", json={"content": "ping"})
            assert chatted.status_code == 201, chatted.text
            exchange = chatted.json()
            assert (exchange["user_message"]["seq"], exchange["reply"]["seq"]) == (2, 3)
            assert exchange["reply"]["role"] == "assistant"
            assert exchange["reply"]["content"] == "ping"  # the default responder echoes
        assert httpx.get(f"{base_url}/api/conversations", timeout=10).status_code == 401

        postmaster = int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
        assert not gone(postmaster)
        server.signal(signal.SIGTERM)
        # cli.py turns uvicorn's re-raised SIGTERM into SystemExit(128 + SIGTERM), after
        # uvicorn's graceful shutdown and the embedded cluster's stop.
        assert server.wait(STOP_SECONDS) == 128 + signal.SIGTERM, log.read_text()
        deadline = time.monotonic() + 5
        while not gone(postmaster) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(postmaster), "the embedded postmaster outlived chatstore serve"
        assert not (data_dir / "pgdata" / "postmaster.pid").exists()
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        server.stop()


def test_serve_without_postgres_says_how_to_fix_it(data_dir: Path) -> None:
    done = subprocess.run(
        chatstore_command("serve", "--port", str(free_port())),
        env=embedded_env(data_dir, CHATSTORE_PG_BIN="/nonexistent"),
        cwd=data_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("chatstore: CHATSTORE_PG_BIN ")
    assert "CHATSTORE_DATABASE_URL" in lines[0]  # the other way out
