# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What a deployment left on a host as a comparable manifest: path -> owner, mode, content or link target.

A deploy records the manifest of the files it manages once it has succeeded; the next run compares the host
against it (together with a fingerprint of the deploy's inputs) to tell whether anything needs doing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat

# Never part of a deployment's state: Python writes these next to code it imports.
ALWAYS_PRUNED = ("__pycache__",)


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_path(path: str) -> str:
    """One manifest entry: ``absent``, ``link:<target>``, ``dir:<mode>:<uid>:<gid>`` or
    ``file:<mode>:<uid>:<gid>:<sha256>``."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "absent"
    owner = f"{stat.S_IMODE(info.st_mode):04o}:{info.st_uid}:{info.st_gid}"
    if stat.S_ISLNK(info.st_mode):
        return "link:" + os.readlink(path)
    if stat.S_ISDIR(info.st_mode):
        return "dir:" + owner
    if stat.S_ISREG(info.st_mode):
        return f"file:{owner}:{file_digest(path)}"
    return f"other:{owner}"


def is_pruned(relative_dir: str, prune: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(relative_dir, pattern) for pattern in prune)


def tree_manifest(tree: str, prune: list[str]) -> dict[str, str]:
    """Entries for ``tree`` and everything under it, without following links and without the content of
    folders whose path relative to ``tree`` matches a ``prune`` pattern (the folder itself is kept)."""
    manifest = {tree: describe_path(tree)}
    if not manifest[tree].startswith("dir:"):
        return manifest
    for root, dirs, files in os.walk(tree):
        relative_root = os.path.relpath(root, tree)
        if relative_root != "." and is_pruned(relative_root, prune):
            dirs[:] = []
            continue
        dirs[:] = sorted(name for name in dirs if name not in ALWAYS_PRUNED)
        for name in dirs + sorted(files):
            full_path = os.path.join(root, name)
            manifest[full_path] = describe_path(full_path)
    return manifest


def host_manifest(tree: str, prune: list[str], files: list[str]) -> dict[str, str]:
    manifest = tree_manifest(tree, prune)
    for path in files:
        manifest[path] = describe_path(path)
    return manifest


def manifest_differences(recorded: dict[str, str], current: dict[str, str], limit: int = 5) -> list[str]:
    """Readable reasons why ``current`` is not ``recorded`` (at most ``limit`` of them)."""
    reasons = []
    for path in sorted(set(recorded) | set(current)):
        before, after = recorded.get(path), current.get(path)
        if before == after:
            continue
        if before is None:
            reasons.append(f"{path}: not there when the deployment was recorded")
        elif after is None or after == "absent":
            reasons.append(f"{path}: missing")
        else:
            reasons.append(f"{path}: changed since the deployment was recorded")
        if len(reasons) == limit:
            reasons.append("...")
            break
    return reasons
