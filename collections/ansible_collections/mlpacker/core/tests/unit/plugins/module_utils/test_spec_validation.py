# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Validation of the mlpacker_pipeline spec: every rule, with the message naming the field and value."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.spec_validation import (
    SpecError,
    validate_pipeline,
)

GROUPS = {
    "all": ["edge1", "edge2", "cloud1", "mqtt1"],
    "ungrouped": [],
    "edge": ["edge1", "edge2"],
    "cloud": ["cloud1"],
    "fog": [],
    "broker": ["mqtt1"],
}
GROUPS_WITHOUT_BROKER = {key: value for key, value in GROUPS.items() if key != "broker"}


@pytest.fixture()
def base_dir(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    for name in ("scaler.joblib", "clf.joblib", "model.onnx", "model.skops", "weird.bin"):
        (tmp_path / "models" / name).write_bytes(b"not a real model; spec validation only checks existence")
    (tmp_path / "code").mkdir()
    return tmp_path


def distributed_spec() -> dict[str, Any]:
    return {
        "name": "iris",
        "mode": "rest",
        "layout": "distributed",
        "stages": [
            {"name": "scale", "artifact": "models/scaler.joblib", "group": "edge"},
            {"name": "classify", "artifact": "models/clf.joblib", "group": "cloud"},
        ],
    }


def atomic_spec() -> dict[str, Any]:
    return {
        "name": "iris",
        "layout": "atomic",
        "group": "cloud",
        "stages": [
            {"name": "scale", "artifact": "models/scaler.joblib"},
            {"name": "classify", "artifact": "models/clf.joblib"},
        ],
    }


def test_distributed_spec_is_normalised(base_dir: Path) -> None:
    spec = validate_pipeline(distributed_spec(), GROUPS, str(base_dir))
    assert spec["base_dir"] == str(base_dir)
    assert spec["containers"] is False
    assert spec["requirements"] == []
    assert (spec["input_topic"], spec["output_topic"], spec["error_topic"]) == (
        "mlpacker/iris/in",
        "mlpacker/iris/out",
        "mlpacker/iris/errors",
    )
    scale, classify = spec["stages"]
    assert scale["artifact"] == str(base_dir / "models" / "scaler.joblib")
    assert (scale["format"], scale["method"], scale["hosts"]) == ("joblib", "transform", ["edge1", "edge2"])
    assert (classify["method"], classify["hosts"], classify["index"]) == ("predict", ["cloud1"], 1)


def test_atomic_spec_gives_every_stage_the_pipeline_group(base_dir: Path) -> None:
    spec = validate_pipeline(atomic_spec(), GROUPS, str(base_dir))
    assert spec["hosts"] == ["cloud1"]
    assert [stage["hosts"] for stage in spec["stages"]] == [["cloud1"], ["cloud1"]]
    assert [stage["group"] for stage in spec["stages"]] == ["cloud", "cloud"]


def test_base_dir_relative_to_working_dir_and_function_stage(base_dir: Path) -> None:
    (base_dir / "project" / "code").mkdir(parents=True)
    (base_dir / "project" / "models").mkdir()
    (base_dir / "project" / "models" / "m.onnx").write_bytes(b"x")
    pipeline = {
        "name": "fn",
        "layout": "atomic",
        "group": "edge",
        "base_dir": "project",
        "code_dir": "code",
        "containers": True,
        "requirements": ["scikit-learn==1.9.1"],
        "stages": [
            {"name": "clean", "function": "features.clean:drop"},
            {"name": "model", "artifact": "models/m.onnx", "method": "predict_proba"},
        ],
    }
    spec = validate_pipeline(pipeline, GROUPS, str(base_dir))
    assert spec["base_dir"] == str(base_dir / "project")
    assert spec["code_dir"] == str(base_dir / "project" / "code")
    assert spec["containers"] is True
    clean, model = spec["stages"]
    assert (clean["format"], clean["method"], clean["artifact"], clean["function"]) == (
        "function",
        "call",
        None,
        "features.clean:drop",
    )
    assert (model["format"], model["method"]) == ("onnx", "predict_proba")


def test_explicit_format_and_trusted_types(base_dir: Path) -> None:
    pipeline = distributed_spec()
    pipeline["stages"][1] = {
        "name": "classify",
        "artifact": "models/weird.bin",
        "format": "skops",
        "trusted_types": ["numpy.dtype"],
        "group": "cloud",
    }
    spec = validate_pipeline(pipeline, GROUPS, str(base_dir))
    assert spec["stages"][1]["format"] == "skops"
    assert spec["stages"][1]["trusted_types"] == ["numpy.dtype"]


def test_stream_mode_accepts_an_external_broker_without_broker_group(base_dir: Path) -> None:
    pipeline = distributed_spec()
    pipeline["mode"] = "stream"
    spec = validate_pipeline(pipeline, GROUPS_WITHOUT_BROKER, str(base_dir), broker_given=True)
    assert spec["mode"] == "stream"


def set_path(document: dict[str, Any], path: str, value: Any) -> None:
    """Set ``a.b.0.c`` in a nested spec; the value ``DELETE`` removes the key."""
    parts = path.split(".")
    target: Any = document
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    last = parts[-1]
    if value == "DELETE":
        del target[last]
    else:
        target[int(last) if last.isdigit() else last] = value


DISTRIBUTED_ERRORS = [
    ("name", "Iris", "mlpacker_pipeline.name: 'Iris' must match ^[a-z][a-z0-9-]{0,30}$"),
    ("name", "DELETE", "mlpacker_pipeline.name: required"),
    ("name", "a" * 32, "mlpacker_pipeline.name: '" + "a" * 32 + "' must match"),
    (
        "stages.1.name",
        "Classify",
        "mlpacker_pipeline.stages[1].name: 'Classify' must match ^[a-z][a-z0-9-]{0,30}$",
    ),
    ("stages.1.name", "scale", "mlpacker_pipeline.stages[1].name: 'scale' is already used by stages[0]"),
    ("stages.0.name", "DELETE", "mlpacker_pipeline.stages[0].name: required"),
    ("mode", "batch", "mlpacker_pipeline.mode: 'batch' is not one of rest, stream"),
    ("layout", "spread", "mlpacker_pipeline.layout: 'spread' is not one of atomic, distributed"),
    ("containers", "yes", "mlpacker_pipeline.containers: expected true or false, got 'yes'"),
    ("stages.0.containers", 1, "mlpacker_pipeline.stages[0].containers: expected true or false, got 1"),
    (
        "requirements",
        "scikit-learn",
        "mlpacker_pipeline.requirements: expected a list of pip requirement strings",
    ),
    (
        "requirements",
        ["numpy", ""],
        "mlpacker_pipeline.requirements[1]: expected a pip requirement string",
    ),
    (
        "requirements",
        ["numpy", "--index-url=http://127.0.0.1:9/simple"],
        "mlpacker_pipeline.requirements[1]: '--index-url=http://127.0.0.1:9/simple' is a pip option",
    ),
    (
        "requirements",
        ["evil @ https://example.invalid/evil-1.0-py3-none-any.whl"],
        "mlpacker_pipeline.requirements[0]: 'evil @ https://example.invalid/evil-1.0-py3-none-any.whl' is a"
        " direct reference",
    ),
    (
        "base_dir",
        "missing",
        "mlpacker_pipeline.base_dir: directory {base}/missing does not exist on the controller",
    ),
    (
        "code_dir",
        "nocode",
        "mlpacker_pipeline.code_dir: directory {base}/nocode does not exist on the controller",
    ),
    (
        "input_topic",
        "mlpacker/+/in",
        "mlpacker_pipeline.input_topic: 'mlpacker/+/in' must be a non-empty MQTT topic",
    ),
    ("output_topic", "", "mlpacker_pipeline.output_topic: '' must be a non-empty MQTT topic"),
    ("error_topic", "mlpacker/iris/in", "input_topic, output_topic and error_topic must differ"),
    ("stages", [], "mlpacker_pipeline.stages: expected a non-empty list of stages, got []"),
    ("stages", "DELETE", "mlpacker_pipeline.stages: expected a non-empty list of stages, got None"),
    ("stages.1", "classify", "mlpacker_pipeline.stages[1]: expected a mapping, got 'classify'"),
    ("stagez", [], "mlpacker_pipeline: unknown key 'stagez' (did you mean 'stages'?)"),
    (
        "stages.0.artefact",
        "x",
        "mlpacker_pipeline.stages[0]: unknown key 'artefact' (did you mean 'artifact'?)",
    ),
    (
        "stages.0.zzz",
        1,
        "mlpacker_pipeline.stages[0]: unknown key 'zzz' (valid keys: name, artifact, function",
    ),
    (
        "stages.0.artifact",
        "DELETE",
        "mlpacker_pipeline.stages[0]: exactly one of 'artifact' or 'function' is required",
    ),
    (
        "stages.0.function",
        "a.b:c",
        "mlpacker_pipeline.stages[0]: exactly one of 'artifact' or 'function' is required",
    ),
    (
        "stages.0.artifact",
        "models/nope.joblib",
        "stages[0].artifact: {base}/models/nope.joblib does not exist on the",
    ),
    (
        "stages.0.artifact",
        "models/weird.bin",
        "mlpacker_pipeline.stages[0].format: cannot use None for artifact",
    ),
    (
        "stages.0.format",
        "tensorflow",
        "mlpacker_pipeline.stages[0].format: cannot use 'tensorflow' for artifact",
    ),
    ("stages.0.artifact", 5, "mlpacker_pipeline.stages[0].artifact: expected a file path, got 5"),
    (
        "stages.0.method",
        "fit",
        "mlpacker_pipeline.stages[0].method: 'fit' is not one of predict, predict_proba",
    ),
    (
        "stages.0.port",
        70000,
        "mlpacker_pipeline.stages[0].port: 70000 must be an integer between 1 and 65535",
    ),
    (
        "stages.0.port",
        "8001",
        "mlpacker_pipeline.stages[0].port: '8001' must be an integer between 1 and 65535",
    ),
    ("stages.0.port", True, "mlpacker_pipeline.stages[0].port: True must be an integer between 1 and 65535"),
    (
        "stages.0.trusted_types",
        "numpy.dtype",
        "mlpacker_pipeline.stages[0].trusted_types: expected a list of type",
    ),
    (
        "stages.0.trusted_types",
        ["numpy.dtype"],
        "stages[0].trusted_types: only skops artifacts have trusted types",
    ),
    ("stages.0.group", "DELETE", "mlpacker_pipeline.stages[0].group: required with layout 'distributed'"),
    (
        "stages.0.group",
        "egde",
        "mlpacker_pipeline.stages[0].group: inventory group 'egde' does not exist"
        " (existing groups: broker, cloud, edge)",
    ),
    ("stages.0.group", "fog", "mlpacker_pipeline.stages[0].group: inventory group 'fog' has no hosts"),
    (
        "stages.0.group",
        ["edge"],
        "mlpacker_pipeline.stages[0].group: expected an inventory group name, got ['edge']",
    ),
    ("group", "cloud", "mlpacker_pipeline.group: only used with layout 'atomic'"),
]


@pytest.mark.parametrize(("path", "value", "message"), DISTRIBUTED_ERRORS)
def test_distributed_spec_errors(base_dir: Path, path: str, value: Any, message: str) -> None:
    pipeline = distributed_spec()
    set_path(pipeline, path, value)
    with pytest.raises(SpecError) as raised:
        validate_pipeline(pipeline, GROUPS, str(base_dir))
    expected = message.replace("{base}", str(base_dir))
    assert any(expected in error for error in raised.value.errors), raised.value.errors


ATOMIC_ERRORS = [
    ("group", "DELETE", "mlpacker_pipeline.group: required with layout 'atomic'"),
    ("group", "nowhere", "mlpacker_pipeline.group: inventory group 'nowhere' does not exist"),
    ("stages.1.group", "edge", "mlpacker_pipeline.stages[1].group: not allowed with layout 'atomic'"),
    ("stages.0.containers", True, "mlpacker_pipeline.stages[0].containers: not allowed with layout 'atomic'"),
    (
        "stages.1.port",
        9000,
        "mlpacker_pipeline.stages[1].port: with layout 'atomic' only the first stage's port",
    ),
    (
        "stages.0.function",
        "pkg.mod:fn",
        "mlpacker_pipeline.stages[0]: exactly one of 'artifact' or 'function'",
    ),
    ("stages.1.artifact", "DELETE", "mlpacker_pipeline.stages[1]: exactly one of 'artifact' or 'function'"),
]


@pytest.mark.parametrize(("path", "value", "message"), ATOMIC_ERRORS)
def test_atomic_spec_errors(base_dir: Path, path: str, value: Any, message: str) -> None:
    pipeline = atomic_spec()
    set_path(pipeline, path, value)
    with pytest.raises(SpecError) as raised:
        validate_pipeline(pipeline, GROUPS, str(base_dir))
    assert any(message in error for error in raised.value.errors), raised.value.errors


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        (
            {"name": "fn", "function": "features.clean:drop"},
            "mlpacker_pipeline.stages[0].function: function stages need mlpacker_pipeline.code_dir",
        ),
        ({"name": "fn", "function": "features-clean"}, "stages[0].function: 'features-clean' must look like"),
        (
            {"name": "fn", "function": "a.b:c", "method": "predict"},
            "stages[0].method: 'predict' is not valid for a",
        ),
        (
            {"name": "fn", "function": "a.b:c", "format": "onnx"},
            "stages[0].format: 'onnx' is not valid for a function",
        ),
    ],
)
def test_function_stage_errors(base_dir: Path, stage: dict[str, Any], message: str) -> None:
    pipeline = atomic_spec()
    pipeline["stages"] = [stage]
    with pytest.raises(SpecError) as raised:
        validate_pipeline(pipeline, GROUPS, str(base_dir))
    assert any(message in error for error in raised.value.errors), raised.value.errors


def test_stream_mode_without_any_broker_is_an_error(base_dir: Path) -> None:
    pipeline = distributed_spec()
    pipeline["mode"] = "stream"
    with pytest.raises(SpecError) as raised:
        validate_pipeline(pipeline, GROUPS_WITHOUT_BROKER, str(base_dir))
    assert raised.value.errors == [
        "mlpacker_pipeline.mode: 'stream' needs an MQTT broker: set mlpacker_broker (host, port, ...)"
        " or put a host in the inventory group 'broker' to get a managed Mosquitto"
    ]


def test_all_problems_are_reported_at_once(base_dir: Path) -> None:
    pipeline = copy.deepcopy(distributed_spec())
    pipeline["name"] = "Bad Name"
    pipeline["stages"][0]["group"] = "missing"
    pipeline["stages"][1]["method"] = "fit"
    with pytest.raises(SpecError) as raised:
        validate_pipeline(pipeline, GROUPS, str(base_dir))
    assert len(raised.value.errors) == 3


def test_a_spec_that_is_not_a_mapping_is_an_error(base_dir: Path) -> None:
    with pytest.raises(SpecError) as raised:
        validate_pipeline(["iris"], GROUPS, str(base_dir))
    assert raised.value.errors == ["mlpacker_pipeline: expected a mapping, got list"]
