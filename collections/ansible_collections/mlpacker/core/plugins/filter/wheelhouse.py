# ruff: noqa: E402 - Ansible plugins keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: wheelhouse
author: MLPacker contributors (@mlpacker)
short_description: The wheel target and the wheelhouse name of one MLPacker host
version_added: 0.1.0
description:
  - Takes what the host probe printed (the service interpreter's Python version, its C library, the CPU) and
    returns the target the host's wheels must fit - the image's Python and C library on a host that runs only
    containers - and the name of the wheelhouse that holds them.
  - The name, C(cp<XY>-<arch>-<hash>), hashes the target, the requirements, the shipped tools and the
    runtime's content, so hosts with equal inputs share one wheelhouse and any change makes a new one.
options:
  _input:
    description: The probe's output lines - Python C(X.Y), glibc version, machine.
    type: list
    elements: str
    required: true
  containers_only:
    description: The host runs only containers.
    type: bool
    default: false
  container_python:
    description: The base image's Python version.
    type: str
    default: "3.11"
  container_glibc:
    description: The base image's C library version.
    type: str
    default: "2.36"
  requirements:
    description: The requirement set of the host's services.
    type: list
    elements: str
    required: true
  tools:
    description: What the wheelhouse carries besides the requirements (supervisor, uv).
    type: list
    elements: str
    required: true
  runtime_sha256:
    description: The content hash of the stage runtime's source.
    type: str
    required: true
  lock_sha256:
    description: The content hash of the spec's C(requirements_lock), when it has one.
    type: str
"""

EXAMPLES = r"""
- name: Name this host's wheelhouse
  ansible.builtin.set_fact:
    wheelhouse: >-
      {{ probe.stdout_lines | mlpacker.core.wheelhouse(requirements=requirements, tools=['supervisor'],
         runtime_sha256=runtime.sha256) }}
"""

RETURN = r"""
_value:
  description: C(target) (C(python), C(arch), C(glibc)) and C(id), the wheelhouse's name.
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mlpacker.core.plugins.module_utils.wheelhouse import wheel_target, wheelhouse_id


def wheelhouse_filter(
    probe_lines,
    requirements,
    tools,
    runtime_sha256,
    containers_only=False,
    container_python="3.11",
    container_glibc="2.36",
    lock_sha256=None,
):
    try:
        target = wheel_target(list(probe_lines), containers_only, container_python, container_glibc)
    except ValueError as exc:
        raise AnsibleFilterError(f"mlpacker.core.wheelhouse: {exc}") from exc
    return {
        "target": target,
        "id": wheelhouse_id(target, list(requirements), list(tools), runtime_sha256, lock_sha256),
    }


class FilterModule:
    def filters(self):
        return {"wheelhouse": wheelhouse_filter}
