# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A folder of JSON results keyed by a hash of everything they depend on (the controller's caches).

An entry is written whole and renamed into place (``atomic_file``), so a concurrent run never reads half of
one; a damaged or missing entry reads as absent and is computed again.
"""

from __future__ import annotations

import hashlib
import json
import os

from ansible_collections.mlpacker.core.plugins.module_utils.atomic_file import write_atomically


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
    """Write ``data`` to ``path`` atomically, readable by the controller's user only (raises OSError when the
    folder cannot be written)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomically(path, json.dumps(data, sort_keys=True).encode("utf-8"), 0o600)
