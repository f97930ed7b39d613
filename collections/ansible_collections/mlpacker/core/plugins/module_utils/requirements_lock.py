# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The spec's ``requirements_lock``: a pip requirements file in hash-checking form, read on the controller.

Each entry is one requirement pinned with ``==`` followed by one or more ``--hash=<algorithm>:<hex>`` options
(what ``pip-compile --generate-hashes`` or ``uv pip compile --generate-hashes`` write), lines continued with
``\\``, ``#`` comments. Nothing else: no other option (``--index-url``, ``-r``, ``-e``, ``-c``) and no URL or
path. pip enforces the hashes (``--require-hashes``); this module only refuses what pip would read as
something else, and names the line.
"""

from __future__ import annotations

import hashlib
import os
import re

try:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # the controller always has it (an ansible-core dependency); hosts never import this
    HAS_PACKAGING = False
else:
    HAS_PACKAGING = True

HASH_OPTION = re.compile(r"^--hash[= ](sha256|sha384|sha512):([0-9a-fA-F]+)$")
HASH_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


def logical_lines(text):
    """(first physical line number, text) of each logical line: ``\\`` continuations joined, comments and
    blank lines dropped."""
    lines = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        if pending.strip():
            lines.append((start, pending.strip()))
        pending = ""
    if pending.strip():
        lines.append((start, pending.strip()))
    return lines


def parse_lock(text, field):
    """``text`` of a lock file -> (entries, problems). Each entry: ``name`` (canonical), ``version``,
    ``line``; each problem names ``field:<line>`` and what is wrong."""
    if not HAS_PACKAGING:
        return [], [f"{field}: cannot be checked: the controller's Python has no 'packaging' library"]
    entries = []
    problems = []
    seen = {}
    for number, line in logical_lines(text):
        where = f"{field}:{number}"
        words = line.split()
        first_option = next((i for i, word in enumerate(words) if word.startswith("-")), len(words))
        requirement_text = " ".join(words[:first_option])
        options = words[first_option:]
        if not requirement_text:
            problems.append(
                f"{where}: {line!r} is an option, not a locked requirement (only --hash is allowed)"
            )
            continue
        try:
            requirement = Requirement(requirement_text)
        except InvalidRequirement as exc:
            problems.append(f"{where}: {requirement_text!r} is not a PEP 508 requirement: {exc}")
            continue
        if requirement.url:
            problems.append(
                f"{where}: {requirement_text!r} is a direct reference; a lock names index packages"
            )
            continue
        pins = [spec for spec in requirement.specifier if spec.operator in ("==", "===")]
        if len(pins) != 1 or len(requirement.specifier) != 1 or "*" in pins[0].version:
            problems.append(
                f"{where}: {requirement_text!r} is not pinned to one version with == (pip's hash mode)"
            )
            continue
        hashes = []
        for option in _hash_options(options):
            match = HASH_OPTION.match(option)
            if not match or len(match.group(2)) != HASH_LENGTHS[match.group(1)]:
                problems.append(f"{where}: {option!r} is not a --hash=sha256:<64 hex digits> option")
                break
            hashes.append(f"{match.group(1)}:{match.group(2).lower()}")
        else:
            if not hashes:
                problems.append(f"{where}: {requirement_text!r} has no --hash (pip's hash mode needs one)")
                continue
            name = canonicalize_name(requirement.name)
            if name in seen:
                problems.append(f"{where}: {requirement.name} is already locked on line {seen[name]}")
                continue
            seen[name] = number
            entries.append({"name": name, "version": pins[0].version, "line": number})
    if not entries and not problems:
        problems.append(f"{field}: the lock holds no requirement")
    return entries, problems


def _hash_options(options):
    """``--hash=a:b`` and ``--hash a:b`` alike, as ``--hash=a:b``; any other option as it is."""
    joined = []
    index = 0
    while index < len(options):
        option = options[index]
        if option == "--hash" and index + 1 < len(options):
            joined.append(f"--hash={options[index + 1]}")
            index += 2
            continue
        joined.append(option)
        index += 1
    return joined


def unlocked_requirements(requirements, entries, field):
    """Problems for each of the spec's ``requirements`` the lock does not satisfy (``field[i]`` named)."""
    locked = {entry["name"]: entry["version"] for entry in entries}
    problems = []
    for index, text in enumerate(requirements):
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name not in locked:
            problems.append(
                f"{field}[{index}]: {text!r} is not in requirements_lock (every requirement must be)"
            )
        elif not requirement.specifier.contains(locked[name], prereleases=True):
            problems.append(
                f"{field}[{index}]: {text!r} does not allow the locked version {name}=={locked[name]}"
            )
    return problems


def lock_digest(text):
    """sha256 of the lock's bytes: part of the wheelhouse's name."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_lock(value, base_dir, field, requirements, requirements_field):
    """The spec's ``requirements_lock`` (a path, relative to ``base_dir``) -> (lock, problems). ``lock``:
    ``path`` (absolute), ``sha256`` of its bytes and ``names`` (the canonical names it pins), or None when no
    lock is given or it is unusable. ``requirements`` (already checked) must each be satisfied by the lock."""
    if value is None:
        return None, []
    if not isinstance(value, str) or not value.strip():
        return None, [
            f"{field}: expected the path of a pip requirements file with --hash options, got {value!r}"
        ]
    path = os.path.abspath(os.path.join(base_dir, os.path.expanduser(value)))
    try:
        with open(path, encoding="utf-8") as lock_file:
            text = lock_file.read()
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"{field}: cannot read {path} on the controller: {exc}"]
    entries, problems = parse_lock(text, f"{field} ({path})")
    if problems:
        return None, problems
    problems = unlocked_requirements(requirements, entries, requirements_field)
    lock = {"path": path, "sha256": lock_digest(text), "names": sorted(entry["name"] for entry in entries)}
    return (None if problems else lock), problems
