"""Static quality gates run with the suite: ruff, ansible-lint (production profile), ansible-test sanity,
antsibull-changelog and antsibull-docs lint, and release hygiene (one version, licence, sanity ignores)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COLLECTION = REPO / "collections" / "ansible_collections" / "mlpacker" / "core"


def _run(
    cmd: list[str], cwd: Path, timeout: int, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def test_ruff_clean() -> None:
    result = _run([str(BIN / "ruff"), "check", "."], REPO, 120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile() -> None:
    # No paths: ansible-lint lints the repository as .ansible-lint configures it (production profile).
    result = _run(
        [str(BIN / "ansible-lint")],
        REPO,
        600,
        env={"ANSIBLE_COLLECTIONS_PATH": str(REPO / "collections"), "PATH": f"{BIN}:{os.environ['PATH']}"},
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]


@pytest.mark.slow
def test_ansible_test_sanity(tmp_path: Path) -> None:
    # ansible-test needs the collection at .../ansible_collections/<ns>/<name> with nothing stray inside it,
    # so it runs on a clean copy of the tracked files.
    if shutil.which("git") is None:
        pytest.fail("git is required to copy the collection's tracked files")
    copy = tmp_path / "ansible_collections" / "mlpacker" / "core"
    files = _run(["git", "ls-files", "-co", "--exclude-standard", "."], COLLECTION, 60).stdout.split()
    for rel in files:
        src = COLLECTION / rel
        if src.is_file():
            dst = copy / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    result = _run(
        [
            str(BIN / "ansible-test"),
            "sanity",
            "--local",
            "--python",
            f"{sys.version_info[0]}.{sys.version_info[1]}",
            "--requirements",
            "--color",
            "no",
        ],
        copy,
        1200,
        env={"PATH": f"{BIN}:{os.environ['PATH']}"},
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]


def _collection_env() -> dict[str, str]:
    return {"ANSIBLE_COLLECTIONS_PATH": str(REPO / "collections"), "PATH": f"{BIN}:{os.environ['PATH']}"}


def test_changelog_fragments_lint() -> None:
    # Fragments live where antsibull-changelog looks (the collection's changelogs/fragments/).
    assert list((COLLECTION / "changelogs" / "fragments").glob("*.yml")), "no changelog fragment found"
    result = _run([str(BIN / "antsibull-changelog"), "lint"], COLLECTION, 120)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
    result = _run(
        [str(BIN / "antsibull-changelog"), "lint-changelog-yaml", "changelogs/changelog.yaml"], COLLECTION, 60
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_collection_docs_lint() -> None:
    # Module, plugin and role argument-spec documentation as antsibull-docs renders it.
    result = _run(
        [str(BIN / "antsibull-docs"), "lint-collection-docs", "--plugin-docs", str(COLLECTION)],
        REPO,
        300,
        env=_collection_env(),
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


def _assigned_version(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("__version__ = "):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise AssertionError(f"no __version__ in {path}")


def test_one_version_everywhere() -> None:
    # galaxy.yml holds the version; the Python packages' pyproject.toml files read theirs from __version__.
    version = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())["version"]
    assert _assigned_version(REPO / "src" / "mlpacker" / "__init__.py") == version
    assert _assigned_version(COLLECTION / "runtime" / "mlpacker_runtime" / "__init__.py") == version
    for pyproject in (REPO / "pyproject.toml", COLLECTION / "runtime" / "pyproject.toml"):
        text = pyproject.read_text()
        assert 'dynamic = ["version"]' in text and "\nversion = " not in text.split("[tool.")[0], pyproject


def test_licence_and_sanity_ignores_for_every_supported_ansible_core() -> None:
    licence = (COLLECTION / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0" in licence
    assert (REPO / "LICENSE").read_text() == licence
    galaxy = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())
    assert galaxy["license"] == ["Apache-2.0"]
    # meta/runtime.yml's floor up to the newest ansible-core pyproject.toml allows: one ignore file each.
    floor = yaml.safe_load((COLLECTION / "meta" / "runtime.yml").read_text())["requires_ansible"]
    assert floor == ">=2.17.0"
    ignores = {p.name: p.read_text() for p in (COLLECTION / "tests" / "sanity").glob("ignore-*.txt")}
    assert sorted(ignores) == ["ignore-2.17.txt", "ignore-2.18.txt", "ignore-2.19.txt"]
    # The same code runs on each: what one version needs ignored, the others need too.
    assert ignores["ignore-2.17.txt"] == ignores["ignore-2.18.txt"] == ignores["ignore-2.19.txt"]
    for name, text in ignores.items():
        for line in text.splitlines():
            path = line.split(" ", 1)[0]
            assert (COLLECTION / path).is_file(), f"{name}: {path} does not exist"
