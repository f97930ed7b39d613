# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A tree of private files (folders 0700, files 0600, whatever the umask): what differs from the wanted
content and modes, and writing only that (each file written whole, never readable by others meanwhile)."""

from __future__ import annotations

import os
import stat

from ansible_collections.mlpacker.core.plugins.module_utils.atomic_file import write_atomically

DIR_MODE = 0o700
FILE_MODE = 0o600


def read_file(path):
    """The bytes of ``path``, or None when it does not exist (other errors, e.g. permission, propagate)."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def pending_changes(root, dirs, files):
    """``[(relative path, what differs)]`` for the folders ``dirs`` and the files ``files`` (``{relative path:
    bytes}``) under ``root``, folders first; empty when the tree is as wanted."""
    changes = []
    for rel in dirs:
        path = os.path.join(root, rel)
        try:
            status = os.lstat(path)
        except FileNotFoundError:
            changes.append((rel, "created"))
            continue
        if not stat.S_ISDIR(status.st_mode):
            raise OSError(f"{path} is in the way: it should be a folder")
        if stat.S_IMODE(status.st_mode) != DIR_MODE:
            changes.append((rel, f"mode {stat.S_IMODE(status.st_mode):04o} -> {DIR_MODE:04o}"))
    for rel, data in files.items():
        path = os.path.join(root, rel)
        try:
            status = os.lstat(path)
        except FileNotFoundError:
            changes.append((rel, "created"))
            continue
        if not stat.S_ISREG(status.st_mode):
            raise OSError(f"{path} is in the way: it should be a regular file")
        if read_file(path) != data:
            changes.append((rel, "written"))
        elif stat.S_IMODE(status.st_mode) != FILE_MODE:
            changes.append((rel, f"mode {stat.S_IMODE(status.st_mode):04o} -> {FILE_MODE:04o}"))
    return changes


def apply_changes(root, files, changes):
    """Make the ``changes`` of :func:`pending_changes` (folders listed before their files)."""
    for rel, what in changes:
        path = os.path.join(root, rel)
        if rel in files:
            if what.startswith("mode "):
                os.chmod(path, FILE_MODE)
            else:
                write_atomically(path, files[rel], FILE_MODE)
        else:
            if what == "created":
                os.makedirs(path, mode=DIR_MODE, exist_ok=True)
            os.chmod(path, DIR_MODE)
