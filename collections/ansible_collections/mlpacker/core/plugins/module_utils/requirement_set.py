# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The pip requirements of a pipeline's services: the libraries its artifacts were made with, the user's own
requirements, and the stage runtime."""

from __future__ import annotations

import re

from ansible_collections.mlpacker.core.plugins.module_utils.input_signature import choose_signature
from ansible_collections.mlpacker.core.plugins.module_utils.runtime_contract import STAGE_KEYS

# The distribution name a requirement starts with ("scikit-learn>=1.5; python_version>'3.9'": scikit-learn).
_NAME = re.compile(r"^\s*([A-Za-z0-9_.-]+)")


def stage_infos(stages, artifacts, smoke_instances=None):
    """Each plan stage with what loading its artifact told (``sha256``, library ``versions``) and its
    ``input_signature`` (the spec's ``input``, else the smoke rows' for the first stage, else the artifact's),
    by name. A pinned stage records its pin, which must be what artifact_info read."""
    if len(stages) != len(artifacts):
        raise ValueError(f"{len(stages)} stages but {len(artifacts)} artifact descriptions")
    infos = {}
    for position, (stage, artifact) in enumerate(zip(stages, artifacts)):  # noqa: B905 - lengths checked
        info = {field: stage.get(field) for field in STAGE_KEYS}
        pin = stage.get("sha256")
        if pin and artifact.get("sha256") != pin:
            raise ValueError(
                f"stage {stage['name']!r}: artifact_info read sha256 {artifact.get('sha256')}, pinned {pin}"
            )
        info["sha256"] = pin or artifact.get("sha256")
        info["versions"] = artifact.get("versions") or {}
        info["input_signature"] = choose_signature(
            stage.get("input"),
            smoke_instances if position == 0 else None,
            artifact.get("input_signature"),
        )
        infos[stage["name"]] = info
    return infos


def library_pins(infos):
    """``name==version`` of every library an artifact recorded, each once, in stage order."""
    pins = []
    for info in infos.values():
        for name, version in info["versions"].items():
            pin = f"{name}=={version}"
            if pin not in pins:
                pins.append(pin)
    return pins


def canonical_name(requirement):
    """The distribution name a requirement (or a ``name==version`` pin) is about, normalized as pip compares
    names: case-insensitive, with ``-``, ``_`` and ``.`` alike (scikit_learn is scikit-learn)."""
    match = _NAME.match(requirement)
    name = match.group(1) if match else requirement
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_set(infos, user_requirements, runtime_version):
    """The artifacts' pins (a library the user names is theirs to pin) and the user's requirements, sorted as
    text regardless of case, then the runtime pinned to ``runtime_version``."""
    user_names = {canonical_name(requirement) for requirement in user_requirements}
    pins = [pin for pin in library_pins(infos) if canonical_name(pin) not in user_names]
    return sorted(pins + list(user_requirements), key=str.lower) + [f"mlpacker-runtime=={runtime_version}"]
