"""uv.lock is the lock of pyproject.toml as it is now, requirements.lock.txt is
uv.lock exported, and both name only PyPI: scripts/bootstrap installs the
versions CI tested, with uv from the lock or with pip from the export.

The comparisons are plain Python over the two files (no network, no uv
needed); where uv is at hand (scripts/bootstrap puts one in .tools/) uv's own
`uv lock --check` and `uv export` are run too, offline."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPI = "https://pypi.org/simple"
# The export command, as the README's Development section gives it.
EXPORT = [
    "export",
    "--frozen",
    "--all-extras",
    "--no-emit-project",
    "--format",
    "requirements-txt",
]

# One declared requirement: where it is declared ("" for the main
# dependencies, "extra:NAME", "group:NAME"), the package, its extras, its range.
Declared = tuple[str, str, frozenset[str], SpecifierSet]


def _toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def _declared_in_pyproject(pyproject: dict[str, Any]) -> set[Declared]:
    project = pyproject["project"]
    sources: list[tuple[str, list[str]]] = [("", project.get("dependencies", []))]
    for extra, requirements in project.get("optional-dependencies", {}).items():
        sources.append((f"extra:{extra}", requirements))
    for group, requirements in pyproject.get("dependency-groups", {}).items():
        sources.append((f"group:{group}", requirements))
    declared: set[Declared] = set()
    for where, requirements in sources:
        for text in requirements:
            requirement = Requirement(text)
            declared.add(
                (
                    where,
                    canonicalize_name(requirement.name),
                    frozenset(requirement.extras),
                    requirement.specifier,
                )
            )
    return declared


def _project_entry(lock: dict[str, Any], name: str) -> dict[str, Any]:
    (entry,) = (p for p in lock["package"] if p["name"] == canonicalize_name(name))
    assert isinstance(entry, dict)
    return entry


def _recorded_in_lock(lock: dict[str, Any], name: str) -> set[Declared]:
    metadata = _project_entry(lock, name)["metadata"]
    recorded: set[Declared] = set()
    for item in metadata.get("requires-dist", []):
        extra = re.search(r"extra == '([^']+)'", item.get("marker", ""))
        recorded.add(
            (
                f"extra:{extra.group(1)}" if extra else "",
                canonicalize_name(item["name"]),
                frozenset(item.get("extras", [])),
                SpecifierSet(item.get("specifier", "")),
            )
        )
    for group, items in metadata.get("requires-dev", {}).items():
        for item in items:
            recorded.add(
                (
                    f"group:{group}",
                    canonicalize_name(item["name"]),
                    frozenset(item.get("extras", [])),
                    SpecifierSet(item.get("specifier", "")),
                )
            )
    return recorded


def lock_disagreements(pyproject: dict[str, Any], lock: dict[str, Any]) -> list[str]:
    """What pyproject.toml declares that uv.lock did not record, and the reverse."""
    name = pyproject["project"]["name"]
    declared = _declared_in_pyproject(pyproject)
    recorded = _recorded_in_lock(lock, name)
    found = [
        f"in pyproject.toml, not in uv.lock: {d}" for d in sorted(declared - recorded, key=str)
    ]
    found += [
        f"in uv.lock, not in pyproject.toml: {r}" for r in sorted(recorded - declared, key=str)
    ]
    if SpecifierSet(pyproject["project"]["requires-python"]) != SpecifierSet(
        lock["requires-python"]
    ):
        found.append("requires-python differs")
    return found


def _files_in_lock(lock: dict[str, Any], project: str) -> dict[tuple[str, str], set[str]]:
    files: dict[tuple[str, str], set[str]] = {}
    for package in lock["package"]:
        if package["name"] == canonicalize_name(project):
            continue
        hashes = {wheel["hash"] for wheel in package.get("wheels", [])}
        if "sdist" in package:
            hashes.add(package["sdist"]["hash"])
        files[(package["name"], package["version"])] = hashes
    return files


def _files_in_export(text: str) -> dict[tuple[str, str], set[str]]:
    files: dict[tuple[str, str], set[str]] = {}
    current: set[str] = set()
    for line in text.splitlines():
        pinned = re.match(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)", line)
        if pinned:
            current = files.setdefault((canonicalize_name(pinned[1]), pinned[2]), set())
        for digest in re.findall(r"--hash=(sha256:[0-9a-f]{64})", line):
            current.add(digest)
    return files


def export_disagreements(lock: dict[str, Any], export: str, project: str) -> list[str]:
    """Packages, versions or file hashes on which the export and the lock differ."""
    in_lock, in_export = _files_in_lock(lock, project), _files_in_export(export)
    found = [f"not exported: {p}" for p in sorted(in_lock.keys() - in_export.keys())]
    found += [f"exported, not locked: {p}" for p in sorted(in_export.keys() - in_lock.keys())]
    found += [
        f"other files for {p}"
        for p in sorted(in_lock.keys() & in_export.keys())
        if in_lock[p] != in_export[p]
    ]
    return found


def _uv() -> str | None:
    """uv on PATH, else the one scripts/bootstrap installed into .tools/."""
    tools = sorted((ROOT / ".tools").glob("uv-*/bin/uv"))
    return shutil.which("uv") or (str(tools[-1]) if tools else None)


def _run_uv(uv: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UV_OFFLINE": "1", "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1"}
    return subprocess.run(
        [uv, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def uv() -> Iterator[str]:
    found = _uv()
    if found is None:
        pytest.skip("no uv here (scripts/bootstrap installs one unless CHATSTORE_INSTALLER=pip)")
    yield found


def _with_rich_added(pyproject_text: str) -> str:
    changed = pyproject_text.replace("dependencies = [\n", 'dependencies = [\n    "rich>=13",\n', 1)
    assert changed != pyproject_text
    return changed


# --- the lock is pyproject.toml's ------------------------------------------


def test_uv_lock_records_every_requirement_pyproject_declares() -> None:
    pyproject, lock = _toml(ROOT / "pyproject.toml"), _toml(ROOT / "uv.lock")
    assert lock_disagreements(pyproject, lock) == [], "re-lock: README, Development"


def test_a_dependency_added_without_relocking_fails_the_lock_check() -> None:
    pyproject = tomllib.loads(_with_rich_added((ROOT / "pyproject.toml").read_text()))
    found = lock_disagreements(pyproject, _toml(ROOT / "uv.lock"))
    assert found == [
        "in pyproject.toml, not in uv.lock: ('', 'rich', frozenset(), <SpecifierSet('>=13')>)"
    ]


def test_uv_lock_check_passes_offline(uv: str) -> None:
    done = _run_uv(uv, "lock", "--check", cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_uv_lock_check_fails_when_a_dependency_is_added_without_relocking(
    uv: str, tmp_path: Path
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        _with_rich_added((ROOT / "pyproject.toml").read_text())
    )
    shutil.copy(ROOT / "uv.lock", tmp_path / "uv.lock")
    done = _run_uv(uv, "lock", "--check", cwd=tmp_path)
    assert done.returncode != 0


def test_uvs_default_group_holds_every_extra() -> None:
    # `uv run` installs the dev group, scripts/bootstrap every extra: were an
    # extra missing from the group, `uv run` would remove it from .venv.
    pyproject = _toml(ROOT / "pyproject.toml")
    name = canonicalize_name(pyproject["project"]["name"])
    extras = {
        extra
        for text in pyproject["dependency-groups"]["dev"]
        if canonicalize_name((requirement := Requirement(text)).name) == name
        for extra in requirement.extras
    }
    assert extras == set(pyproject["project"]["optional-dependencies"])


# --- the lock names only PyPI ----------------------------------------------


def test_uv_lock_takes_every_package_from_pypi() -> None:
    lock = _toml(ROOT / "uv.lock")
    project = _toml(ROOT / "pyproject.toml")["project"]["name"]
    sources = {
        p["name"]: p["source"] for p in lock["package"] if p["name"] != canonicalize_name(project)
    }
    assert {name: s for name, s in sources.items() if s != {"registry": PYPI}} == {}
    assert _project_entry(lock, project)["source"] == {"editable": "."}
    urls = re.findall(r'url = "([^"]+)"', (ROOT / "uv.lock").read_text())
    assert urls and all(u.startswith("https://files.pythonhosted.org/") for u in urls)


# --- the export is the lock's ----------------------------------------------


def test_requirements_export_pins_the_locked_versions_and_files() -> None:
    lock = _toml(ROOT / "uv.lock")
    project = _toml(ROOT / "pyproject.toml")["project"]["name"]
    export = (ROOT / "requirements.lock.txt").read_text()
    assert export_disagreements(lock, export, project) == [], "re-export: README, Development"


def test_a_requirements_export_left_behind_by_a_relock_fails_the_check() -> None:
    lock = _toml(ROOT / "uv.lock")
    project = _toml(ROOT / "pyproject.toml")["project"]["name"]
    export = (ROOT / "requirements.lock.txt").read_text()
    stale = re.sub(r"^pytest==[^ ]+", "pytest==8.0.0", export, count=1, flags=re.M)
    assert stale != export
    found = export_disagreements(lock, stale, project)
    assert len(found) == 2
    assert found[0].startswith("not exported: ('pytest',")
    assert found[1] == "exported, not locked: ('pytest', '8.0.0')"


def test_requirements_export_is_what_uv_exports_from_the_lock(uv: str) -> None:
    done = _run_uv(uv, *EXPORT, cwd=ROOT)
    assert done.returncode == 0, done.stderr

    def body(text: str) -> list[str]:
        # The header names the command that wrote the file (with its -o).
        return [line for line in text.splitlines() if not line.startswith("#")]

    assert body(done.stdout) == body((ROOT / "requirements.lock.txt").read_text())
