# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Files replaced whole: the given permissions, a new inode, and no temporary file left, even on failure."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.atomic_file import write_atomically


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o755])
def test_writes_with_the_mode_and_replaces_the_old_file(tmp_path: Path, mode: int) -> None:
    target = tmp_path / "record.json"
    target.write_text("old")
    before = target.stat().st_ino
    write_atomically(str(target), b"new", mode)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert target.stat().st_ino != before
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        write_atomically(str(target), "not bytes", 0o600)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]
