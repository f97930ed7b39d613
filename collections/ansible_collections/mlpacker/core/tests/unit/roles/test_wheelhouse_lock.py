# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The wheelhouse with a requirements_lock, for real and offline: the pipeline role's download_wheelhouse.py
runs pip (isolated) against a local file:// index holding two tiny wheels made here, and the host role's
make_venv.sh installs the archive it wrote (the pip path) with --require-hashes --no-index.

A lock with the right hash downloads and installs; a wrong hash, a missing hash or a missing package fails
with pip's own words; a wheel altered in the wheelhouse afterwards fails the host's install."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROLES = Path(__file__).resolve().parents[3] / "roles"
DOWNLOAD = ROLES / "pipeline" / "files" / "download_wheelhouse.py"
MAKE_VENV = ROLES / "host" / "files" / "make_venv.sh"


def make_wheel(folder: Path, name: str, version: str, requires: list[str] | None = None) -> Path:
    """A pure-Python wheel of one module ``name`` (``VALUE = '<name> <version>'``)."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VALUE = {name + ' ' + version!r}\n".encode(),
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            + "".join(f"Requires-Dist: {requirement}\n" for requirement in requires or [])
        ).encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: mlpacker-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(content)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, content in files.items():
            archive.writestr(path, content)
    return wheel


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def index(tmp_path: Path) -> dict[str, object]:
    """A PEP 503 index on disk with mlpdemo 1.0 (what the lock pins); the runtime stand-in mlprt 1.0, which
    needs mlpdemo, is a local wheel as MLPacker's runtime wheel is."""
    simple = tmp_path / "simple"
    (simple / "mlpdemo").mkdir(parents=True)
    demo = make_wheel(simple / "mlpdemo", "mlpdemo", "1.0")
    (simple / "mlpdemo" / "index.html").write_text(f'<a href="{demo.name}">{demo.name}</a>\n')
    (tmp_path / "local").mkdir()
    runtime = make_wheel(tmp_path / "local", "mlprt", "1.0", requires=["mlpdemo==1.0"])
    return {"url": simple.as_uri(), "demo": demo, "runtime": runtime}


def download(tmp_path: Path, index: dict[str, object], lock: str) -> tuple[subprocess.CompletedProcess, Path]:
    (tmp_path / "requirements.lock").write_text(lock)
    archive = tmp_path / "cache" / "cp3-test.tar"
    result = subprocess.run(
        [
            sys.executable,
            str(DOWNLOAD),
            f"--archive={archive}",
            f"--runtime-wheel={index['runtime']}",
            f"--lock={tmp_path / 'requirements.lock'}",
            f"--pip-option=--index-url={index['url']}",
            "--",
            "mlpdemo==1.0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return result, archive


def test_a_lock_with_the_right_hash_downloads_and_installs_offline(tmp_path: Path, index) -> None:
    lock = f"# made by hand\nmlpdemo==1.0 \\\n    --hash=sha256:{sha256(index['demo'])}\n"
    result, archive = download(tmp_path, index, lock)
    assert result.returncode == 0, result.stderr
    with tarfile.open(archive) as tar:
        names = sorted(Path(name).name for name in tar.getnames() if name != ".")
        wheelhouse = tmp_path / "wheelhouse"
        tar.extractall(wheelhouse, filter="data")
    assert names == sorted(["MANIFEST", "requirements.lock", index["demo"].name, index["runtime"].name])
    assert (wheelhouse / "requirements.lock").read_text() == lock

    venv = tmp_path / "venv"
    made = subprocess.run(
        ["sh", str(MAKE_VENV), sys.executable, str(venv), str(wheelhouse), "mlprt==1.0"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    answer = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import mlpdemo, mlprt; print(mlpdemo.VALUE, mlprt.VALUE)"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert answer.stdout.strip() == "mlpdemo 1.0 mlprt 1.0", answer.stderr

    # A wheel swapped in the wheelhouse (same name and version, other content): the host's install refuses it.
    swapped = make_wheel(tmp_path / "local", "mlpdemo", "1.0", requires=["mlprt"])
    (wheelhouse / index["demo"].name).write_bytes(swapped.read_bytes())
    assert sha256(wheelhouse / index["demo"].name) != sha256(index["demo"])
    refused = subprocess.run(
        ["sh", str(MAKE_VENV), sys.executable, str(tmp_path / "venv2"), str(wheelhouse), "mlprt==1.0"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert refused.returncode != 0
    assert "DO NOT MATCH THE HASHES" in refused.stderr, refused.stderr


@pytest.mark.parametrize(
    ("lock", "expected"),
    [
        ("mlpdemo==1.0 --hash=sha256:" + "0" * 64 + "\n", "DO NOT MATCH THE HASHES"),
        ("mlpdemo==1.0\n", "Hashes are required in --require-hashes mode"),
    ],
    ids=["wrong-hash", "missing-hash"],
)
def test_a_lock_with_a_wrong_or_missing_hash_fails_with_pips_words(
    tmp_path: Path, index, lock: str, expected: str
) -> None:
    result, archive = download(tmp_path, index, lock)
    assert result.returncode == 1 and not archive.exists()
    assert "pip download of the requirements_lock" in result.stderr, result.stderr
    assert expected in result.stderr, result.stderr
    assert not list(archive.parent.iterdir()), "a failed download left files behind"


def test_a_lock_that_misses_a_package_fails_naming_it(tmp_path: Path, index) -> None:
    # The lock holds another package only: mlpdemo, which the runtime stand-in needs, is not locked.
    (tmp_path / "simple" / "mlpother").mkdir()
    other = make_wheel(tmp_path / "simple" / "mlpother", "mlpother", "1.0")
    (tmp_path / "simple" / "mlpother" / "index.html").write_text(f'<a href="{other.name}">{other.name}</a>\n')
    result, archive = download(tmp_path, index, f"mlpother==1.0 --hash=sha256:{sha256(other)}\n")
    assert result.returncode == 1 and not archive.exists()
    assert "must hold every package they need" in result.stderr, result.stderr
    assert "mlpdemo" in result.stderr, result.stderr
