# ruff: noqa: E402 - Ansible plugins keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: rollout_left_behind
author: MLPacker contributors (@mlpacker)
short_description: The hosts that did not finish a phase of a rollout, with why
version_added: 0.1.0
description:
  - For each host, the failure it kept in the fact named O(failure), or, when it has no true fact named
    O(done), that Ansible took it out of the play (unreachable, or failed before that step).
options:
  _input:
    description: The hosts to look at.
    type: list
    elements: str
    required: true
  hostvars:
    description: Ansible's C(hostvars).
    type: dict
    required: true
  done:
    description: The fact a host sets once it finished the phase.
    type: str
    required: true
  failure:
    description: The fact a host sets, with the reason, when the phase failed on it and it stayed in the play.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Find the hosts that did not stage
  ansible.builtin.set_fact:
    _unstaged: "{{ ansible_play_hosts_all | mlpacker.core.rollout_left_behind(hostvars, '_staged') }}"
"""

RETURN = r"""
_value:
  description: Host name to the reason it did not finish (empty when every host did).
  type: dict
"""

from ansible_collections.mlpacker.core.plugins.module_utils.rollout import hosts_left_behind


def rollout_left_behind(hosts, hostvars, done, failure=""):
    return hosts_left_behind(list(hosts), hostvars, done, failure)


class FilterModule:
    def filters(self):
        return {"rollout_left_behind": rollout_left_behind}
