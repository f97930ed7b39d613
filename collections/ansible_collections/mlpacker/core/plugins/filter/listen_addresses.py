# ruff: noqa: E402 - Ansible plugins keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: listen_addresses
author: MLPacker contributors (@mlpacker)
short_description: Where an MLPacker service listens on its host
version_added: 0.1.0
description:
  - The C(bind) of the resolved security settings (C(mlpacker.core.security_settings)) when given; else the
    address Ansible uses to reach the host plus loopback (loopback alone for a local host). Never every
    interface unless asked with C(bind=0.0.0.0).
options:
  _input:
    description: The address the inventory gives the host (the plan's service C(address)).
    type: str
    required: true
  security:
    description: The resolved security settings.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Where the service listens
  ansible.builtin.debug:
    msg: "{{ service.address | mlpacker.core.listen_addresses(security) }}"
"""

RETURN = r"""
_value:
  description: The addresses, e.g. V([10.0.0.2, 127.0.0.1]).
  type: list
  elements: str
"""

from ansible_collections.mlpacker.core.plugins.module_utils.security_settings import listen_addresses


class FilterModule:
    def filters(self):
        return {"listen_addresses": listen_addresses}
