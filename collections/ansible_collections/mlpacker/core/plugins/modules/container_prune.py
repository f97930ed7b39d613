#!/usr/bin/python
# ruff: noqa: E402 - Ansible modules keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: container_prune
short_description: Remove the Docker containers, images and volumes that carry given labels
version_added: 0.1.0
description:
  - Removes exactly what carries every label in O(labels) (MLPacker labels all it makes with
    C(mlpacker.pipeline) and C(mlpacker.service)); nothing else on the engine is touched.
  - Containers go first (forcefully), then images, then volumes.
  - Drives the C(docker) CLI, so the host needs no Python packages. A host with no engine (no
    C(docker) CLI, or no C(/var/run/docker.sock) and no E(DOCKER_HOST)) has nothing to remove.
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
  labels:
    description: Labels (all must match). At least one, so that the module cannot wipe an engine.
    type: dict
    required: true
  keep_images:
    description: Image references (name:tag or id) kept even if they match.
    type: list
    elements: str
    default: []
  kinds:
    description: What to remove.
    type: list
    elements: str
    choices: [containers, images, volumes]
    default: [containers, images, volumes]
author: MLPacker contributors (@mlpacker)
"""

EXAMPLES = r"""
- name: Undeploy the iris pipeline's containers, images and volumes
  mlpacker.core.container_prune:
    labels: {mlpacker.pipeline: iris}
"""

RETURN = r"""
containers:
  description: Ids of the removed containers.
  returned: always
  type: list
  elements: str
images:
  description: Ids of the removed images.
  returned: always
  type: list
  elements: str
volumes:
  description: Names of the removed volumes.
  returned: always
  type: list
  elements: str
"""

import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlpacker.core.plugins.module_utils.container_engine import (
    DockerCli,
    DockerError,
    engine_lock,
)

DEFAULT_SOCKET = "/var/run/docker.sock"


def prune(module: AnsibleModule, docker: DockerCli) -> dict[str, Any]:
    labels = {key: str(value) for key, value in module.params["labels"].items()}
    kinds = module.params["kinds"]
    kept: set[str] = set()
    for reference in module.params["keep_images"]:
        image = docker.inspect("image", reference)
        if image is not None:
            kept.add(image["Id"])
    removed: dict[str, list[str]] = {"containers": [], "images": [], "volumes": []}
    if "containers" in kinds:
        removed["containers"] = docker.ids("container", labels)
        if removed["containers"] and not module.check_mode:
            docker.run(["rm", "--force", "--volumes", *removed["containers"]])
    if "images" in kinds:
        removed["images"] = [image for image in docker.ids("image", labels) if image not in kept]
        if removed["images"] and not module.check_mode:
            # --force: one image id may carry several tags (same release built twice under two names)
            with engine_lock(exclusive=True):
                docker.run(["image", "rm", "--force", *removed["images"]])
    if "volumes" in kinds:
        removed["volumes"] = docker.ids("volume", labels)
        if removed["volumes"] and not module.check_mode:
            docker.run(["volume", "rm", "--force", *removed["volumes"]])
    return {"changed": any(removed.values()), **removed}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "labels": {"type": "dict", "required": True},
            "keep_images": {"type": "list", "elements": "str", "default": []},
            "kinds": {
                "type": "list",
                "elements": "str",
                "choices": ["containers", "images", "volumes"],
                "default": ["containers", "images", "volumes"],
            },
        },
        supports_check_mode=True,
    )
    if not module.params["labels"]:
        module.fail_json(msg="labels must name at least one label (e.g. mlpacker.pipeline: NAME)")
    binary = module.get_bin_path("docker")
    engine_here = "DOCKER_HOST" in os.environ or os.path.exists(DEFAULT_SOCKET)
    if binary is None or not engine_here:
        # no Docker engine on this host: nothing of the pipeline can be there (undeploy runs on every host)
        module.exit_json(changed=False, containers=[], images=[], volumes=[])
    docker = DockerCli(module.run_command, binary)
    rc, _out, err = docker.run(["version", "--format", "{{.Server.Version}}"], check=False)
    if rc != 0:
        # A stopped engine (or a stale socket): its containers cannot run, and cannot be listed either. Say so
        # instead of failing the undeploy of every other part of the pipeline on this host.
        module.warn(
            f"no Docker engine answers on this host ({err.strip()[-300:]}); containers of the pipeline, "
            "if any, were not looked for: start the engine and undeploy again to remove them"
        )
        module.exit_json(changed=False, containers=[], images=[], volumes=[])
    try:
        result = prune(module, docker)
    except DockerError as error:
        module.fail_json(msg=str(error))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
