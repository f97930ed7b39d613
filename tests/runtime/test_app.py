"""Fast paths of the Flask app through app.test_client() (process-level behaviour: test_rest_gunicorn.py)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlpacker_runtime
import pytest
from flask import Flask
from mlpacker_runtime.config import build_config
from mlpacker_runtime.rest.app import create_app
from runtime_helpers import IrisModels, base_config, function_stage


@pytest.fixture
def make_app() -> Callable[..., Flask]:
    def make(raw: dict[str, Any], **kwargs: Any) -> Flask:
        app = create_app(build_config(raw, environ={}), **kwargs)
        app.testing = True
        return app

    return make


@pytest.fixture
def iris_app(make_app: Callable[..., Flask], iris_models: IrisModels) -> Flask:
    return make_app(base_config(iris_models.three_stages(), rest={"max_body_bytes": 4096}))


def test_predict_matches_pipeline(iris_app: Flask, iris_models: IrisModels) -> None:
    rows = iris_models.X[::15]
    response = iris_app.test_client().post("/predict", json={"instances": rows.tolist()})
    assert response.status_code == 200
    assert response.get_json() == {"predictions": iris_models.expected(rows)}


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "malformed JSON body"),
        (b"[1, 2]", 422, 'body must be a JSON object {"instances"'),
        (b'{"rows": [[1, 2, 3, 4]]}', 422, 'body must be a JSON object {"instances"'),
        (b'{"instances": [[1, 2, 3]]}', 422, "instances[0]: expected 4 features, received 3"),
        (
            b'{"instances": [[1, 2, 3, 4], [1, 2, 3, 4, 5]]}',
            422,
            "instances[1]: expected 4 features, received 5",
        ),
        (b'{"instances": []}', 422, "'instances' is empty"),
        (b'{"instances": "abc"}', 422, "'instances' must be a list of rows, received str"),
    ],
)
def test_bad_requests(iris_app: Flask, body: bytes, status: int, fragment: str) -> None:
    response = iris_app.test_client().post("/predict", data=body, content_type="application/json")
    assert response.status_code == status
    assert fragment in response.get_json()["error"]


def test_body_too_large_is_413(iris_app: Flask) -> None:
    body = json.dumps({"instances": [[1.0, 2.0, 3.0, 4.0]] * 500})
    response = iris_app.test_client().post("/predict", data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json() == {"error": "request body exceeds rest.max_body_bytes (4096 bytes)"}


def test_stage_exception_is_500_naming_stage_without_traceback(
    make_app: Callable[..., Flask], code_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(base_config([function_stage("explode", "mlfuncs.ops:boom")], code_dir=str(code_dir)))
    response = app.test_client().post("/predict", json={"instances": [[1.0]]})
    assert response.status_code == 500
    error = response.get_json()["error"]
    assert error == "stage 'explode' failed: ValueError: boom: this stage always fails"
    assert "Traceback" not in response.get_data(as_text=True)
    assert "Traceback" in caplog.text  # the traceback goes to the log


def test_unknown_route_and_method_are_json(iris_app: Flask) -> None:
    client = iris_app.test_client()
    assert client.get("/nope").status_code == 404
    assert "error" in client.get("/nope").get_json()
    response = client.get("/predict")
    assert response.status_code == 405
    assert response.get_json()["error"].startswith("Method Not Allowed")


def test_health_info_openapi(iris_app: Flask, iris_models: IrisModels) -> None:
    client = iris_app.test_client()
    assert client.get("/health/live").get_json() == {"status": "alive"}
    assert client.get("/health/ready").status_code == 200
    info = client.get("/info").get_json()
    assert [stage["name"] for stage in info["stages"]] == ["scale", "reduce", "classify"]
    assert info["stages"][0]["sha256"] == iris_models.three_stages()[0]["sha256"]
    assert info["runtime_version"] == mlpacker_runtime.__version__
    assert info["libraries"]["scikit-learn"] == iris_models.three_stages()[0]["versions"]["scikit-learn"]
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    row = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert row["properties"]["instances"]["items"]["minItems"] == 4
    assert row["properties"]["instances"]["items"]["maxItems"] == 4
    assert "422" in spec["paths"]["/predict"]["post"]["responses"]


def test_metrics_count_requests_stages_and_batches(iris_app: Flask, iris_models: IrisModels) -> None:
    client = iris_app.test_client()
    client.post("/predict", json={"instances": iris_models.X[:3].tolist()})
    client.post("/predict", data=b"{bad", content_type="application/json")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'mlpacker_requests_total{code="200",endpoint="/predict"} 1.0' in text
    assert 'mlpacker_requests_total{code="400",endpoint="/predict"} 1.0' in text
    assert 'mlpacker_errors_total{kind="bad_json"} 1.0' in text
    for stage in ("scale", "reduce", "classify"):
        assert f'mlpacker_stage_duration_seconds_count{{stage="{stage}"}} 1.0' in text
    assert "mlpacker_batch_size_sum 3.0" in text
    assert 'mlpacker_request_duration_seconds_count{endpoint="/predict"} 2.0' in text


def test_not_ready_until_stages_loaded(
    make_app: Callable[..., Flask], code_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = tmp_path / "gate"
    monkeypatch.setenv("GATE_FILE", str(gate))
    app = make_app(
        base_config([function_stage("gated", "mlfuncs.gated:identity")], code_dir=str(code_dir)),
        load_in_background=True,
    )
    client = app.test_client()
    assert client.get("/health/live").status_code == 200
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.get_json()["status"] == "loading"
    response = client.post("/predict", json={"instances": [[1.0]]})
    assert response.status_code == 503
    assert response.get_json()["error"].startswith("service not ready")
    gate.write_text("go")
    deadline = time.monotonic() + 10
    while client.get("/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "never became ready"
        time.sleep(0.02)
    assert client.post("/predict", json={"instances": [[1.0, 2.0]]}).get_json() == {
        "predictions": [[1.0, 2.0]]
    }


def test_failed_load_is_reported_by_ready(make_app: Callable[..., Flask], iris_models: IrisModels) -> None:
    stage = iris_models.stage("scale", "scaler", "transform")
    stage["sha256"] = "a" * 64
    app = make_app(base_config([stage]), load_in_background=True)
    service = app.extensions["mlpacker_service"]
    assert service.wait_loaded(10)
    response = app.test_client().get("/health/ready")
    assert response.status_code == 503
    assert response.get_json()["status"] == "failed"
    assert response.get_json()["error"].startswith("stages[0].sha256: artifact")


def test_body_without_content_length_takes_the_flask_route(iris_app: Flask, iris_models: IrisModels) -> None:
    """Chunked bodies (no Content-Length; gunicorn marks the input terminated) bypass the fast path.

    The test client always computes a Content-Length, so it is blanked as gunicorn leaves it."""
    client = iris_app.test_client()
    rows = iris_models.X[:2]
    for body, status in ((json.dumps({"instances": rows.tolist()}).encode(), 200), (b"{bad", 400)):
        response = client.post(
            "/predict",
            input_stream=io.BytesIO(body),
            content_type="application/json",
            environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
        )
        assert not response.request.environ.get("CONTENT_LENGTH")
        assert response.status_code == status
    assert response.get_json()["error"].startswith("malformed JSON body")
    text = client.get("/metrics").get_data(as_text=True)
    # Counted once each (by the shared handler, not again by the Flask hook).
    assert 'mlpacker_requests_total{code="200",endpoint="/predict"} 1.0' in text
    assert 'mlpacker_requests_total{code="400",endpoint="/predict"} 1.0' in text
    assert 'mlpacker_request_duration_seconds_count{endpoint="/predict"} 2.0' in text


def test_fast_path_and_flask_route_give_the_same_answers(iris_app: Flask, iris_models: IrisModels) -> None:
    client = iris_app.test_client()
    bodies = [json.dumps({"instances": iris_models.X[:3].tolist()}).encode(), b"[1]", b'{"instances": [[1]]}']
    for body in bodies:
        fast = client.post("/predict", data=body, content_type="application/json")
        routed = client.post(
            "/predict",
            input_stream=io.BytesIO(body),
            content_type="application/json",
            environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
        )
        assert fast.request.environ["CONTENT_LENGTH"].isdigit()
        assert (fast.status_code, fast.get_data(), fast.content_type) == (
            routed.status_code,
            routed.get_data(),
            routed.content_type,
        )
