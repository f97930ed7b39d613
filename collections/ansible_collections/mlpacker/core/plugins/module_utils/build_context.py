# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Lay out an image build context in one pass: folders, small text files, and the wheelhouse as hard links.

Plain functions over a folder: ``plan_context`` tells what differs from the wanted layout (nothing is
touched), ``apply_context`` makes it so. A module run then does in one step what would otherwise be a task per
folder and file.
"""

from __future__ import annotations

import os
import shutil
import stat

from ansible_collections.mlpacker.core.plugins.module_utils.atomic_file import write_atomically

DIRECTORY_MODE = 0o755


def check_relative(name):
    """``name`` as a safe relative path inside the context, or ValueError naming it."""
    normalized = os.path.normpath(name)
    if os.path.isabs(name) or normalized.startswith("..") or normalized in (".", ""):
        raise ValueError(f"{name!r} is not a relative path inside the build context")
    return normalized


def read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def plan_context(path, files, directories, wheelhouse):
    """What must change under ``path``: a list of (kind, name) in the order to apply them (kinds: directory,
    file, mode, wheelhouse; a file's name is its key in ``files``).

    ``files`` maps relative paths to ``{"content": str, "mode": int}``; ``directories`` are relative folders;
    ``wheelhouse`` is a folder to hard-link as ``wheelhouse/`` when that is missing (None: none).
    """
    changes = []
    for name in [""] + sorted(check_relative(d) for d in directories):
        target = os.path.join(path, name)
        if not os.path.isdir(target):
            changes.append(("directory", name or "."))
    for name in sorted(files):
        relative = check_relative(name)
        target = os.path.join(path, relative)
        wanted = files[name]
        current = read_bytes(target)
        if current != wanted["content"].encode("utf-8"):
            changes.append(("file", name))
        elif stat.S_IMODE(os.stat(target).st_mode) != wanted["mode"]:
            changes.append(("mode", name))
    if wheelhouse is not None and not os.path.isdir(os.path.join(path, "wheelhouse")):
        changes.append(("wheelhouse", "wheelhouse"))
    return changes


def make_directories(target):
    """Create ``target`` and its missing parents, each root-owned 0755 whatever the umask."""
    missing = []
    while not os.path.isdir(target):
        missing.append(target)
        target = os.path.dirname(target)
    for folder in reversed(missing):
        os.mkdir(folder)
        os.chmod(folder, DIRECTORY_MODE)


def link_tree(source, target):
    """``target`` as a copy of ``source`` made of hard links (a plain copy across file systems); it appears
    whole or not at all."""
    staging = target + ".tmp"
    shutil.rmtree(staging, ignore_errors=True)

    def link_or_copy(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, staging, copy_function=link_or_copy)
    os.replace(staging, target)


def apply_context(path, files, directories, wheelhouse, changes):
    """Apply ``changes`` (from :func:`plan_context`)."""
    for kind, name in changes:
        target = os.path.normpath(os.path.join(path, name))
        if kind == "directory":
            make_directories(target)
        elif kind == "file":
            write_atomically(target, files[name]["content"].encode("utf-8"), files[name]["mode"])
        elif kind == "mode":
            os.chmod(target, files[name]["mode"])
        elif kind == "wheelhouse":
            if not os.path.isdir(wheelhouse):
                raise FileNotFoundError(f"wheelhouse {wheelhouse} does not exist")
            link_tree(wheelhouse, target)
