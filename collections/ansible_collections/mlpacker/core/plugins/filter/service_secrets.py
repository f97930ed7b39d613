# ruff: noqa: E402 - Ansible plugins keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: service_secrets
author: MLPacker contributors (@mlpacker)
short_description: The credential files one MLPacker service gets, and under which names
version_added: 0.1.0
description:
  - From a service of the placement plan, the deploy's security settings and what
    M(mlpacker.core.pipeline_credentials) made, the list of files the service roles ship into the service's
    secrets folder (C(<release>/secrets), or a folder mounted read-only into a container).
  - The C(mlpacker.core.runtime_config) filter takes the same list and points the configuration at the files.
  - Each entry has C(kind), C(name) (the file name in the secrets folder), C(sha256) of the content, and
    either C(src) (a controller path) or C(content) (a password the user gave as a value; keep the result
    under C(no_log)).
  - Fails naming the field when a needed credential is missing (no certificate for the service's host, no
    MQTT credential for the service, an unreadable file).
options:
  _input:
    description: The service, one entry of the plan's C(services) (C(id), C(host)).
    type: dict
    required: true
  mode:
    description: How the pipeline is reached.
    type: str
    choices: [rest, stream]
    required: true
  security:
    description: The resolved settings, C(tls), C(auth), C(mutual_tls) and C(client_ca_file) (mutual TLS on
      the entry).
    type: dict
    required: true
  credentials:
    description: What M(mlpacker.core.pipeline_credentials) returned; V(null) for an insecure deploy.
    type: dict
  broker:
    description: Stream mode - the services' broker (C(managed), C(password), C(tls)).
    type: dict
  entry:
    description: Whether the service takes the pipeline's input (mutual TLS applies to it only).
    type: bool
    default: false
  purpose:
    description:
      - V(service) - the files the service reads, for its secrets folder (C(root:<service user> 0640)). With
        mutual TLS on the entry service (C(mutual_tls) or C(client_ca_file)), its C(client_ca.crt) is the
        pipeline CA, followed by the user's C(client_ca_file) when given (then a C(content) entry).
      - V(probe) - the client certificate and key the deploy's own probes (health gate, canary, status)
        present to a service that requires one, C(client.crt) and C(client.key) from the pipeline's
        credentials, for C(<release>/probe) (C(root:root 0600)); none when the service requires no client
        certificate.
    type: str
    choices: [service, probe]
    default: service
"""

EXAMPLES = r"""
- name: Ship the service's credentials
  ansible.builtin.copy:
    src: "{{ item.src }}"
    dest: "/opt/mlpacker/iris/iris-scale/releases/0123456789ab/secrets/{{ item.name }}"
    mode: "0640"
  loop: "{{ service | mlpacker.core.service_secrets(mode='rest', security=security, credentials=creds) }}"
  no_log: true
"""

RETURN = r"""
_value:
  description: The files, in a stable order (C(kind), C(name), C(sha256), C(src) or C(content)).
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mlpacker.core.plugins.module_utils.service_secrets import (
    ServiceSecretsError,
    probe_secrets,
    service_secrets,
)


def service_secrets_filter(
    service, mode, security, credentials=None, broker=None, entry=False, purpose="service"
):
    try:
        if purpose == "probe":
            return probe_secrets(service, security=security, credentials=credentials, entry=bool(entry))
        if purpose != "service":
            raise ServiceSecretsError(f"purpose: expected service or probe, got {purpose!r}")
        return service_secrets(
            service, mode=mode, security=security, credentials=credentials, broker=broker, entry=bool(entry)
        )
    except ServiceSecretsError as exc:
        raise AnsibleFilterError(f"mlpacker.core.service_secrets: {exc}") from exc


class FilterModule:
    def filters(self):
        return {"service_secrets": service_secrets_filter}
