"""Flask app factory for a REST service: /predict, health, metrics, OpenAPI and info endpoints."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from mlpacker_runtime import __version__
from mlpacker_runtime.chain import InputError, StageError
from mlpacker_runtime.hops import HopError, HopTimeout, NextHops
from mlpacker_runtime.metrics import CONTENT_TYPE, Metrics
from mlpacker_runtime.service import Service

log = logging.getLogger("mlpacker_runtime.rest")


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status=status, mimetype="application/json")


def _error(status: int, message: str) -> Response:
    return _json(status, {"error": message})


def create_app(
    config: dict[str, Any],
    *,
    load_in_background: bool = False,
    exit_on_load_failure: bool = False,
    metrics: Metrics | None = None,
) -> Flask:
    """Build the app for a validated config. Stages load now (or in a thread, for gunicorn workers)."""
    service = Service(config, metrics)
    metrics = service.metrics
    rest = config["rest"]
    hops = NextHops(rest["next_hops"], rest["hop_timeout_s"], metrics, pool_size=max(4, rest["threads"]))

    app = Flask(f"mlpacker_runtime[{config['service']}]")
    app.config["MAX_CONTENT_LENGTH"] = rest["max_body_bytes"]
    app.extensions["mlpacker_service"] = service
    app.extensions["mlpacker_hops"] = hops

    if load_in_background:
        service.load_in_background(exit_on_failure=exit_on_load_failure)
    else:
        service.load()

    @app.after_request
    def count_request(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule is not None else "other"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        return response

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge) -> Response:
        metrics.errors.labels("body_too_large").inc()
        return _error(413, f"request body exceeds rest.max_body_bytes ({rest['max_body_bytes']} bytes)")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return _error(exc.code or 500, f"{exc.name}: {request.method} {request.path}")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        # Last resort: log the traceback, never leak it, never let it take the worker down.
        log.exception("unhandled error on %s %s", request.method, request.path)
        metrics.errors.labels("internal").inc()
        return _error(500, f"internal error: {type(exc).__name__}")

    @app.post("/predict")
    def predict() -> Response:
        started = time.perf_counter()
        try:
            return _predict()
        finally:
            metrics.request_seconds.labels("/predict").observe(time.perf_counter() - started)

    def _predict() -> Response:
        if service.chain is None:
            metrics.errors.labels("not_ready").inc()
            return _error(503, "service not ready: " + service.readiness()[1]["error"])
        raw = request.get_data(cache=False)  # raises RequestEntityTooLarge past max_body_bytes
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            metrics.errors.labels("bad_json").inc()
            return _error(400, f"malformed JSON body: {exc}")
        if not isinstance(payload, dict) or "instances" not in payload:
            metrics.errors.labels("bad_shape").inc()
            return _error(422, 'body must be a JSON object {"instances": [[...], ...]}')
        instances = payload["instances"]
        if isinstance(instances, list):
            metrics.batch_size.observe(len(instances))
        try:
            result = service.chain.predict(instances, observe=metrics.observe_stage)
        except InputError as exc:
            metrics.errors.labels("bad_shape").inc()
            return _error(422, str(exc))
        except StageError as exc:
            metrics.errors.labels("stage").inc()
            return _error(500, str(exc))
        if not hops:
            return _json(200, {"predictions": result})
        return _forward(result)

    def _forward(result: Any) -> Response:
        try:
            answer = hops.post({"instances": result})
        except HopTimeout as exc:
            metrics.errors.labels("hop_timeout").inc()
            return _error(504, str(exc))
        except HopError as exc:
            metrics.errors.labels("hop_unreachable").inc()
            return _error(502, str(exc))
        if answer.status == 200 and isinstance(answer.body, dict):
            # Pass the final answer through untouched (no re-encoding).
            return Response(answer.raw, status=200, mimetype="application/json")
        metrics.errors.labels("hop_error").inc()
        detail = (
            answer.body.get("error")
            if isinstance(answer.body, dict)
            else answer.raw[:200].decode(errors="replace")
        )
        if answer.status in (502, 503, 504):
            # A failure further down the chain keeps its status, with the path it came through.
            return _error(answer.status, f"next hop {answer.url}: {detail}")
        return _error(502, f"next hop {answer.url} answered {answer.status}: {detail}")

    @app.get("/health/live")
    def live() -> Response:
        return _json(200, {"status": "alive"})

    @app.get("/health/ready")
    def ready() -> Response:
        status, body = service.readiness()
        return _json(status, body)

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return Response(metrics.render(), status=200, content_type=CONTENT_TYPE)

    @app.get("/info")
    def info() -> Response:
        body = service.info()
        body["next_hops"] = rest["next_hops"]
        return _json(200, body)

    @app.get("/openapi.json")
    def openapi() -> Response:
        features = service.chain.expected_features if service.chain is not None else None
        return _json(200, openapi_document(config, features))

    return app


def openapi_document(config: dict[str, Any], features: int | None) -> dict[str, Any]:
    row: dict[str, Any] = {"type": "array", "items": {"type": ["number", "string"]}}
    if features is not None:
        row.update(minItems=features, maxItems=features, description=f"one row of {features} features")
    error = {
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                }
            }
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"{config['pipeline']} / {config['service']}",
            "version": __version__,
            "description": "MLPacker stage service: "
            + " -> ".join(stage["name"] for stage in config["stages"])
            + (" -> next hop" if config["rest"]["next_hops"] else ""),
        },
        "paths": {
            "/predict": {
                "post": {
                    "summary": "Run the stages (and the next hops) on a batch of instances",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["instances"],
                                    "properties": {
                                        "instances": {"type": "array", "minItems": 1, "items": row}
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "predictions, one per instance",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["predictions"],
                                        "properties": {"predictions": {"type": "array"}},
                                    }
                                }
                            },
                        },
                        "400": {"description": "malformed JSON", **error},
                        "413": {"description": "body larger than rest.max_body_bytes", **error},
                        "422": {"description": "wrong shape or feature count", **error},
                        "500": {"description": "a stage failed", **error},
                        "502": {"description": "next hop unreachable", **error},
                        "503": {"description": "stages not loaded yet", **error},
                        "504": {"description": "next hop timed out", **error},
                    },
                }
            },
            "/health/live": {"get": {"responses": {"200": {"description": "process is up"}}}},
            "/health/ready": {
                "get": {
                    "responses": {"200": {"description": "stages loaded"}, "503": {"description": "not yet"}}
                }
            },
            "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text format"}}}},
            "/info": {"get": {"responses": {"200": {"description": "pipeline, stages, sha256, versions"}}}},
        },
        "x-expected-features": features,
    }
