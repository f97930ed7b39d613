#!/usr/bin/python
# ruff: noqa: E402 - Ansible modules keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: pipeline_plan
short_description: Validate an MLPacker pipeline spec and compute its placement plan
version_added: 0.1.0
description:
  - "Validates the O(pipeline) spec (the C(mlpacker_pipeline) variable) against the inventory and reports
    every
    problem at once, each naming the field and the value, for example
    C(mlpacker_pipeline.stages[1].name: 'Classify' must match ^[a-z][a-z0-9-]{0,30}$)."
  - Computes the placement plan the deploy roles consume - which service runs on which host and port, the REST
    next
    hops or the MQTT topics between stages, the resolved broker and the entry points.
  - Runs on the controller (use C(delegate_to=localhost) and C(run_once=true)) and changes nothing.
  - 'Layouts: V(atomic) runs one service (id = pipeline name) holding every stage on each host of the
    pipeline''s C(group); V(distributed) runs one service C(<pipeline>-<stage>) on every host of each stage''s
      C(group).'
  - 'Ports: on each host the services that set a C(port) get it (two on one host is an error), the others get
    the next
    free port from O(default_port) in pipeline order. In stream mode the port is the health port.'
  - 'In V(atomic) layout a stage C(group), C(containers) or a C(port) on any stage but the first is an error:
    the whole
    pipeline runs on the pipeline''s group as one service, so ignoring them would deploy something else than
      written.'
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
    description:
      - The pipeline spec (C(mlpacker_pipeline)).
      - 'Keys: C(name) (required, V(^[a-z][a-z0-9-]{0,30}$)), C(mode) (V(rest) or V(stream), default V(rest)),
        C(layout) (V(atomic) or V(distributed), default V(atomic)), C(containers) (bool, default V(false)),
        C(group) (atomic layout only, required there), C(requirements) (list of PEP 508 requirements; no pip
        options, URLs or paths, see O(allow_direct_references)), C(requirements_lock) (a pip requirements file
        with C(--hash) options, relative to C(base_dir); every requirement must be in it),
        C(base_dir) (relative artifact paths resolve against it, default O(working_dir)), C(code_dir) (Python
          code for
        function stages, relative to C(base_dir)), C(input_topic), C(output_topic), C(error_topic)
        (default C(mlpacker/<name>/in), C(mlpacker/<name>/out), C(mlpacker/<name>/errors)) and C(stages).'
      - 'Each stage: C(name) (required, unique), exactly one of C(artifact) (a .joblib, .pkl, .pickle, .skops
        or .onnx
        file) or C(function) (C(package.module:callable) in C(code_dir)), C(format) (to override the
          extension),
        C(method) (V(predict), V(predict_proba), V(transform), V(decision_function) or V(call); default
          V(transform),
        V(predict) for the last stage, V(call) for functions), C(group) (distributed layout, required there),
          C(port),
        C(containers), C(trusted_types) (skops only), C(sha256) (a pin of the artifact file, 64 hex digits),
        C(input) (the input signature, MLflow style - a list of C({name, type}) or of types, with types
        V(double), V(float), V(long), V(integer) (numbers), V(string) or V(any)).'
      - The module of a function stage must be a file under C(code_dir); artifact paths and C(code_dir) must
        resolve inside C(base_dir) (see O(allow_paths_outside_base_dir)).
      - Unknown keys are errors; the message suggests the closest valid key.
    type: dict
    required: true
  groups:
    description:
      - Inventory groups, group name to list of host names. Pass the play's C(groups) variable.
    type: dict
    required: true
  addresses:
    description:
      - Host name to the address other hosts reach it at (for example its C(ansible_host)). Hosts that are not
        listed
        are reached by their inventory name.
    type: dict
    default: {}
  broker:
    description:
      - The MQTT broker stream services use (the C(mlpacker_broker) setting). When not given, the first host
        of the inventory group C(broker) runs a managed Mosquitto, a TLS listener on port 8883 (plain 1883
        with O(tls=false)); the plan's broker then has C(managed=true).
      - Stream mode needs one of the two. Ignored in REST mode.
    type: dict
    suboptions:
      host:
        description: Broker host name or address, as the services reach it.
        type: str
        required: true
      port:
        description: Broker port.
        type: int
        default: 1883
      username:
        description: User name to authenticate with.
        type: str
      password:
        description:
          - Password to authenticate with.
          - Not echoed back; the plan's broker has C(password) set to V(null). Write the runtime configuration
            from the C(mlpacker_broker) variable itself.
        type: str
      password_file:
        description:
          - A controller file whose first line is the password (for example written by an AWX credential);
            the alternative to O(broker.password). Not read by this module.
        type: path
      tls:
        description: TLS settings.
        type: dict
        suboptions:
          enabled:
            description:
              - Connect with TLS.
              - When not given, V(true) if O(broker.tls.ca_file), O(broker.tls.cert_file) or
                O(broker.tls.key_file) is given (naming TLS files means TLS), else V(false).
            type: bool
          ca_file:
            description: CA bundle to verify the broker with.
            type: path
          cert_file:
            description: Client certificate.
            type: path
          key_file:
            description: Client key.
            type: path
          insecure:
            description: Do not verify the broker's host name.
            type: bool
            default: false
  working_dir:
    description:
      - Directory that a relative C(base_dir) resolves against, and the default C(base_dir).
      - Defaults to the current directory of the module process (where C(ansible-playbook) was started); roles
        usually pass C(playbook_dir) or the inventory directory.
    type: path
  default_port:
    description:
      - First port given to services that do not set one.
    type: int
    default: 8000
  tls:
    description:
      - Whether the services speak TLS. V(true) makes every URL C(https://) and the managed broker a TLS
        listener on 8883; V(false) (an insecure deploy, C(mlpacker_insecure)) C(http://) and plain 1883.
    type: bool
    default: true
  allow_direct_references:
    description:
      - Let C(requirements) name URLs (C(pkg @ https://...)) and local paths or archives (the
        C(mlpacker_allow_direct_references) setting). By default each entry must be a PEP 508 requirement
        resolved from the package index; pip options (C(--index-url), C(-e), C(-r)) are refused either way.
    type: bool
    default: false
  require_pinned_artifacts:
    description:
      - Every artifact stage must pin its file's sha256 in C(stages[].sha256) (the
        C(mlpacker_require_pinned_artifacts) setting). A pin, required or not, is compared with the file here,
        before anything loads it; a mismatch fails naming the stage and both digests.
    type: bool
    default: false
  allow_paths_outside_base_dir:
    description:
      - Let artifact paths and C(code_dir) resolve (after symlinks) outside C(base_dir) (the
        C(mlpacker_allow_paths_outside_base_dir) setting). By default such a path fails naming the field and
        both paths.
    type: bool
    default: false
author:
  - MLPacker contributors (@mlpacker)
"""

EXAMPLES = r"""
- name: Compute the placement plan
  mlpacker.core.pipeline_plan:
    pipeline: "{{ mlpacker_pipeline }}"
    groups: "{{ groups }}"
    # Hosts without ansible_host get '' and are then reached by their inventory name.
    addresses: >-
      {{ dict(groups['all'] | zip(groups['all'] | map('extract', hostvars)
         | map(attribute='ansible_host', default=''))) }}
    broker: "{{ mlpacker_broker | default(omit) }}"
    working_dir: "{{ playbook_dir }}"
  delegate_to: localhost
  run_once: true
  register: mlpacker_placement

- name: Show where each service runs
  ansible.builtin.debug:
    msg: "{{ item.id }} on {{ item.host }}:{{ item.port }}"
  loop: "{{ mlpacker_placement.plan.services }}"
"""

RETURN = r"""
plan:
  description:
    - The placement plan (contract in docs/architecture.md, "Placement plan").
    - 'C(stages): the spec''s stages in order with C(name), C(index), C(artifact) (absolute path on the
      controller
      or V(null)), C(function), C(format), C(method) (always explicit), C(trusted_types), C(group), C(hosts),
        C(port)
      (as requested, or V(null)), C(containers), C(sha256) (the pin, or V(null)), C(input) (the input
      signature of the spec - C(source) and C(columns) - or V(null)).'
    - 'C(services): one per deployment unit per host with C(id), C(host), C(address), C(stages) (names),
      C(port),
      C(url) (REST C(/predict) URL or V(null)), C(next_hops) (REST URLs of every host of the next stage; V([])
        for the
      last one and in stream mode), C(input_topic), C(output_topic), C(output_kind) (V(instances) when the
        output feeds
      another stage, V(predictions) for the pipeline output), C(error_topic) (the four topics V(null) in REST
        mode),
      C(share_group), C(client_id), C(containers).'
    - 'C(hosts): host to its service ids. C(entry_points): C(rest) (list of URLs) or C(stream) (C(broker)
      C(host)/C(port),
      C(input_topic), C(output_topic), C(error_topic)). C(broker): as the top-level RV(broker).'
  returned: success
  type: dict
  sample:
    name: iris
    mode: rest
    layout: distributed
    containers: false
    base_dir: /srv/iris
    code_dir: null
    requirements: [scikit-learn==1.5.2]
    topics: {input: mlpacker/iris/in, output: mlpacker/iris/out, errors: mlpacker/iris/errors}
    stages:
      - {name: scale, index: 0, artifact: /srv/iris/models/scaler.joblib, function: null, format: joblib,
         method: transform, trusted_types: [], group: edge, hosts: [edge1], port: null, containers: false}
    services:
      - {id: iris-scale, host: edge1, address: 10.0.0.2, stages: [scale], port: 8000,
         url: "https://10.0.0.2:8000/predict", next_hops: ["https://10.0.0.4:8000/predict"],
         input_topic: null, output_topic: null, output_kind: null, error_topic: null,
         share_group: mlpacker-iris-scale, client_id: mlpacker-iris-scale-edge1, containers: false}
    hosts: {edge1: [iris-scale]}
    entry_points: {rest: ["https://10.0.0.2:8000/predict"]}
    broker: null
broker:
  description:
    - The broker stream services connect to, V(null) in REST mode.
    - 'C(host), C(port), C(username), C(password) (always V(null): never echoed), C(tls) (C(enabled),
      C(ca_file),
      C(cert_file), C(key_file), C(insecure)), C(managed) (V(true) when the roles must install Mosquitto on
      C(inventory_host), the first host of the group C(broker)).'
  returned: success
  type: dict
  sample: {host: 10.0.0.9, port: 8883, username: null, password: null, managed: true, inventory_host: broker1,
           tls: {enabled: true, ca_file: null, cert_file: null, key_file: null, insecure: false}}
entry_points:
  description: Where to send data to the pipeline (same as C(plan.entry_points)).
  returned: success
  type: dict
  sample: {stream: {broker: {host: 10.0.0.9, port: 8883}, input_topic: mlpacker/iris/in,
                    output_topic: mlpacker/iris/out, error_topic: mlpacker/iris/errors}}
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlpacker.core.plugins.module_utils.broker import broker_options, resolve_broker
from ansible_collections.mlpacker.core.plugins.module_utils.placement import build_plan
from ansible_collections.mlpacker.core.plugins.module_utils.spec_validation import (
    SpecError,
    validate_pipeline,
)


def groups_as_lists(groups):
    # hostvars/groups arrive as dicts of lists; anything else is a caller error worth naming.
    normalised = {}
    for group, hosts in groups.items():
        if hosts is None:
            hosts = []
        if not isinstance(hosts, list):
            raise SpecError([f"groups.{group}: expected a list of host names, got {hosts!r}"])
        normalised[str(group)] = [str(host) for host in hosts]
    return normalised


def main():
    module = AnsibleModule(
        argument_spec={
            "pipeline": {"type": "dict", "required": True},
            "groups": {"type": "dict", "required": True},
            "addresses": {"type": "dict", "default": {}},
            "broker": {"type": "dict", "options": broker_options()},
            "working_dir": {"type": "path"},
            "default_port": {"type": "int", "default": 8000},
            "tls": {"type": "bool", "default": True},
            "allow_direct_references": {"type": "bool", "default": False},
            "require_pinned_artifacts": {"type": "bool", "default": False},
            "allow_paths_outside_base_dir": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    params = module.params
    if not 1 <= params["default_port"] <= 65535:
        module.fail_json(msg="default_port: {!r} must be between 1 and 65535".format(params["default_port"]))
    working_dir = params["working_dir"] or os.getcwd()
    addresses = {str(host): str(address) for host, address in params["addresses"].items() if address}
    try:
        groups = groups_as_lists(params["groups"])
        spec = validate_pipeline(
            params["pipeline"],
            groups,
            working_dir,
            broker_given=params["broker"] is not None,
            allow_direct_references=params["allow_direct_references"],
            rules={
                "require_pinned_artifacts": params["require_pinned_artifacts"],
                "allow_paths_outside_base_dir": params["allow_paths_outside_base_dir"],
            },
        )
        broker = None
        if spec["mode"] == "stream":
            broker = resolve_broker(params["broker"], groups, addresses, tls=params["tls"])
        if broker is not None:
            # The password stays in the caller's mlpacker_broker: Ansible would mask it in the result anyway.
            broker["password"] = None
        plan = build_plan(spec, addresses, broker, default_port=params["default_port"], tls=params["tls"])
    except SpecError as exc:
        module.fail_json(
            msg=f"invalid pipeline spec: {len(exc.errors)} problem(s): {'; '.join(exc.errors)}",
            errors=exc.errors,
        )
    if not params["tls"]:
        managed = (plan["broker"] or {}).get("managed")
        module.warn(
            "pipeline {}: deployed without TLS (mlpacker_insecure): services answer on plain HTTP{}".format(
                plan["name"], " and its managed broker on plain MQTT" if managed else ""
            )
        )
    module.exit_json(changed=False, plan=plan, broker=plan["broker"], entry_points=plan["entry_points"])


if __name__ == "__main__":
    main()
