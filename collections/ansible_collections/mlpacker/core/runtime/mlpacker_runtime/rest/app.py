"""Flask app factory for a REST service: /predict, health, metrics, OpenAPI and info endpoints."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge

from mlpacker_runtime.auth import BearerAuth
from mlpacker_runtime.chain import InputError, StageError
from mlpacker_runtime.hops import HopError, HopTimeout, NextHops
from mlpacker_runtime.log_limit import ThrottledLog
from mlpacker_runtime.metrics import CONTENT_TYPE, Metrics
from mlpacker_runtime.outliers import EjectionPolicy
from mlpacker_runtime.redaction import public_url
from mlpacker_runtime.request_body import BodyError, instances_of, parse_json
from mlpacker_runtime.rest.bearer_auth import BearerTokenRequired
from mlpacker_runtime.rest.openapi import openapi_document
from mlpacker_runtime.secret_files import read_tokens
from mlpacker_runtime.service import Service
from mlpacker_runtime.tls import hop_client_context

log = logging.getLogger("mlpacker_runtime.rest")
# Flask answers OPTIONS by itself unless a route says otherwise; every method a route does not list gets 405.
ROUTE_OPTIONS = {"provide_automatic_options": False}


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status=status, mimetype="application/json")


def _error(status: int, message: str) -> Response:
    return _json(status, {"error": message})


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _error_body(message: str) -> bytes:
    return _dumps({"error": message})


# Marks a /predict request that went through Flask (the fallback) so after_request does not count it twice.
_FLASK_COUNTED = "mlpacker.predict_counted"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class PredictFastPath:
    """WSGI middleware serving ``POST /predict`` without Flask's per-request machinery.

    Flask (request and app contexts, URL matching, Request/Response objects, hooks) costs about 0.25 ms
    per request on the benchmark's 2-core machine, as much as a small model; a chain pays it once per hop.
    Requests with a Content-Length (every client, and every hop, sends one) are answered here, with the
    same bodies, status codes and metrics as the Flask route; anything else (other paths and methods, a
    chunked body, a bad Content-Length) goes to Flask unchanged.
    """

    def __init__(
        self,
        flask_app: WSGIApp,
        handle: Callable[[bytes], tuple[int, bytes]],
        max_body_bytes: int,
    ):
        self.flask_app = flask_app
        self.handle = handle
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length_text = environ.get("CONTENT_LENGTH", "")
        if (
            environ.get("PATH_INFO") != "/predict"
            or environ.get("REQUEST_METHOD") != "POST"
            or not length_text.isdigit()
        ):
            return self.flask_app(environ, start_response)
        length = int(length_text)
        if length > self.max_body_bytes:
            return self.flask_app(environ, start_response)  # Flask answers 413 and counts it
        try:
            raw = environ["wsgi.input"].read(length) if length else b""
        except TimeoutError as exc:  # rest.body_read_timeout_s (gunicorn worker): the client stalled
            status, body = 408, _error_body(str(exc))
        else:
            status, body = self.handle(raw)
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]


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
    token_file = config["security"]["auth"]["token_file"]
    hops = NextHops(
        rest["next_hops"],
        rest["hop_timeout_s"],
        metrics,
        pool_size=max(4, rest["threads"]),
        tls_context=(
            hop_client_context(config["security"]["tls"])
            if any(url.startswith("https://") for url in rest["next_hops"])
            else None
        ),
        tokens=read_tokens(token_file) if token_file else None,
        ejection=EjectionPolicy.from_config(rest["hop_ejection"]),
        retry_timeouts=rest["hop_retry_timeouts"],
    )
    auth = BearerAuth.from_config(config)
    # An error that recurs on every request logs its traceback once, then counted one-line summaries.
    unexpected_errors = ThrottledLog(log)
    # rest.threads requests run their stages at once. The worker gives its rest.threads predict threads only
    # requests that have fully arrived, and every other connection a thread of its own (rest/worker.py), so
    # reading requests and answering health probes never waits for a predict; a request that arrived in
    # pieces runs its stages from its connection's thread, hence the semaphore.
    predict_slots = threading.BoundedSemaphore(rest["threads"])

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
        if request.environ.get(_FLASK_COUNTED):
            return response  # handle_predict counted it already
        endpoint = request.url_rule.rule if request.url_rule is not None else "other"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        return response

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge) -> Response:
        metrics.errors.labels("body_too_large").inc()
        return _error(413, f"request body exceeds rest.max_body_bytes ({rest['max_body_bytes']} bytes)")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        response = _error(exc.code or 500, f"{exc.name}: {request.method} {request.path}")
        # 405 names the methods the path takes (RFC 9110: Allow is required on a 405).
        for name, value in exc.get_headers():
            if name.lower() == "allow":
                response.headers["Allow"] = ", ".join(sorted(method.strip() for method in value.split(",")))
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        # Last resort: log the traceback (once per kind), never leak it, never let it take the worker down.
        unexpected_errors.exception(
            (request.path, type(exc).__name__), f"unhandled error on {request.method} {request.path}", exc
        )
        metrics.errors.labels("internal").inc()
        return _error(500, f"internal error: {type(exc).__name__}")

    def handle_predict(raw: bytes) -> tuple[int, bytes]:
        """POST /predict without any web framework: (status, JSON body). Counts its own metrics."""
        started = time.perf_counter()
        try:
            with predict_slots:
                status, body = _predict(raw)
        except Exception as exc:
            # Last resort, as for the other endpoints: log, never leak the traceback, keep the worker up.
            key = ("/predict", type(exc).__name__)
            unexpected_errors.exception(key, "unhandled error on POST /predict", exc)
            metrics.errors.labels("internal").inc()
            status, body = 500, _dumps({"error": f"internal error: {type(exc).__name__}"})
        metrics.requests.labels("/predict", str(status)).inc()
        metrics.request_seconds.labels("/predict").observe(time.perf_counter() - started)
        return status, body

    def _predict(raw: bytes) -> tuple[int, bytes]:
        if service.chain is None:
            metrics.errors.labels("not_ready").inc()
            return 503, _error_body("service not ready: " + service.readiness()[1]["error"])
        try:
            instances = instances_of(parse_json(raw), rest["max_instances"])
        except BodyError as exc:
            metrics.errors.labels(exc.kind).inc()
            return exc.status, _error_body(str(exc))
        if isinstance(instances, list):
            metrics.batch_size.observe(len(instances))
        try:
            # Without a true/false token in the body, an all-numeric batch is checked by its numpy dtype.
            bools = b"true" in raw or b"false" in raw
            result = service.chain.predict(instances, observe=metrics.observe_stage, may_have_bools=bools)
        except InputError as exc:
            metrics.errors.labels("bad_shape").inc()
            return 422, _error_body(str(exc))
        except StageError as exc:
            metrics.errors.labels("stage").inc()
            return 500, _error_body(str(exc))
        if not hops:
            return 200, _dumps({"predictions": result})
        return _forward(result)

    def _forward(result: Any) -> tuple[int, bytes]:
        try:
            answer = hops.post({"instances": result})
        except HopTimeout as exc:
            metrics.errors.labels("hop_timeout").inc()
            return 504, _error_body(str(exc))
        except HopError as exc:
            metrics.errors.labels("hop_unreachable").inc()
            return 502, _error_body(str(exc))
        if answer.status == 200 and isinstance(answer.body, dict):
            # Pass the final answer through untouched (no re-encoding).
            return 200, answer.raw
        metrics.errors.labels("hop_error").inc()
        detail = (
            answer.body.get("error")
            if isinstance(answer.body, dict)
            else answer.raw[:200].decode(errors="replace")
        )
        if answer.status in (502, 503, 504):
            # A failure further down the chain keeps its status, with the path it came through.
            return answer.status, _error_body(f"next hop {answer.url}: {detail}")
        return 502, _error_body(f"next hop {answer.url} answered {answer.status}: {detail}")

    @app.post("/predict", **ROUTE_OPTIONS)
    def predict() -> Response:
        # Reached only for what the fast path hands over: chunked bodies, and bodies over the limit.
        started = time.perf_counter()
        try:
            raw = request.get_data(cache=False)  # raises RequestEntityTooLarge past max_body_bytes
        except RequestEntityTooLarge:
            metrics.request_seconds.labels("/predict").observe(time.perf_counter() - started)
            raise
        except (TimeoutError, ClientDisconnected) as exc:
            # rest.body_read_timeout_s (gunicorn worker): the client stalled; werkzeug reports a stalled
            # chunked body as a client gone, the worker's socket tells which it was.
            timed_out = getattr(request.environ.get("gunicorn.socket"), "timed_out", False)
            if not isinstance(exc, TimeoutError) and not timed_out:
                raise
            metrics.errors.labels("read_timeout").inc()
            return _error(
                408,
                f"client silent for more than rest.body_read_timeout_s ({rest['body_read_timeout_s']:g} s)",
            )
        request.environ[_FLASK_COUNTED] = True
        status, body = handle_predict(raw)
        return Response(body, status=status, mimetype="application/json")

    app.wsgi_app = PredictFastPath(app.wsgi_app, handle_predict, rest["max_body_bytes"])  # type: ignore[method-assign]

    @app.get("/health/live", **ROUTE_OPTIONS)
    def live() -> Response:
        return _json(200, {"status": "alive"})

    @app.get("/health/ready", **ROUTE_OPTIONS)
    def ready() -> Response:
        status, body = service.readiness()
        return _json(status, body)

    @app.get("/metrics", **ROUTE_OPTIONS)
    def metrics_endpoint() -> Response:
        return Response(metrics.render(), status=200, content_type=CONTENT_TYPE)

    @app.get("/info", **ROUTE_OPTIONS)
    def info() -> Response:
        body = service.info()
        body["next_hops"] = [public_url(url) for url in rest["next_hops"]]
        return _json(200, body)

    @app.get("/openapi.json", **ROUTE_OPTIONS)
    def openapi() -> Response:
        chain = service.chain
        features = chain.expected_features if chain is not None else None
        signature = chain.input_signature if chain is not None else None
        return _json(200, openapi_document(config, features, signature))

    if auth is not None:
        # Outermost, in front of the /predict fast path too. Unknown paths share one metric label.
        routes = {rule.rule for rule in app.url_map.iter_rules()}

        def count_refusal(path: str) -> None:
            metrics.errors.labels("unauthorized").inc()
            metrics.requests.labels(path if path in routes else "other", "401").inc()

        app.wsgi_app = BearerTokenRequired(app.wsgi_app, auth, count_refusal)  # type: ignore[method-assign]

    return app
