"""The OpenAPI 3.1 document a REST service serves at /openapi.json.

It describes what the service accepts and answers truthfully (a property-based fuzzer checks every answer
against it, tests/deploy/test_fuzz_rest.py): per column the type of the first stage's input signature, the
row and batch limits, every status code an operation can answer and the body of each.
"""

from __future__ import annotations

from typing import Any

from mlpacker_runtime import __version__
from mlpacker_runtime.input_signature import InputSignature

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def row_schema(features: int | None, signature: InputSignature | None) -> dict[str, Any]:
    """One row of ``instances``: the signature's columns, else ``features`` numbers or strings."""
    if signature is not None:
        return signature.row_schema()
    row: dict[str, Any] = {"type": "array", "items": {"type": ["number", "string"]}}
    if features is not None:
        row.update(minItems=features, maxItems=features, description=f"one row of {features} features")
    return row


def openapi_document(
    config: dict[str, Any], features: int | None, signature: InputSignature | None = None
) -> dict[str, Any]:
    rest = config["rest"]
    auth = bool(config["security"]["auth"]["token_file"])
    not_allowed = _error("method not allowed; the Allow header lists the methods of the path")
    secured = {"401": _error("missing or invalid bearer token")} if auth else {}
    predict_responses = {
        "200": _json(
            "predictions, one per instance",
            {"type": "object", "required": ["predictions"], "properties": {"predictions": {"type": "array"}}},
        ),
        "400": _error("malformed JSON (NaN, Infinity and -Infinity are not JSON; nesting too deep)"),
        **secured,
        "405": not_allowed,
        "408": _error("the client stalled sending its request for longer than rest.body_read_timeout_s"),
        "413": _error(
            f"body larger than rest.max_body_bytes ({rest['max_body_bytes']} bytes), or more rows than "
            f"rest.max_instances ({rest['max_instances']})"
        ),
        "422": _error(
            "wrong shape, feature count or value type (the error names the row, the column and the expected "
            "type), or values out of the range the stages can compute"
        ),
        "500": _error("a stage failed (the error names it)"),
        "502": _error("next hop unreachable or answering an error"),
        "503": _error("stages not loaded yet"),
        "504": _error("next hop timed out"),
    }
    body_schema = {
        "type": "object",
        "required": ["instances"],
        "properties": {
            "instances": {
                "type": "array",
                "minItems": 1,
                "maxItems": rest["max_instances"],
                "items": row_schema(features, signature),
            }
        },
    }

    def get(description: str, content: dict[str, Any], *, open_path: bool = False) -> dict[str, Any]:
        operation: dict[str, Any] = {
            "responses": {
                "200": {"description": description, "content": content},
                **({} if open_path else secured),
                "405": not_allowed,
            }
        }
        if open_path and auth:
            operation["security"] = []  # open: orchestrators probe without credentials
        return operation

    status_schema = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
    ready = get("stages loaded", {"application/json": {"schema": status_schema}}, open_path=True)
    ready["responses"]["503"] = _json(
        "stages still loading, or failed to load",
        {**status_schema, "properties": {"status": {"type": "string"}, "error": {"type": "string"}}},
    )
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": f"{config['pipeline']} / {config['service']}",
            "version": __version__,
            "description": "MLPacker stage service: "
            + " -> ".join(stage["name"] for stage in config["stages"])
            + (" -> next hop" if rest["next_hops"] else ""),
        },
        "paths": {
            "/predict": {
                "post": {
                    "summary": "Run the stages (and the next hops) on a batch of instances",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": body_schema}},
                    },
                    "responses": predict_responses,
                }
            },
            "/health/live": {
                "get": get("process is up", {"application/json": {"schema": status_schema}}, open_path=True)
            },
            "/health/ready": {"get": ready},
            "/metrics": {
                "get": get("Prometheus text format", {"text/plain": {"schema": {"type": "string"}}})
            },
            "/info": {
                "get": get(
                    "pipeline, stages, sha256, versions", {"application/json": {"schema": {"type": "object"}}}
                )
            },
            "/openapi.json": {
                "get": get("this document", {"application/json": {"schema": {"type": "object"}}})
            },
        },
        "x-expected-features": features,
    }
    if auth:
        document["components"] = {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
        document["security"] = [{"bearer": []}]
    return document
