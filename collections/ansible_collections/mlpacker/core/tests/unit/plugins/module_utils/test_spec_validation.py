# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Validation of the mlpacker_pipeline spec: every rule, with the message naming the field and value."""

from __future__ import annotations

import copy
import os
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
    (base_dir / "project" / "code" / "features").mkdir(parents=True)
    (base_dir / "project" / "code" / "features" / "clean.py").write_text("def drop(rows):\n    return rows\n")
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


# Untrusted input and supply chain (issue #13): paths inside base_dir, pinned artifacts, function sources.
OUTSIDE_HINT = "move it under base_dir, set base_dir, or set mlpacker_allow_paths_outside_base_dir: true"


def scaler_digest(base_dir: Path) -> str:
    import hashlib

    return hashlib.sha256((base_dir / "models" / "scaler.joblib").read_bytes()).hexdigest()


def test_paths_outside_base_dir_are_refused_naming_field_and_paths(base_dir: Path, tmp_path_factory) -> None:
    outside = tmp_path_factory.mktemp("elsewhere")
    (outside / "stolen.joblib").write_bytes(b"x")
    (base_dir / "models" / "linked.joblib").symlink_to(outside / "stolen.joblib")
    (base_dir / "linked-code").symlink_to(outside)
    pipeline = distributed_spec()
    pipeline["base_dir"] = str(base_dir)
    pipeline["code_dir"] = "linked-code"
    pipeline["stages"][0]["artifact"] = str(outside / "stolen.joblib")
    pipeline["stages"][1]["artifact"] = "models/linked.joblib"
    with pytest.raises(SpecError) as caught:
        validate_pipeline(pipeline, GROUPS, str(base_dir))
    real_base = os.path.realpath(base_dir)
    assert caught.value.errors == [
        f"mlpacker_pipeline.code_dir: {base_dir / 'linked-code'} (resolves to {outside}) is outside base_dir"
        f" {real_base}; {OUTSIDE_HINT}",
        f"mlpacker_pipeline.stages[0].artifact: {outside / 'stolen.joblib'} is outside base_dir {real_base};"
        f" {OUTSIDE_HINT}",
        f"mlpacker_pipeline.stages[1].artifact: {base_dir / 'models' / 'linked.joblib'} (resolves to"
        f" {outside / 'stolen.joblib'}) is outside base_dir {real_base}; {OUTSIDE_HINT}",
    ]
    spec = validate_pipeline(pipeline, GROUPS, str(base_dir), rules={"allow_paths_outside_base_dir": True})
    assert spec["stages"][0]["artifact"] == str(outside / "stolen.joblib")


def test_a_requirements_lock_outside_base_dir_is_refused_before_it_is_read(
    base_dir: Path, tmp_path_factory
) -> None:
    outside = tmp_path_factory.mktemp("elsewhere")
    (outside / "requirements.lock").write_text("not a lock: never read\n")
    pipeline = distributed_spec()
    pipeline["base_dir"] = str(base_dir)
    pipeline["requirements_lock"] = str(outside / "requirements.lock")
    with pytest.raises(SpecError) as caught:
        validate_pipeline(pipeline, GROUPS, str(base_dir))
    assert caught.value.errors == [
        f"mlpacker_pipeline.requirements_lock: {outside / 'requirements.lock'} is outside base_dir"
        f" {os.path.realpath(base_dir)}; {OUTSIDE_HINT}"
    ]
    with pytest.raises(SpecError) as caught:  # allowed outside: read, and refused for what it holds
        validate_pipeline(pipeline, GROUPS, str(base_dir), rules={"allow_paths_outside_base_dir": True})
    assert all("outside base_dir" not in error for error in caught.value.errors)
    assert any("requirements_lock" in error for error in caught.value.errors)


@pytest.mark.parametrize(
    ("stage_changes", "rules", "message"),
    [
        (
            {"sha256": "abc"},
            {},
            "mlpacker_pipeline.stages[0].sha256: expected 64 hex digits (a sha256), got 'abc'",
        ),
        (
            {"sha256": "0" * 64},
            {},
            "mlpacker_pipeline.stages[0].sha256: artifact {path} has sha256 {actual},"
            " expected (pinned) {zeros}; refusing to load it (the file changed, or the pin is wrong)",
        ),
        (
            {},
            {"require_pinned_artifacts": True},
            "mlpacker_pipeline.stages[0].sha256: required (mlpacker_require_pinned_artifacts is true);"
            " the file {path} now has sha256 {actual} - pin it once you have checked it",
        ),
    ],
)
def test_artifact_pins(base_dir: Path, stage_changes: dict, rules: dict, message: str) -> None:
    pipeline = distributed_spec()
    pipeline["stages"][0].update(stage_changes)
    pipeline["stages"][1]["sha256"] = hashlib_of(base_dir / "models" / "clf.joblib")
    with pytest.raises(SpecError) as caught:
        validate_pipeline(pipeline, GROUPS, str(base_dir), rules=rules)
    path = base_dir / "models" / "scaler.joblib"
    assert caught.value.errors == [message.format(path=path, actual=scaler_digest(base_dir), zeros="0" * 64)]


def hashlib_of(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_matching_pins_are_kept_in_lower_case(base_dir: Path) -> None:
    pipeline = distributed_spec()
    for stage, name in zip(pipeline["stages"], ("scaler.joblib", "clf.joblib"), strict=True):
        stage["sha256"] = hashlib_of(base_dir / "models" / name).upper()
    spec = validate_pipeline(pipeline, GROUPS, str(base_dir), rules={"require_pinned_artifacts": True})
    assert [stage["sha256"] for stage in spec["stages"]] == [
        hashlib_of(base_dir / "models" / name) for name in ("scaler.joblib", "clf.joblib")
    ]


@pytest.mark.parametrize(
    ("function", "files", "message"),
    [
        (
            "subprocess:check_output",
            {},
            "mlpacker_pipeline.stages[0].function: module 'subprocess' is not a file under code_dir {code}",
        ),
        ("os.path:join", {"os/__init__.py": ""}, "module 'os.path' is not a file under code_dir {code}"),
        ("features.clean:drop", {"features/clean.py": "def drop(rows):\n    return rows\n"}, None),
    ],
)
def test_function_stage_module_must_be_under_code_dir(
    base_dir: Path, function: str, files: dict[str, str], message: str | None
) -> None:
    for name, text in files.items():
        (base_dir / "code" / name).parent.mkdir(parents=True, exist_ok=True)
        (base_dir / "code" / name).write_text(text)
    pipeline = atomic_spec()
    pipeline["code_dir"] = "code"
    pipeline["stages"][0] = {"name": "steal", "function": function}
    if message is None:
        assert validate_pipeline(pipeline, GROUPS, str(base_dir))["stages"][0]["function"] == function
        return
    with pytest.raises(SpecError) as caught:
        validate_pipeline(pipeline, GROUPS, str(base_dir))
    assert len(caught.value.errors) == 1
    assert message.format(code=base_dir / "code") in caught.value.errors[0]


@pytest.mark.parametrize(
    ("given", "columns", "problem"),
    [
        (
            [{"name": "sepal_length", "type": "double"}, {"name": "species", "type": "string"}],
            [{"name": "sepal_length", "type": "number"}, {"name": "species", "type": "string"}],
            None,
        ),
        (["long", "float", "integer"], [{"name": None, "type": "number"}] * 3, None),
        (
            [{"name": "x", "type": "tensor"}],
            None,
            "mlpacker_pipeline.stages[0].input[0].type: 'tensor' is not",
        ),
        (
            [{"name": "x", "kind": "double"}],
            None,
            "mlpacker_pipeline.stages[0].input[0]: unknown key(s) kind",
        ),
        ([], None, "mlpacker_pipeline.stages[0].input: expected a non-empty list of columns"),
    ],
)
def test_stage_input_signature(base_dir: Path, given: Any, columns: Any, problem: str | None) -> None:
    pipeline = distributed_spec()
    pipeline["stages"][0]["input"] = given
    if problem is None:
        stage = validate_pipeline(pipeline, GROUPS, str(base_dir))["stages"][0]
        assert stage["input"] == {"source": "spec", "columns": columns}
        return
    with pytest.raises(SpecError) as caught:
        validate_pipeline(pipeline, GROUPS, str(base_dir))
    assert any(error.startswith(problem) for error in caught.value.errors), caught.value.errors
