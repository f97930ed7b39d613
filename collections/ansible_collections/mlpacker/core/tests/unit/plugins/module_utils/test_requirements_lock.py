# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The spec's requirements_lock: pinned requirements with --hash options, nothing else; problems name the
line; the spec's requirements must each be in the lock."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.requirements_lock import (
    lock_digest,
    parse_lock,
    read_lock,
)

HASH = "a" * 64
FIELD = "mlpacker_pipeline.requirements_lock"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"numpy==2.1.3 --hash=sha256:{HASH}\n", [("numpy", "2.1.3", 1)]),
        (
            f"# pip-compile --generate-hashes\n\nScikit_Learn==1.5.2 \\\n    --hash=sha256:{HASH} \\\n"
            f"    --hash=sha256:{'b' * 64}\n    # via -r requirements.in\n"
            f"joblib==1.4.2 --hash sha256:{HASH}\n",
            [("scikit-learn", "1.5.2", 3), ("joblib", "1.4.2", 7)],
        ),
        (f"numpy==2.1.3 ; python_version >= '3.10' --hash=sha256:{HASH}\n", [("numpy", "2.1.3", 1)]),
    ],
)
def test_locked_requirements_parse(text: str, expected: list[tuple[str, str, int]]) -> None:
    entries, problems = parse_lock(text, FIELD)
    assert problems == []
    assert [(entry["name"], entry["version"], entry["line"]) for entry in entries] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("numpy==2.1.3\n", f"{FIELD}:1: 'numpy==2.1.3' has no --hash"),
        (f"numpy>=2 --hash=sha256:{HASH}\n", f"{FIELD}:1: 'numpy>=2' is not pinned to one version with =="),
        (f"numpy==2.* --hash=sha256:{HASH}\n", f"{FIELD}:1: 'numpy==2.*' is not pinned"),
        ("numpy==2.1.3 --hash=sha256:abc\n", f"{FIELD}:1: '--hash=sha256:abc' is not a --hash=sha256:"),
        (f"numpy==2.1.3 --hash=md5:{HASH[:32]}\n", f"{FIELD}:1: '--hash=md5:"),
        (f"numpy==2.1.3 --hash=sha256:{HASH} --index-url=http://127.0.0.1:9/simple\n", "--index-url"),
        (
            "--index-url=http://127.0.0.1:9/simple\n",
            f"{FIELD}:1: '--index-url=http://127.0.0.1:9/simple' is an option",
        ),
        ("-r other.txt\n", f"{FIELD}:1: '-r other.txt' is an option"),
        (f"evil @ https://example.invalid/evil.whl --hash=sha256:{HASH}\n", "is a direct reference"),
        (
            f"\n\nnumpy==1 --hash=sha256:{HASH}\nNumPy==2 --hash=sha256:{HASH}\n",
            f"{FIELD}:4: NumPy is already locked on line 3",
        ),
        ("# nothing\n", f"{FIELD}: the lock holds no requirement"),
    ],
)
def test_what_pip_would_read_otherwise_is_refused_naming_the_line(text: str, expected: str) -> None:
    entries, problems = parse_lock(text, FIELD)
    assert isinstance(entries, list)
    assert len(problems) == 1 and expected in problems[0], problems


def test_read_lock_resolves_against_base_dir_and_checks_the_requirements(tmp_path: Path) -> None:
    text = f"numpy==2.1.3 --hash=sha256:{HASH}\nscikit-learn==1.5.2 --hash=sha256:{HASH}\n"
    (tmp_path / "requirements.lock").write_text(text)
    lock, problems = read_lock("requirements.lock", str(tmp_path), FIELD, ["numpy>=2"], "requirements")
    assert problems == []
    assert lock == {
        "path": str(tmp_path / "requirements.lock"),
        "sha256": lock_digest(text),
        "names": ["numpy", "scikit-learn"],
    }
    lock, problems = read_lock(
        "requirements.lock",
        str(tmp_path),
        FIELD,
        ["numpy<2", "scikit_learn", "scipy==1.14.1"],
        "requirements",
    )
    assert lock is None
    assert problems == [
        "requirements[0]: 'numpy<2' does not allow the locked version numpy==2.1.3",
        "requirements[2]: 'scipy==1.14.1' is not in requirements_lock (every requirement must be)",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("missing.lock", "cannot read {base}/missing.lock on the controller"),
        ("", "expected the path of a pip requirements file with --hash options, got ''"),
        (["a"], "expected the path of a pip requirements file with --hash options, got ['a']"),
    ],
)
def test_read_lock_names_an_unusable_value(tmp_path: Path, value: object, expected: str) -> None:
    lock, problems = read_lock(value, str(tmp_path), FIELD, [], "requirements")
    assert lock is None and len(problems) == 1
    assert problems[0].startswith(f"{FIELD}: " + expected.format(base=tmp_path)), problems


def test_no_lock_is_no_lock(tmp_path: Path) -> None:
    assert read_lock(None, str(tmp_path), FIELD, ["numpy"], "requirements") == (None, [])
