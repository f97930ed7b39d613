# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Validation and normalisation of the ``mlpacker_pipeline`` spec.

Every problem is collected (not just the first) and named by its field path, e.g.
``mlpacker_pipeline.stages[1].name: 'Classify' must match ^[a-z][a-z0-9-]{0,30}$``, so a user fixes a
spec in one round trip. The result is a plain dict with every default resolved (absolute paths,
explicit methods and formats, topics), which placement.py turns into services.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Any

from ansible_collections.mlpacker.core.plugins.module_utils.artifact_pins import (
    PinMismatch,
    normalise_sha256,
    verify_pin,
)
from ansible_collections.mlpacker.core.plugins.module_utils.broker import BROKER_GROUP
from ansible_collections.mlpacker.core.plugins.module_utils.function_source import function_source_problem
from ansible_collections.mlpacker.core.plugins.module_utils.input_signature import spec_signature
from ansible_collections.mlpacker.core.plugins.module_utils.path_containment import outside_message
from ansible_collections.mlpacker.core.plugins.module_utils.pip_requirements import check_requirements
from ansible_collections.mlpacker.core.plugins.module_utils.requirements_lock import read_lock
from ansible_collections.mlpacker.core.plugins.module_utils.runtime_contract import (
    ARTIFACT_FORMATS,
    CALL_METHOD,
    EXTENSION_FORMATS,
    FUNCTION_FORMAT,
    METHODS,
    MODES,
    default_method,
)

SPEC_ROOT = "mlpacker_pipeline"
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"
FUNCTION_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
LAYOUTS = ("atomic", "distributed")

PIPELINE_KEYS = (
    "name",
    "mode",
    "layout",
    "containers",
    "group",
    "requirements",
    "requirements_lock",
    "base_dir",
    "code_dir",
    "input_topic",
    "output_topic",
    "error_topic",
    "stages",
)
STAGE_KEYS = (
    "name",
    "artifact",
    "function",
    "format",
    "method",
    "group",
    "port",
    "containers",
    "trusted_types",
    "sha256",
    "input",
)
# Groups Ansible always defines; they are not deployment targets a user means when a group is missing.
IMPLICIT_GROUPS = ("all", "ungrouped")


class SpecError(Exception):
    """The spec is invalid; ``errors`` holds one message per problem, each naming the field."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


def default_topics(name: str) -> dict[str, str]:
    return {
        "input_topic": f"mlpacker/{name}/in",
        "output_topic": f"mlpacker/{name}/out",
        "error_topic": f"mlpacker/{name}/errors",
    }


def closest_key_hint(key: Any, valid_keys: tuple[str, ...]) -> str:
    matches = difflib.get_close_matches(str(key), valid_keys, n=1, cutoff=0.6)
    if matches:
        return f" (did you mean '{matches[0]}'?)"
    return " (valid keys: {})".format(", ".join(valid_keys))


def check_unknown_keys(
    errors: list[str], field: str, given: dict[str, Any], valid_keys: tuple[str, ...]
) -> None:
    for key in given:
        if key not in valid_keys:
            errors.append(f"{field}: unknown key '{key}'{closest_key_hint(key, valid_keys)}")


def existing_groups_text(groups: dict[str, list[str]]) -> str:
    names = sorted(group for group, hosts in groups.items() if hosts and group not in IMPLICIT_GROUPS)
    return ", ".join(names) if names else "none"


def check_group(errors: list[str], field: str, group: Any, groups: dict[str, list[str]]) -> list[str]:
    """Return the group's hosts, or record why the group cannot be used."""
    if not isinstance(group, str) or not group:
        errors.append(f"{field}: expected an inventory group name, got {group!r}")
        return []
    if group not in groups:
        errors.append(
            f"{field}: inventory group '{group}' does not exist"
            f" (existing groups: {existing_groups_text(groups)})"
        )
        return []
    hosts = list(groups[group] or [])
    if not hosts:
        errors.append(
            f"{field}: inventory group '{group}' has no hosts"
            f" (groups with hosts: {existing_groups_text(groups)})"
        )
    return hosts


def check_bool(errors: list[str], field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        errors.append(f"{field}: expected true or false, got {value!r}")
        return False
    return value


def check_name(errors: list[str], field: str, value: Any) -> str:
    if not isinstance(value, str) or not re.match(NAME_PATTERN, value):
        errors.append(f"{field}: {value!r} must match {NAME_PATTERN}")
        return ""
    return value


def check_topic(errors: list[str], field: str, value: Any) -> str:
    # Services publish to these topics, and MQTT forbids wildcards in a publish topic.
    if not isinstance(value, str) or not value or "+" in value or "#" in value or "\x00" in value:
        errors.append(f"{field}: {value!r} must be a non-empty MQTT topic without wildcards (+, #)")
        return ""
    return value


def resolve_dir(errors: list[str], field: str, value: Any, relative_to: str) -> str:
    if not isinstance(value, str) or not value:
        errors.append(f"{field}: expected a directory path, got {value!r}")
        return ""
    resolved = os.path.abspath(os.path.join(relative_to, os.path.expanduser(value)))
    if not os.path.isdir(resolved):
        errors.append(f"{field}: directory {resolved} does not exist on the controller")
    return resolved


def check_artifact_rules(
    errors: list[str], field: str, stage: dict[str, Any], resolved: str, spec: dict[str, Any], rules: dict
) -> str | None:
    """The artifact's pin (``sha256``), after checking the file: inside base_dir (unless allowed), its pin
    valid and equal to the file's digest (read, never loaded), a pin present when pins are required."""
    if not rules.get("allow_paths_outside_base_dir"):
        outside = outside_message(field + ".artifact", resolved, spec["base_dir"])
        if outside:
            errors.append(outside)
            return None
    pin = None
    if stage.get("sha256") is not None:
        try:
            pin = normalise_sha256(stage["sha256"])
        except ValueError as exc:
            errors.append(f"{field}.sha256: {exc}")
            return None
    if not os.path.isfile(resolved):
        return pin
    try:
        actual = verify_pin(field + ".sha256", resolved, pin)
    except PinMismatch as exc:
        errors.append(str(exc))
        return pin
    except OSError as exc:
        errors.append(f"{field}.artifact: cannot read {resolved}: {exc}")
        return pin
    if pin is None and rules.get("require_pinned_artifacts"):
        errors.append(
            f"{field}.sha256: required (mlpacker_require_pinned_artifacts is true);"
            f" the file {resolved} now has sha256 {actual} - pin it once you have checked it"
        )
    return pin


def format_for_path(path: str) -> str | None:
    """Artifact format from the file extension (None when the extension is not known)."""
    return EXTENSION_FORMATS.get(os.path.splitext(path)[1].lower())


def validate_stage(
    errors: list[str],
    field: str,
    stage: dict[str, Any],
    index: int,
    is_last: bool,
    spec: dict[str, Any],
    groups: dict[str, list[str]],
    rules: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One stage, normalised. ``rules``: ``allow_paths_outside_base_dir`` and ``require_pinned_artifacts``
    (the role's settings, both false by default)."""
    rules = rules or {}
    check_unknown_keys(errors, field, stage, STAGE_KEYS)
    normal: dict[str, Any] = {"index": index}
    if "name" not in stage:
        errors.append(f"{field}.name: required")
        normal["name"] = ""
    else:
        normal["name"] = check_name(errors, field + ".name", stage["name"])

    has_artifact = stage.get("artifact") is not None
    has_function = stage.get("function") is not None
    normal["artifact"] = None
    normal["function"] = None
    normal["sha256"] = None
    normal["input"], input_problems = spec_signature(stage.get("input"), field + ".input")
    errors.extend(input_problems)
    stage_format = ""
    if has_artifact == has_function:
        errors.append(f"{field}: exactly one of 'artifact' or 'function' is required")
    elif has_artifact:
        artifact = stage["artifact"]
        if not isinstance(artifact, str) or not artifact:
            errors.append(f"{field}.artifact: expected a file path, got {artifact!r}")
        else:
            resolved = os.path.abspath(os.path.join(spec["base_dir"], os.path.expanduser(artifact)))
            normal["artifact"] = resolved
            if not os.path.isfile(resolved):
                errors.append(f"{field}.artifact: {resolved} does not exist on the controller")
            normal["sha256"] = check_artifact_rules(errors, field, stage, resolved, spec, rules)
            stage_format = stage.get("format") or format_for_path(resolved) or ""
            if stage_format not in ARTIFACT_FORMATS:
                errors.append(
                    f"{field}.format: cannot use {stage.get('format')!r} for artifact {resolved};"
                    f" set format to one of {', '.join(ARTIFACT_FORMATS)}"
                    f" (extensions: {', '.join(EXTENSION_FORMATS)})"
                )
    else:
        function = stage["function"]
        stage_format = FUNCTION_FORMAT
        if not isinstance(function, str) or not re.match(FUNCTION_PATTERN, function):
            errors.append(f"{field}.function: {function!r} must look like 'package.module:callable'")
        else:
            normal["function"] = function
            if spec["code_dir"] and os.path.isdir(spec["code_dir"]):
                problem = function_source_problem(field + ".function", function, spec["code_dir"])
                if problem:
                    errors.append(problem)
        if stage.get("sha256") is not None:
            errors.append(
                f"{field}.sha256: only artifact stages are pinned (a function stage's code ships from"
                f" {SPEC_ROOT}.code_dir)"
            )
        if stage.get("format") not in (None, FUNCTION_FORMAT):
            errors.append(
                "{}.format: {!r} is not valid for a function stage (use 'function')".format(
                    field, stage["format"]
                )
            )
        if not spec["code_dir"]:
            errors.append(
                f"{field}.function: function stages need {SPEC_ROOT}.code_dir (the Python code to ship)"
            )
    normal["format"] = stage_format

    method = stage.get("method")
    if method is None:
        method = default_method(stage_format, is_last)
    elif method not in METHODS:
        errors.append("{}.method: {!r} is not one of {}".format(field, method, ", ".join(METHODS)))
    elif stage_format == FUNCTION_FORMAT and method != CALL_METHOD:
        errors.append(f"{field}.method: {method!r} is not valid for a function stage (only 'call')")
    normal["method"] = method

    trusted_types = stage.get("trusted_types", [])
    if not isinstance(trusted_types, list) or not all(isinstance(item, str) for item in trusted_types):
        errors.append(f"{field}.trusted_types: expected a list of type names, got {trusted_types!r}")
        trusted_types = []
    elif trusted_types and stage_format != "skops":
        errors.append(
            f"{field}.trusted_types: only skops artifacts have trusted types (format is {stage_format!r})"
        )
    normal["trusted_types"] = list(trusted_types)

    port = stage.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        errors.append(f"{field}.port: {port!r} must be an integer between 1 and 65535")
        port = None
    normal["port"] = port

    normal["containers"] = spec["containers"]
    if "containers" in stage:
        normal["containers"] = check_bool(errors, field + ".containers", stage["containers"])

    normal["group"] = None
    normal["hosts"] = []
    if spec["layout"] == "atomic":
        # Silently ignoring these would deploy something else than the spec describes.
        for key in ("group", "containers"):
            if key in stage:
                errors.append(
                    f"{field}.{key}: not allowed with layout 'atomic'"
                    f" (every host of {SPEC_ROOT}.group runs the whole pipeline);"
                    " use layout 'distributed' or move it to the pipeline level"
                )
        if port is not None and index > 0:
            errors.append(
                f"{field}.port: with layout 'atomic' only the first stage's port is used"
                " (it is the service's port)"
            )
        normal["group"] = spec["group"]
        normal["hosts"] = list(spec["hosts"])
    elif "group" not in stage:
        errors.append(
            f"{field}.group: required with layout 'distributed' (the inventory group running this stage)"
        )
    else:
        normal["group"] = stage["group"]
        normal["hosts"] = check_group(errors, field + ".group", stage["group"], groups)
    return normal


def validate_pipeline(
    pipeline: Any,
    groups: dict[str, list[str]],
    working_dir: str,
    broker_given: bool = False,
    allow_direct_references: bool = False,
    rules: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate ``pipeline`` against the inventory ``groups``;
    return the normalised spec or raise SpecError. ``rules`` (artifact paths and pins, see validate_stage)."""
    rules = rules or {}
    errors: list[str] = []
    if not isinstance(pipeline, dict):
        raise SpecError([f"{SPEC_ROOT}: expected a mapping, got {type(pipeline).__name__}"])
    check_unknown_keys(errors, SPEC_ROOT, pipeline, PIPELINE_KEYS)
    spec: dict[str, Any] = {}

    if "name" not in pipeline:
        errors.append(f"{SPEC_ROOT}.name: required")
        spec["name"] = ""
    else:
        spec["name"] = check_name(errors, SPEC_ROOT + ".name", pipeline["name"])

    for key, choices in (("mode", MODES), ("layout", LAYOUTS)):
        value = pipeline.get(key, choices[0])
        if value not in choices:
            errors.append("{}.{}: {!r} is not one of {}".format(SPEC_ROOT, key, value, ", ".join(choices)))
        spec[key] = value

    spec["containers"] = check_bool(errors, SPEC_ROOT + ".containers", pipeline.get("containers", False))

    requirements = pipeline.get("requirements", [])
    # PEP 508 requirements only: no pip option, URL or path reaches pip download (pip_requirements.py).
    requirement_problems = check_requirements(
        requirements, SPEC_ROOT + ".requirements", allow_direct_references
    )
    errors.extend(requirement_problems)
    spec["requirements"] = [] if requirement_problems else list(requirements)

    spec["base_dir"] = os.path.abspath(working_dir)
    if pipeline.get("base_dir") is not None:
        spec["base_dir"] = resolve_dir(errors, SPEC_ROOT + ".base_dir", pipeline["base_dir"], working_dir)
    # A pip hash-checking requirements file (requirements_lock.py): the wheelhouse is downloaded and installed
    # with --require-hashes; the spec's requirements must each be in it.
    lock_value = pipeline.get("requirements_lock")
    if isinstance(lock_value, str) and lock_value.strip() and not rules.get("allow_paths_outside_base_dir"):
        # Checked before the file is opened: a spec must not make the controller read files outside base_dir.
        lock_path = os.path.abspath(os.path.join(spec["base_dir"], os.path.expanduser(lock_value)))
        outside = outside_message(SPEC_ROOT + ".requirements_lock", lock_path, spec["base_dir"])
        if outside:
            errors.append(outside)
            lock_value = None
    spec["requirements_lock"], lock_problems = read_lock(
        lock_value,
        spec["base_dir"],
        SPEC_ROOT + ".requirements_lock",
        spec["requirements"],
        SPEC_ROOT + ".requirements",
    )
    errors.extend(lock_problems)
    spec["code_dir"] = None
    if pipeline.get("code_dir") is not None:
        spec["code_dir"] = resolve_dir(
            errors, SPEC_ROOT + ".code_dir", pipeline["code_dir"], spec["base_dir"]
        )
        outside = outside_message(SPEC_ROOT + ".code_dir", spec["code_dir"], spec["base_dir"])
        if spec["code_dir"] and outside and not rules.get("allow_paths_outside_base_dir"):
            errors.append(outside)

    topics = default_topics(spec["name"] or "pipeline")
    for key, default in topics.items():
        spec[key] = check_topic(errors, f"{SPEC_ROOT}.{key}", pipeline.get(key, default))
    used_topics = [spec[key] for key in topics if spec[key]]
    if len(set(used_topics)) != len(used_topics):
        errors.append(
            "{}: input_topic, output_topic and error_topic must differ, got {}".format(
                SPEC_ROOT, ", ".join(used_topics)
            )
        )

    spec["group"] = None
    spec["hosts"] = []
    if spec["layout"] == "atomic":
        if "group" not in pipeline:
            errors.append(
                f"{SPEC_ROOT}.group: required with layout 'atomic' (its hosts each run the whole pipeline)"
            )
        else:
            spec["group"] = pipeline["group"]
            spec["hosts"] = check_group(errors, SPEC_ROOT + ".group", pipeline["group"], groups)
    elif "group" in pipeline:
        errors.append(
            f"{SPEC_ROOT}.group: only used with layout 'atomic';"
            " with layout 'distributed' set a group on every stage"
        )

    stages = pipeline.get("stages")
    spec["stages"] = []
    if not isinstance(stages, list) or not stages:
        errors.append(f"{SPEC_ROOT}.stages: expected a non-empty list of stages, got {stages!r}")
    else:
        seen_names: dict[str, int] = {}
        for index, stage in enumerate(stages):
            field = f"{SPEC_ROOT}.stages[{index}]"
            if not isinstance(stage, dict):
                errors.append(f"{field}: expected a mapping, got {stage!r}")
                continue
            normal = validate_stage(
                errors, field, stage, index, index == len(stages) - 1, spec, groups, rules
            )
            if normal["name"] in seen_names:
                errors.append(
                    f"{field}.name: '{normal['name']}' is already used"
                    f" by stages[{seen_names[normal['name']]}]"
                )
            elif normal["name"]:
                seen_names[normal["name"]] = index
            spec["stages"].append(normal)

    if spec["mode"] == "stream" and not broker_given and not groups.get(BROKER_GROUP):
        errors.append(
            f"{SPEC_ROOT}.mode: 'stream' needs an MQTT broker: set mlpacker_broker (host, port, ...)"
            " or put a host in the"
            f" inventory group '{BROKER_GROUP}' to get a managed Mosquitto"
        )
    if errors:
        raise SpecError(errors)
    return spec
