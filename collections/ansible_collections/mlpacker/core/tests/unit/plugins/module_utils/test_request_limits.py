# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The request limits setting: defaults, overrides, clear errors naming the key, the runtime sections."""

from __future__ import annotations

from typing import Any

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.request_limits import (
    DEFAULTS,
    REST_KEYS,
    RUNTIME_THREADS,
    STREAM_KEYS,
    RequestLimitsError,
    normalise_request_limits,
    rest_limits,
    stream_limits,
)


@pytest.mark.parametrize(
    ("given", "changed"),
    [
        (None, {}),
        ({}, {}),
        ({"max_instances": 500}, {"max_instances": 500}),
        ({"max_instances": "500"}, {"max_instances": 500}),
        ({"max_body_bytes": 1024.0}, {"max_body_bytes": 1024}),
        ({"body_read_timeout_s": 2.5}, {"body_read_timeout_s": 2.5}),
        ({"body_read_timeout_s": "0.5"}, {"body_read_timeout_s": 0.5}),
        (
            {"max_connections": 5, "max_message_bytes": 4096},
            {"max_connections": 5, "max_message_bytes": 4096},
        ),
    ],
    ids=["null", "empty", "one", "text", "whole-float", "timeout-float", "timeout-text", "two"],
)
def test_limits_over_defaults(given: Any, changed: dict[str, Any]) -> None:
    assert normalise_request_limits(given) == {**DEFAULTS, **changed}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ([], ": expected a mapping of max_body_bytes, max_instances"),
        ({"max_rows": 5}, ".max_rows: unknown limit (known: body_read_timeout_s, "),
        ({"max_instances": 0}, ".max_instances: expected a whole number > 0, got 0"),
        ({"max_instances": -3}, ".max_instances: expected a whole number > 0, got -3"),
        ({"max_instances": 2.5}, ".max_instances: expected a whole number > 0, got 2.5"),
        ({"max_instances": True}, ".max_instances: expected a whole number > 0, got True"),
        ({"max_body_bytes": "10M"}, ".max_body_bytes: expected a whole number > 0, got '10M'"),
        ({"max_message_bytes": None}, ".max_message_bytes: expected a whole number > 0"),
        ({"body_read_timeout_s": 0}, ".body_read_timeout_s: expected a number > 0, got 0"),
        ({"body_read_timeout_s": "soon"}, ".body_read_timeout_s: expected a number > 0"),
        ({"body_read_timeout_s": float("inf")}, ".body_read_timeout_s: expected a number > 0, got inf"),
        ({"max_connections": 4}, ".max_connections: must be more than the 4 request threads"),
    ],
    ids=[
        "not-a-dict", "unknown", "zero", "negative", "fraction", "bool", "suffix", "null", "timeout-zero",
        "timeout-text", "timeout-infinite", "connections-vs-threads",
    ],
)  # fmt: skip
def test_bad_limits_name_the_key(given: Any, message: str) -> None:
    with pytest.raises(RequestLimitsError) as caught:
        normalise_request_limits(given)
    assert str(caught.value).startswith("mlpacker_request_limits" + message)


def test_runtime_sections() -> None:
    limits = {"max_instances": 7, "max_message_bytes": 2048}
    assert rest_limits(limits) == {
        "max_body_bytes": 10485760,
        "max_instances": 7,
        "body_read_timeout_s": 10,
        "max_connections": 100,
    }
    assert stream_limits(limits) == {"max_message_bytes": 2048}


def runtime_config_of(mode: str, request_limits: Any) -> dict[str, Any]:
    from ansible_collections.mlpacker.core.plugins.module_utils.runtime_config import runtime_config

    stage = {"name": "scale", "artifact": "/models/scale.joblib", "format": "joblib", "method": "transform"}
    service = {
        "id": "iris-scale",
        "port": 8000,
        "stages": ["scale"],
        "input_topic": "in",
        "output_topic": "out",
        "error_topic": "errors",
        "client_id": "iris-scale-1",
    }
    broker = {"host": "10.0.0.9", "port": 1883}
    return runtime_config(
        service,
        [stage],
        pipeline="iris",
        mode=mode,
        release_dir="/opt/mlpacker/iris/iris-scale/releases/0123",
        broker=broker if mode == "stream" else None,
        request_limits=request_limits,
    )


def test_runtime_config_carries_the_limits() -> None:
    from mlpacker_runtime.config import build_config

    rest = runtime_config_of("rest", {"max_instances": 64, "body_read_timeout_s": 3})
    assert {key: rest["rest"][key] for key in DEFAULTS if key in rest["rest"]} == {
        "max_body_bytes": 10485760,
        "max_instances": 64,
        "body_read_timeout_s": 3,
        "max_connections": 100,
    }
    stream = runtime_config_of("stream", {"max_message_bytes": 4096})
    assert stream["stream"]["max_message_bytes"] == 4096 and "rest" not in stream
    # The runtime takes both (what 'mlpacker-runtime check' validates on the host).
    assert build_config(rest, environ={})["rest"]["max_instances"] == 64
    assert build_config(stream, environ={})["stream"]["max_message_bytes"] == 4096
    # Without the setting, the runtime's defaults apply (the config names no limit).
    assert "max_instances" not in runtime_config_of("rest", None)["rest"]


def test_runtime_config_refuses_a_bad_limit() -> None:
    from ansible_collections.mlpacker.core.plugins.module_utils.runtime_config import RuntimeConfigError

    with pytest.raises(
        RuntimeConfigError, match=r"^mlpacker_request_limits\.max_instances: expected a whole"
    ):
        runtime_config_of("rest", {"max_instances": "many"})


def test_defaults_are_the_runtimes() -> None:
    # The runtime ships as its own wheel and cannot import module_utils: the defaults live twice.
    config = pytest.importorskip("mlpacker_runtime.config")
    assert rest_limits(None) == {key: config.DEFAULTS["rest"][key] for key in REST_KEYS}
    assert stream_limits(None) == {key: config.DEFAULTS["stream"][key] for key in STREAM_KEYS}
    assert RUNTIME_THREADS == config.DEFAULTS["rest"]["threads"]
