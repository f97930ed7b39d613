# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A host's wheelhouse: the target its wheels are built for, the name that says what it holds, and the digests
of its files."""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile


def wheel_target(probe_lines, containers_only=False, container_python="3.11", container_glibc="2.36"):
    """Python version, CPU and C library the host's wheels must fit.

    ``probe_lines``: what the host probe printed (Python ``X.Y``, glibc version, machine). A host that runs
    only containers gets wheels for the image's Python and C library instead of its own.
    """
    if len(probe_lines) < 3:
        raise ValueError(f"the host probe printed {len(probe_lines)} lines, not 3: {probe_lines!r}")
    return {
        "python": str(container_python) if containers_only else probe_lines[0],
        "arch": probe_lines[2],
        "glibc": str(container_glibc) if containers_only else probe_lines[1],
    }


def wheelhouse_id(target, requirements, tools, runtime_sha256, lock_sha256=None):
    """``cp<XY>-<arch>-<hash>``: the hash covers everything the wheelhouse is made from, so equal inputs share
    one wheelhouse (on the controller and on the hosts) and any change makes a new one. ``lock_sha256``: the
    content hash of the spec's requirements_lock (left out when there is none, so such names stay as they
    were)."""
    inputs = {"target": target, "requirements": requirements, "tools": tools, "runtime": runtime_sha256}
    if lock_sha256:
        inputs["lock"] = lock_sha256
    # The same text as Ansible's to_json(sort_keys=true), which named wheelhouses before this function.
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode("utf-8")).hexdigest()
    return f"cp{target['python'].replace('.', '')}-{target['arch']}-{digest[:16]}"


def archive_digests(archive):
    """``<sha256>  <name>`` lines (sha256sum's format, sorted by name) of every regular file in the wheelhouse
    ``archive`` (a tar of one flat folder): what a host checks its unpacked copy against with
    ``sha256sum --check --strict``. Raises ValueError on a member a flat wheelhouse cannot hold."""
    lines = []
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isdir():
                continue
            name = posixpath.normpath(member.name)
            if not member.isfile() or "/" in name or name in (".", "..") or any(c.isspace() for c in name):
                raise ValueError(f"{archive}: {member.name!r} is not a file at the top of a wheelhouse")
            digest = hashlib.sha256()
            source = tar.extractfile(member)
            block = source.read(1 << 20)
            while block:
                digest.update(block)
                block = source.read(1 << 20)
            lines.append((name, f"{digest.hexdigest()}  {name}\n"))
    return "".join(line for name, line in sorted(lines))
