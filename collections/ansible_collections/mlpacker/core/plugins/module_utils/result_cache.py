# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A folder of JSON results keyed by a hash of everything they depend on (the controller's caches).

An entry is written whole and renamed into place, so a concurrent run never reads half of one; a damaged or
missing entry reads as absent and is computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile


def entry_path(cache_dir, key_material):
    """The entry for ``key_material`` (any JSON-able value; its sorted JSON is hashed)."""
    key = json.dumps(key_material, sort_keys=True)
    return os.path.join(cache_dir, hashlib.sha256(key.encode("utf-8")).hexdigest() + ".json")


def read_entry(path):
    """The cached dict, or None when absent or damaged."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_entry(path, data):
    """Write ``data`` to ``path`` atomically (raises OSError when the folder cannot be written)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out, sort_keys=True)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
