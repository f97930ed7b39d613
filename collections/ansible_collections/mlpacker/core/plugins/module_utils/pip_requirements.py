# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The spec's ``requirements``: each entry one PEP 508 requirement, nothing pip would read as anything else.

The entries reach ``pip download`` on the controller as arguments: an entry such as
``--index-url=http://127.0.0.1:9/simple`` would be an option, ``pkg @ https://...`` a download from anywhere
and ``./pkg`` a local build. Options are always refused; direct references (URLs and paths) only pass with
``allow_direct_references`` (the ``mlpacker_allow_direct_references`` setting).
"""

from __future__ import annotations

import re

try:
    from packaging.requirements import InvalidRequirement, Requirement
except ImportError:  # the controller always has it (an ansible-core dependency); hosts never import this
    HAS_PACKAGING = False
else:
    HAS_PACKAGING = True

# What pip would take as a local path or an archive rather than a project name.
_PATH_LIKE = re.compile(r"[/\\]|^\.|\.(whl|zip|tar|tar\.gz|tgz|tar\.bz2)$", re.IGNORECASE)


def check_requirement(value, field, allow_direct_references=False):
    """Return the problem with one entry (a message naming ``field`` and the value), or None."""
    if not isinstance(value, str) or not value.strip():
        return (
            f"{field}: expected a pip requirement string (PEP 508, e.g. 'scikit-learn==1.5.2'), got {value!r}"
        )
    text = value.strip()
    if not HAS_PACKAGING:
        return f"{field}: cannot be checked: the controller's Python has no 'packaging' library (install it)"
    if text.startswith("-"):
        return (
            f"{field}: {value!r} is a pip option, not a requirement (options such as --index-url, -e or -r"
            " are never passed on; name an index with mlpacker_pip_index_url)"
        )
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        if allow_direct_references and _PATH_LIKE.search(text) and not any(c.isspace() for c in text):
            return None
        detail = " ".join(str(exc).split())
        hint = (
            " (a local path or archive: set mlpacker_allow_direct_references to true to allow it)"
            if _PATH_LIKE.search(text)
            else ""
        )
        return f"{field}: {value!r} is not a PEP 508 requirement: {detail}{hint}"
    if _PATH_LIKE.search(requirement.name) and not allow_direct_references:
        # pip takes a name ending like an archive (evil-1.0.tar.gz) for a local file when one exists.
        return (
            f"{field}: {value!r} names a local archive, not a project"
            " (set mlpacker_allow_direct_references to true to allow it)"
        )
    if requirement.url and not allow_direct_references:
        return (
            f"{field}: {value!r} is a direct reference ({requirement.url}); only requirements resolved from"
            " the package index are allowed (set mlpacker_allow_direct_references to true to allow URLs and"
            " paths)"
        )
    return None


def check_requirements(values, field, allow_direct_references=False):
    """``values``, the list of requirement strings -> the list of problems (empty when all are fine), each
    naming ``field[i]`` and the value."""
    if not isinstance(values, list):
        return [f"{field}: expected a list of pip requirement strings, got {values!r}"]
    problems = []
    for index, value in enumerate(values):
        problem = check_requirement(value, f"{field}[{index}]", allow_direct_references)
        if problem:
            problems.append(problem)
    return problems
