# ruff: noqa: E402 - Ansible plugins keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: stage_requirements
author: MLPacker contributors (@mlpacker)
short_description: An MLPacker pipeline's stage descriptions and the pip requirements of its services
version_added: 0.1.0
description:
  - Joins the plan's stages with what M(mlpacker.core.artifact_info) told of each artifact (C(sha256), library
    C(versions)), by stage name. A pinned stage (C(sha256) in the plan) records its pin.
  - Records each stage's C(input_signature) - the spec's C(input), else (first stage only) the one of
    O(smoke_instances), else the artifact's, else V(null).
  - Pins every library an artifact was made with to that version, except the libraries O(requirements) names
    (compared as pip compares names), adds O(requirements), sorts them as text regardless of case and appends
    the stage runtime pinned to O(runtime_version).
options:
  _input:
    description: The plan's C(stages), in order.
    type: list
    elements: dict
    required: true
  artifacts:
    description: The C(artifact_info) results of the same stages, in the same order.
    type: list
    elements: dict
    required: true
  requirements:
    description: The spec's own pip requirements.
    type: list
    elements: str
    default: []
  runtime_version:
    description: The version of the stage runtime wheel.
    type: str
    required: true
  smoke_instances:
    description: The smoke-test rows (C(mlpacker_smoke_instances)); their JSON types give the first stage's
      input signature when the spec has none.
    type: list
    elements: raw
    default: []
"""

EXAMPLES = r"""
- name: Describe the stages and work out the requirement set
  ansible.builtin.set_fact:
    stage_requirements: >-
      {{ plan.stages | mlpacker.core.stage_requirements(artifacts=artifact_results.results,
         requirements=plan.requirements, runtime_version='0.1.0') }}
"""

RETURN = r"""
_value:
  description:
    - C(stages) - stage name to C(name), C(artifact), C(function), C(format), C(method), C(trusted_types),
      C(sha256), C(versions) and C(input_signature).
    - C(requirements) - the requirement set, the runtime's pin last.
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mlpacker.core.plugins.module_utils.requirement_set import (
    requirement_set,
    stage_infos,
)


def stage_requirements_filter(stages, artifacts, runtime_version, requirements=(), smoke_instances=()):
    try:
        infos = stage_infos(stages, artifacts, list(smoke_instances or []))
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"mlpacker.core.stage_requirements: {exc}") from exc
    return {"stages": infos, "requirements": requirement_set(infos, list(requirements), runtime_version)}


class FilterModule:
    def filters(self):
        return {"stage_requirements": stage_requirements_filter}
