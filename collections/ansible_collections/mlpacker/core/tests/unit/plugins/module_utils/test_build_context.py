# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Build contexts laid out in one pass: only what differs is written, the wheelhouse is hard-linked."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.build_context import (
    apply_context,
    check_relative,
    plan_context,
)

FILES = {
    "Dockerfile": {"content": "FROM scratch\n", "mode": 0o644},
    "config.json": {"content": '{"pipeline": "iris"}\n', "mode": 0o640},
}


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    (folder / "numpy-2.0-cp311-x86_64.whl").write_bytes(b"wheel")
    (folder / "MANIFEST").write_text("numpy\n")
    return folder


def lay_out(context: Path, wheels: Path | None, files: dict | None = None) -> list[tuple[str, str]]:
    files = FILES if files is None else files
    changes = plan_context(str(context), files, ["artifacts"], str(wheels) if wheels else None)
    apply_context(str(context), files, ["artifacts"], str(wheels) if wheels else None, changes)
    return changes


def test_first_layout_creates_everything_then_nothing_changes(tmp_path: Path, wheelhouse: Path) -> None:
    context = tmp_path / "pipeline" / "service" / "releases" / "abc"
    changes = lay_out(context, wheelhouse)
    assert changes == [
        ("directory", "."),
        ("directory", "artifacts"),
        ("file", "Dockerfile"),
        ("file", "config.json"),
        ("wheelhouse", "wheelhouse"),
    ]
    assert (context / "Dockerfile").read_text() == "FROM scratch\n"
    assert stat.S_IMODE((context / "config.json").stat().st_mode) == 0o640
    # missing parents are 0755 whatever the umask
    assert stat.S_IMODE((tmp_path / "pipeline").stat().st_mode) == 0o755
    # hard links: the same inode, no second copy of the wheels
    linked = context / "wheelhouse" / "numpy-2.0-cp311-x86_64.whl"
    assert linked.stat().st_ino == (wheelhouse / "numpy-2.0-cp311-x86_64.whl").stat().st_ino
    assert plan_context(str(context), FILES, ["artifacts"], str(wheelhouse)) == []


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (lambda c: (c / "Dockerfile").write_text("FROM other\n"), [("file", "Dockerfile")]),
        (lambda c: (c / "config.json").chmod(0o666), [("mode", "config.json")]),
        (lambda c: (c / "config.json").unlink(), [("file", "config.json")]),
        (lambda c: (c / "artifacts").rmdir(), [("directory", "artifacts")]),
    ],
)
def test_only_what_differs_is_rewritten(tmp_path: Path, wheelhouse: Path, tamper, expected) -> None:
    context = tmp_path / "ctx"
    lay_out(context, wheelhouse)
    tamper(context)
    assert lay_out(context, wheelhouse) == expected
    assert plan_context(str(context), FILES, ["artifacts"], str(wheelhouse)) == []


def test_missing_wheelhouse_fails_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        lay_out(tmp_path / "ctx", tmp_path / "nowhere")
    # nothing half-made: no wheelhouse folder that a later run would take as complete
    assert not (tmp_path / "ctx" / "wheelhouse").exists()


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside", "a/../../b", ".", ""])
def test_paths_outside_the_context_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a relative path"):
        check_relative(name)


def test_files_are_replaced_whole(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    lay_out(context, None)
    before = os.stat(context / "Dockerfile").st_ino
    lay_out(context, None, {**FILES, "Dockerfile": {"content": "FROM new\n", "mode": 0o644}})
    # a new inode: written aside and renamed over the old file, never truncated in place
    assert os.stat(context / "Dockerfile").st_ino != before
    assert [p.name for p in context.iterdir() if p.name.startswith(".tmp-")] == []
