"""Stage loaders: joblib, pickle, skops, ONNX, functions; sha256 and version checks; chain equality."""

from __future__ import annotations

import logging
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlpacker_runtime.chain import Chain, InputError, StageError
from mlpacker_runtime.config import build_config
from mlpacker_runtime.jsonsafe import to_jsonsafe
from mlpacker_runtime.loading import StageLoadError, load_stages
from runtime_helpers import IrisModels, base_config, function_stage, recorded_versions, sha256_of


def load(raw: dict[str, Any]) -> Chain:
    return Chain(load_stages(build_config(raw, environ={})))


def test_three_joblib_stages_equal_the_sklearn_pipeline(iris_models: IrisModels) -> None:
    chain = load(base_config(iris_models.three_stages()))
    rows = iris_models.X[::7]
    assert chain.predict(rows.tolist()) == iris_models.expected(rows)
    assert chain.expected_features == 4


def test_whole_pipeline_predict_proba(iris_models: IrisModels) -> None:
    chain = load(base_config([iris_models.stage("all", "pipeline", "predict_proba")]))
    rows = iris_models.X[:3]
    result = chain.predict(rows.tolist())
    np.testing.assert_allclose(result, iris_models.pipeline.predict_proba(rows))


def test_pickle_stage(tmp_path: Path, iris_models: IrisModels) -> None:
    path = tmp_path / "pipe.pkl"
    path.write_bytes(pickle.dumps(iris_models.pipeline))
    chain = load(base_config([{"name": "all", "artifact": str(path), "sha256": sha256_of(path)}]))
    assert chain.stages[0].format == "pickle"
    assert chain.predict(iris_models.X[:5].tolist()) == iris_models.expected(iris_models.X[:5])


def test_missing_method_is_a_load_error(iris_models: IrisModels) -> None:
    with pytest.raises(
        StageLoadError, match=r"stages\[0\]\.method: a StandardScaler object has no method 'predict'"
    ):
        load(base_config([iris_models.stage("scale", "scaler", "predict")]))


def test_sha256_mismatch_names_both_digests(tmp_path: Path, iris_models: IrisModels) -> None:
    stage = iris_models.stage("scale", "scaler", "transform")
    actual = stage["sha256"]
    stage["sha256"] = "f" * 64
    with pytest.raises(StageLoadError) as caught:
        load(base_config([stage]))
    message = str(caught.value)
    assert message.startswith("stages[0].sha256: artifact ")
    assert f"has sha256 {actual}, recorded {'f' * 64}" in message


def test_version_mismatch_fails_naming_both_versions(iris_models: IrisModels) -> None:
    stage = iris_models.stage("scale", "scaler", "transform")
    stage["versions"] = {**recorded_versions(), "scikit-learn": "0.0.1"}
    with pytest.raises(StageLoadError) as caught:
        load(base_config([stage]))
    installed = recorded_versions()["scikit-learn"]
    assert (
        "stages[0].versions.scikit-learn: packaged with scikit-learn 0.0.1, "
        f"installed scikit-learn {installed}" in str(caught.value)
    )
    assert "allow_version_mismatch" in str(caught.value)


def test_version_mismatch_allowed_is_a_warning(
    iris_models: IrisModels, caplog: pytest.LogCaptureFixture
) -> None:
    stage = iris_models.stage("scale", "scaler", "transform")
    stage["versions"] = {"numpy": "1.0.0", "not-a-real-dist-xyz": "1.0"}
    raw = base_config([stage], allow_version_mismatch=True)
    with caplog.at_level(logging.WARNING, logger="mlpacker_runtime.loading"):
        chain = load(raw)
    assert chain.predict(iris_models.X[:1].tolist())
    text = caplog.text
    assert f"packaged with numpy 1.0.0, installed numpy {np.__version__}" in text
    assert "installed not-a-real-dist-xyz (not installed)" in text


def test_skops_stage_and_trusted_types(
    tmp_path: Path, iris_models: IrisModels, code_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "pipe.skops"
    sio.dump(iris_models.pipeline, path)
    stage = {"name": "all", "artifact": str(path), "sha256": sha256_of(path), "method": "predict"}
    chain = load(base_config([stage]))
    assert chain.stages[0].format == "skops"
    assert chain.predict(iris_models.X[::10].tolist()) == iris_models.expected(iris_models.X[::10])

    # A transformer holding a function from the shipped code: skops refuses it until it is trusted.
    monkeypatch.syspath_prepend(str(code_dir))
    import mlfuncs.ops

    custom = tmp_path / "custom.skops"
    sio.dump(FunctionTransformer(func=mlfuncs.ops.double).fit(iris_models.X), custom)
    stage = {"name": "custom", "artifact": str(custom), "sha256": sha256_of(custom), "method": "transform"}
    with pytest.raises(StageLoadError) as caught:
        load(base_config([stage], code_dir=str(code_dir)))
    assert str(caught.value) == (
        f"stages[0].trusted_types: {custom} contains untrusted types ['mlfuncs.ops.double']; "
        "review them and add them to trusted_types to load this file"
    )
    stage["trusted_types"] = ["mlfuncs.ops.double"]
    chain = load(base_config([stage], code_dir=str(code_dir)))
    assert chain.predict([[1, 2, 3, 4]]) == [[2.0, 4.0, 6.0, 8.0]]


def test_onnx_stage_predict_and_proba(tmp_path: Path, iris_models: IrisModels) -> None:
    from skl2onnx import to_onnx

    model = to_onnx(iris_models.pipeline, iris_models.X[:1].astype(np.float32))
    path = tmp_path / "pipe.onnx"
    path.write_bytes(model.SerializeToString())
    rows = iris_models.X[::5]
    chain = load(
        base_config([{"name": "all", "artifact": str(path), "sha256": sha256_of(path), "method": "predict"}])
    )
    assert chain.expected_features == 4
    assert chain.predict(rows.tolist()) == iris_models.expected(rows)
    proba = load(
        base_config(
            [{"name": "all", "artifact": str(path), "sha256": sha256_of(path), "method": "predict_proba"}]
        )
    )
    np.testing.assert_allclose(
        proba.predict(rows.tolist()), iris_models.pipeline.predict_proba(rows), atol=1e-4
    )


def test_function_stages_chain_with_model(code_dir: Path, iris_models: IrisModels) -> None:
    raw = base_config(
        [
            function_stage("double", "mlfuncs.ops:double"),
            function_stage("label", "mlfuncs.ops:first_column_label"),
        ],
        code_dir=str(code_dir),
    )
    chain = load(raw)
    assert chain.predict([[1.0, 0.0], [3.0, 1.0]]) == ["small", "big"]


def test_function_import_errors_name_the_field(code_dir: Path) -> None:
    with pytest.raises(
        StageLoadError, match=r"stages\[0\]\.function: module 'mlfuncs.ops' has no attribute 'nope'"
    ):
        load(base_config([function_stage("f", "mlfuncs.ops:nope")], code_dir=str(code_dir)))
    with pytest.raises(
        StageLoadError, match=r"stages\[0\]\.function: module 'mlfuncs.absent' is not a file under code_dir"
    ):
        load(base_config([function_stage("f", "mlfuncs.absent:f")], code_dir=str(code_dir)))
    (code_dir / "mlfuncs" / "broken.py").write_text("raise RuntimeError('broken on import')\n")
    with pytest.raises(StageLoadError, match=r"stages\[0\]\.function: cannot import module 'mlfuncs.broken'"):
        load(base_config([function_stage("f", "mlfuncs.broken:f")], code_dir=str(code_dir)))


@pytest.mark.parametrize(
    "ref",
    [
        "subprocess:check_output",  # standard library, already imported
        "os:system",
        "json.decoder:JSONDecoder",  # a standard library package's module
        "numpy:load",  # site-packages
        "mlpacker_runtime.loading:load_object",  # the runtime itself
    ],
)
def test_function_outside_code_dir_is_refused(tmp_path: Path, ref: str) -> None:
    empty = tmp_path / "empty-code"
    empty.mkdir()
    with pytest.raises(StageLoadError) as caught:
        load(base_config([function_stage("steal", ref)], code_dir=str(empty)))
    module_name = ref.partition(":")[0]
    assert str(caught.value).startswith(
        f"stages[0].function: module {module_name!r} is not a file under code_dir {empty};"
    )


def test_code_dir_file_named_like_an_imported_module_is_refused(tmp_path: Path) -> None:
    # code_dir/subprocess.py exists, but `import subprocess` answers the standard library's (sys.modules).
    code = tmp_path / "code"
    code.mkdir()
    (code / "subprocess.py").write_text("def check_output(rows):\n    return rows\n")
    with pytest.raises(StageLoadError, match=r"module 'subprocess' is not a file under code_dir"):
        load(base_config([function_stage("steal", "subprocess:check_output")], code_dir=str(code)))


def test_function_module_symlinked_out_of_code_dir_is_refused(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    outside = tmp_path / "outside_mod.py"
    outside.write_text("def f(rows):\n    return rows\n")
    (code / "linked_mod.py").symlink_to(outside)
    with pytest.raises(StageLoadError, match=r"module 'linked_mod' is not a file under code_dir"):
        load(base_config([function_stage("f", "linked_mod:f")], code_dir=str(code)))


def test_artifact_without_recorded_sha256_is_not_loaded(iris_models: IrisModels) -> None:
    stage = iris_models.stage("scale", "scaler", "transform")
    del stage["sha256"]
    with pytest.raises(StageLoadError) as caught:
        load(base_config([stage]))
    assert str(caught.value).startswith(f"stages[0].sha256: no sha256 recorded for {stage['artifact']};")


def test_stage_error_names_the_stage(code_dir: Path) -> None:
    chain = load(base_config([function_stage("explode", "mlfuncs.ops:boom")], code_dir=str(code_dir)))
    with pytest.raises(StageError, match="stage 'explode' failed: ValueError: boom"):
        chain.predict([[1.0]])


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([[1, 2, 3]], "instances[0]: expected 4 features, received 3"),
        ([1, 2, 3, 4], "instances[0]: expected a row of 4 features, received a int"),
        ([], "'instances' is empty"),
        ({"a": 1}, "'instances' must be a list of rows, received dict"),
        ([[1, 2, 3, [4]]], "instances[0][3]: expected a value, received a list ([4])"),
    ],
)
def test_input_shape_errors(iris_models: IrisModels, instances: Any, message: str) -> None:
    chain = load(base_config([iris_models.stage("scale", "scaler", "transform")]))
    with pytest.raises(InputError) as caught:
        chain.predict(instances)
    assert message in str(caught.value)


def test_jsonsafe_conversions() -> None:
    from scipy.sparse import csr_matrix

    assert to_jsonsafe(csr_matrix([[0, 1.5], [2, 0]])) == [[0.0, 1.5], [2.0, 0.0]]
    assert to_jsonsafe(np.array([1.5, np.nan])) == [1.5, None]
    assert to_jsonsafe(np.array([1, "a"], dtype=object)) == [1, "a"]
    assert to_jsonsafe(np.array(["setosa", "virginica"])) == ["setosa", "virginica"]
    assert to_jsonsafe({"k": np.float32(0.5), "n": np.int64(3), "inf": np.inf}) == {
        "k": 0.5,
        "n": 3,
        "inf": None,
    }
    assert to_jsonsafe(np.array([[1, 2]], dtype=np.int8)) == [[1, 2]]


def test_onnx_without_onnxruntime_is_a_clear_error(
    tmp_path: Path, iris_models: IrisModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not used: the import fails first")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(StageLoadError) as caught:
        load(base_config([{"name": "m", "artifact": str(path), "sha256": sha256_of(path)}]))
    assert str(caught.value) == (
        "stages[0].format: 'onnx' needs onnxruntime, which is not installed "
        "(pip install 'mlpacker-runtime[onnx]')"
    )
