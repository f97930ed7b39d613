# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""module_utils/wheelhouse: a host's wheel target and the name of its wheelhouse."""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import tarfile

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.wheelhouse import (
    archive_digests,
    wheel_target,
    wheelhouse_id,
)

PROBE = ["3.11", "2.36", "x86_64", "other"]
INPUTS = {
    "target": {"python": "3.11", "arch": "x86_64", "glibc": "2.36"},
    "requirements": ["numpy==2.1.3", "mlpacker-runtime==0.1.0"],
    "tools": ["supervisor", "uv>=0.5"],
    "runtime_sha256": "f" * 64,
}


@pytest.mark.parametrize(
    ("probe", "containers_only", "expected"),
    [
        (PROBE, False, {"python": "3.11", "arch": "x86_64", "glibc": "2.36"}),
        (["3.9", "2.31", "aarch64", "systemd"], False, {"python": "3.9", "arch": "aarch64", "glibc": "2.31"}),
        # Only containers: the image's Python and C library, the host's CPU.
        (["3.9", "2.31", "aarch64"], True, {"python": "3.12", "arch": "aarch64", "glibc": "2.39"}),
    ],
)
def test_wheel_target(probe: list[str], containers_only: bool, expected: dict[str, str]) -> None:
    assert wheel_target(probe, containers_only, "3.12", "2.39") == expected


def test_wheel_target_refuses_a_short_probe() -> None:
    with pytest.raises(ValueError, match="printed 1 lines"):
        wheel_target(["3.11"])


def test_wheelhouse_id_names_python_cpu_and_content() -> None:
    name = wheelhouse_id(**INPUTS)
    assert re.fullmatch(r"cp311-x86_64-[0-9a-f]{16}", name)
    assert wheelhouse_id(**INPUTS) == name  # equal inputs share one wheelhouse


@pytest.mark.parametrize(
    "change",
    [
        {"target": {"python": "3.11", "arch": "x86_64", "glibc": "2.31"}},
        {"requirements": ["numpy==2.1.2", "mlpacker-runtime==0.1.0"]},
        {"tools": ["supervisor"]},
        {"runtime_sha256": "e" * 64},
    ],
)
def test_any_input_makes_a_new_wheelhouse(change: dict) -> None:
    assert wheelhouse_id(**{**INPUTS, **change}) != wheelhouse_id(**INPUTS)


def wheelhouse_tar(folder, files, extra=None):
    """A wheelhouse archive the way the pipeline role makes one (``tar -cf x.tar .`` in a flat folder)."""

    source = folder / "wheels"
    source.mkdir()
    for name, content in files.items():
        (source / name).write_bytes(content)
    archive = folder / "wheelhouse.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(source, arcname=".")
        if extra is not None:
            extra(tar)
    return archive


def test_archive_digests_match_sha256sum_of_each_file(tmp_path) -> None:

    files = {"numpy-2.1.3-cp311-none-any.whl": b"wheel bytes", "MANIFEST": b"numpy\n", "uv-0.5.whl": b"uv"}
    text = archive_digests(wheelhouse_tar(tmp_path, files))
    assert text == "".join(f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n" for name in sorted(files))
    # The format sha256sum checks: the unpacked folder passes, and fails once a file differs.
    (tmp_path / "SUMS").write_text(text)
    checked = subprocess.run(
        ["sha256sum", "--check", "--strict", "--quiet", str(tmp_path / "SUMS")],
        cwd=tmp_path / "wheels",
        check=False,
    )
    assert checked.returncode == 0
    (tmp_path / "wheels" / "uv-0.5.whl").write_bytes(b"altered")
    checked = subprocess.run(
        ["sha256sum", "--check", "--strict", "--quiet", str(tmp_path / "SUMS")],
        cwd=tmp_path / "wheels",
        capture_output=True,
        check=False,
    )
    assert checked.returncode != 0


@pytest.mark.parametrize("kind", ["nested", "symlink"])
def test_archive_digests_refuse_what_a_flat_wheelhouse_cannot_hold(tmp_path, kind) -> None:

    def extra(tar):
        if kind == "nested":
            member = tarfile.TarInfo("./sub/evil.whl")
            member.size = 4
            tar.addfile(member, io.BytesIO(b"evil"))
        else:
            member = tarfile.TarInfo("./link.whl")
            member.type = tarfile.SYMTYPE
            member.linkname = "/etc/passwd"
            tar.addfile(member)

    archive = wheelhouse_tar(tmp_path, {"a.whl": b"a"}, extra)
    with pytest.raises(ValueError, match="is not a file at the top of a wheelhouse"):
        archive_digests(archive)
