#!/usr/bin/python
# ruff: noqa: E402 - Ansible modules keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: pipeline_probe
short_description: Send instances through a deployed MLPacker pipeline and check the predictions
version_added: 0.1.0
description:
  - REST mode POSTs a JSON object with the rows in C(instances) to each entry point URL and reads
    C(predictions)
    from the answer (Python's urllib, nothing to install).
  - Stream mode publishes a JSON object with a new C(id) (a UUID) and C(instances) with QoS 1 to
    O(input_topic) and
    waits for the message with the same C(id) on O(output_topic); an answer on O(error_topic) fails the module
    naming the stage and the error. Needs paho-mqtt 2.x in the controller's Python.
  - With O(expected), the predictions must match (numbers within O(tolerance)); the failure message shows the
    first
    differing index, the expected and the received value.
  - Runs on the controller (use C(delegate_to=localhost) and C(run_once=true)). It sends real requests, but a
    probe
    changes nothing in the deployment, so it also runs in check mode.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The probe is sent in check mode too (it reads, it does not change the deployment).
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
options:
  mode:
    description: How the pipeline is reached.
    type: str
    choices: [rest, stream]
    default: rest
  urls:
    description: REST entry points (C(plan.entry_points.rest)). Required with O(mode=rest).
    type: list
    elements: str
  all:
    description: REST - probe every URL of O(urls); V(false) probes only the first.
    type: bool
    default: true
  ca_file:
    description:
      - REST - the CA that C(https://) entry points are verified against (the deployment record's
        C(credentials.ca_file)); without it the system's CAs.
    type: path
  token_file:
    description:
      - REST - a file whose first line is the bearer token sent as C(Authorization) header (the deployment
        record's C(credentials.token_file)).
    type: path
  client_cert_file:
    description: REST - client certificate for an entry point that asks for mutual TLS.
    type: path
  client_key_file:
    description: REST - the key of O(client_cert_file).
    type: path
  broker_password_file:
    description:
      - Stream - a file whose first line is the broker password (the deployment record's
        C(credentials.mqtt.password_file)); used when O(broker.password) is not given.
    type: path
  broker:
    description: Stream - the MQTT broker. Required with O(mode=stream).
    type: dict
    suboptions:
      host:
        description: Broker host name or address.
        type: str
        required: true
      port:
        description: Broker port.
        type: int
        default: 1883
      username:
        description: User name.
        type: str
      password:
        description: Password.
        type: str
      password_file:
        description: A file whose first line is the password; used when O(broker.password) is not given.
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
            description: Do not verify the broker's certificate and host name.
            type: bool
            default: false
  input_topic:
    description: Stream - the pipeline's input topic. Required with O(mode=stream).
    type: str
  output_topic:
    description: Stream - the pipeline's output topic. Required with O(mode=stream).
    type: str
  error_topic:
    description: Stream - the pipeline's error topic; when given, an answer there fails the probe at once.
    type: str
  instances:
    description: The input rows to send.
    type: list
    elements: raw
    required: true
  timeout:
    description: Seconds to wait for each answer.
    type: float
    default: 10
  expected:
    description: The predictions the pipeline must answer with (for example from
      M(mlpacker.core.pipeline_reference)).
    type: list
    elements: raw
  tolerance:
    description: Absolute and relative tolerance when comparing numbers with O(expected).
    type: float
    default: 0.000001
requirements:
  - paho-mqtt >= 2.0 for O(mode=stream).
author:
  - MLPacker contributors (@mlpacker)
"""

EXAMPLES = r"""
- name: Smoke test every REST entry point against the reference predictions
  mlpacker.core.pipeline_probe:
    mode: rest
    urls: "{{ mlpacker_placement.plan.entry_points.rest }}"
    instances: "{{ mlpacker_reference.instances }}"
    expected: "{{ mlpacker_reference.predictions }}"
  delegate_to: localhost
  run_once: true

- name: Smoke test a stream pipeline
  mlpacker.core.pipeline_probe:
    mode: stream
    broker: "{{ mlpacker_broker }}"
    input_topic: "{{ mlpacker_placement.plan.topics.input }}"
    output_topic: "{{ mlpacker_placement.plan.topics.output }}"
    error_topic: "{{ mlpacker_placement.plan.topics.errors }}"
    instances: [[5.1, 3.5, 1.4, 0.2]]
    timeout: 30
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
results:
  description: One entry per probed URL (REST) or a single one (stream), with C(url) (V(null) in stream mode),
    C(predictions) and C(latency_ms).
  returned: success, and on a prediction mismatch
  type: list
  elements: dict
  sample: [{url: "http://10.0.0.2:8000/predict", predictions: [0, 2], latency_ms: 12.7}]
predictions:
  description: The predictions of the first result.
  returned: success
  type: list
  elements: raw
  sample: [0, 2]
latency_ms:
  description: Round-trip time of the first result in milliseconds.
  returned: success
  type: float
  sample: 12.7
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlpacker.core.plugins.module_utils.broker import broker_options, normalise_tls
from ansible_collections.mlpacker.core.plugins.module_utils.probe import (
    ProbeError,
    compare_predictions,
    mqtt_round_trip,
    post_instances,
    read_secret,
)


def probe_all(params):
    """Run the probes; a ProbeError carries what went wrong."""
    if params["mode"] == "rest":
        urls = params["urls"] if params["all"] else params["urls"][:1]
        results = []
        token = read_secret("token_file", params["token_file"])
        for url in urls:
            predictions, latency_ms = post_instances(
                url,
                params["instances"],
                params["timeout"],
                ca_file=params["ca_file"],
                token=token,
                client_cert_file=params["client_cert_file"],
                client_key_file=params["client_key_file"],
            )
            results.append({"url": url, "predictions": predictions, "latency_ms": round(latency_ms, 3)})
        return results
    broker = dict(params["broker"], tls=normalise_tls(params["broker"].get("tls")))
    if not broker.get("password"):
        field, path = "broker_password_file", params["broker_password_file"]
        if not path and broker.get("password_file"):
            field, path = "broker.password_file", broker["password_file"]
        broker["password"] = read_secret(field, path)
    predictions, latency_ms = mqtt_round_trip(
        broker,
        params["input_topic"],
        params["output_topic"],
        params["error_topic"],
        params["instances"],
        params["timeout"],
    )
    return [{"url": None, "predictions": predictions, "latency_ms": round(latency_ms, 3)}]


def main():
    module = AnsibleModule(
        argument_spec={
            "mode": {"type": "str", "choices": ["rest", "stream"], "default": "rest"},
            "urls": {"type": "list", "elements": "str"},
            "all": {"type": "bool", "default": True},
            "ca_file": {"type": "path"},
            "token_file": {"type": "path"},
            "client_cert_file": {"type": "path"},
            "client_key_file": {"type": "path"},
            "broker": {"type": "dict", "options": broker_options()},
            # A path, not the password: no_log would hide it (and Ansible warns at every run without this).
            "broker_password_file": {"type": "path", "no_log": False},
            "input_topic": {"type": "str"},
            "output_topic": {"type": "str"},
            "error_topic": {"type": "str"},
            "instances": {"type": "list", "elements": "raw", "required": True},
            "timeout": {"type": "float", "default": 10},
            "expected": {"type": "list", "elements": "raw"},
            "tolerance": {"type": "float", "default": 0.000001},
        },
        required_together=[("client_cert_file", "client_key_file")],
        required_if=[
            ("mode", "rest", ("urls",)),
            ("mode", "stream", ("broker", "input_topic", "output_topic")),
        ],
        supports_check_mode=True,
    )
    params = module.params
    if params["mode"] == "rest" and not params["urls"]:
        module.fail_json(msg="urls: at least one REST entry point URL is needed")
    if not params["instances"]:
        module.fail_json(msg="instances: at least one input row is needed")
    if params["timeout"] <= 0:
        module.fail_json(msg="timeout: {!r} must be more than 0 seconds".format(params["timeout"]))
    try:
        results = probe_all(params)
    except ProbeError as exc:
        module.fail_json(msg=f"probe failed: {exc}")
    if params["expected"] is not None:
        for result in results:
            mismatch = compare_predictions(params["expected"], result["predictions"], params["tolerance"])
            if mismatch:
                where = result["url"] or "topic {}".format(params["output_topic"])
                module.fail_json(msg=f"{where}: {mismatch}", results=results)
    module.exit_json(
        changed=False,
        results=results,
        predictions=results[0]["predictions"],
        latency_ms=results[0]["latency_ms"],
    )


if __name__ == "__main__":
    main()
