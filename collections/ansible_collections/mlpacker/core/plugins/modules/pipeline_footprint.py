#!/usr/bin/python
# ruff: noqa: E402 - Ansible modules keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: pipeline_footprint
short_description: Read what a pipeline left on a host, and what else still uses MLPacker's shared parts
version_added: 0.3.0
description:
  - Reads the host only (no controller record is needed, so it works from AWX or after the record is lost)
    and changes nothing.
  - Returns the pipeline's services (the directories under O(root)/O(pipeline)), their supervisord programs
    and systemd units, whether the pipeline uses the managed broker, the other pipelines and other users of
    the managed broker on the host, whether supervisord runs, the pipeline's user and the users MLPacker
    created.
  - Undeploy removes the pipeline's parts from this (its user too, when MLPacker created it and nothing else
    runs as it), and the shared parts (supervisord, the managed broker, the other users MLPacker created,
    MLPacker's directories) only when RV(last) says nothing else needs them.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
options:
  pipeline:
    description: The pipeline's name.
    type: str
    required: true
  root:
    description: MLPacker's root folder on the host (pipelines, the managed broker's data, state).
    type: path
    default: /opt/mlpacker
  config_root:
    description: MLPacker's configuration folder (supervisord, the managed broker).
    type: path
    default: /etc/mlpacker
  log_root:
    description: MLPacker's log folder.
    type: path
    default: /var/log/mlpacker
  systemd_dir:
    description: Folder of the systemd units MLPacker writes.
    type: path
    default: /etc/systemd/system
  run_dir:
    description: Folder of supervisord's pid file.
    type: path
    default: /run/mlpacker
author:
  - MLPacker contributors (@mlpacker)
"""

EXAMPLES = r"""
- name: Look for the pipeline and for what else uses MLPacker on this host
  mlpacker.core.pipeline_footprint:
    pipeline: iris
  register: footprint

- name: Stop the pipeline's systemd services
  ansible.builtin.systemd_service:
    name: "{{ item | basename }}"
    state: stopped
    enabled: false
  loop: "{{ footprint.systemd_units }}"
"""

RETURN = r"""
exists:
  description: Whether the pipeline's folder exists on the host.
  returned: success
  type: bool
  sample: true
services:
  description: The pipeline's services on the host (one folder each).
  returned: success
  type: list
  elements: str
  sample: [iris-scale, iris-reduce]
supervisor_programs:
  description: The services' supervisord program files (serving and canary) that exist.
  returned: success
  type: list
  elements: str
  sample: [/etc/mlpacker/supervisor/conf.d/mlpacker-iris-scale.conf]
systemd_units:
  description: The services' systemd unit files (serving and canary) that exist.
  returned: success
  type: list
  elements: str
  sample: [/etc/systemd/system/mlpacker-iris-scale.service]
uses_broker:
  description: Whether the pipeline is recorded as a user of the managed broker on this host.
  returned: success
  type: bool
  sample: false
other_broker_users:
  description: The other pipelines recorded as users of the managed broker on this host.
  returned: success
  type: list
  elements: str
  sample: []
broker_files:
  description: The managed broker's configuration, data and log that exist (removed with its last user).
  returned: success
  type: list
  elements: str
  sample: [/etc/mlpacker/mosquitto, /opt/mlpacker/.broker]
broker_units:
  description: The managed broker's supervisord program and systemd unit files that exist.
  returned: success
  type: dict
  sample: {supervisor: [/etc/mlpacker/supervisor/conf.d/mlpacker-broker.conf], systemd: []}
other_pipelines:
  description: The other pipelines with a folder on this host.
  returned: success
  type: list
  elements: str
  sample: [fraud]
last:
  description: Whether nothing but this pipeline uses MLPacker's shared parts on this host.
  returned: success
  type: bool
  sample: true
supervisord_pid:
  description: The pid of MLPacker's supervisord when it runs, else null.
  returned: success
  type: int
  sample: 4242
user:
  description: The user the pipeline's services run as on this host (the owner of its log folder), else null.
  returned: success
  type: str
  sample: mlp-iris
created_user:
  description:
    - The pipeline's user when MLPacker created it and nothing else runs as it (no other pipeline's
      services, not the managed broker while another pipeline uses it), else null. Undeploy removes it with
      the pipeline.
  returned: success
  type: str
  sample: mlp-iris
created_users:
  description: Every user MLPacker created on this host (C(<root>/.state/created-user), one a line).
  returned: success
  type: list
  elements: str
  sample: [mlp-iris, mlp-fraud]
users_to_remove:
  description: >-
    The users undeploy removes - RV(created_user) and, when RV(last), every other user MLPacker created.
  returned: success
  type: list
  elements: str
  sample: [mlp-iris]
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlpacker.core.plugins.module_utils.footprint import pipeline_footprint

PIPELINE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


def main():
    module = AnsibleModule(
        argument_spec={
            "pipeline": {"type": "str", "required": True},
            "root": {"type": "path", "default": "/opt/mlpacker"},
            "config_root": {"type": "path", "default": "/etc/mlpacker"},
            "log_root": {"type": "path", "default": "/var/log/mlpacker"},
            "systemd_dir": {"type": "path", "default": "/etc/systemd/system"},
            "run_dir": {"type": "path", "default": "/run/mlpacker"},
        },
        supports_check_mode=True,
    )
    params = module.params
    if not PIPELINE_NAME.match(params["pipeline"]):
        name = params["pipeline"]
        module.fail_json(msg=f"pipeline: {name!r} is not a pipeline name ({PIPELINE_NAME.pattern})")
    try:
        footprint = pipeline_footprint(
            params["pipeline"],
            root=params["root"],
            config_root=params["config_root"],
            log_root=params["log_root"],
            supervisor_conf_dir=params["config_root"] + "/supervisor",
            systemd_dir=params["systemd_dir"],
            run_dir=params["run_dir"],
        )
    except OSError as exc:
        module.fail_json(msg=f"cannot read what pipeline {params['pipeline']} left on this host: {exc}")
    module.exit_json(changed=False, **footprint)


if __name__ == "__main__":
    main()
