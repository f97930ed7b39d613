# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""mlpacker.core.build_context and mlpacker.core.pipeline_footprint through real Ansible runs."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest


def context_args(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    wheels = tmp_path / "wheels"
    wheels.mkdir(exist_ok=True)
    (wheels / "MANIFEST").write_text("numpy\n")
    args = {
        "path": str(tmp_path / "release"),
        "wheelhouse": str(wheels),
        "directories": ["artifacts"],
        "files": {
            "Dockerfile": {"content": "FROM scratch\n"},
            "config.json": {"content": "{}\n", "mode": "0640"},
        },
    }
    return {**args, **overrides}


def test_build_context_check_mode_then_apply_then_nothing(tmp_path: Path, run_module) -> None:
    checked = run_module("build_context", context_args(tmp_path), check_mode=True)
    assert checked["changed"] and "file:Dockerfile" in checked["changes"], checked
    assert not (tmp_path / "release").exists()
    applied = run_module("build_context", context_args(tmp_path))
    assert applied["changed"] and applied["changes"] == checked["changes"], applied
    assert (tmp_path / "release" / "wheelhouse" / "MANIFEST").read_text() == "numpy\n"
    again = run_module("build_context", context_args(tmp_path))
    assert not again["changed"] and again["changes"] == [], again


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"files": {"../Dockerfile": {"content": "x"}}}, "files: ../Dockerfile"),
        ({"files": {"Dockerfile": {"mode": "0644"}}}, "files: Dockerfile: needs a 'content' string"),
        ({"files": {"Dockerfile": {"content": "x", "mode": "rw"}}}, "files: Dockerfile"),
        ({"directories": ["/etc"]}, "directories: '/etc' is not a relative path"),
        ({"wheelhouse": "/nonexistent/wheels"}, "wheelhouse /nonexistent/wheels does not exist"),
    ],
)
def test_build_context_errors_name_the_field(tmp_path: Path, run_module, overrides, message: str) -> None:
    result = run_module("build_context", context_args(tmp_path, **overrides))
    assert result.get("failed") and message in result["msg"], result


def test_footprint_reads_and_changes_nothing(tmp_path: Path, run_module) -> None:
    (tmp_path / "opt" / "iris" / "iris-scale").mkdir(parents=True)
    args = {"pipeline": "iris", "root": str(tmp_path / "opt"), "config_root": str(tmp_path / "etc")}
    found = run_module("pipeline_footprint", args)
    assert not found["changed"] and found["services"] == ["iris-scale"] and found["last"], found
    refused = run_module("pipeline_footprint", {**args, "pipeline": "../etc"})
    assert refused.get("failed") and "pipeline: '../etc' is not a pipeline name" in refused["msg"], refused


def test_wheelhouse_digests_are_taken_once_and_kept_beside_the_archive(tmp_path: Path, run_module) -> None:

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "numpy-2.1.3-cp311-none-any.whl").write_bytes(b"numpy")
    archive = tmp_path / "cp311-x86_64-0123.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(wheels, arcname=".")
    expected = f"{hashlib.sha256(b'numpy').hexdigest()}  numpy-2.1.3-cp311-none-any.whl\n"
    first = run_module("wheelhouse_digests", {"archive": str(archive)}, check_mode=True)
    assert first["digests"] == expected and not first["changed"], first
    kept = Path(first["path"])
    assert kept == Path(f"{archive}.sha256") and kept.read_text() == expected
    # Kept while newer than the archive: the module reads the kept file (seen by giving it other text).
    kept.write_text("kept\n")
    assert run_module("wheelhouse_digests", {"archive": str(archive)})["digests"] == "kept\n"
    # A newer archive is read again.
    os.utime(archive, ns=(kept.stat().st_mtime_ns + 10**9, kept.stat().st_mtime_ns + 10**9))
    assert run_module("wheelhouse_digests", {"archive": str(archive)})["digests"] == expected


def test_wheelhouse_digests_name_an_unreadable_archive(tmp_path: Path, run_module) -> None:
    (tmp_path / "broken.tar").write_bytes(b"not a tar")
    failed = run_module("wheelhouse_digests", {"archive": str(tmp_path / "broken.tar")})
    assert failed["failed"] and f"wheelhouse archive {tmp_path / 'broken.tar'}" in failed["msg"], failed
