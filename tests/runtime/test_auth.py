"""Bearer auth and /info redaction of the REST app, in process (app.test_client()); over real gunicorn and
TLS: test_rest_security.py."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from mlpacker_runtime.auth import BearerAuth
from mlpacker_runtime.config import build_config
from mlpacker_runtime.redaction import public_url
from mlpacker_runtime.rest.app import create_app
from runtime_helpers import IrisModels, base_config, bearer, write_tokens

ROW = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
MISSING = 'Bearer realm="mlpacker"'
INVALID = 'Bearer realm="mlpacker", error="invalid_token"'


def make_secured_app(iris_models: IrisModels, tmp_path: Path, next_hops: list[str] | None = None) -> Flask:
    token_file = write_tokens(tmp_path / "token", "tok-current", "tok-previous")
    raw = base_config(iris_models.three_stages(), security={"auth": {"token_file": str(token_file)}})
    raw["rest"]["next_hops"] = next_hops or []
    app = create_app(build_config(raw, environ={}))
    app.testing = True
    return app


@pytest.fixture
def secured_app(iris_models: IrisModels, tmp_path: Path) -> Flask:
    return make_secured_app(iris_models, tmp_path)


def post_predict(
    client: FlaskClient, body: bytes, chunked: bool, headers: dict[str, str] | None = None
) -> Any:
    if not chunked:
        return client.post("/predict", data=body, content_type="application/json", headers=headers)
    # Without a Content-Length, as gunicorn leaves a chunked body: the Flask route, not the fast path.
    return client.post(
        "/predict",
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers=headers,
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
    )


def test_refusals_and_challenges() -> None:
    auth = BearerAuth(["tok-current", "tok-previous"])
    assert auth.refusal("/predict", None).challenge == MISSING
    assert auth.refusal("/predict", "Basic dXNlcjpwYXNz").challenge == MISSING
    assert auth.refusal("/predict", "Bearer ").challenge == MISSING
    assert auth.refusal("/predict", "Bearer tok-old").challenge == INVALID
    assert auth.refusal("/predict", "Bearer tok-current-and-more").challenge == INVALID
    assert auth.refusal("/predict", "Bearer tok-current") is None
    assert auth.refusal("/predict", "bearer  tok-previous ") is None  # the scheme is case-insensitive
    assert auth.refusal("/health/live", None) is None
    assert auth.refusal("/health/ready", "Bearer wrong") is None
    assert auth.refusal("/health/ready/", None) is not None  # only the two probes themselves are open


@pytest.mark.parametrize("path", ["/metrics", "/info", "/openapi.json", "/no-such-path"])
def test_every_path_but_health_needs_the_token(secured_app: Flask, path: str) -> None:
    client = secured_app.test_client()
    response = client.get(path)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == MISSING
    assert response.get_json() == {"error": "authentication required: send 'Authorization: Bearer <token>'"}
    response = client.get(path, headers=bearer("tok-wrong"))
    assert (response.status_code, response.headers["WWW-Authenticate"]) == (401, INVALID)
    assert response.get_json() == {"error": "invalid bearer token"}
    assert client.get(path, headers=bearer("tok-previous")).status_code == (404 if "no-such" in path else 200)


def test_predict_fast_path_and_flask_route_are_both_guarded(
    secured_app: Flask, iris_models: IrisModels
) -> None:
    client = secured_app.test_client()
    body = json.dumps(ROW).encode()
    for chunked in (False, True):
        response = post_predict(client, body, chunked)
        assert (response.status_code, response.headers["WWW-Authenticate"]) == (401, MISSING)
        response = post_predict(client, body, chunked, bearer("tok-current"))
        assert response.get_json() == {"predictions": iris_models.expected(iris_models.X[:1])}
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").status_code == 200
    metrics = client.get("/metrics", headers=bearer("tok-current")).get_data(as_text=True)
    assert 'mlpacker_requests_total{code="401",endpoint="/predict"} 2.0' in metrics
    assert 'mlpacker_errors_total{kind="unauthorized"} 2.0' in metrics


def test_info_and_openapi_leak_nothing(iris_models: IrisModels, tmp_path: Path) -> None:
    hop = "https://user:s3cret@10.0.0.3:8443/predict?key=abc#frag"  # never called here
    client = make_secured_app(iris_models, tmp_path, next_hops=[hop]).test_client()
    info = client.get("/info", headers=bearer("tok-current")).get_json()
    text = json.dumps(info)
    assert info["next_hops"] == ["https://10.0.0.3:8443/predict"]
    assert [stage["artifact"] for stage in info["stages"]] == ["scaler.joblib", "pca.joblib", "clf.joblib"]
    assert info["security"] == {"tls": False, "client_certificates": False, "auth": True}
    for secret in ("s3cret", "user", "key=abc", "tok-current", "tok-previous", str(tmp_path)):
        assert secret not in text
    assert str(iris_models.directory) not in text
    document = client.get("/openapi.json", headers=bearer("tok-current")).get_json()
    assert document["security"] == [{"bearer": []}]
    assert document["paths"]["/health/ready"]["get"]["security"] == []
    assert "401" in document["paths"]["/predict"]["post"]["responses"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://10.0.0.3:8000/predict", "http://10.0.0.3:8000/predict"),
        ("https://u:p@host.example/predict", "https://host.example/predict"),
        ("https://u@[fd00::3]:8443/p?token=x", "https://[fd00::3]:8443/p"),
    ],
)
def test_public_url(url: str, shown: str) -> None:
    assert public_url(url) == shown
