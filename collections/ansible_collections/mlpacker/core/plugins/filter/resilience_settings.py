# ruff: noqa: E402 - Ansible plugins keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: resilience_settings
author: MLPacker contributors (@mlpacker)
short_description: How a deploy's services cope with failing next hops and a refusing broker
version_added: 0.1.0
description:
  - "Lays the C(mlpacker_rest_hops) setting over its defaults (C(timeout_s) 10, C(retry_timeouts) V(false),
    C(ejection) C({consecutive_failures: 3, base_s: 5, max_s: 300})) and checks every value, and checks
    C(mlpacker_stream_max_consecutive_refusals) (default 10)."
  - Fails naming C(mlpacker_rest_hops.<key>) for an unknown key, a C(timeout_s), C(base_s) or C(max_s) that is
    not a number above 0, a C(consecutive_failures) that is not a whole number of at least 0, a
    C(retry_timeouts) that is not true or false, or a C(max_s) shorter than C(base_s); naming
    C(mlpacker_stream_max_consecutive_refusals) when that is not a whole number of at least 1.
  - The result is what the C(resilience) option of the C(mlpacker.core.runtime_config) filter takes.
options:
  _input:
    description: The C(mlpacker_rest_hops) setting (V(null) or a dictionary of some of its keys).
    type: dict
    required: true
  max_consecutive_refusals:
    description: The C(mlpacker_stream_max_consecutive_refusals) setting; V(null) is its default, 10.
    type: int
"""

EXAMPLES = r"""
- name: Resolve the settings
  ansible.builtin.set_fact:
    _resilience: >-
      {{ mlpacker_rest_hops | mlpacker.core.resilience_settings(
           max_consecutive_refusals=mlpacker_stream_max_consecutive_refusals) }}
"""

RETURN = r"""
_value:
  description:
    - C(rest_hops) (every key of C(mlpacker_rest_hops), C(ejection) with its three keys) and
      C(stream_max_consecutive_refusals).
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mlpacker.core.plugins.module_utils.resilience import (
    ResilienceError,
    resilience_settings,
)


def resilience_settings_filter(hops, max_consecutive_refusals=None):
    try:
        return resilience_settings(hops, max_consecutive_refusals)
    except ResilienceError as exc:
        raise AnsibleFilterError(f"mlpacker.core.resilience_settings: {exc}") from exc


class FilterModule:
    def filters(self):
        return {"resilience_settings": resilience_settings_filter}
