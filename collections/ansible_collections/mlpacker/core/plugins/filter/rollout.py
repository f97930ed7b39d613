# ruff: noqa: E402 - Ansible plugins keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: rollout
author: MLPacker contributors (@mlpacker)
short_description: How a deploy switches its hosts, from the rollout setting
version_added: 0.1.0
description:
  - Lays the C(mlpacker_rollout) setting over the defaults (C(batch_size) 0, every host in one batch;
    C(max_fail_percentage) 0; C(unstaged_hosts) C(fail)), checks every value, and splits the hosts into the
    batches they are switched in.
  - Fails naming C(mlpacker_rollout.<key>) for an unknown key, a C(batch_size) that is not a whole number
    from 0, a C(max_fail_percentage) that is not a whole number from 0 to 100, or an C(unstaged_hosts) other
    than C(fail) or C(leave).
options:
  _input:
    description: The C(mlpacker_rollout) setting (V(null) or a dictionary of some of its keys).
    type: dict
    required: true
  hosts:
    description: The hosts of the rollout, in the order they are switched.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Plan the rollout
  ansible.builtin.set_fact:
    _rollout: "{{ mlpacker_rollout | mlpacker.core.rollout(hosts=ansible_play_hosts_all) }}"
"""

RETURN = r"""
_value:
  description:
    - C(batch_size), C(max_fail_percentage) and C(unstaged_hosts), checked.
    - C(batches), the hosts C(batch_size) at a time (one batch of all of them for 0).
    - C(max_failed_hosts), how many hosts may end rolled back before the rollout stops (C(max_fail_percentage)
      of the hosts, rounded down).
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mlpacker.core.plugins.module_utils.rollout import RolloutError, rollout_plan


def rollout(setting, hosts):
    try:
        return rollout_plan(setting, list(hosts))
    except RolloutError as exc:
        raise AnsibleFilterError(f"mlpacker.core.rollout: {exc}") from exc


class FilterModule:
    def filters(self):
        return {"rollout": rollout}
