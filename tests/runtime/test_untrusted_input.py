"""Untrusted request bodies through the Flask app (app.test_client()): each bad input gets a clear 4xx.

Process-level behaviour (real gunicorn, the 100k-deep body over a socket, the log) is in
test_untrusted_input_gunicorn.py; the property-based fuzz test of /openapi.json in test_fuzz_openapi.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from mlpacker_runtime.config import ConfigError, build_config
from mlpacker_runtime.input_signature import InputSignature
from mlpacker_runtime.log_limit import ThrottledLog
from mlpacker_runtime.rest.app import create_app
from runtime_helpers import IrisModels, base_config, bearer, function_stage, write_tokens

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def signature(*types: str, names: list[str] | None = None) -> dict[str, Any]:
    names = names or [None] * len(types)
    return {
        "source": "spec",
        "columns": [{"name": name, "type": kind} for name, kind in zip(names, types, strict=True)],
    }


IRIS_SIGNATURE = signature("number", "number", "number", "number", names=IRIS_COLUMNS)


@pytest.fixture
def make_app() -> Callable[..., Flask]:
    def make(raw: dict[str, Any]) -> Flask:
        app = create_app(build_config(raw, environ={}))
        app.testing = True
        return app

    return make


def iris_stages(iris_models: IrisModels, input_signature: dict[str, Any] | None) -> list[dict[str, Any]]:
    stages = iris_models.three_stages()
    stages[0]["input_signature"] = input_signature
    return stages


@pytest.fixture
def signed_app(make_app: Callable[..., Flask], iris_models: IrisModels) -> Flask:
    return make_app(base_config(iris_stages(iris_models, IRIS_SIGNATURE), rest={"max_instances": 50}))


@pytest.fixture
def unsigned_app(make_app: Callable[..., Flask], iris_models: IrisModels) -> Flask:
    return make_app(base_config(iris_stages(iris_models, None), rest={"max_instances": 50}))


def post(app: Flask, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str]:
    response = app.test_client().post(
        "/predict", data=body, content_type="application/json", headers=headers or {}
    )
    return response.status_code, response.get_json()["error"] if response.status_code != 200 else ""


NOT_JSON = (
    "is not a JSON value (JSON does not allow NaN, Infinity or -Infinity; send null for a missing value if "
    "the model takes it)"
)
DEEP = b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize("app_name", ["signed_app", "unsigned_app"])
@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b'{"instances": [[NaN, 1, 2, 3]]}', 400, f"malformed JSON body: NaN {NOT_JSON}"),
        (b'{"instances": [[Infinity, 1, 2, 3]]}', 400, f"malformed JSON body: Infinity {NOT_JSON}"),
        (b'{"instances": [[1, -Infinity, 2, 3]]}', 400, f"malformed JSON body: -Infinity {NOT_JSON}"),
        (DEEP, 400, "malformed JSON body: nested too deeply (instances are rows of values)"),
        (b"[" * 100_000, 400, "malformed JSON body: nested too deeply (instances are rows of values)"),
        (
            json.dumps({"instances": [[1, 2, 3, 4]] * 51}).encode(),
            413,
            "'instances' holds 51 rows, more than rest.max_instances (50): send them in smaller batches",
        ),
        (b'{"instances": [[1, 2, 3]]}', 422, "instances[0]: expected 4 features, received 3"),
    ],
)
def test_bad_bodies_get_a_clear_4xx(
    request: pytest.FixtureRequest,
    app_name: str,
    body: bytes,
    status: int,
    error: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = request.getfixturevalue(app_name)
    caplog.set_level(logging.INFO)
    assert post(app, body) == (status, error)
    assert "Traceback" not in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ([1, "abc", 3, 4], "instances[0][1] (sepal_width): expected a number, received a string ('abc')"),
        ([1, 2, True, 4], "instances[0][2] (petal_length): expected a number, received a boolean (true)"),
        ([None, 2, 3, 4], "instances[0][0] (sepal_length): expected a number, received null"),
        ([1, 2, 3, [4]], "instances[0][3] (petal_width): expected a number, received a list ([4])"),
        (
            [1, 2, 3, {"a": 1}],
            "instances[0][3] (petal_width): expected a number, received an object ({'a': 1})",
        ),
        (
            [1, 2, 3, [[[[[[4]]]]]]],
            "instances[0][3] (petal_width): expected a number, received a list ([[[[[[4]]]]]])",
        ),
    ],
)
def test_signature_names_row_column_and_type(signed_app: Flask, row: list[Any], error: str) -> None:
    body = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2], row]}).encode()
    assert post(signed_app, body) == (422, error.replace("instances[0]", "instances[1]"))


def test_number_outside_float_range_is_422(signed_app: Flask) -> None:
    assert post(signed_app, b'{"instances": [[1e999, 1, 2, 3]]}') == (
        422,
        "instances[0][0] (sepal_length): expected a number, "
        "received a number outside the range of a 64-bit float",
    )


def test_signed_service_answers_like_the_pipeline(signed_app: Flask, iris_models: IrisModels) -> None:
    rows = iris_models.X[::10]
    for body in (
        json.dumps({"instances": rows.tolist()}),
        # Integers, and a body with a true/false token elsewhere (the cells are then scanned one by one).
        json.dumps({"instances": rows.astype(int).tolist(), "flag": True}),
    ):
        response = signed_app.test_client().post("/predict", data=body, content_type="application/json")
        assert response.status_code == 200
        expected = iris_models.expected(np.asarray(json.loads(body)["instances"], dtype=float))
        assert response.get_json() == {"predictions": expected}


def test_without_signature_a_string_for_a_numeric_model_is_422(unsigned_app: Flask) -> None:
    status, error = post(unsigned_app, b'{"instances": [[5.1, 3.5, 1.4, 0.2], [1, "abc", 3, 4]]}')
    assert status == 422
    assert error.startswith(
        "instances[1][1]: expected a number, received a string ('abc') (stage 'scale': ValueError: "
    )
    assert post(unsigned_app, b'{"instances": [[1, true, 3, 4]]}') == (
        422,
        "instances[0][1]: expected a number or a string, received a boolean (true)",
    )


def test_a_stage_that_fails_on_numbers_too_stays_500(
    make_app: Callable[..., Flask], code_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # boom raises ValueError whatever it gets: strings in the request do not make it the client's fault.
    app = make_app(base_config([function_stage("explode", "mlfuncs.ops:boom")], code_dir=str(code_dir)))
    assert post(app, b'{"instances": [["abc", 1]]}') == (
        500,
        "stage 'explode' failed: ValueError: boom: this stage always fails",
    )


def test_overflow_in_a_stage_is_422_naming_it(signed_app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    status, error = post(signed_app, b'{"instances": [[-1.7976931348623157e308, 0, 0, 0]]}')
    assert (status, error) == (
        422,
        "instances: stage 'scale' computed infinity or NaN from these values (out of the range this pipeline "
        "can compute)",
    )
    assert "RuntimeWarning" not in caplog.text


def test_mixed_signature_hands_the_stage_an_object_array(
    make_app: Callable[..., Flask], code_dir: Path
) -> None:
    stage = function_stage("label", "mlfuncs.ops:first_column_label")
    stage["input_signature"] = signature("number", "string", "any")
    app = make_app(base_config([stage], code_dir=str(code_dir)))
    client = app.test_client()
    response = client.post("/predict", json={"instances": [[7, "a", None], [1.5, "b", True]]})
    assert response.get_json() == {"predictions": ["big", "small"]}
    assert post(app, b'{"instances": [[7, 8, null]]}') == (
        422,
        "instances[0][1]: expected a string, received a number (8)",
    )
    assert post(app, b'{"instances": [[7, "a", [1]]]}') == (
        422,
        "instances[0][2]: expected a value (not a list or object), received a list ([1])",
    )


def test_without_any_shape_rows_nest_no_deeper(make_app: Callable[..., Flask], code_dir: Path) -> None:
    app = make_app(base_config([function_stage("same", "mlfuncs.ops:double")], code_dir=str(code_dir)))
    assert post(app, b'{"instances": [[1, 2], [3, [4, [5]]]]}') == (
        422,
        "instances[1][1]: expected a value, received a list ([4, [5]]) "
        "(rows are lists of numbers or strings; nothing nests deeper)",
    )
    assert post(app, b'{"instances": [[[1, 2], [3, 4]]]}')[0] == 422


def test_signature_must_match_the_stages_feature_count(iris_models: IrisModels) -> None:
    from mlpacker_runtime.loading import StageLoadError, load_stages

    config = build_config(
        base_config(iris_stages(iris_models, signature("number", "number", "number"))), environ={}
    )
    with pytest.raises(
        StageLoadError, match=r"^stages\[0\]\.input_signature: 3 columns, but the stage takes 4"
    ):
        load_stages(config)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (
            {"source": "spec", "columns": [{"name": "a", "type": "double"}]},
            "columns[0].type: 'double' is not one of",
        ),
        (
            {"source": "guess", "columns": [{"type": "number"}]},
            "input_signature.source: 'guess' is not one of",
        ),
        ({"source": "spec", "columns": []}, "input_signature.columns: expected a non-empty list"),
        (
            {"source": "spec", "columns": [{"name": 3, "type": "any"}]},
            "columns[0].name: expected a string or null",
        ),
        ("number", "input_signature: expected an object or null"),
    ],
)
def test_config_refuses_a_bad_signature(iris_models: IrisModels, value: Any, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(base_config(iris_stages(iris_models, value)), environ={})
    assert any(
        line.startswith("stages[0].input_signature") and problem in line for line in caught.value.problems
    )


def test_config_refuses_a_bad_max_instances(iris_models: IrisModels) -> None:
    with pytest.raises(ConfigError, match=r"rest\.max_instances: must be > 0, got 0"):
        build_config(base_config(iris_models.three_stages(), rest={"max_instances": 0}), environ={})


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE", "PUT", "DELETE", "PATCH", "FOO"])
@pytest.mark.parametrize(("path", "allow"), [("/predict", "POST"), ("/health/live", "GET, HEAD")])
def test_other_methods_get_405_with_allow(signed_app: Flask, method: str, path: str, allow: str) -> None:
    response = signed_app.test_client().open(path, method=method)
    assert response.status_code == 405
    assert response.headers["Allow"] == allow
    assert response.get_json() == {"error": f"Method Not Allowed: {method} {path}"}


def test_with_auth_authentication_comes_before_the_method(iris_models: IrisModels, tmp_path: Path) -> None:
    token_file = write_tokens(tmp_path / "token", "tok")
    raw = base_config(iris_models.three_stages(), security={"auth": {"token_file": str(token_file)}})
    app = create_app(build_config(raw, environ={}))
    client = app.test_client()
    # Anonymous: 401 whatever the method (nothing about the paths is told before authentication) ...
    assert client.open("/predict", method="TRACE").status_code == 401
    # ... authenticated, or on the open health paths: 405 with Allow.
    response = client.open("/predict", method="TRACE", headers=bearer("tok"))
    assert (response.status_code, response.headers["Allow"]) == (405, "POST")
    response = client.open("/health/ready", method="OPTIONS")
    assert (response.status_code, response.headers["Allow"]) == (405, "GET, HEAD")


def test_openapi_describes_columns_limits_and_statuses(signed_app: Flask) -> None:
    spec = signed_app.test_client().get("/openapi.json").get_json()
    post_op = spec["paths"]["/predict"]["post"]
    instances = post_op["requestBody"]["content"]["application/json"]["schema"]["properties"]["instances"]
    assert instances["maxItems"] == 50
    row = instances["items"]
    assert row["prefixItems"] == [{"type": "number", "title": name} for name in IRIS_COLUMNS]
    assert (row["minItems"], row["maxItems"], row["items"]) == (4, 4, False)
    for status in ("400", "405", "413", "422", "500"):
        assert post_op["responses"][status]["content"]["application/json"]["schema"]["required"] == ["error"]
    assert "rest.max_instances (50)" in post_op["responses"]["413"]["description"]
    for path in ("/health/live", "/health/ready", "/metrics", "/info", "/openapi.json"):
        assert "405" in spec["paths"][path]["get"]["responses"], path


def test_repeated_stage_failures_log_one_traceback(
    make_app: Callable[..., Flask], code_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The count is per process: a stage name no other test uses.
    app = make_app(base_config([function_stage("explode-often", "mlfuncs.ops:boom")], code_dir=str(code_dir)))
    caplog.set_level(logging.INFO)
    for _ in range(20):
        assert post(app, b'{"instances": [[1.0]]}')[0] == 500
    assert caplog.text.count("Traceback") == 1
    assert len([record for record in caplog.records if record.levelno >= logging.ERROR]) == 1


def test_throttled_log_counts_repeats_and_sums_them_up() -> None:
    now = [0.0]
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("test.throttled")
    logger.propagate = False
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    throttled = ThrottledLog(logger, interval_s=60, clock=lambda: now[0])
    error = ValueError("boom")
    for second in range(0, 130):
        now[0] = float(second)
        throttled.exception(("stage", "ValueError"), "stage 'x' failed", error)
    throttled.exception(("stage", "TypeError"), "stage 'x' failed", TypeError("other"))
    messages = [record.getMessage() for record in records]
    assert records[0].exc_info is not None and records[-1].exc_info is not None  # one traceback per kind
    assert messages[1:-1] == [
        "stage 'x' failed: 60 times in the last 60 s (last: ValueError: boom; traceback logged at the first)",
        "stage 'x' failed: 60 times in the last 60 s (last: ValueError: boom; traceback logged at the first)",
    ]


def test_signature_fast_path_and_scan_agree() -> None:
    checked = InputSignature.from_config(signature("number", "number"))
    assert checked is not None
    rows = [[1, 2.5], [3, 4]]
    fast = checked.check(rows, may_have_bools=False)
    scanned = checked.check(rows, may_have_bools=True)
    assert fast.dtype == scanned.dtype == np.float64 and fast.tolist() == scanned.tolist() == rows
    big = [[2**70, 1]]  # past int64: numpy makes an object array; the stage gets floats
    assert checked.check(big, may_have_bools=False).dtype == np.float64


def test_overflow_is_caught_before_a_next_hop(
    make_app: Callable[..., Flask], iris_models: IrisModels
) -> None:
    # The last stage of a service that forwards: infinity cannot travel in JSON, so the entry answers 422 (the
    # next hop, unreachable here, is never asked: that would be a 502).
    stage = iris_models.stage("scale", "scaler", "transform", input_signature=IRIS_SIGNATURE)
    app = make_app(base_config([stage], rest={"next_hops": ["http://127.0.0.1:9/predict"]}))
    status, error = post(app, b'{"instances": [[-1.7976931348623157e308, 0, 0, 0]]}')
    assert (status, error) == (
        422,
        "instances: stage 'scale' computed infinity or NaN from these values (out of the range this pipeline "
        "can compute)",
    )
    assert post(app, b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}')[0] == 502
