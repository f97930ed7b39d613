# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.input_signature import (
    choose_signature,
    instances_signature,
    object_signature,
    onnx_signature,
    spec_signature,
)
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def columns(*types: str, names: list[str] | None = None) -> list[dict[str, Any]]:
    return [{"name": names[i] if names else None, "type": kind} for i, kind in enumerate(types)]


@pytest.mark.parametrize(
    ("given", "expected_columns", "problems"),
    [
        (
            [{"name": "a", "type": "double"}, {"name": "b", "type": "string"}],
            columns("number", "string", names=["a", "b"]),
            [],
        ),
        (["float", "LONG", "integer", "any"], columns("number", "number", "number", "any"), []),
        ([{"type": "double"}], columns("number"), []),
        ([{"name": "a", "type": "binary"}], None, ["f[0].type: 'binary' is not a column type"]),
        (["double", 3], None, ["f[1]: 3 is not a column type"]),
        ([{"name": 1, "type": "double"}], None, ["f[0].name: expected a string, got 1"]),
        ("double", None, ["f: expected a non-empty list of columns"]),
    ],
)
def test_spec_signature(given: Any, expected_columns: Any, problems: list[str]) -> None:
    signature, found = spec_signature(given, "f")
    assert [problem[: len(prefix)] for problem, prefix in zip(found, problems, strict=True)] == problems
    assert signature == ({"source": "spec", "columns": expected_columns} if expected_columns else None)


def test_no_spec_input_is_no_signature() -> None:
    assert spec_signature(None, "f") == (None, [])


@pytest.mark.parametrize(
    ("rows", "expected_columns"),
    [
        ([[1, 2.5, "a"], [3, 4, "b"]], columns("number", "number", "string")),
        ([[1, "a"], ["b", 2]], columns("any", "any")),
        ([[True, 1]], columns("any", "number")),  # a bool is not a number
        ([[None, 1]], columns("any", "number")),
        ([[1, 2], [3]], None),
        ([1, 2], None),
        ([], None),
        ([[]], None),
    ],
)
def test_instances_signature(rows: Any, expected_columns: Any) -> None:
    expected = {"source": "smoke_instances", "columns": expected_columns} if expected_columns else None
    assert instances_signature(rows) == expected


@pytest.mark.parametrize(
    ("inputs", "expected_columns"),
    [
        ([{"name": "X", "shape": [None, 3], "type": "tensor(float)"}], columns("number", "number", "number")),
        ([{"name": "X", "shape": ["N", 2], "type": "tensor(string)"}], columns("string", "string")),
        ([{"name": "X", "shape": [None, None], "type": "tensor(float)"}], None),
        ([{"name": "X", "shape": [None, 2, 2], "type": "tensor(float)"}], None),
        ([{"name": "a", "shape": [None, 1], "type": "tensor(float)"}] * 2, None),
    ],
)
def test_onnx_signature(inputs: list[dict[str, Any]], expected_columns: Any) -> None:
    expected = {"source": "artifact", "columns": expected_columns} if expected_columns else None
    assert onnx_signature(inputs) == expected


def test_object_signature_probes_the_bound_method() -> None:
    rows = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 3.0]])
    scaler = StandardScaler().fit(rows)
    assert object_signature(scaler, "transform", 2) == {
        "source": "artifact",
        "columns": columns("number", "number"),
    }
    classifier = LogisticRegression().fit(rows, [0, 1, 0])
    assert object_signature(classifier, "predict", 2)["columns"] == columns("number", "number")
    # Takes strings as well as numbers: nothing to check per column.
    encoder = OneHotEncoder(handle_unknown="ignore").fit([["a", 1], ["b", 2]])
    assert object_signature(encoder, "transform", 2) == {
        "source": "artifact",
        "columns": columns("any", "any"),
    }
    # Fitted on named columns: the names are recorded.
    import pandas as pd

    named = StandardScaler().fit(pd.DataFrame(rows, columns=["width", "height"]))
    assert object_signature(named, "transform", 2)["columns"] == columns(
        "number", "number", names=["width", "height"]
    )
    assert object_signature(scaler, "call", 2) is None
    assert object_signature(scaler, "transform", None) is None


SPEC = {"source": "spec", "columns": columns("string")}
ARTIFACT = {"source": "artifact", "columns": columns("number")}


@pytest.mark.parametrize(
    ("spec", "rows", "artifact", "expected"),
    [
        (SPEC, [[1]], ARTIFACT, SPEC),
        (None, [[1]], ARTIFACT, {"source": "smoke_instances", "columns": columns("number")}),
        (None, None, ARTIFACT, ARTIFACT),
        (None, [[1], [1, 2]], ARTIFACT, ARTIFACT),
        (None, None, None, None),
    ],
)
def test_choose_signature(spec: Any, rows: Any, artifact: Any, expected: Any) -> None:
    assert choose_signature(spec, rows, artifact) == expected
