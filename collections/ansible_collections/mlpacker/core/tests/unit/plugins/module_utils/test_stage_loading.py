# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The controller loads and runs stages with the stage runtime's own code (module_utils/stage_loading.py).

The parity tests at the end run the same artifacts and rows through the controller's path (the real
pipeline_reference module under ``ansible localhost``) and through a service's path (the runtime's REST app
built from the runtime configuration the deploy writes) for every format, method and output type, and
require equal answers.
"""

from __future__ import annotations

import math
import operator
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io
from ansible_collections.mlpacker.core.plugins.module_utils.artifacts import collect_versions, sha256_file
from ansible_collections.mlpacker.core.plugins.module_utils.stage_loading import (
    MissingLibraryError,
    RuntimeSourceError,
    StageError,
    import_library,
    import_runtime,
    load_chain,
    load_object,
    predict,
)
from ansible_collections.mlpacker.core.plugins.module_utils.stage_loading import (
    service_config as runtime_service_config,
)
from sklearn.preprocessing import FunctionTransformer

RUNTIME_SOURCE = str(Path(__file__).resolve().parents[4] / "runtime")


@pytest.fixture(scope="module")
def runtime():
    return import_runtime(RUNTIME_SOURCE)


def service_config(runtime, stages: list[dict[str, Any]], code_dir: str | None = None) -> dict[str, Any]:
    """The controller's config with each existing artifact's sha256, as artifact_info and pipeline_reference
    pass it (the runtime loads no artifact without one)."""
    with_digests = [
        dict(stage, sha256=sha256_file(stage["artifact"]))
        if stage.get("artifact") and Path(stage["artifact"]).is_file() and "sha256" not in stage
        else stage
        for stage in stages
    ]
    return runtime_service_config(runtime, with_digests, code_dir)


def test_an_artifact_without_a_digest_is_not_loaded(runtime, models_dir: Path) -> None:
    stage = {"name": "scale", "artifact": str(models_dir / "scaler.joblib")}
    with pytest.raises(StageError, match=r"stages\[0\]\.sha256: no sha256 recorded for .*scaler\.joblib"):
        load_object(runtime, runtime_service_config(runtime, [stage]))


def run_on_controller(
    runtime, stages: list[dict[str, Any]], instances: Any, code_dir: str | None = None
) -> Any:
    return predict(runtime, load_chain(runtime, service_config(runtime, stages, code_dir)), instances)


def test_split_chain_equals_the_fitted_models(
    runtime, models_dir: Path, iris_rows: list[list[float]]
) -> None:
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
    assert run_on_controller(runtime, stages, iris_rows) == expected.tolist()


def test_default_format_and_methods_are_the_runtime_s(runtime, models_dir: Path) -> None:
    config = service_config(
        runtime,
        [{"artifact": str(models_dir / "scaler.joblib")}, {"artifact": str(models_dir / "classifier.pkl")}],
    )
    assert [(stage["name"], stage["format"], stage["method"]) for stage in config["stages"]] == [
        ("stages[0]", "joblib", "transform"),
        ("stages[1]", "pickle", "predict"),
    ]


def test_joblib_dump_named_pkl_needs_format_joblib(
    runtime, models_dir: Path, iris_rows: list[list[float]]
) -> None:
    # The runtime reads .pkl with pickle, so the controller refuses it too, and says what to do.
    dumped_by_joblib = {"name": "j", "artifact": str(models_dir / "classifier-joblib.pkl")}
    with pytest.raises(StageError, match="if it was written by joblib.dump, set format: joblib"):
        load_chain(runtime, service_config(runtime, [dumped_by_joblib]))
    as_joblib = run_on_controller(runtime, [dict(dumped_by_joblib, format="joblib")], iris_rows)
    assert as_joblib == run_on_controller(
        runtime, [{"artifact": str(models_dir / "classifier.pkl")}], iris_rows
    )


def test_skops_untrusted_types_are_refused_until_trusted(runtime, tmp_path: Path) -> None:
    path = tmp_path / "fabs.skops"
    skops.io.dump(FunctionTransformer(math.fabs).fit(np.ones((2, 2))), path)
    stage = {"name": "t", "artifact": str(path), "method": "transform"}
    with pytest.raises(
        StageError, match=r"stages\[0\]\.trusted_types: .* contains untrusted types \['math.fabs'\]"
    ):
        load_object(runtime, service_config(runtime, [stage]))
    loaded = load_object(runtime, service_config(runtime, [dict(stage, trusted_types=["math.fabs"])]))
    assert loaded.func is math.fabs
    skops.io.dump(FunctionTransformer(operator.neg).fit(np.ones((2, 2))), tmp_path / "neg.skops")
    other = dict(stage, artifact=str(tmp_path / "neg.skops"), trusted_types=["math.fabs"])
    with pytest.raises(StageError, match="_operator.neg"):
        load_object(runtime, service_config(runtime, [other]))


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("features.scaling", r"stages\[0\]\.function: function stages need 'package.module:callable'"),
        (
            "features.nothere:double",
            r"stages\[0\]\.function: module 'features.nothere' is not a file under code_dir",
        ),
        ("features.scaling:triple", r"module 'features.scaling' has no attribute 'triple'"),
        ("features.scaling:np", r"stages\[0\]\.method: a module object is not callable"),
    ],
)
def test_function_reference_errors(runtime, models_dir: Path, reference: str, message: str) -> None:
    stages = [{"name": "f", "function": reference, "format": "function"}]
    with pytest.raises(StageError, match=message):
        load_chain(runtime, service_config(runtime, stages, str(models_dir / "code")))


def test_a_stage_may_bring_its_own_code_dir(runtime, models_dir: Path, tmp_path: Path) -> None:
    stages = [{"name": "f", "function": "features.scaling:double", "code_dir": str(models_dir / "code")}]
    assert run_on_controller(runtime, stages, [[1.0, 2.5]]) == [[2.0, 5.0]]
    with pytest.raises(StageError, match=r"stages\[0\]\.code_dir: directory not found: .*/absent"):
        service_config(runtime, [dict(stages[0], code_dir=str(tmp_path / "absent"))])


def test_errors_name_the_stage_or_the_field(runtime, models_dir: Path, tmp_path: Path) -> None:
    stages = [{"name": "classify", "artifact": str(models_dir / "pipeline.joblib"), "method": "predict"}]
    with pytest.raises(StageError, match="the instances do not fit the first stage: .*expected 4 features"):
        run_on_controller(runtime, stages, [[1.0, 2.0, 3.0]])
    function_first = [{"name": "double", "function": "features.scaling:double"}, *stages]
    with pytest.raises(StageError, match=r"stage 'classify' \(predict\) failed: ValueError: .*features"):
        run_on_controller(runtime, function_first, [[1.0, 2.0, 3.0]], str(models_dir / "code"))
    with pytest.raises(StageError, match=r"stages\[0\]\.method: a Pipeline object has no method 'transform'"):
        load_chain(runtime, service_config(runtime, [dict(stages[0], method="transform")]))
    (tmp_path / "empty.joblib").write_bytes(b"")
    with pytest.raises(StageError, match=r"stages\[0\]\.artifact: cannot load .*empty.joblib with joblib"):
        load_object(
            runtime, service_config(runtime, [{"name": "e", "artifact": str(tmp_path / "empty.joblib")}])
        )
    with pytest.raises(StageError, match=r"stages\[0\]\.artifact: file not found: .*missing.onnx"):
        load_object(
            runtime, service_config(runtime, [{"name": "m", "artifact": str(tmp_path / "missing.onnx")}])
        )
    with pytest.raises(StageError, match=r"stages\[0\]\.format: not given and not inferable"):
        service_config(runtime, [{"name": "m", "artifact": str(tmp_path / "model.bin")}])


def test_missing_library_is_named() -> None:
    with pytest.raises(
        MissingLibraryError, match="the Python library 'no-such-lib' is needed for loading x.bin"
    ):
        import_library("mlpacker_no_such_module", "no-such-lib", "loading x.bin")


def test_runtime_source_must_hold_the_runtime(tmp_path: Path) -> None:
    with pytest.raises(RuntimeSourceError, match=r"runtime_source: .* holds no mlpacker_runtime package"):
        import_runtime(str(tmp_path))
    # Another tree cannot replace the runtime this Python already imported: that would mix two versions.
    other = tmp_path / "mlpacker_runtime"
    other.mkdir()
    (other / "__init__.py").write_text("")
    with pytest.raises(RuntimeSourceError, match=r"mlpacker_runtime is already imported from .*, not from"):
        import_runtime(str(tmp_path))


def test_a_runtime_that_cannot_be_imported_is_named(run_module, models_dir: Path, tmp_path: Path) -> None:
    package = tmp_path / "mlpacker_runtime"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('half-copied runtime')\n")
    stages = [{"name": "m", "artifact": str(models_dir / "pipeline.joblib")}]
    for module, args in (
        ("pipeline_reference", {"stages": stages, "runtime_source": str(tmp_path)}),
        ("artifact_info", {"path": stages[0]["artifact"], "runtime_source": str(tmp_path)}),
    ):
        result = run_module(module, args)
        assert result["failed"] is True
        assert result["msg"] == (
            f"runtime_source: cannot import mlpacker_runtime from {tmp_path}:"
            " RuntimeError: half-copied runtime"
        )


# ------------------------------------------------------------------ parity: the controller and a service

PARITY_CODE = """
import numpy as np


def double(batch):
    return np.asarray(batch, dtype=float) * 2.0


def with_gaps(batch):
    out = np.asarray(batch, dtype=float).copy()
    out[:, 0] = np.nan
    out[:, 1] = np.inf
    return out


def size_labels(batch):
    return np.asarray(["small" if row[2] < 3 else "large" for row in batch], dtype=object)


def totals(batch):
    import pandas as pd

    return pd.Series(np.asarray(batch, dtype=float).sum(axis=1), name="total")
"""


@pytest.fixture(scope="session")
def parity_dir(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models whose outputs are the other types a stage can return: strings, sparse matrices, DataFrames."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import KBinsDiscretizer, StandardScaler

    folder = tmp_path_factory.mktemp("parity")
    iris = load_iris()
    features, names = iris.data, iris.target_names[iris.target]
    scaled = joblib.load(models_dir / "scaler.joblib").transform(features)
    named = LogisticRegression(max_iter=500).fit(scaled, names)  # predicts strings
    joblib.dump(named, folder / "named.joblib")
    onnx_model = to_onnx(named, scaled[:1].astype("float32"), target_opset=17)
    (folder / "named.onnx").write_bytes(onnx_model.SerializeToString())
    # transforms into a scipy sparse matrix (one-hot bins)
    encoder = KBinsDiscretizer(n_bins=3, encode="onehot", strategy="uniform").fit(features)
    joblib.dump(encoder, folder / "onehot.joblib")
    on_sparse = LogisticRegression(max_iter=500).fit(encoder.transform(features), iris.target)
    with open(folder / "on_sparse.pkl", "wb") as handle:
        pickle.dump(on_sparse, handle)
    try:
        import pandas  # noqa: F401 - only to know whether DataFrame outputs can be made here
    except ImportError:
        pass
    else:
        frames = StandardScaler().set_output(transform="pandas").fit(features)  # transforms into a DataFrame
        joblib.dump(frames, folder / "frames.joblib")
    package = folder / "code" / "parity_functions"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "ops.py").write_text(PARITY_CODE)
    return folder


def stage(name: str, artifact: str | None = None, method: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "artifact": artifact, "method": method, **extra}


def fn(name: str, function: str) -> dict[str, Any]:
    return {
        "name": name,
        "function": "parity_functions.ops:" + function,
        "format": "function",
        "method": "call",
    }


# (id, stages with {models} and {parity} in artifact paths, what the output must be, whether it needs pandas)
PARITY_CASES = [
    ("joblib-predict-int", [stage("m", "{models}/pipeline.joblib", "predict")], "ints", False),
    ("joblib-predict_proba", [stage("m", "{models}/pipeline.joblib", "predict_proba")], "floats", False),
    (
        "pickle-decision_function",
        [
            stage("s", "{models}/scaler.joblib", "transform"),
            stage("c", "{models}/classifier.pkl", "decision_function"),
        ],
        "floats",
        False,
    ),
    ("skops-predict_proba", [stage("m", "{models}/pipeline.skops", "predict_proba")], "floats", False),
    (
        "skops-decision_function",
        [stage("m", "{models}/pipeline.skops", "decision_function")],
        "floats",
        False,
    ),
    ("onnx-predict", [stage("m", "{models}/pipeline.onnx", "predict")], "ints", False),
    ("onnx-predict_proba-zipmap", [stage("m", "{models}/pipeline.onnx", "predict_proba")], "floats", False),
    ("function-call", [fn("f", "double")], "floats", False),
    ("function-nan-and-inf", [fn("f", "with_gaps")], "gaps", False),
    ("function-object-strings", [fn("f", "size_labels")], "strings", False),
    (
        "joblib-string-labels",
        [stage("s", "{models}/scaler.joblib", "transform"), stage("c", "{parity}/named.joblib", "predict")],
        "strings",
        False,
    ),
    (
        "onnx-string-labels",
        [stage("s", "{models}/scaler.joblib", "transform"), stage("c", "{parity}/named.onnx", "predict")],
        "strings",
        False,
    ),
    ("sparse-transform", [stage("o", "{parity}/onehot.joblib", "transform")], "floats", False),
    (
        "sparse-into-a-model",
        [
            stage("o", "{parity}/onehot.joblib", "transform"),
            stage("c", "{parity}/on_sparse.pkl", "predict_proba"),
        ],
        "floats",
        False,
    ),
    ("pandas-dataframe", [stage("s", "{parity}/frames.joblib", "transform")], "floats", True),
    ("pandas-series", [fn("f", "totals")], "floats", True),
    (
        "pandas-into-a-model",
        [stage("s", "{parity}/frames.joblib", "transform"), stage("c", "{models}/classifier.pkl", "predict")],
        "ints",
        True,
    ),
]


def resolve(stages: list[dict[str, Any]], models_dir: Path, parity_dir: Path) -> list[dict[str, Any]]:
    resolved = []
    for entry in stages:
        artifact = entry.get("artifact")
        if artifact:
            artifact = artifact.format(models=models_dir, parity=parity_dir)
        resolved.append(
            {key: value for key, value in dict(entry, artifact=artifact).items() if value is not None}
        )
    return resolved


def answer_of_a_service(stages: list[dict[str, Any]], code_dir: str, instances: list[Any]) -> Any:
    """POST /predict to the runtime's REST app, configured as the deploy configures a service of these stages
    (with the recorded sha256 and library versions the hosts check)."""
    from mlpacker_runtime.config import build_config
    from mlpacker_runtime.rest.app import create_app

    configured = []
    for entry in stages:
        artifact_format = entry.get("format") or Path(entry["artifact"]).suffix.lstrip(".").replace(
            "pkl", "pickle"
        )
        configured.append(
            dict(
                entry,
                sha256=sha256_file(entry["artifact"]) if entry.get("artifact") else None,
                versions=collect_versions(artifact_format),
            )
        )
    raw = {"pipeline": "parity", "service": "parity", "code_dir": code_dir, "stages": configured}
    response = (
        create_app(build_config(raw, environ={}))
        .test_client()
        .post("/predict", json={"instances": instances})
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()["predictions"]


def flat(value: Any) -> list[Any]:
    return [item for row in value for item in flat(row)] if isinstance(value, list) else [value]


@pytest.mark.parametrize(("stages", "kind", "needs_pandas"), [case[1:] for case in PARITY_CASES],
                         ids=[case[0] for case in PARITY_CASES])  # fmt: skip
def test_reference_equals_the_service_answer(
    run_module,
    models_dir: Path,
    parity_dir: Path,
    iris_rows: list[list[float]],
    stages: list[dict[str, Any]],
    kind: str,
    needs_pandas: bool,
) -> None:
    if needs_pandas:
        pytest.importorskip("pandas")
    stages = resolve(stages, models_dir, parity_dir)
    code_dir = str(parity_dir / "code")
    service = answer_of_a_service(stages, code_dir, iris_rows)
    reference = run_module(
        "pipeline_reference", {"stages": stages, "instances": iris_rows, "code_dir": code_dir}
    )
    assert reference.get("failed") is not True, reference
    assert reference["predictions"] == service
    # and the answer is of the kind the stages return (so two equally broken conversions cannot pass)
    values = flat(service)
    assert len(service) == len(iris_rows) and values
    expected_types = {"ints": (int,), "floats": (float,), "strings": (str,), "gaps": (float, type(None))}[
        kind
    ]
    assert all(isinstance(value, expected_types) and not isinstance(value, bool) for value in values), service
    if kind == "gaps":
        assert [row[:2] for row in service] == [[None, None]] * len(iris_rows)
        assert [row[2:] for row in service] == [row[2:] for row in iris_rows]


def test_generated_rows_fit_what_the_service_checks(run_module, models_dir: Path, parity_dir: Path) -> None:
    # No rows given: the reference generates them from the feature count the service checks requests against.
    stages = resolve(
        [
            stage("o", "{parity}/onehot.joblib", "transform"),
            stage("c", "{parity}/on_sparse.pkl", "predict_proba"),
        ],
        models_dir,
        parity_dir,
    )
    reference = run_module("pipeline_reference", {"stages": stages, "n_samples": 3, "seed": 1})
    assert reference.get("failed") is not True, reference
    assert [len(row) for row in reference["instances"]] == [4, 4, 4]
    assert reference["predictions"] == answer_of_a_service(
        stages, str(parity_dir / "code"), reference["instances"]
    )
