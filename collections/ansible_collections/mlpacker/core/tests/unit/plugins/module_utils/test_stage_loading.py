# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Loading stages and running chains on the controller, compared with scikit-learn run directly."""

from __future__ import annotations

import math
import operator
from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io
from ansible_collections.mlpacker.core.plugins.module_utils.json_safe import to_json_safe
from ansible_collections.mlpacker.core.plugins.module_utils.stage_loading import (
    MissingLibraryError,
    StageError,
    import_library,
    load_function,
    load_stage,
    run_chain,
)
from sklearn.preprocessing import FunctionTransformer


def test_split_chain_equals_the_fitted_models(models_dir: Path, iris_rows: list[list[float]]) -> None:
    stages = [
        {
            "name": "scale",
            "artifact": str(models_dir / "scaler.joblib"),
            "format": "joblib",
            "method": "transform",
        },
        {
            "name": "classify",
            "artifact": str(models_dir / "classifier.pkl"),
            "format": "pickle",
            "method": "predict",
        },
    ]
    scaler = joblib.load(models_dir / "scaler.joblib")
    classifier = joblib.load(models_dir / "classifier.pkl")
    expected = classifier.predict(scaler.transform(np.asarray(iris_rows)))
    assert to_json_safe(run_chain(stages, iris_rows)) == expected.tolist()


def test_joblib_dump_named_pkl_needs_format_joblib(models_dir: Path, iris_rows: list[list[float]]) -> None:
    # The runtime reads .pkl with pickle, so the controller refuses it too, and says what to do.
    dumped_by_joblib = str(models_dir / "classifier-joblib.pkl")
    with pytest.raises(StageError, match="if it was written by joblib.dump, set format: joblib"):
        load_stage({"name": "j", "artifact": dumped_by_joblib})
    loaded = load_stage({"name": "j", "artifact": dumped_by_joblib, "format": "joblib"})
    plain = load_stage({"name": "p", "artifact": str(models_dir / "classifier.pkl")})
    rows = np.asarray(iris_rows)
    assert plain.predict(rows).tolist() == loaded.predict(rows).tolist()


def test_default_methods_transform_then_predict(models_dir: Path, iris_rows: list[list[float]]) -> None:
    stages = [
        {"artifact": str(models_dir / "scaler.joblib")},
        {"artifact": str(models_dir / "classifier.pkl")},
    ]
    explicit = [dict(stages[0], method="transform"), dict(stages[1], method="predict")]
    assert to_json_safe(run_chain(stages, iris_rows)) == to_json_safe(run_chain(explicit, iris_rows))


@pytest.mark.parametrize(
    ("artifact", "method"),
    [
        ("pipeline.joblib", "predict"),
        ("pipeline.joblib", "predict_proba"),
        ("pipeline.skops", "predict"),
        ("pipeline.skops", "decision_function"),
    ],
)
def test_formats_give_the_same_outputs_as_sklearn(
    models_dir: Path, iris_rows: list[list[float]], artifact: str, method: str
) -> None:
    pipeline = joblib.load(models_dir / "pipeline.joblib")
    expected = getattr(pipeline, method)(np.asarray(iris_rows))
    got = run_chain([{"name": "m", "artifact": str(models_dir / artifact), "method": method}], iris_rows)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-9)


@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_onnx_outputs_match_sklearn(models_dir: Path, iris_rows: list[list[float]], method: str) -> None:
    pipeline = joblib.load(models_dir / "pipeline.joblib")
    expected = getattr(pipeline, method)(np.asarray(iris_rows, dtype=np.float32))
    got = to_json_safe(
        run_chain([{"name": "m", "artifact": str(models_dir / "pipeline.onnx"), "method": method}], iris_rows)
    )
    np.testing.assert_allclose(np.asarray(got, dtype=float), expected, atol=1e-4)


def test_function_stage_then_model(models_dir: Path, iris_rows: list[list[float]]) -> None:
    stages = [
        {"name": "double", "function": "features.scaling:double", "format": "function", "method": "call"},
        {"name": "classify", "artifact": str(models_dir / "pipeline.joblib"), "method": "predict"},
    ]
    pipeline = joblib.load(models_dir / "pipeline.joblib")
    expected = pipeline.predict(np.asarray(iris_rows) * 2.0)
    assert to_json_safe(run_chain(stages, iris_rows, code_dir=str(models_dir / "code"))) == expected.tolist()


def test_skops_untrusted_types_are_refused_until_trusted(tmp_path: Path) -> None:
    transformer = FunctionTransformer(math.fabs).fit(np.ones((2, 2)))
    path = tmp_path / "fabs.skops"
    skops.io.dump(transformer, path)
    with pytest.raises(StageError, match=r"contains types that are not trusted: math\.fabs"):
        load_stage({"name": "t", "artifact": str(path), "format": "skops"})
    loaded = load_stage(
        {"name": "t", "artifact": str(path), "format": "skops", "trusted_types": ["math.fabs"]}
    )
    assert loaded.func is math.fabs
    other = FunctionTransformer(operator.neg).fit(np.ones((2, 2)))
    skops.io.dump(other, tmp_path / "neg.skops")
    with pytest.raises(StageError, match="_operator.neg"):
        load_stage({"name": "t", "artifact": str(tmp_path / "neg.skops"), "trusted_types": ["math.fabs"]})


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("features.scaling", "must look like 'package.module:callable'"),
        ("features.nothere:double", "cannot import module 'features.nothere'"),
        ("features.scaling:triple", "'features.scaling' has no callable 'triple'"),
        ("features.scaling:np", "'features.scaling' has no callable 'np'"),
    ],
)
def test_function_reference_errors(models_dir: Path, reference: str, message: str) -> None:
    with pytest.raises(StageError, match=message):
        load_function(reference, str(models_dir / "code"))


def test_function_module_that_fails_to_import(tmp_path: Path) -> None:
    (tmp_path / "broken_stage_module.py").write_text("def f(:\n")
    with pytest.raises(StageError, match="cannot import module 'broken_stage_module'.*SyntaxError"):
        load_function("broken_stage_module:f", str(tmp_path))


def test_stage_errors_name_the_stage(models_dir: Path, tmp_path: Path) -> None:
    stages = [{"name": "classify", "artifact": str(models_dir / "pipeline.joblib"), "method": "predict"}]
    with pytest.raises(StageError, match=r"stage 'classify' \(predict\) failed: ValueError: .*features"):
        run_chain(stages, [[1.0, 2.0, 3.0]])
    with pytest.raises(StageError, match=r"the Pipeline object has no method 'transform'"):
        run_chain([dict(stages[0], method="transform")], [[1.0, 2.0, 3.0, 4.0]])
    (tmp_path / "empty.joblib").write_bytes(b"")
    with pytest.raises(StageError, match=r"stage 'e': cannot load .*empty.joblib as joblib: EOFError"):
        load_stage({"name": "e", "artifact": str(tmp_path / "empty.joblib")})
    with pytest.raises(StageError, match="artifact .*missing.onnx does not exist"):
        load_stage({"name": "m", "artifact": str(tmp_path / "missing.onnx")})
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(StageError, match="cannot tell the format"):
        load_stage({"name": "m", "artifact": str(tmp_path / "model.bin")})


def test_missing_library_is_named() -> None:
    with pytest.raises(
        MissingLibraryError, match="the Python library 'no-such-lib' is needed for loading x.bin"
    ):
        import_library("mlpacker_no_such_module", "no-such-lib", "loading x.bin")
