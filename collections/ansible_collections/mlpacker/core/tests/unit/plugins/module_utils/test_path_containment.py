# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.path_containment import (
    is_inside,
    outside_message,
)


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    (tmp_path / "base" / "models").mkdir(parents=True)
    (tmp_path / "base" / "models" / "m.joblib").write_bytes(b"x")
    (tmp_path / "basement").mkdir()  # shares a prefix with base, is not inside it
    (tmp_path / "outside.joblib").write_bytes(b"x")
    (tmp_path / "base" / "link-out.joblib").symlink_to(tmp_path / "outside.joblib")
    (tmp_path / "base" / "link-in.joblib").symlink_to(tmp_path / "base" / "models" / "m.joblib")
    (tmp_path / "base-link").symlink_to(tmp_path / "base")
    return tmp_path


@pytest.mark.parametrize(
    ("path", "base", "inside"),
    [
        ("base/models/m.joblib", "base", True),
        ("base", "base", True),
        ("base/link-in.joblib", "base", True),
        ("base/models/../models/m.joblib", "base", True),
        ("base/link-out.joblib", "base", False),
        ("base/../outside.joblib", "base", False),
        ("basement", "base", False),
        ("outside.joblib", "base", False),
        ("base/models/m.joblib", "base-link", True),  # a symlinked base_dir is resolved too
    ],
)
def test_is_inside(tree: Path, path: str, base: str, inside: bool) -> None:
    assert is_inside(str(tree / path), str(tree / base)) is inside


def test_outside_message_names_the_field_and_both_paths(tree: Path) -> None:
    base = str(tree / "base")
    assert outside_message("f", str(tree / "base/models/m.joblib"), base) is None
    assert outside_message(
        "mlpacker_pipeline.stages[1].artifact", str(tree / "base/link-out.joblib"), base
    ) == (
        f"mlpacker_pipeline.stages[1].artifact: {tree / 'base/link-out.joblib'} (resolves to"
        f" {tree / 'outside.joblib'}) is outside base_dir {base}; move it under base_dir, set base_dir,"
        " or set mlpacker_allow_paths_outside_base_dir: true"
    )
