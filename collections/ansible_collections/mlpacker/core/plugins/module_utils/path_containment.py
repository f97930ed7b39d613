# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Paths a spec names must stay inside its ``base_dir`` (after symlinks), so a spec - or an AWX survey
answer - cannot point the controller at any file it can read (``mlpacker_allow_paths_outside_base_dir``
lifts the rule)."""

from __future__ import annotations

import os


def is_inside(path: str, base_dir: str) -> bool:
    """Whether ``path`` is ``base_dir`` or below it once both are resolved (symlinks, ``..``)."""
    real_path = os.path.realpath(path)
    real_base = os.path.realpath(base_dir)
    try:
        return os.path.commonpath([real_path, real_base]) == real_base
    except ValueError:  # different drives, or a relative and an absolute path
        return False


def outside_message(field: str, path: str, base_dir: str) -> str | None:
    """None when ``path`` resolves inside ``base_dir``; else the error naming the field and both paths."""
    if is_inside(path, base_dir):
        return None
    real_path = os.path.realpath(path)
    shown = path if real_path == path else f"{path} (resolves to {real_path})"
    return (
        f"{field}: {shown} is outside base_dir {os.path.realpath(base_dir)};"
        " move it under base_dir, set base_dir, or set mlpacker_allow_paths_outside_base_dir: true"
    )
