# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.artifact_pins import (
    PinMismatch,
    normalise_sha256,
    verify_pin,
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("A" * 64, "a" * 64),
        (" " + "0f" * 32 + "\n", "0f" * 32),
        ("a" * 63, None),
        ("g" * 64, None),
        ("sha256:" + "a" * 64, None),
        (None, None),
        (123, None),
    ],
)
def test_normalise_sha256(given: object, expected: str | None) -> None:
    if expected is not None:
        assert normalise_sha256(given) == expected
        return
    with pytest.raises(ValueError, match=r"expected 64 hex digits \(a sha256\), got "):
        normalise_sha256(given)


@pytest.mark.parametrize("pin", [None, "", "MATCH"])
def test_verify_pin_returns_the_digest(tmp_path: Path, pin: str | None) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(b"model bytes")
    digest = hashlib.sha256(b"model bytes").hexdigest()
    assert verify_pin("stages[0].sha256", str(path), digest.upper() if pin == "MATCH" else pin) == digest


def test_verify_pin_names_what_both_digests_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(b"changed")
    with pytest.raises(PinMismatch) as caught:
        verify_pin("stages[2].sha256", str(path), "B" * 64)
    actual = hashlib.sha256(b"changed").hexdigest()
    assert (caught.value.expected, caught.value.actual) == ("b" * 64, actual)
    assert str(caught.value) == (
        f"stages[2].sha256: artifact {path} has sha256 {actual}, expected (pinned) {'b' * 64};"
        " refusing to load it (the file changed, or the pin is wrong)"
    )
