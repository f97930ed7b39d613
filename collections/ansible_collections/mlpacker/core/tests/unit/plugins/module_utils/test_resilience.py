# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""mlpacker_rest_hops and mlpacker_stream_max_consecutive_refusals: defaults (the runtime's own), overrides,
clear errors naming the key, and the runtime configuration sections they become."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.resilience import (
    HOP_DEFAULTS,
    MAX_CONSECUTIVE_REFUSALS,
    ResilienceError,
    normalise_max_consecutive_refusals,
    normalise_rest_hops,
    resilience_settings,
    rest_keys,
    stream_keys,
)


def with_changes(changed: dict[str, Any]) -> dict[str, Any]:
    expected = copy.deepcopy(HOP_DEFAULTS)
    expected["ejection"].update(changed.pop("ejection", {}))
    expected.update(changed)
    return expected


def test_defaults_are_the_runtimes() -> None:
    config = pytest.importorskip("mlpacker_runtime.config")
    rest, stream = config.DEFAULTS["rest"], config.DEFAULTS["stream"]
    assert rest_keys(resilience_settings(None)) == {
        "hop_timeout_s": rest["hop_timeout_s"],
        "hop_retry_timeouts": rest["hop_retry_timeouts"],
        "hop_ejection": rest["hop_ejection"],
    }
    assert MAX_CONSECUTIVE_REFUSALS == stream["max_consecutive_refusals"]


@pytest.mark.parametrize(
    ("given", "changed"),
    [
        (None, {}),
        ({}, {}),
        ({"timeout_s": 2.5}, {"timeout_s": 2.5}),
        ({"timeout_s": "4"}, {"timeout_s": 4.0}),
        ({"retry_timeouts": True}, {"retry_timeouts": True}),
        ({"retry_timeouts": "yes"}, {"retry_timeouts": True}),
        ({"ejection": None}, {}),
        ({"ejection": {"consecutive_failures": 0}}, {"ejection": {"consecutive_failures": 0}}),
        ({"ejection": {"consecutive_failures": "5"}}, {"ejection": {"consecutive_failures": 5}}),
        ({"ejection": {"consecutive_failures": 2.0}}, {"ejection": {"consecutive_failures": 2}}),
        ({"ejection": {"base_s": 1, "max_s": 1}}, {"ejection": {"base_s": 1, "max_s": 1}}),
        ({"ejection": {"max_s": 20}}, {"ejection": {"max_s": 20}}),
    ],
    ids=[
        "null", "empty", "timeout", "timeout-text", "retry", "retry-text", "ejection-null", "never-eject",
        "failures-text", "failures-whole-float", "equal-times", "max-only",
    ],
)  # fmt: skip
def test_hops_over_defaults(given: Any, changed: dict[str, Any]) -> None:
    resolved = normalise_rest_hops(given)
    assert resolved == with_changes(changed)
    assert normalise_rest_hops(resolved) == resolved  # what the deploy carries checks again unchanged


FAILURES = ".ejection.consecutive_failures: expected a whole number"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ([], ": expected a mapping of timeout_s, retry_timeouts, ejection, got []"),
        ({"timeout": 3}, ".timeout: unknown setting (known: ejection, retry_timeouts, timeout_s)"),
        ({"timeout_s": 0}, ".timeout_s: expected a number > 0, got 0"),
        ({"timeout_s": -1.5}, ".timeout_s: expected a number > 0, got -1.5"),
        ({"timeout_s": "10s"}, ".timeout_s: expected a number > 0, got '10s'"),
        ({"timeout_s": float("inf")}, ".timeout_s: expected a number > 0, got inf"),
        ({"timeout_s": None}, ".timeout_s: expected a number > 0, got None"),
        ({"timeout_s": True}, ".timeout_s: expected a number > 0, got True"),
        ({"retry_timeouts": "maybe"}, ".retry_timeouts: expected true or false, got 'maybe'"),
        ({"retry_timeouts": 2}, ".retry_timeouts: expected true or false, got 2"),
        ({"ejection": 3}, ".ejection: expected a mapping of consecutive_failures, base_s, max_s, got 3"),
        ({"ejection": {"after": 3}}, ".ejection.after: unknown setting (known: base_s, "),
        ({"ejection": {"consecutive_failures": -1}}, f"{FAILURES} >= 0, got -1"),
        ({"ejection": {"consecutive_failures": 1.5}}, f"{FAILURES} >= 0, got 1.5"),
        ({"ejection": {"base_s": 0}}, ".ejection.base_s: expected a number > 0, got 0"),
        ({"ejection": {"max_s": "never"}}, ".ejection.max_s: expected a number > 0, got 'never'"),
        (
            {"ejection": {"base_s": 10, "max_s": 5}},
            ".ejection.max_s: the longest ejection (5) is shorter than base_s (10)",
        ),
        (
            {"ejection": {"base_s": 600}},
            ".ejection.max_s: the longest ejection (300.0, the default) is shorter than base_s (600)",
        ),
    ],
    ids=[
        "not-a-dict", "unknown", "timeout-zero", "timeout-negative", "timeout-suffix", "timeout-infinite",
        "timeout-null", "timeout-bool", "retry-text", "retry-number", "ejection-not-a-dict",
        "ejection-unknown", "failures-negative", "failures-fraction", "base-zero", "max-text",
        "max-below-base", "base-above-default-max",
    ],
)  # fmt: skip
def test_bad_hops_name_the_key(given: Any, message: str) -> None:
    with pytest.raises(ResilienceError) as caught:
        normalise_rest_hops(given)
    assert str(caught.value).startswith("mlpacker_rest_hops" + message)


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, 10), (1, 1), ("25", 25), (3.0, 3)],
    ids=["default", "one", "text", "whole-float"],
)
def test_refusals(given: Any, expected: int) -> None:
    assert normalise_max_consecutive_refusals(given) == expected


@pytest.mark.parametrize("given", [0, -2, 2.5, "often", True, [], float("nan")])
def test_bad_refusals_name_the_setting(given: Any) -> None:
    with pytest.raises(ResilienceError) as caught:
        normalise_max_consecutive_refusals(given)
    message = str(caught.value)
    assert message.startswith("mlpacker_stream_max_consecutive_refusals: expected a whole number >= 1, got ")


def test_runtime_sections() -> None:
    settings = resilience_settings({"timeout_s": 3, "ejection": {"consecutive_failures": 1}}, "4")
    assert settings == {
        "rest_hops": with_changes({"timeout_s": 3, "ejection": {"consecutive_failures": 1}}),
        "stream_max_consecutive_refusals": 4,
    }
    assert rest_keys(settings) == {
        "hop_timeout_s": 3,
        "hop_retry_timeouts": False,
        "hop_ejection": {"consecutive_failures": 1, "base_s": 5.0, "max_s": 300.0},
    }
    assert stream_keys(settings) == {"max_consecutive_refusals": 4}
    with pytest.raises(ResilienceError, match=r"^resilience\.hops: unknown setting"):
        rest_keys({"hops": {}})


def runtime_config_of(mode: str, resilience: Any) -> dict[str, Any]:
    from ansible_collections.mlpacker.core.plugins.module_utils.runtime_config import runtime_config

    stage = {"name": "scale", "artifact": "/models/scale.joblib", "format": "joblib", "method": "transform"}
    service = {
        "id": "iris-scale",
        "port": 8000,
        "stages": ["scale"],
        "next_hops": ["https://10.0.0.2:8001/predict", "https://10.0.0.3:8001/predict"],
        "input_topic": "in",
        "output_topic": "out",
        "error_topic": "errors",
        "client_id": "iris-scale-1",
    }
    return runtime_config(
        service,
        [stage],
        pipeline="iris",
        mode=mode,
        release_dir="/opt/mlpacker/iris/iris-scale/releases/0123",
        broker={"host": "10.0.0.9", "port": 1883} if mode == "stream" else None,
        resilience=resilience,
    )


def test_runtime_config_carries_the_settings() -> None:
    from mlpacker_runtime.config import build_config

    settings = resilience_settings(
        {"timeout_s": 2.5, "retry_timeouts": True, "ejection": {"consecutive_failures": 2, "max_s": 60}}, 3
    )
    rest = runtime_config_of("rest", settings)
    assert (rest["rest"]["hop_timeout_s"], rest["rest"]["hop_retry_timeouts"]) == (2.5, True)
    assert rest["rest"]["hop_ejection"] == {"consecutive_failures": 2, "base_s": 5.0, "max_s": 60}
    assert "max_consecutive_refusals" not in rest.get("stream", {})
    stream = runtime_config_of("stream", settings)
    assert stream["stream"]["max_consecutive_refusals"] == 3 and "rest" not in stream
    # The runtime takes both (what 'mlpacker-runtime check' validates on the host).
    assert build_config(rest, environ={})["rest"]["hop_ejection"]["max_s"] == 60
    assert build_config(stream, environ={})["stream"]["max_consecutive_refusals"] == 3
    # Without the settings, the config names none of them and the runtime's defaults apply.
    assert "hop_timeout_s" not in runtime_config_of("rest", None)["rest"]
    assert "max_consecutive_refusals" not in runtime_config_of("stream", None)["stream"]


def test_runtime_config_refuses_a_bad_setting() -> None:
    from ansible_collections.mlpacker.core.plugins.module_utils.runtime_config import RuntimeConfigError

    bad = {"rest_hops": {"ejection": {"base_s": 10, "max_s": 1}}}
    with pytest.raises(RuntimeConfigError, match=r"^mlpacker_rest_hops\.ejection\.max_s: the longest"):
        runtime_config_of("rest", bad)
    bad = {"stream_max_consecutive_refusals": 0}
    with pytest.raises(RuntimeConfigError, match=r"^mlpacker_stream_max_consecutive_refusals: expected"):
        runtime_config_of("stream", bad)
