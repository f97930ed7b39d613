#!/usr/bin/python
# ruff: noqa: E402 - Ansible modules keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: deployment_state
short_description: Record, or compare a host with, the state a pipeline deployment left on it
version_added: 0.2.0
description:
  - With O(state=present), writes O(path) - the O(fingerprint) of the deploy's inputs and a manifest of the
    files it manages (owner, mode and sha256 of every file under O(tree), link targets, the extra O(files)).
  - With O(state=query), changes nothing and tells whether the host is still exactly as recorded - same
    fingerprint, same manifest, the same O(containers) in the same status, and every O(health_urls)
    answering HTTP 200. The deploy role skips a host's services when it is; anything else (a changed input,
    a file edited or removed by hand, a container replaced, a service down) sends the host through the full
    deploy, which repairs it.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    support: full
    platforms: posix
options:
  path:
    description: The state file on the host (JSON, root only).
    type: path
    required: true
  fingerprint:
    description: A hash of every input of the host's deployment, computed by the caller.
    type: str
    required: true
  tree:
    description: Folder whose files are part of the state.
    type: path
    required: true
  prune:
    description:
      - Glob patterns, relative to O(tree), of folders whose content is left out (virtualenvs, wheelhouses).
      - C(__pycache__) folders are always left out.
    type: list
    elements: str
    default: []
  files:
    description: More paths that are part of the state (service units, supervisord programs, markers).
    type: list
    elements: path
    default: []
  containers:
    description:
      - Names of Docker containers that are part of the state (the services run in containers).
      - Each is recorded by its id and status, so a container replaced, stopped or removed since is drift.
      - Read with the C(docker) CLI; on a host without one, every container counts as absent.
    type: list
    elements: str
    default: []
  health_urls:
    description: O(state=query) only. URLs that must answer HTTP 200 for the host to be in sync.
    type: list
    elements: str
    default: []
  health_ca_file:
    description:
      - O(state=query) only. CA certificate file that C(https) O(health_urls) are verified against (the
        pipeline's CA on the host); the system's trust store when not given.
    type: path
  health_client_cert:
    description:
      - O(state=query) only. Client certificate presented to the services of O(health_urls) that ask for one
        (mutual TLS); a service that does not ask never sees it.
    type: path
  health_client_key:
    description: Key of O(health_client_cert).
    type: path
  health_timeout:
    description: Seconds to wait for each of O(health_urls).
    type: float
    default: 3
  state:
    description: V(query) compares, V(present) records.
    type: str
    choices: [query, present]
    default: query
author:
  - MLPacker contributors (@mlpacker)
"""

EXAMPLES = r"""
- name: Ask whether the host still runs exactly what was deployed
  mlpacker.core.deployment_state:
    path: /opt/mlpacker/iris/.deployed.json
    fingerprint: "{{ host_fingerprint }}"
    tree: /opt/mlpacker/iris
    prune: [".venvs/*", ".wheelhouse/*"]
    files: [/etc/systemd/system/mlpacker-iris-scale.service]
    health_urls: ["http://127.0.0.1:8000/health/ready"]
  register: deployed

- name: The same for a host whose services run in Docker
  mlpacker.core.deployment_state:
    path: /opt/mlpacker/iris/.deployed.json
    fingerprint: "{{ host_fingerprint }}"
    tree: /opt/mlpacker/iris
    prune: [".wheelhouse/*", "*/releases/*/wheelhouse"]
    containers: [mlpacker-iris-classify]
    health_urls: ["http://127.0.0.1:8002/health/ready"]
  register: deployed

- name: The same for HTTPS services, the entry one asking for a client certificate
  mlpacker.core.deployment_state:
    path: /opt/mlpacker/iris/.deployed.json
    fingerprint: "{{ host_fingerprint }}"
    tree: /opt/mlpacker/iris
    prune: [".venvs/*", ".wheelhouse/*"]
    health_urls: ["https://127.0.0.1:8000/health/ready"]
    health_ca_file: /opt/mlpacker/iris/iris-scale/current/secrets/ca.crt
    health_client_cert: /opt/mlpacker/iris/iris-scale/current/probe/client.crt
    health_client_key: /opt/mlpacker/iris/iris-scale/current/probe/client.key
  register: deployed

- name: Record the deployment once it has succeeded
  mlpacker.core.deployment_state:
    path: /opt/mlpacker/iris/.deployed.json
    fingerprint: "{{ host_fingerprint }}"
    tree: /opt/mlpacker/iris
    prune: [".venvs/*", ".wheelhouse/*"]
    files: [/etc/systemd/system/mlpacker-iris-scale.service]
    state: present
"""

RETURN = r"""
in_sync:
  description: Whether the host is as recorded (O(state=query)); after O(state=present), V(true).
  returned: success
  type: bool
  sample: true
reasons:
  description: Why the host is not in sync (empty when it is).
  returned: success
  type: list
  elements: str
  sample: ["/opt/mlpacker/iris/iris-scale/current: changed since the deployment was recorded"]
entries:
  description: Number of paths in the manifest.
  returned: success
  type: int
  sample: 42
"""

import json
import urllib.error

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url
from ansible_collections.mlpacker.core.plugins.module_utils.atomic_file import write_atomically
from ansible_collections.mlpacker.core.plugins.module_utils.container_engine import DockerCli
from ansible_collections.mlpacker.core.plugins.module_utils.host_manifest import (
    host_manifest,
    manifest_differences,
)


def container_entries(module, names):
    """Manifest entries ``container:<name>`` -> ``<id>:<status>`` (or ``absent``) of the named containers."""
    if not names:
        return {}
    binary = module.get_bin_path("docker")
    engine = DockerCli(module.run_command, binary) if binary else None
    entries = {}
    for name in names:
        found = engine.inspect("container", name) if engine else None
        status = "absent" if found is None else f"{found['Id']}:{found['State']['Status']}"
        entries[f"container:{name}"] = status
    return entries


def read_record(path):
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return None, "no deployment recorded on this host"
    except (OSError, ValueError) as exc:
        return None, f"{path}: unreadable ({exc})"
    if not isinstance(record, dict) or not isinstance(record.get("manifest"), dict):
        return None, f"{path}: not a deployment record"
    return record, None


def unhealthy(urls, timeout, ca_file=None, client_cert=None, client_key=None):
    reasons = []
    for url in urls:
        try:
            status = open_url(
                url,
                method="GET",
                timeout=timeout,
                follow_redirects="none",
                ca_path=ca_file,
                client_cert=client_cert,
                client_key=client_key,
            ).getcode()
        except urllib.error.HTTPError as exc:
            status = exc.code
        except Exception as exc:  # pylint: disable=broad-except
            # Any failure to get a 200 (refused, timeout, HTTP error) means: not serving as deployed.
            reasons.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
            continue
        if status != 200:
            reasons.append(f"{url}: HTTP {status}")
    return reasons


def query(module, manifest):
    record, problem = read_record(module.params["path"])
    if record is None:
        return [problem]
    if record.get("fingerprint") != module.params["fingerprint"]:
        return ["the deployment's inputs changed"]
    reasons = manifest_differences(record["manifest"], manifest)
    if reasons:
        return reasons
    params = module.params
    return unhealthy(
        params["health_urls"],
        params["health_timeout"],
        params["health_ca_file"],
        params["health_client_cert"],
        params["health_client_key"],
    )


def record(module, manifest):
    path = module.params["path"]
    document = json.dumps(
        {"fingerprint": module.params["fingerprint"], "manifest": manifest}, indent=1, sort_keys=True
    )
    before, _problem = read_record(path)
    before = before or {}
    changed = json.dumps(before, indent=1, sort_keys=True) != document
    diff = {
        "before": {"fingerprint": before.get("fingerprint"), "entries": len(before.get("manifest", {}))},
        "after": {"fingerprint": module.params["fingerprint"], "entries": len(manifest)},
    }
    if changed and not module.check_mode:
        try:
            write_atomically(path, (document + "\n").encode("utf-8"), 0o600)
        except OSError as exc:
            module.fail_json(msg=f"path: cannot write {path}: {exc}")
    return changed, diff


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "fingerprint": {"type": "str", "required": True},
            "tree": {"type": "path", "required": True},
            "prune": {"type": "list", "elements": "str", "default": []},
            "files": {"type": "list", "elements": "path", "default": []},
            "containers": {"type": "list", "elements": "str", "default": []},
            "health_urls": {"type": "list", "elements": "str", "default": []},
            "health_ca_file": {"type": "path"},
            "health_client_cert": {"type": "path"},
            "health_client_key": {"type": "path"},
            "health_timeout": {"type": "float", "default": 3},
            "state": {"type": "str", "choices": ["query", "present"], "default": "query"},
        },
        required_together=[("health_client_cert", "health_client_key")],
        supports_check_mode=True,
    )
    try:
        manifest = host_manifest(module.params["tree"], module.params["prune"], module.params["files"])
    except OSError as exc:
        module.fail_json(msg=f"cannot read the deployment's files: {exc}")
    manifest.update(container_entries(module, module.params["containers"]))
    # The record may live in the tree it describes; it is not part of itself.
    manifest.pop(module.params["path"], None)
    if module.params["state"] == "query":
        reasons = query(module, manifest)
        module.exit_json(changed=False, in_sync=not reasons, reasons=reasons, entries=len(manifest))
    changed, diff = record(module, manifest)
    result = {"changed": changed, "in_sync": True, "reasons": [], "entries": len(manifest)}
    if module._diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
