# ruff: noqa: E402 - Ansible plugins keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: request_limits
author: MLPacker contributors (@mlpacker)
short_description: The request limits of a deploy's services over their defaults
version_added: 0.1.0
description:
  - Lays the C(mlpacker_request_limits) setting over the defaults (C(max_body_bytes) 10485760,
    C(max_instances) 10000, C(body_read_timeout_s) 10, C(max_connections) 100, C(max_message_bytes) 1048576)
    and checks every value.
  - Fails naming C(mlpacker_request_limits.<key>) for an unknown key or a value that is not a number above 0
    (a whole one but for C(body_read_timeout_s)), and when C(max_connections) is not above the runtime's 4
    request threads per worker.
options:
  _input:
    description: The C(mlpacker_request_limits) setting (V(null) or a dictionary of some of the limits).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Resolve the request limits
  ansible.builtin.set_fact:
    _limits: "{{ mlpacker_request_limits | mlpacker.core.request_limits }}"
"""

RETURN = r"""
_value:
  description: Every limit, C(max_body_bytes), C(max_instances), C(body_read_timeout_s), C(max_connections)
    and C(max_message_bytes).
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mlpacker.core.plugins.module_utils.request_limits import (
    RequestLimitsError,
    normalise_request_limits,
)


def request_limits(limits):
    try:
        return normalise_request_limits(limits)
    except RequestLimitsError as exc:
        raise AnsibleFilterError(f"mlpacker.core.request_limits: {exc}") from exc


class FilterModule:
    def filters(self):
        return {"request_limits": request_limits}
