#!/usr/bin/python
# ruff: noqa: E402 - Ansible modules keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: container_image
short_description: Build a Docker image on the host, load it from an archive, save it, or remove it
version_added: 0.1.0
description:
  - Idempotent by tag. MLPacker tags images by release id, a hash of everything in them, so an image whose tag
    exists is up to date and is neither rebuilt nor reloaded.
  - Works offline, with no registry. Drives the C(docker) CLI, so the host needs no Python packages. It uses
    BuildKit when the buildx plugin is there, else the classic builder (Debian's C(docker.io) has no buildx).
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
  name:
    description: Image reference C(repository:tag).
    type: str
    required: true
  state:
    description:
      - V(present) builds (O(source=build)) or loads (O(source=load)) the image when its tag is missing.
      - V(absent) removes the tag (the layers go when no other tag uses them).
    type: str
    choices: [present, absent]
    default: present
  source:
    description: Where a missing image comes from.
    type: str
    choices: [build, load]
    default: build
  build_path:
    description: Build context directory (O(source=build)).
    type: path
  dockerfile:
    description: Dockerfile, relative to O(build_path).
    type: str
    default: Dockerfile
  labels:
    description: Labels added to the built image.
    type: dict
    default: {}
  archive_path:
    description:
      - With O(source=load), a C(docker save) archive holding O(name).
      - With O(save_to), not used.
    type: path
  save_to:
    description: After O(state=present), also C(docker save) the image to this file, unless it exists.
    type: path
  force:
    description: Build or load even when the tag exists.
    type: bool
    default: false
author: MLPacker contributors (@mlpacker)
"""

EXAMPLES = r"""
- name: Build the release image on the host
  mlpacker.core.container_image:
    name: mlpacker/iris/iris-scale:3f2a9c0d1e2b
    build_path: /opt/mlpacker/iris/iris-scale/releases/3f2a9c0d1e2b
    labels: {mlpacker.pipeline: iris, mlpacker.service: iris-scale}
"""

RETURN = r"""
image_id:
  description: The image id (V(null) when absent, or not yet built in check mode).
  returned: always
  type: str
operation:
  description: V(none), V(built), V(loaded) or V(removed).
  returned: always
  type: str
"""

import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlpacker.core.plugins.module_utils.container_engine import (
    DockerCli,
    DockerError,
    engine_lock,
)


def present(module: AnsibleModule, docker: DockerCli) -> dict[str, Any]:
    params = module.params
    name = params["name"]
    image = docker.inspect("image", name)
    image_id = image["Id"] if image else None
    result: dict[str, Any] = {"changed": False, "operation": "none", "image_id": image_id}
    if image is None or params["force"]:
        if params["source"] == "build":
            context = params["build_path"]
            if not context or not os.path.isdir(context):
                module.fail_json(msg=f"build_path must be an existing directory, got '{context}'")
            dockerfile = os.path.join(context, params["dockerfile"])
            if not os.path.isfile(dockerfile):
                module.fail_json(msg=f"dockerfile '{dockerfile}' does not exist")
        else:
            archive = params["archive_path"]
            if not archive or not os.path.isfile(archive):
                module.fail_json(msg=f"archive_path must be a docker save archive, got '{archive}'")
        result.update(changed=True, operation="built" if params["source"] == "build" else "loaded")
        if module.check_mode:
            return result
        if params["source"] == "build":
            argv = ["build", "--tag", name, "--file", dockerfile, "--quiet"]
            for key, value in sorted(params["labels"].items()):
                argv += ["--label", f"{key}={value}"]
            # without buildx the CLI refuses BuildKit; the classic builder needs nothing more
            environment = None if docker.has_buildx() else {"DOCKER_BUILDKIT": "0"}
            with engine_lock(exclusive=False):
                docker.run([*argv, context], env=environment)
        else:
            docker.run(["load", "--input", params["archive_path"]])
        image = docker.inspect("image", name)
        if image is None:
            module.fail_json(msg=f"{result['operation']} image has no tag '{name}' (wrong archive?)")
        result["image_id"] = image["Id"]
    if params["save_to"] and not os.path.exists(params["save_to"]):
        result["changed"] = True
        if not module.check_mode:
            partial = params["save_to"] + ".partial"
            docker.run(["save", "--output", partial, name])
            os.replace(partial, params["save_to"])
    return result


def absent(module: AnsibleModule, docker: DockerCli) -> dict[str, Any]:
    if docker.inspect("image", module.params["name"]) is None:
        return {"changed": False, "operation": "none", "image_id": None}
    if not module.check_mode:
        with engine_lock(exclusive=True):
            docker.run(["image", "rm", module.params["name"]])
    return {"changed": True, "operation": "removed", "image_id": None}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "source": {"type": "str", "choices": ["build", "load"], "default": "build"},
            "build_path": {"type": "path"},
            "dockerfile": {"type": "str", "default": "Dockerfile"},
            "labels": {"type": "dict", "default": {}},
            "archive_path": {"type": "path"},
            "save_to": {"type": "path"},
            "force": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    if ":" not in module.params["name"].rsplit("/", 1)[-1]:
        module.fail_json(
            msg=f"name must be repository:tag (MLPacker tags by release id), got '{module.params['name']}'"
        )
    docker = DockerCli(module.run_command, module.get_bin_path("docker", required=True))
    try:
        result = present(module, docker) if module.params["state"] == "present" else absent(module, docker)
    except DockerError as error:
        module.fail_json(msg=str(error))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
