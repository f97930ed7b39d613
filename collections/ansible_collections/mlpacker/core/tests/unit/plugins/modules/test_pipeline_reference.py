# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""mlpacker.core.pipeline_reference through a real Ansible run."""

from __future__ import annotations

import pickle
from pathlib import Path

import joblib
import numpy as np


def split_stages(models_dir: Path) -> list[dict[str, object]]:
    # the shape of plan.stages, with the extra keys the module ignores
    return [
        {"name": "scale", "index": 0, "artifact": str(models_dir / "scaler.joblib"), "function": None,
         "format": "joblib", "method": "transform", "group": "edge", "hosts": ["edge1"], "trusted_types": []},
        {"name": "classify", "index": 1, "artifact": str(models_dir / "classifier.pkl"), "function": None,
         "format": "pickle", "method": "predict_proba", "group": "cloud", "hosts": ["cloud1"],
         "trusted_types": []},
    ]  # fmt: skip


def test_generated_instances_are_deterministic_and_predictions_match_sklearn(
    run_module, models_dir: Path
) -> None:
    stages = split_stages(models_dir)
    first = run_module("pipeline_reference", {"stages": stages, "n_samples": 3, "seed": 7})
    second = run_module("pipeline_reference", {"stages": stages, "n_samples": 3, "seed": 7})
    assert first.get("failed") is not True, first
    assert first["instances"] == second["instances"]
    assert first["predictions"] == second["predictions"]
    instances = np.asarray(first["instances"])
    assert instances.shape == (3, 4)
    assert np.array_equal(instances, instances.round(4))
    scaler = joblib.load(models_dir / "scaler.joblib")
    classifier = joblib.load(models_dir / "classifier.pkl")
    np.testing.assert_allclose(
        first["predictions"], classifier.predict_proba(scaler.transform(instances)), rtol=1e-12
    )


def test_seed_changes_the_generated_rows() -> None:
    from ansible_collections.mlpacker.core.plugins.modules.pipeline_reference import generate_instances

    assert generate_instances(4, 3, seed=7) == generate_instances(4, 3, seed=7)
    assert generate_instances(4, 3, seed=7) != generate_instances(4, 3, seed=8)
    assert [len(row) for row in generate_instances(6, 2, seed=0)] == [6, 6]


def test_given_instances_through_function_and_onnx(run_module, models_dir: Path, iris_rows) -> None:
    stages = [
        {"name": "double", "function": "features.scaling:double", "format": "function", "method": "call"},
        {
            "name": "model",
            "artifact": str(models_dir / "pipeline.onnx"),
            "format": "onnx",
            "method": "predict",
        },
    ]
    result = run_module(
        "pipeline_reference", {"stages": stages, "instances": iris_rows, "code_dir": str(models_dir / "code")}
    )
    assert result.get("failed") is not True, result
    assert result["instances"] == iris_rows
    pipeline = joblib.load(models_dir / "pipeline.joblib")
    assert result["predictions"] == pipeline.predict(np.asarray(iris_rows) * 2.0).tolist()


def test_unknown_feature_count_asks_for_smoke_instances(run_module, models_dir: Path) -> None:
    stages = [
        {"name": "double", "function": "features.scaling:double", "format": "function", "method": "call"}
    ]
    result = run_module("pipeline_reference", {"stages": stages, "code_dir": str(models_dir / "code")})
    assert result["failed"] is True
    assert result["msg"] == (
        "cannot generate smoke test instances: the feature count of the first stage 'double' is unknown;"
        " set mlpacker_smoke_instances (a list of input rows)"
    )


def test_stage_failure_is_reported(run_module, models_dir: Path) -> None:
    # Rows the first stage cannot take are refused by the runtime's input check, as the service answers 422.
    stages = split_stages(models_dir)
    result = run_module("pipeline_reference", {"stages": stages, "instances": [[1.0, 2.0]]})
    assert result["failed"] is True
    assert result["msg"] == (
        "cannot compute reference predictions: the instances do not fit the first stage:"
        " instances[0]: expected 4 features, received 2"
    )
    # A stage that raises is named with its method (a function declares no feature count, the model fails).
    stages = [
        {"name": "double", "function": "features.scaling:double", "format": "function", "method": "call"},
        {
            "name": "model",
            "artifact": str(models_dir / "pipeline.joblib"),
            "format": "joblib",
            "method": "predict",
        },
    ]
    result = run_module(
        "pipeline_reference",
        {"stages": stages, "instances": [[1.0, 2.0]], "code_dir": str(models_dir / "code")},
    )
    assert result["failed"] is True
    assert "cannot compute reference predictions: stage 'model' (predict) failed: ValueError" in result["msg"]


def test_runtime_source_that_holds_no_runtime_is_named(run_module, models_dir: Path, tmp_path: Path) -> None:
    args = {"stages": split_stages(models_dir), "runtime_source": str(tmp_path)}
    result = run_module("pipeline_reference", args, check_mode=True)
    assert result["failed"] is True
    assert result["msg"] == (
        f"runtime_source: {tmp_path} holds no mlpacker_runtime package"
        f" ({tmp_path}/mlpacker_runtime/__init__.py is missing)"
    )


def test_cache_answers_a_rerun_and_follows_the_artifact_content(
    run_module, models_dir: Path, tmp_path: Path
) -> None:
    stages = split_stages(models_dir)
    args = {"stages": stages, "n_samples": 3, "seed": 7, "cache_dir": str(tmp_path / "cache")}
    computed = run_module("pipeline_reference", args)
    assert computed["cached"] is False, computed
    again = run_module("pipeline_reference", args)
    assert again["cached"] is True
    assert (again["instances"], again["predictions"]) == (computed["instances"], computed["predictions"])
    # other rows asked for: computed, not taken from the cache
    assert run_module("pipeline_reference", {**args, "seed": 8})["cached"] is False
    # the same path with other content (a retrained classifier): computed again, with the new answers
    copied = tmp_path / "models"
    copied.mkdir()
    for name in ("scaler.joblib", "classifier.pkl"):
        (copied / name).write_bytes((models_dir / name).read_bytes())
    moved = {**args, "stages": split_stages(copied)}
    assert run_module("pipeline_reference", moved)["cached"] is False
    classifier = joblib.load(copied / "classifier.pkl")
    classifier.coef_ = classifier.coef_ * 2
    (copied / "classifier.pkl").write_bytes(pickle.dumps(classifier))
    retrained = run_module("pipeline_reference", moved)
    assert retrained["cached"] is False
    assert retrained["predictions"] != computed["predictions"]


def test_damaged_cache_entry_is_computed_again(run_module, models_dir: Path, tmp_path: Path) -> None:
    args = {"stages": split_stages(models_dir), "n_samples": 2, "cache_dir": str(tmp_path / "cache")}
    first = run_module("pipeline_reference", args)
    for entry in (tmp_path / "cache").iterdir():
        entry.write_text("{not json")
    second = run_module("pipeline_reference", args)
    assert second["cached"] is False and second["predictions"] == first["predictions"]


class WritesMarker:
    """Unpickling this runs ``open(marker, 'w')``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pinned_stage_whose_file_changed_is_never_loaded(
    run_module, models_dir: Path, tmp_path: Path
) -> None:
    import hashlib

    marker = tmp_path / "ran-at-load"
    evil = tmp_path / "classifier.pkl"
    evil.write_bytes(pickle.dumps(WritesMarker(str(marker))))
    reviewed = hashlib.sha256((models_dir / "classifier.pkl").read_bytes()).hexdigest()
    stages = split_stages(models_dir)
    stages[1]["artifact"] = str(evil)
    stages[1]["sha256"] = reviewed
    args = {"stages": stages, "instances": [[5.1, 3.5, 1.4, 0.2]], "cache_dir": str(tmp_path / "cache")}
    result = run_module("pipeline_reference", args)
    assert result["failed"] is True
    actual = hashlib.sha256(evil.read_bytes()).hexdigest()
    assert result["msg"] == (
        f"cannot compute reference predictions: stages[1] (classify).sha256: artifact {evil} has sha256"
        f" {actual}, expected (pinned) {reviewed}; refusing to load it (the file changed, or the pin is"
        " wrong)"
    )
    assert not marker.exists()


def test_the_stages_run_in_a_limited_child(run_module, models_dir: Path, tmp_path: Path) -> None:
    import time

    slow = tmp_path / "slow.pkl"
    slow.write_bytes(pickle.dumps(SleepsAtLoad()))
    stages = [{"name": "slow", "artifact": str(slow), "format": "pickle", "method": "predict"}]
    started = time.monotonic()
    result = run_module("pipeline_reference", {"stages": stages, "instances": [[1.0]], "timeout": 2})
    assert result["failed"] is True
    assert result["msg"] == (
        "cannot compute reference predictions: loading and running the stages: stopped after the time limit"
        " of 2 s (mlpacker_inspect_timeout_s)"
    )
    assert time.monotonic() - started < 50


class SleepsAtLoad:
    def __reduce__(self):
        import time

        return (time.sleep, (60,))
