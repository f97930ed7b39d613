# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A private tree: folders 0700 and files 0600 whatever the umask, and only what differs is written."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.private_files import (
    apply_changes,
    pending_changes,
    read_file,
)

DIRS = [".", "p", "p/hosts"]
FILES = {"p/ca.crt": b"cert", "p/hosts/h1.key": b"key"}


def modes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): f"{stat.S_IMODE(path.stat().st_mode):04o}"
        for path in [root, *sorted(root.rglob("*"))]
    }


@pytest.fixture()
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_a_new_tree_is_private_under_umask_022(tmp_path: Path, umask_022) -> None:
    root = tmp_path / "creds"
    changes = pending_changes(str(root), DIRS, FILES)
    assert changes == [(".", "created"), ("p", "created"), ("p/hosts", "created"),
                       ("p/ca.crt", "created"), ("p/hosts/h1.key", "created")]  # fmt: skip
    apply_changes(str(root), FILES, changes)
    assert modes(root) == {".": "0700", "p": "0700", "p/hosts": "0700", "p/ca.crt": "0600",
                           "p/hosts/h1.key": "0600"}  # fmt: skip
    assert (root / "p/ca.crt").read_bytes() == b"cert"
    assert pending_changes(str(root), DIRS, FILES) == []


def test_only_what_differs_is_changed(tmp_path: Path, umask_022) -> None:
    root = tmp_path / "creds"
    apply_changes(str(root), FILES, pending_changes(str(root), DIRS, FILES))
    os.chmod(root / "p", 0o755)
    os.chmod(root / "p/ca.crt", 0o644)
    key_inode = (root / "p/hosts/h1.key").stat().st_ino
    wanted = dict(FILES, **{"p/hosts/h1.key": b"new key"})
    changes = pending_changes(str(root), DIRS, wanted)
    assert changes == [("p", "mode 0755 -> 0700"), ("p/ca.crt", "mode 0644 -> 0600"),
                       ("p/hosts/h1.key", "written")]  # fmt: skip
    ca_inode = (root / "p/ca.crt").stat().st_ino
    apply_changes(str(root), wanted, changes)
    assert modes(root)["p"] == "0700" and modes(root)["p/ca.crt"] == "0600"
    assert (root / "p/ca.crt").stat().st_ino == ca_inode  # a mode fix does not rewrite
    assert (root / "p/hosts/h1.key").stat().st_ino != key_inode  # replaced whole
    assert read_file(str(root / "p/hosts/h1.key")) == b"new key"
    assert pending_changes(str(root), DIRS, wanted) == []


@pytest.mark.parametrize(("rel", "make", "message"), [
    ("p/hosts", lambda path: path.write_text("x"), "should be a folder"),
    ("p/ca.crt", lambda path: path.mkdir(), "should be a regular file"),
])  # fmt: skip
def test_something_in_the_way_is_named(tmp_path: Path, rel: str, make, message: str) -> None:
    (tmp_path / "p").mkdir()
    make(tmp_path / rel)
    with pytest.raises(OSError, match=message):
        pending_changes(str(tmp_path), DIRS, FILES)


def test_read_file_tells_missing_from_unreadable(tmp_path: Path) -> None:
    assert read_file(str(tmp_path / "absent")) is None
    with pytest.raises(IsADirectoryError):
        read_file(str(tmp_path))
