# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""mlpacker.core.artifact_info through a real Ansible run, on models trained by the test session."""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
from pathlib import Path

import numpy as np
import pytest
import skops.io
from sklearn.preprocessing import FunctionTransformer


def test_joblib_pipeline(run_module, models_dir: Path) -> None:
    path = models_dir / "pipeline.joblib"
    result = run_module("artifact_info", {"path": str(path)})
    assert result.get("failed") is not True, result
    assert result["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result["size"] == path.stat().st_size
    assert result["format"] == "joblib"
    assert result["object_type"] == "sklearn.pipeline.Pipeline"
    assert (result["library"], result["library_version"]) == (
        "scikit-learn",
        importlib.metadata.version("scikit-learn"),
    )
    assert result["versions"]["scikit-learn"] == importlib.metadata.version("scikit-learn")
    assert result["versions"]["numpy"] == importlib.metadata.version("numpy")
    assert result["n_features_in"] == 4
    assert [step["name"] for step in result["steps"]] == ["scale", "clf"]
    assert result["methods"] == ["predict", "predict_proba", "decision_function"]
    assert result["untrusted_types"] == []


def test_onnx_model(run_module, models_dir: Path) -> None:
    result = run_module("artifact_info", {"path": str(models_dir / "pipeline.onnx")}, check_mode=True)
    assert result.get("failed") is not True, result
    assert (result["format"], result["n_features_in"], result["library"]) == ("onnx", 4, "onnxruntime")
    assert set(result["versions"]) == {"onnxruntime", "numpy"}
    assert result["onnx_inputs"][0]["shape"][1] == 4


def test_skops_untrusted_types(run_module, tmp_path: Path) -> None:
    path = tmp_path / "fabs.skops"
    skops.io.dump(FunctionTransformer(math.fabs).fit(np.ones((2, 2))), path)
    refused = run_module("artifact_info", {"path": str(path)})
    assert refused["failed"] is True
    assert "contains types that are not trusted: math.fabs" in refused["msg"]
    trusted = run_module("artifact_info", {"path": str(path), "trusted_types": ["math.fabs"]})
    assert trusted.get("failed") is not True, trusted
    assert trusted["untrusted_types"] == ["math.fabs"]
    assert trusted["object_type"] == "sklearn.preprocessing.FunctionTransformer"
    assert "skops" in trusted["versions"]


def test_function_stage(run_module, models_dir: Path) -> None:
    args = {"function": "features.scaling:double", "code_dir": str(models_dir / "code")}
    first = run_module("artifact_info", args)
    assert first.get("failed") is not True, first
    assert (first["format"], first["methods"], first["object_type"]) == (
        "function",
        ["call"],
        "features.scaling:double",
    )
    assert len(first["sha256"]) == 64
    assert first["size"] == sum(path.stat().st_size for path in (models_dir / "code").rglob("*.py"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            {"path": "/nonexistent/model.joblib"},
            "path: /nonexistent/model.joblib does not exist or is not a file",
        ),
        ({"function": "features.scaling:double"}, "missing parameter(s) required by 'function': code_dir"),
        (
            {"path": "x.joblib", "function": "a:b", "code_dir": "/"},
            "parameters are mutually exclusive: path|function",
        ),
        ({"path": "EMPTY"}, "cannot load"),
    ],
)
def test_errors(run_module, tmp_path: Path, args: dict[str, str], message: str) -> None:
    if args.get("path") == "EMPTY":
        (tmp_path / "empty.joblib").write_bytes(b"")
        args = {"path": str(tmp_path / "empty.joblib")}
    result = run_module("artifact_info", args)
    assert result["failed"] is True
    assert message in result["msg"], result["msg"]


def test_cache_keeps_what_loading_told_per_content(run_module, models_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "pipeline.joblib"
    path.write_bytes((models_dir / "pipeline.joblib").read_bytes())
    args = {"path": str(path), "cache_dir": str(tmp_path / "cache")}
    first = run_module("artifact_info", args)
    second = run_module("artifact_info", args)
    assert (first["cached"], second["cached"]) == (False, True)
    for result in (first, second):
        result.pop("cached")
        result.pop("invocation", None)
    assert second == first
    # Other content at the same path (another sha256) is loaded, never answered from the old entry.
    path.write_bytes((models_dir / "scaler.joblib").read_bytes())
    third = run_module("artifact_info", args)
    assert (third["cached"], third["object_type"]) == (False, "sklearn.preprocessing.StandardScaler")


def test_cache_entry_that_is_damaged_is_rewritten(run_module, models_dir: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    args = {"path": str(models_dir / "pipeline.joblib"), "cache_dir": str(cache_dir)}
    assert run_module("artifact_info", args)["cached"] is False
    (entry,) = cache_dir.glob("*.json")
    entry.write_text("{not json")
    again = run_module("artifact_info", args)
    assert (again["cached"], again["n_features_in"]) == (False, 4)
    assert run_module("artifact_info", args)["cached"] is True


def test_cache_dir_that_cannot_be_written_only_warns(run_module, models_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_module(
        "artifact_info", {"path": str(models_dir / "pipeline.joblib"), "cache_dir": str(blocker / "c")}
    )
    assert result.get("failed") is not True, result
    assert result["n_features_in"] == 4
    assert any("cache_dir: cannot write" in warning for warning in result.get("warnings", [])), result


class WritesMarker:
    """Unpickling this runs ``open(marker, 'w')``: the code an untrusted pickle runs at load."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class Sleeps:
    def __reduce__(self):
        import time

        return (time.sleep, (60,))


class Allocates:
    def __reduce__(self):
        return (bytearray, (2048 * 1024 * 1024,))


def test_pinned_digest_mismatch_never_loads_the_pickle(run_module, models_dir: Path, tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "ran-at-load"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(WritesMarker(str(marker))))
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    pinned = hashlib.sha256(b"what the user reviewed").hexdigest()
    result = run_module("artifact_info", {"path": str(path), "sha256": pinned.upper()})
    assert result["failed"] is True
    assert result["msg"] == (
        f"sha256: artifact {path} has sha256 {actual}, expected (pinned) {pinned};"
        " refusing to load it (the file changed, or the pin is wrong)"
    )
    assert (result["expected_sha256"], result["sha256"]) == (pinned, actual)
    assert not marker.exists()


def test_cached_facts_do_not_bypass_the_pin(run_module, models_dir: Path, tmp_path: Path) -> None:
    path = models_dir / "pipeline.joblib"
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    args = {"path": str(path), "cache_dir": str(tmp_path / "cache"), "sha256": actual}
    assert run_module("artifact_info", args)["cached"] is False
    assert run_module("artifact_info", args)["cached"] is True
    refused = run_module("artifact_info", dict(args, sha256="0" * 64))
    assert refused["failed"] is True
    assert f"has sha256 {actual}, expected (pinned) {'0' * 64}" in refused["msg"]


@pytest.mark.parametrize(
    ("artifact", "args", "message"),
    [
        (Sleeps(), {"timeout": 2}, "stopped after the time limit of 2 s (mlpacker_inspect_timeout_s)"),
        (Allocates(), {"memory_mb": 1024}, "memory limit of 1024 MiB"),
    ],
)
def test_inspection_child_is_limited(
    run_module, tmp_path: Path, artifact: object, args: dict[str, int], message: str
) -> None:
    import pickle
    import time

    path = tmp_path / "heavy.pkl"
    path.write_bytes(pickle.dumps(artifact))
    started = time.monotonic()
    result = run_module("artifact_info", {"path": str(path), **args})
    assert result["failed"] is True
    assert result["msg"].startswith(f"cannot inspect {path}: inspecting {path}: "), result["msg"]
    assert message in result["msg"], result["msg"]
    assert time.monotonic() - started < 60  # the sleeping pickle was killed, not waited for


def test_load_false_loads_nothing(run_module, tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "ran-at-load"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(WritesMarker(str(marker))))
    result = run_module("artifact_info", {"path": str(path), "load": False})
    assert result.get("failed") is not True, result
    assert (result["loaded"], result["object_type"], result["input_signature"]) == (False, None, None)
    assert result["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "method", "signature"),
    [
        ("pipeline.joblib", None, {"source": "artifact", "columns": [{"name": None, "type": "number"}] * 4}),
        ("pipeline.onnx", None, {"source": "artifact", "columns": [{"name": None, "type": "number"}] * 4}),
    ],
)
def test_input_signature_from_the_artifact(
    run_module, models_dir: Path, name: str, method: str | None, signature: dict
) -> None:
    result = run_module("artifact_info", {"path": str(models_dir / name)})
    assert result.get("failed") is not True, result
    assert result["input_signature"] == signature


@pytest.mark.parametrize(
    ("function", "files"),
    [
        ("subprocess:check_output", {}),
        ("os:system", {"os.py": "def system(rows):\n    return rows\n"}),
        ("numpy:load", {}),
    ],
)
def test_function_outside_code_dir_is_refused(
    run_module, tmp_path: Path, function: str, files: dict[str, str]
) -> None:
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    for name, text in files.items():
        (code_dir / name).write_text(text)
    result = run_module("artifact_info", {"function": function, "code_dir": str(code_dir)})
    assert result["failed"] is True
    module_name = function.partition(":")[0]
    assert f"module {module_name!r} is not a file under code_dir {code_dir}" in result["msg"], result["msg"]
