# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Function stages run the pipeline's own code only: the module of ``package.module:callable`` must be a file
under ``code_dir`` (after symlinks) - never the standard library, site-packages or anything else importable.

The controller checks the file at validation (nothing is imported); the runtime's loading.py checks it again
before importing, and checks the imported module's file (``subprocess`` is already in ``sys.modules``).
"""

from __future__ import annotations

import os

from ansible_collections.mlpacker.core.plugins.module_utils.path_containment import is_inside


def module_file(code_dir: str, module_name: str) -> str | None:
    """``code_dir/a/b.py`` or ``code_dir/a/b/__init__.py`` for ``a.b``, when it is a file inside code_dir."""
    base = os.path.join(code_dir, *module_name.split("."))
    for candidate in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(candidate) and is_inside(candidate, code_dir):
            return candidate
    return None


def function_source_problem(field: str, function: str, code_dir: str | None) -> str | None:
    """None when the module of ``function`` is a file under ``code_dir``; else the error naming ``field``."""
    module_name = function.partition(":")[0]
    if code_dir and module_file(code_dir, module_name) is not None:
        return None
    return (
        f"{field}: module {module_name!r} is not a file under code_dir {code_dir};"
        " function stages may only use the pipeline's own code (not the standard library or installed"
        " packages)"
    )
