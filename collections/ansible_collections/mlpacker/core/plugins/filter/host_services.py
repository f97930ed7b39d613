# ruff: noqa: E402 - Ansible plugins keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: host_services
author: MLPacker contributors (@mlpacker)
short_description: The services of an MLPacker placement plan that one host runs, split by how they run
version_added: 0.1.0
description:
  - Takes the plan of M(mlpacker.core.pipeline_plan) and returns the services placed on O(host), those
    that run in a virtualenv under a service manager and those that run in containers.
  - Also tells whether nothing of the host's own Python serves (no virtualenv service and not the managed
    broker's host), and the service positions every host loops over.
options:
  _input:
    description: The placement plan (its C(services), each with C(host) and C(containers)).
    type: dict
    required: true
  host:
    description: The inventory name of the host.
    type: str
    required: true
  broker_host:
    description: The inventory name of the managed broker's host, or an empty string when there is none.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Work out what this host runs
  ansible.builtin.set_fact:
    services_here: >-
      {{ plan | mlpacker.core.host_services(host=inventory_hostname, broker_host=broker_host) }}
"""

RETURN = r"""
_value:
  description:
    - C(all), C(venv) and C(container) - the host's services (plan entries), all of them and split by how
      they run.
    - C(containers_only) - true when the host runs no virtualenv service and is not the managed broker's
      host.
    - C(positions) - 0..N-1 for N the most services any host runs.
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mlpacker.core.plugins.module_utils.host_services import host_services


def host_services_filter(plan, host, broker_host=""):
    try:
        return host_services(plan, host, broker_host)
    except (KeyError, TypeError) as exc:
        raise AnsibleFilterError(f"mlpacker.core.host_services: not a placement plan ({exc!r})") from exc


class FilterModule:
    def filters(self):
        return {"host_services": host_services_filter}
