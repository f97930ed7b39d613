#!/usr/bin/python
# ruff: noqa: E402 - Ansible modules keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: container_service
short_description: Run one MLPacker service in a Docker container with a health-checked swap
version_added: 0.1.0
description:
  - Keeps the container O(name) running from O(image) with the given settings. A container whose image and
    settings are unchanged is left alone (it is not restarted).
  - A change is rolled out safely. A canary container from the new image starts beside the serving one
    (on a free loopback port) and must answer O(ready_path). Only then is the old container stopped and the
    new one started under O(name). When the canary or the new container fails, the old container keeps (or
    goes back to) serving, and the module fails with the container's last log lines.
  - Drives the C(docker) CLI on the target, so the host needs no Python packages (no Docker SDK, no requests).
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
    description: Container name.
    type: str
    required: true
  state:
    description:
      - V(started) runs the container; V(absent) removes it (and a leftover canary or previous container).
    type: str
    choices: [started, absent]
    default: started
  image:
    description: Image reference (name:tag or id). Required with O(state=started). Must exist on the host.
    type: str
  labels:
    description: Labels of the container (and of its canary).
    type: dict
    default: {}
  env:
    description: Environment variables of the container.
    type: dict
    default: {}
  network_mode:
    description:
      - V(host) shares the host's network (the service binds the host's ports itself); else a Docker network.
    type: str
    default: bridge
  published_ports:
    description:
      - Port mappings C([ip:]host_port:container_port) (not with O(network_mode=host)).
    type: list
    elements: str
    default: []
  container_port:
    description:
      - Port the service listens on inside the container (with O(network_mode=host), on the host).
    type: int
    required: true
  port_env:
    description:
      - With O(network_mode=host) the canary must listen elsewhere; these variables get the canary's port.
    type: list
    elements: str
    default: []
  canary_env:
    description: Extra environment of the canary only (for example another MQTT client id).
    type: dict
    default: {}
  canary:
    description: Health-check a canary before replacing a serving container.
    type: bool
    default: true
  restart:
    description:
      - Restart the container even when its image and settings are unchanged, because a file it reads at start
        changed (for example the credentials in a mounted folder, rewritten by a redeploy), and wait until it
        is ready again. A container that is created or replaced starts fresh anyway.
    type: bool
    default: false
  ready_path:
    description: HTTP path answered with 2xx once the service is ready.
    type: str
    default: /health/ready
  ready_timeout:
    description: Seconds to wait for readiness (canary and new container each).
    type: int
    default: 60
  ready_scheme:
    description: How the readiness path is asked - V(https) when the service speaks TLS.
    type: str
    choices: [http, https]
    default: http
  ready_ca_file:
    description: With O(ready_scheme=https), the CA (a path on the host) the service's certificate is verified
      against.
    type: path
  ready_client_cert:
    description: With O(ready_scheme=https), the client certificate (a path on the host) the readiness check
      presents to a service that requires one (mutual TLS); with O(ready_client_key).
    type: path
  ready_client_key:
    description: The key of O(ready_client_cert) (a path on the host, readable by root only).
    type: path
  restart_policy:
    description: Docker restart policy.
    type: str
    default: unless-stopped
  user:
    description: User (uid:gid) the container runs as; empty = the image's.
    type: str
  cpus:
    description:
      - CPU limit (e.g. V(0.5)); empty or V(0) = none. More than the host has is capped to its CPU count
        (docker refuses more).
    type: str
  memory:
    description: Memory limit (e.g. V(256m)), swap included; empty or V(0) = none.
    type: str
  pids_limit:
    description: Processes and threads the container may have (docker C(--pids-limit)); unset or V(0) = none.
    type: int
  read_only:
    description: Read-only root filesystem.
    type: bool
    default: true
  tmpfs:
    description: Paths mounted as tmpfs (writable scratch space with a read-only root).
    type: list
    elements: str
    default: [/tmp]
  mounts:
    description:
      - Bind mounts, C(<host path>:<container path>[:ro]) (docker C(--volume)), e.g. the service's credentials
        mounted read-only at run time instead of copied into the image.
    type: list
    elements: str
    default: []
  command:
    description: Command overriding the image's C(CMD).
    type: list
    elements: str
    default: []
  log_options:
    description: json-file log driver options (logs go through the engine, C(docker logs)).
    type: dict
    default: {max-size: 10m, max-file: "3"}
  log_lines:
    description: Log lines reported when a container fails its health check.
    type: int
    default: 40
notes:
  - The canary of a O(network_mode=host) service gets the canary port through O(port_env); a bridged canary is
    published on C(127.0.0.1:<free port>).
author: MLPacker contributors (@mlpacker)
"""

EXAMPLES = r"""
- name: Run the iris-scale REST service in a container
  mlpacker.core.container_service:
    name: mlpacker-iris-scale
    image: mlpacker/iris/iris-scale:3f2a9c0d1e2b
    labels: {mlpacker.pipeline: iris, mlpacker.service: iris-scale}
    published_ports: ["8000:8000"]
    container_port: 8000
    memory: 256m
    cpus: "2"
    pids_limit: 1024
"""

RETURN = r"""
container_id:
  description: Id of the container now serving (V(null) after O(state=absent)).
  returned: always
  type: str
operation:
  description: V(none), V(created), V(started), V(restarted) (O(restart)), V(replaced) or V(removed).
  returned: always
  type: str
spec_hash:
  description: sha256 of the image id and settings, stored in the C(mlpacker.spec-hash) label.
  returned: when O(state=started)
  type: str
"""

import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlpacker.core.plugins.module_utils.container_engine import (
    SPEC_HASH_LABEL,
    DockerCli,
    DockerError,
    capped_cpus,
    free_port,
    no_limit,
    run_argv,
    spec_hash,
    wait_ready,
)


class Rollout:
    def __init__(self, module: AnsibleModule, docker: DockerCli) -> None:
        self.module = module
        self.docker = docker
        self.params = module.params
        self.name: str = module.params["name"]

    def running(self, name: str) -> bool:
        found = self.docker.inspect("container", name)
        return bool(found and found["State"].get("Running"))

    def remove(self, name: str) -> bool:
        if self.docker.inspect("container", name) is None:
            return False
        self.docker.run(["rm", "--force", name])
        return True

    def start_and_wait(
        self, name: str, spec: dict[str, Any], labels: dict[str, str], port: int
    ) -> str | None:
        """Run a container and wait for its ready endpoint; None when ready, else why not (with its logs)."""
        self.docker.run(run_argv(name, self.params["image"], spec, labels))
        return self.wait(name, port)

    def wait(self, name: str, port: int) -> str | None:
        url = f"{self.params['ready_scheme']}://127.0.0.1:{port}{self.params['ready_path']}"
        problem = wait_ready(
            url,
            self.params["ready_timeout"],
            lambda: self.running(name),
            ca_file=self.params["ready_ca_file"],
            client_cert=self.params["ready_client_cert"],
            client_key=self.params["ready_client_key"],
        )
        if problem is None:
            return None
        logs = self.docker.logs(name, self.params["log_lines"])
        return f"{problem}; last log lines of {name}:\n{logs}"

    def canary_spec(self, spec: dict[str, Any]) -> tuple[dict[str, Any], int]:
        canary = dict(spec, env=dict(spec["env"], **self.params["canary_env"]), restart_policy="no")
        port = free_port()
        if spec["network_mode"] == "host":
            canary["env"].update({variable: str(port) for variable in self.params["port_env"]})
        else:
            canary["published_ports"] = [f"127.0.0.1:{port}:{self.params['container_port']}"]
        return canary, port

    def serving_port(self, spec: dict[str, Any]) -> int:
        if spec["network_mode"] == "host":
            return self.params["container_port"]
        for mapping in spec["published_ports"]:
            parts = mapping.split(":")
            if len(parts) >= 2 and parts[-1].split("/")[0] == str(self.params["container_port"]):
                return int(parts[-2])
        self.module.fail_json(
            msg=f"published_ports {spec['published_ports']} publish no host port for container_port "
            f"{self.params['container_port']}: the module cannot health-check the container"
        )
        raise AssertionError  # unreachable: fail_json exits

    def started(self) -> dict[str, Any]:
        image = self.docker.inspect("image", self.params["image"])
        if image is None and self.module.check_mode:
            # a check run that would build the image first: the container would be (re)created
            current = self.docker.inspect("container", self.name)
            action = "replaced" if current is not None else "created"
            return {"changed": True, "operation": action, "container_id": None, "spec_hash": None}
        if image is None:
            self.module.fail_json(
                msg=f"image '{self.params['image']}' is not on this host: build or load it first"
            )
        spec = {
            "image_id": image["Id"],
            "env": {key: str(value) for key, value in self.params["env"].items()},
            "labels": {key: str(value) for key, value in self.params["labels"].items()},
            "published_ports": []
            if self.params["network_mode"] == "host"
            else self.params["published_ports"],
            "network_mode": self.params["network_mode"],
            "restart_policy": self.params["restart_policy"],
            "user": self.params["user"] or "",
            "cpus": capped_cpus(self.params["cpus"] or "", len(os.sched_getaffinity(0))),
            "memory": "" if no_limit(self.params["memory"] or "") else self.params["memory"],
            "pids_limit": self.params["pids_limit"] or 0,
            "read_only": self.params["read_only"],
            "tmpfs": self.params["tmpfs"],
            "mounts": self.params["mounts"],
            "command": self.params["command"],
            "log_options": {key: str(value) for key, value in self.params["log_options"].items()},
        }
        digest = spec_hash(spec)
        labels = dict(spec["labels"], **{SPEC_HASH_LABEL: digest})
        port = self.serving_port(spec)
        current = self.docker.inspect("container", self.name)
        result: dict[str, Any] = {"changed": False, "spec_hash": digest, "operation": "none"}

        if current is not None and current["Config"]["Labels"].get(SPEC_HASH_LABEL) == digest:
            result["container_id"] = current["Id"]
            running = bool(current["State"].get("Running"))
            if running and not self.params["restart"]:
                return result
            result.update(changed=True, operation="restarted" if running else "started")
            if not self.module.check_mode:
                self.docker.run(["restart", "--time", "10", self.name] if running else ["start", self.name])
                problem = self.wait(self.name, port)
                if problem:
                    self.module.fail_json(
                        msg=f"container {self.name} did not become ready: {problem}", **result
                    )
            return result

        result.update(
            changed=True, operation="replaced" if current is not None else "created", container_id=None
        )
        if self.module.check_mode:
            return result

        serving = current is not None and current["State"].get("Running")
        if serving and self.params["canary"]:
            canary_name = self.name + "-canary"
            self.remove(canary_name)
            canary, canary_port = self.canary_spec(spec)
            try:
                problem = self.start_and_wait(canary_name, canary, labels, canary_port)
            finally:
                self.remove(canary_name)
            if problem:
                self.module.fail_json(
                    msg=f"the new image {self.params['image']} failed its health check in canary "
                    f"{canary_name}; "
                    f"{self.name} keeps serving the previous one. {problem}",
                    **result,
                )

        previous_name = self.name + "-previous"
        if current is not None:
            self.remove(previous_name)
            self.docker.run(["rename", self.name, previous_name])
            # stopped, not removed: it comes back if the new container does not start
            self.docker.run(["stop", "--time", "10", previous_name])
        try:
            problem = self.start_and_wait(self.name, spec, labels, port)
        except DockerError as error:
            problem = str(error)
        if problem:
            self.remove(self.name)
            if current is not None:
                self.docker.run(["rename", previous_name, self.name])
                if serving:
                    self.docker.run(["start", self.name])
            self.module.fail_json(
                msg=f"container {self.name} from {self.params['image']} did not become ready"
                f"{' (the previous container is serving again)' if serving else ''}: {problem}",
                **result,
            )
        self.remove(previous_name)
        result["container_id"] = self.docker.inspect("container", self.name)["Id"]
        return result

    def absent(self) -> dict[str, Any]:
        names = [self.name, self.name + "-canary", self.name + "-previous"]
        present = [name for name in names if self.docker.inspect("container", name) is not None]
        if present and not self.module.check_mode:
            for name in present:
                self.remove(name)
        return {"changed": bool(present), "operation": "removed" if present else "none", "container_id": None}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["started", "absent"], "default": "started"},
            "image": {"type": "str"},
            "labels": {"type": "dict", "default": {}},
            "env": {"type": "dict", "default": {}},
            "network_mode": {"type": "str", "default": "bridge"},
            "published_ports": {"type": "list", "elements": "str", "default": []},
            "container_port": {"type": "int", "required": True},
            "port_env": {"type": "list", "elements": "str", "default": []},
            "canary_env": {"type": "dict", "default": {}},
            "canary": {"type": "bool", "default": True},
            "restart": {"type": "bool", "default": False},
            "ready_path": {"type": "str", "default": "/health/ready"},
            "ready_timeout": {"type": "int", "default": 60},
            "ready_scheme": {"type": "str", "choices": ["http", "https"], "default": "http"},
            "ready_ca_file": {"type": "path"},
            "ready_client_cert": {"type": "path"},
            "ready_client_key": {"type": "path", "no_log": False},
            "restart_policy": {"type": "str", "default": "unless-stopped"},
            "user": {"type": "str"},
            "cpus": {"type": "str"},
            "memory": {"type": "str"},
            "pids_limit": {"type": "int"},
            "read_only": {"type": "bool", "default": True},
            "tmpfs": {"type": "list", "elements": "str", "default": ["/tmp"]},
            "mounts": {"type": "list", "elements": "str", "default": []},
            "command": {"type": "list", "elements": "str", "default": []},
            "log_options": {"type": "dict", "default": {"max-size": "10m", "max-file": "3"}},
            "log_lines": {"type": "int", "default": 40},
        },
        required_if=[("state", "started", ["image"])],
        required_together=[("ready_client_cert", "ready_client_key")],
        supports_check_mode=True,
    )
    if module.params["network_mode"] == "host" and module.params["published_ports"]:
        module.fail_json(
            msg="published_ports cannot be used with network_mode=host (the service binds host ports)"
        )
    if not 0 < module.params["container_port"] < 65536:
        module.fail_json(msg=f"container_port must be 1..65535, got {module.params['container_port']}")
    docker = DockerCli(module.run_command, module.get_bin_path("docker", required=True))
    rollout = Rollout(module, docker)
    try:
        result = rollout.started() if module.params["state"] == "started" else rollout.absent()
    except DockerError as error:
        module.fail_json(msg=str(error))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
