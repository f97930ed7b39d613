# ruff: noqa: E402 - Ansible plugins keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: security_settings
author: MLPacker contributors (@mlpacker)
short_description: The deploy's security settings over their safe defaults
version_added: 0.1.0
description:
  - C(mlpacker_security) over its defaults (C(tls) and C(auth) on, C(bind) empty = the address Ansible uses
    for each host plus loopback); O(insecure=true) (C(mlpacker_insecure)) turns TLS and auth off.
  - C(mutual_tls) (mutual TLS on the entry service) is on when asked or when C(client_ca_file) is given.
  - Fails naming the setting for an unknown key, a value of the wrong type, a CA certificate without its key,
    mutual TLS without TLS, C(client_ca_file) with C(mutual_tls=false), or a C(client_ca_file) that cannot be
    read or holds anything but PEM CA certificates.
options:
  _input:
    description: The C(mlpacker_security) setting.
    type: dict
    required: true
  insecure:
    description: The C(mlpacker_insecure) setting.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Resolve the security settings
  ansible.builtin.set_fact:
    _security: "{{ mlpacker_security | mlpacker.core.security_settings(insecure=mlpacker_insecure) }}"
"""

RETURN = r"""
_value:
  description: C(tls), C(auth), C(bind) (a list), C(mutual_tls), C(client_ca_file), C(ca_cert_file),
    C(ca_key_file), C(token_file) and C(insecure).
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mlpacker.core.plugins.module_utils.security_settings import (
    SecuritySettingsError,
    resolve_security,
)


def security_settings(settings, insecure=False):
    try:
        return resolve_security(settings, insecure)
    except SecuritySettingsError as exc:
        raise AnsibleFilterError(f"mlpacker.core.security_settings: {exc}") from exc


class FilterModule:
    def filters(self):
        return {"security_settings": security_settings}
