# ruff: noqa: E402 - Ansible plugins keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: client_access
author: MLPacker contributors (@mlpacker)
short_description: How a user reaches a deployed MLPacker pipeline
version_added: 0.1.0
description:
  - What the deployment record adds for its user - C(security) (C(tls), C(auth), and C(mutual_tls=true)
    when the entry service requires a client certificate), C(credentials) (paths to the controller's 0600
    files, never their content - C(ca_file), C(token_file), C(mqtt) with C(username), C(password_file),
    C(ca_file), and with mutual TLS C(client_cert_file) and C(client_key_file)) and C(client_commands), a
    working C(curl) line
    (with C(--cert) and C(--key) under mutual TLS) per REST entry point or the
    C(mosquitto_sub) and C(mosquitto_pub) lines of a stream pipeline. The lines read the token and the
    password from their files when they run.
options:
  _input:
    description: The deployment record so far (C(mode), C(entry_points), C(broker), C(topics)).
    type: dict
    required: true
  credentials:
    description: What M(mlpacker.core.pipeline_credentials) returned; V(null) for an insecure deploy.
    type: dict
  security:
    description: The resolved security settings (C(tls), C(auth), C(mutual_tls)).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Complete the record
  ansible.builtin.set_fact:
    record: "{{ record | combine(record | mlpacker.core.client_access(credentials=creds, security=sec)) }}"
"""

RETURN = r"""
_value:
  description: C(security), C(credentials) and C(client_commands).
  type: dict
"""

from ansible_collections.mlpacker.core.plugins.module_utils.client_access import client_access


def client_access_filter(record, security, credentials=None):
    return client_access(record, credentials, security)


class FilterModule:
    def filters(self):
        return {"client_access": client_access_filter}
