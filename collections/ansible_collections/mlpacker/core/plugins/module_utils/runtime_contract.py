# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Names and defaults of the runtime configuration contract (docs/architecture.md, "Runtime configuration").

The spec, the plan, artifact_info, the probe and the config builder take them from here. The stage runtime
(``mlpacker_runtime.config``) ships to the hosts as its own wheel and cannot import this module, so
tests/unit/plugins/module_utils/test_runtime_contract.py proves both sides equal.
"""

from __future__ import annotations

MODES = ("rest", "stream")
FUNCTION_FORMAT = "function"
FORMATS = ("joblib", "pickle", "skops", "onnx", FUNCTION_FORMAT)
# The formats of a file artifact (a function stage has none).
ARTIFACT_FORMATS = tuple(name for name in FORMATS if name != FUNCTION_FORMAT)
EXTENSION_FORMATS = {
    ".joblib": "joblib",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".skops": "skops",
    ".onnx": "onnx",
}
# What a stage entry of the runtime configuration holds from the plan (the hosts add sha256 and versions).
STAGE_KEYS = ("name", "artifact", "function", "format", "method", "trusted_types")
CALL_METHOD = "call"
METHODS = ("predict", "predict_proba", "transform", "decision_function", CALL_METHOD)
# The methods of a fitted object (a function stage is called instead).
PREDICTION_METHODS = tuple(name for name in METHODS if name != CALL_METHOD)
# What a stream service publishes: the next stage's input, or the pipeline's output.
OUTPUT_INSTANCES = "instances"
OUTPUT_PREDICTIONS = "predictions"
OUTPUT_KINDS = (OUTPUT_INSTANCES, OUTPUT_PREDICTIONS)
# Services listen on every address (REST port, or the health port in stream mode).
BIND_ALL = "0.0.0.0"
DEFAULT_BROKER_PORT = 1883
# The managed Mosquitto's TLS listener (plain 1883 only when the pipeline is deployed insecure).
DEFAULT_BROKER_TLS_PORT = 8883
DEFAULT_TLS = {"enabled": False, "ca_file": None, "cert_file": None, "key_file": None, "insecure": False}


def default_method(stage_format: str, is_last: bool) -> str:
    """The runtime's rule: functions are called, the pipeline's last stage predicts, the others transform."""
    if stage_format == FUNCTION_FORMAT:
        return CALL_METHOD
    return "predict" if is_last else "transform"
