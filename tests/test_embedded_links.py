"""The embedded cluster's data folder belongs to the server's OS user; chatstore,
run as root, never follows a symbolic link that user planted there.

Otherwise whoever runs as that user (or a database superuser, through
``COPY … TO PROGRAM``) could make the next ``chatstore serve`` overwrite and
give away any file of the machine (a link named pg_hba.conf to /etc/passwd).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatstore.embedded import CONF_FILE, PASSWORD_FILE, PORT_FILE, Cluster, ClusterError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the escalation needs root")

VICTIM_TEXT = "root's own file\n"


@pytest.fixture
def folder() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="chatstore-links-", dir="/tmp"))
    root.chmod(0o755)  # the server's user must be able to enter it
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def victim(folder: Path, name: str) -> Path:
    """A root-owned file outside the data folder, 0644."""
    path = folder / f"victim-{name}"
    path.write_text(VICTIM_TEXT)
    path.chmod(0o644)
    return path


def untouched(path: Path) -> bool:
    info = path.stat()
    return path.read_text() == VICTIM_TEXT and info.st_uid == 0 and info.st_mode & 0o777 == 0o644


@pytest.mark.parametrize("name", [CONF_FILE, PORT_FILE, "pg_hba.conf"])
def test_a_link_planted_in_the_data_folder_is_replaced_never_followed(
    folder: Path, name: str
) -> None:
    data = folder / "pgdata"
    Cluster.create(data)  # initdb, our files written
    port = (data / PORT_FILE).read_text()
    target = victim(folder, name)
    (data / name).unlink()
    (data / name).symlink_to(target)

    Cluster.create(data)  # as `chatstore serve` does on every start

    assert untouched(target), (target.read_text(), oct(target.stat().st_mode), target.stat())
    written = data / name
    assert not written.is_symlink() and written.stat().st_uid != 0
    if name == PORT_FILE:
        # A planted port file is refused, not followed: the saved port is gone
        # with it, and a fresh one is chosen and saved.
        assert written.read_text().strip().isdigit()
    else:
        assert written.read_text() != VICTIM_TEXT
    assert port  # the first create saved one


@pytest.mark.parametrize("name", ["postgresql.conf", PASSWORD_FILE])
def test_a_link_planted_where_chatstore_reads_is_refused_with_a_reason(
    folder: Path, name: str
) -> None:
    data = folder / "pgdata"
    Cluster.create(data)
    target = victim(folder, name)
    (data / name).unlink()
    (data / name).symlink_to(target)

    with pytest.raises(ClusterError, match="symbolic link"):
        Cluster.create(data)
    assert untouched(target)
