# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The manifest of what a deployment left on a host, and how two manifests differ."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.host_manifest import (
    describe_path,
    host_manifest,
    manifest_differences,
)


def repoint(link: Path, target: str) -> None:
    link.unlink()
    link.symlink_to(target)


def make_tree(root: Path) -> Path:
    tree = root / "iris"
    (tree / "svc" / "releases" / "r1" / "artifacts").mkdir(parents=True)
    (tree / "svc" / "releases" / "r1" / "config.json").write_text("{}")
    (tree / "svc" / "releases" / "r1" / "artifacts" / "m.joblib").write_bytes(b"model")
    (tree / "svc" / "current").symlink_to(tree / "svc" / "releases" / "r1")
    (tree / ".venvs" / "v1" / "lib").mkdir(parents=True)
    (tree / ".venvs" / "v1" / "lib" / "big.py").write_text("x = 1\n")
    (tree / "svc" / "releases" / "r1" / "code" / "__pycache__").mkdir(parents=True)
    (tree / "svc" / "releases" / "r1" / "code" / "__pycache__" / "f.pyc").write_bytes(b"\0")
    return tree


def test_manifest_covers_files_links_and_folders_but_not_pruned_content(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    manifest = host_manifest(str(tree), [".venvs/*"], [str(tmp_path / "unit.service")])
    artifact = tree / "svc" / "releases" / "r1" / "artifacts" / "m.joblib"
    assert manifest[str(artifact)].endswith(":" + hashlib.sha256(b"model").hexdigest())
    assert manifest[str(artifact)].startswith(f"file:{artifact.stat().st_mode & 0o7777:04o}:{os.getuid()}:")
    assert manifest[str(tree / "svc" / "current")] == f"link:{tree / 'svc' / 'releases' / 'r1'}"
    assert manifest[str(tree / ".venvs" / "v1")].startswith("dir:")  # the folder, not what is in it
    assert not any("big.py" in path or "__pycache__" in path for path in manifest)
    assert manifest[str(tmp_path / "unit.service")] == "absent"


@pytest.mark.parametrize(
    ("change", "expected_reason"),
    [
        (lambda tree: (tree / "svc/releases/r1/config.json").write_text('{"x": 1}'), "config.json: changed"),
        (lambda tree: (tree / "svc/releases/r1/config.json").chmod(0o600), "config.json: changed"),
        (lambda tree: (tree / "svc/releases/r1/artifacts/m.joblib").unlink(), "m.joblib: missing"),
        (lambda tree: (tree / "svc/releases/r1/extra").write_text(""), "extra: not there when"),
        (
            lambda tree: (tree / "svc/current").unlink() or (tree / "svc/current").symlink_to("/x"),
            "current: changed",
        ),
    ],
)
def test_every_kind_of_drift_is_named(tmp_path: Path, change, expected_reason: str) -> None:
    tree = make_tree(tmp_path)
    recorded = host_manifest(str(tree), [".venvs/*"], [])
    change(tree)
    reasons = manifest_differences(recorded, host_manifest(str(tree), [".venvs/*"], []))
    assert len(reasons) == 1 and expected_reason in reasons[0], reasons


def test_changes_inside_pruned_folders_do_not_count(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    recorded = host_manifest(str(tree), [".venvs/*"], [])
    (tree / ".venvs" / "v1" / "lib" / "big.py").write_text("x = 2\n")
    assert manifest_differences(recorded, host_manifest(str(tree), [".venvs/*"], [])) == []


def test_reasons_are_capped(tmp_path: Path) -> None:
    recorded = {f"/f{index}": "file:0644:0:0:aa" for index in range(20)}
    reasons = manifest_differences(recorded, {}, limit=5)
    assert len(reasons) == 6 and reasons[-1] == "..."


def test_describe_missing_path(tmp_path: Path) -> None:
    assert describe_path(str(tmp_path / "nothing")) == "absent"
