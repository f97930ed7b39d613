# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Artifact facts on real models trained by the test session (conftest.models_dir)."""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.artifacts import (
    collect_versions,
    describe_object,
    describe_onnx_session,
    detect_format,
    sha256_file,
)
from ansible_collections.mlpacker.core.plugins.module_utils.stage_loading import (
    import_runtime,
    load_object,
    service_config,
)

RUNTIME_SOURCE = str(Path(__file__).resolve().parents[4] / "runtime")


def load_artifact(path: str, artifact_format: str) -> object:
    """The artifact as the stage runtime loads it (what artifact_info describes)."""
    runtime = import_runtime(RUNTIME_SOURCE)
    stage = {"artifact": path, "format": artifact_format, "sha256": sha256_file(path)}
    return load_object(runtime, service_config(runtime, [stage]))


@pytest.mark.parametrize(
    ("path", "explicit", "expected"),
    [
        ("m.joblib", None, "joblib"),
        ("m.pkl", None, "pickle"),
        ("M.PICKLE", None, "pickle"),
        ("m.skops", None, "skops"),
        ("dir.d/m.onnx", None, "onnx"),
        ("model.bin", "onnx", "onnx"),
    ],
)
def test_detect_format(path: str, explicit: str | None, expected: str) -> None:
    assert detect_format(path, explicit) == expected


@pytest.mark.parametrize(
    ("path", "explicit", "message"),
    [
        ("model.bin", None, "cannot tell the format of model.bin from its extension '.bin'"),
        ("model", None, "from its extension ''"),
        ("m.joblib", "tensorflow", "format 'tensorflow' is not one of joblib, pickle, skops, onnx, function"),
    ],
)
def test_detect_format_errors(path: str, explicit: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        detect_format(path, explicit)


def test_sha256_file(tmp_path: Path) -> None:
    data = b"x" * (3 * 1024 * 1024 + 7)  # more than one read block
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(str(tmp_path / "blob")) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("artifact_format", "libraries"),
    [
        ("joblib", {"scikit-learn", "numpy", "scipy", "joblib"}),
        ("pickle", {"scikit-learn", "numpy", "scipy"}),
        ("skops", {"scikit-learn", "numpy", "scipy", "skops"}),
        ("onnx", {"onnxruntime", "numpy"}),
        ("function", {"numpy"}),
    ],
)
def test_collect_versions_records_the_installed_libraries(artifact_format: str, libraries: set[str]) -> None:
    versions = collect_versions(artifact_format)
    assert set(versions) == libraries
    for name, version in versions.items():
        assert version == importlib.metadata.version(name)


def test_describe_a_joblib_pipeline(models_dir: Path) -> None:
    facts = describe_object(load_artifact(str(models_dir / "pipeline.joblib"), "joblib"))
    assert facts["object_type"] == "sklearn.pipeline.Pipeline"
    assert facts["library"] == "scikit-learn"
    assert facts["library_version"] == importlib.metadata.version("scikit-learn")
    assert facts["n_features_in"] == 4
    assert facts["steps"] == [
        {"name": "scale", "type": "sklearn.preprocessing.StandardScaler"},
        {"name": "clf", "type": "sklearn.linear_model.LogisticRegression"},
    ]
    assert facts["methods"] == ["predict", "predict_proba", "decision_function"]


def test_describe_a_pickled_classifier_and_a_scaler(models_dir: Path) -> None:
    classifier = describe_object(load_artifact(str(models_dir / "classifier.pkl"), "pickle"))
    assert classifier["object_type"] == "sklearn.linear_model.LogisticRegression"
    assert classifier["steps"] == []
    scaler = describe_object(load_artifact(str(models_dir / "scaler.joblib"), "joblib"))
    assert scaler["methods"] == ["transform"]
    assert scaler["n_features_in"] == 4


def test_describe_a_python_object_without_library() -> None:
    facts = describe_object({"not": "a model"})
    assert (facts["library"], facts["library_version"], facts["n_features_in"], facts["methods"]) == (
        None,
        None,
        None,
        [],
    )


def test_describe_an_onnx_model(models_dir: Path) -> None:
    facts = describe_onnx_session(load_artifact(str(models_dir / "pipeline.onnx"), "onnx"))
    assert facts["n_features_in"] == 4
    assert facts["library"] == "onnxruntime"
    assert "predict_proba" in facts["methods"]
    assert facts["onnx_outputs"][:1] == ["output_label"]
