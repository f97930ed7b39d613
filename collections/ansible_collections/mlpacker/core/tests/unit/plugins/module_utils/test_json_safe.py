# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""JSON-safe conversion of model outputs."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.json_safe import to_json_safe


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.array([[1, 2], [3, 4]]), [[1, 2], [3, 4]]),
        (np.array([0.5, 1.5], dtype=np.float32), [0.5, 1.5]),
        (np.int64(3), 3),
        (np.float64(2.5), 2.5),
        (np.bool_(True), True),
        (np.array(["setosa", "virginica"]), ["setosa", "virginica"]),
        ((1, np.int32(2)), [1, 2]),
        ({np.int64(0): np.float64(0.25), "b": [np.int8(1)]}, {"0": 0.25, "b": [1]}),
        (float("nan"), None),
        (np.array([np.inf, 1.0]), [None, 1.0]),
        (b"raw", "raw"),
        (None, None),
    ],
)
def test_to_json_safe(value: Any, expected: Any) -> None:
    converted = to_json_safe(value)
    assert converted == expected
    json.dumps(converted, allow_nan=False)


def test_numpy_scalars_become_python_types() -> None:
    converted = to_json_safe([np.int64(1), np.float32(0.5)])
    assert [type(item) for item in converted] == [int, float]


def test_unknown_objects_are_refused_by_name() -> None:
    with pytest.raises(TypeError, match="cannot convert object to JSON"):
        to_json_safe(object())
