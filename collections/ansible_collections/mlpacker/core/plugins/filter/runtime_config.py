# ruff: noqa: E402 - Ansible plugins keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: runtime_config
author: MLPacker contributors (@mlpacker)
short_description: The runtime configuration (config.json) of one MLPacker service
version_added: 0.1.0
description:
  - Turns a service of the placement plan (M(mlpacker.core.pipeline_plan)) and the deploy settings into the
    runtime configuration C(mlpacker_runtime) reads, as a dictionary; write it with
    C(to_nice_json(sort_keys=true)).
  - The roles C(mlpacker.core.service) and C(mlpacker.core.service_container) both write their
    C(config.json) with it, so a service's configuration is the same under a service manager and in a
    container.
  - REST mode writes the C(rest) section, stream mode the C(stream) section; the fields left out take the
    runtime's defaults. Broker TLS settings given as V(null) keep their defaults.
  - Fails naming the field when an input cannot make a configuration (an unknown O(mode), a stage without
    C(format), a port that is not an integer).
options:
  _input:
    description: The service, one entry of the plan's C(services) (C(id), C(port), C(next_hops), the topics).
    type: dict
    required: true
  pipeline:
    description: The pipeline's name.
    type: str
    required: true
  mode:
    description: How the service is reached.
    type: str
    choices: [rest, stream]
    required: true
  stages:
    description:
      - The service's stages in order, each C(name), C(artifact) (controller path) or C(function), C(format),
        C(method), C(trusted_types), C(sha256) and C(versions).
      - An artifact is written as shipped into the release, C(<release_dir>/artifacts/<name><extension>).
    type: list
    elements: dict
    required: true
  release_dir:
    description: The release folder on the host, which is also where the files are inside a container's image.
    type: str
    required: true
  code_dir:
    description: The controller folder of function stages' code, or V(null); when given, C(code_dir) in the
      configuration is C(<release_dir>/code).
    type: str
  broker:
    description: Stream mode - the broker the service connects to (C(host), C(port), C(username), C(password),
      C(tls)).
    type: dict
  rest_workers:
    description: REST mode - gunicorn worker processes.
    type: int
    default: 2
  allow_version_mismatch:
    description: Let stages load under other library versions than they were made with.
    type: bool
    default: false
  bind:
    description: Where the service listens (REST port, or the health port in stream mode); an address or a
      list of addresses.
    type: raw
    default: 0.0.0.0
  secrets:
    description:
      - The service's credential files (the C(mlpacker.core.service_secrets) filter's entries), shipped to
        O(secrets_dir). The C(security) section (TLS certificate and key, the pipeline CA, the token file)
        and, in stream mode, the broker's password file, CA and client certificate point at them, so the
        configuration itself holds no secret.
    type: list
    elements: dict
  secrets_dir:
    description: The folder the secrets are shipped to, as the service sees it. Required with O(secrets).
    type: str
  credentials:
    description: What M(mlpacker.core.pipeline_credentials) returned; on the managed broker the service
      connects as its own user (C(mqtt.users.<service id>.username)).
    type: dict
  request_limits:
    description:
      - The C(mlpacker_request_limits) setting (see the C(mlpacker.core.request_limits) filter); sets
        C(max_body_bytes), C(max_instances), C(body_read_timeout_s) and C(max_connections) of the C(rest)
        section, or C(max_message_bytes) of the C(stream) section.
      - V(null) leaves the limits at the runtime's defaults.
    type: dict
  resilience:
    description:
      - What the C(mlpacker.core.resilience_settings) filter returned (the C(mlpacker_rest_hops) and
        C(mlpacker_stream_max_consecutive_refusals) settings); sets C(hop_timeout_s), C(hop_retry_timeouts)
        and C(hop_ejection) of the C(rest) section, or C(max_consecutive_refusals) of the C(stream) section.
      - V(null) leaves them at the runtime's defaults.
    type: dict
"""

EXAMPLES = r"""
- name: Write a service's runtime configuration
  ansible.builtin.copy:
    content: >-
      {{ service | mlpacker.core.runtime_config(pipeline='iris', mode='rest', stages=stages,
         release_dir='/opt/mlpacker/iris/iris/releases/0123456789ab') | to_nice_json(sort_keys=true) }}
    dest: /opt/mlpacker/iris/iris/releases/0123456789ab/config.json
    mode: "0640"
"""

RETURN = r"""
_value:
  description:
    - The configuration - C(pipeline), C(service), C(mode), C(code_dir), C(allow_version_mismatch), C(stages)
      and either C(rest) or C(stream).
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mlpacker.core.plugins.module_utils.runtime_config import (
    RuntimeConfigError,
    runtime_config,
)


def runtime_config_filter(
    service,
    pipeline,
    mode,
    stages,
    release_dir,
    code_dir=None,
    broker=None,
    rest_workers=2,
    allow_version_mismatch=False,
    bind="0.0.0.0",
    secrets=None,
    secrets_dir=None,
    credentials=None,
    request_limits=None,
    resilience=None,
):
    try:
        return runtime_config(
            service,
            stages,
            pipeline=pipeline,
            mode=mode,
            release_dir=release_dir,
            code_dir=code_dir,
            broker=broker,
            rest_workers=rest_workers,
            allow_version_mismatch=allow_version_mismatch,
            bind=bind,
            secrets=secrets,
            secrets_dir=secrets_dir,
            credentials=credentials,
            request_limits=request_limits,
            resilience=resilience,
        )
    except RuntimeConfigError as exc:
        raise AnsibleFilterError(f"mlpacker.core.runtime_config: {exc}") from exc


class FilterModule:
    def filters(self):
        return {"runtime_config": runtime_config_filter}
