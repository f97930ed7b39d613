"""Print a sha256 over a source tree's files (paths and contents), ignoring build output and caches.

Used by the pipeline role on the controller so the runtime wheel and shipped code are rebuilt/re-shipped
only when their content changes (a rebuilt wheel has new timestamps, hence a new hash, every time).
Prints one JSON object: {"sha256": ..., "version": ...} (version: the runtime's __version__, if found).
"""

import hashlib
import json
import os
import re
import sys

SKIPPED_DIRS = {"__pycache__", "build", "dist", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".git"}


def tree_hash(root: str) -> str:
    digest = hashlib.sha256()
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(directory, name)
            digest.update(os.path.relpath(path, root).encode() + b"\0")
            with open(path, "rb") as handle:
                digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def runtime_version(root: str) -> str | None:
    init = os.path.join(root, "mlpacker_runtime", "__init__.py")
    if not os.path.isfile(init):
        return None
    with open(init, encoding="utf-8") as handle:
        match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", handle.read(), re.MULTILINE)
    return match.group(1) if match else None


def main() -> int:
    root = sys.argv[1]
    if not os.path.isdir(root):
        print(f"not a directory: {root}", file=sys.stderr)
        return 2
    print(json.dumps({"sha256": tree_hash(root), "version": runtime_version(root)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
