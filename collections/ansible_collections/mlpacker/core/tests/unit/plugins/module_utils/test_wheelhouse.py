# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""module_utils/wheelhouse: a host's wheel target and the name of its wheelhouse."""

from __future__ import annotations

import re

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.wheelhouse import wheel_target, wheelhouse_id

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
