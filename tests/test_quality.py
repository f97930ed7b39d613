"""Static quality gates run with the suite: ruff, ansible-lint (production profile), ansible-test sanity."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
