# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The controller's copy of the runtime contract equals the runtime's own (mlpacker_runtime.config).

The runtime ships to the hosts as its own wheel and cannot import module_utils, so the names live twice; this
test is what keeps them one contract.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils import runtime_contract

runtime_config = pytest.importorskip("mlpacker_runtime.config")

COLLECTION = Path(__file__).resolve().parents[4]


def test_the_runtime_imported_is_the_collections_own() -> None:
    # A runtime installed from elsewhere would prove nothing about the one this collection ships.
    assert Path(runtime_config.__file__).resolve().is_relative_to((COLLECTION / "runtime").resolve())


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (runtime_contract.MODES, runtime_config.MODES),
        (runtime_contract.FORMATS, runtime_config.FORMATS),
        (runtime_contract.METHODS, runtime_config.METHODS),
        (runtime_contract.OUTPUT_KINDS, runtime_config.OUTPUT_KINDS),
        (runtime_contract.EXTENSION_FORMATS, runtime_config.EXTENSION_FORMATS),
        (runtime_contract.DEFAULT_TLS, runtime_config.DEFAULTS["stream"]["broker"]["tls"]),
        (runtime_contract.DEFAULT_BROKER_PORT, runtime_config.DEFAULTS["stream"]["broker"]["port"]),
        (runtime_contract.BIND_ALL, runtime_config.DEFAULTS["rest"]["bind"]),
        (runtime_contract.BIND_ALL, runtime_config.DEFAULTS["stream"]["health_bind"]),
        (runtime_contract.OUTPUT_PREDICTIONS, runtime_config.DEFAULTS["stream"]["output_kind"]),
    ],
    ids=[
        "modes",
        "formats",
        "methods",
        "output-kinds",
        "extensions",
        "tls-defaults",
        "broker-port",
        "rest-bind",
        "health-bind",
        "output-kind-default",
    ],
)
def test_constants_equal_the_runtimes(ours: Any, theirs: Any) -> None:
    assert ours == theirs


@pytest.mark.parametrize("stage_format", [*runtime_contract.FORMATS, None])
@pytest.mark.parametrize("is_last", [True, False])
def test_default_method_is_the_runtimes_rule(stage_format: str | None, is_last: bool) -> None:
    theirs = runtime_config._default_method({"format": stage_format}, is_last=is_last)
    assert runtime_contract.default_method(stage_format, is_last) == theirs


def test_derived_sets() -> None:
    assert runtime_contract.ARTIFACT_FORMATS == ("joblib", "pickle", "skops", "onnx")
    assert runtime_contract.PREDICTION_METHODS == (
        "predict",
        "predict_proba",
        "transform",
        "decision_function",
    )
    assert set(runtime_contract.EXTENSION_FORMATS.values()) == set(runtime_contract.ARTIFACT_FORMATS)
