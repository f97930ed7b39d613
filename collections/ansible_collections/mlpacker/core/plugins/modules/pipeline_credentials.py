#!/usr/bin/python
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

# The code is the action plugin plugins/action/pipeline_credentials.py: it runs on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
module: pipeline_credentials
short_description: Make a pipeline's certificates, bearer token and MQTT credentials on the controller
version_added: 0.1.0
description:
  - Makes, on the controller, everything a secured pipeline needs, in the folder O(path) (mode 0700, every
    file 0600 whatever the umask) - a CA per pipeline (or a copy of the user's, O(ca_cert_file)), a server
    certificate per host of O(hosts), a client certificate for mutual TLS, a bearer token, and for stream
    pipelines one MQTT user per service and one for the user, with the managed Mosquitto's password-file lines
    and ACL; for O(broker_hosts) the managed brokers' own CA and a listener certificate per broker host.
  - "The layout (see the MLPacker repository's C(docs/security.md)): C(<path>/<pipeline>/) holds C(ca.crt),
    C(ca.key), C(token), C(client.crt), C(client.key), C(hosts/<inventory name>.crt) and C(.key),
    C(mqtt/<username>.password), C(mqtt/passwd) and C(mqtt/acl); C(<path>/_broker/) holds C(ca.crt),
    C(ca.key) and C(<inventory name>.crt) and C(.key)."
  - Runs on the controller whatever host the task targets (an action plugin, nothing is sent to the host),
    with the C(cryptography) library that ansible-core depends on; the hosts need no crypto library.
  - Re-runs re-use what exists and report no change. A certificate is made again, with a new key, when it is
    missing or damaged, does not match its key, was not signed by the current CA, expires within 30 days, or
    when the host's address changed. A damaged or missing token or MQTT password is made again.
  - Certificates of hosts and MQTT password files of services no longer listed are left in place (so a run
    with C(--limit) does not remove or churn them); they are not in C(mqtt/passwd) and C(mqtt/acl).
  - Concurrent runs wait for each other (a lock on O(path)); call it once per pipeline (C(run_once)).
  - Returns paths only, never a key, token or password.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: reports what would be made or changed and writes nothing.
  diff_mode:
    support: full
    details: the diff lists the names of the files that change and why, never their content.
  platform:
    support: full
    platforms: posix
options:
  path:
    description:
      - The controller's credentials folder; the pipeline's files go to C(<path>/<pipeline>/), the managed
        brokers' to C(<path>/_broker/). C(~) is expanded on the controller.
    type: path
    default: ~/.mlpacker/credentials
  pipeline:
    description:
      - The pipeline name (as in the spec, C(^[a-z][a-z0-9-]{0,30}$)).
    type: str
    required: true
  hosts:
    description:
      - The hosts that run the pipeline's services, inventory name to the address Ansible uses to reach it
        (C(ansible_host)); each gets a server certificate whose subject alternative names are that address
        (an IP SAN when it parses as an IP address, else a DNS SAN), the inventory name, C(localhost) and
        C(127.0.0.1). An empty address stands for the inventory name.
      - The certificate also allows client authentication, so a service can show it to its next hop.
    type: dict
    default: {}
  broker_hosts:
    description:
      - The hosts that run a managed Mosquitto, inventory name to address; each gets a listener certificate
        (same SAN rule) signed by the brokers' CA in C(<path>/_broker/). Empty - no broker credentials.
    type: dict
    default: {}
  mqtt_services:
    description:
      - Stream pipelines - the services with their topics (a plan's C(services) list may be given as it is -
        other keys are ignored, a service listed once per host counts once). Each gets the MQTT user
        C(mlp-<pipeline>-<id>), which may read only its input topic (also through a shared subscription
        C($share/<group>/<input topic>)) and write only its output and error topics.
      - Empty, and no O(mqtt_client_topics) - no MQTT credentials (REST pipelines).
    type: list
    elements: dict
    default: []
    suboptions:
      id:
        description: The service id (part of the username and of a file name).
        type: str
        required: true
      input_topic:
        description: The topic the service reads.
        type: str
        required: true
      output_topic:
        description: The topic the service writes its results to.
        type: str
        required: true
      error_topic:
        description: The topic the service writes its errors to.
        type: str
        required: true
  mqtt_client_topics:
    description:
      - The topics of the user's MQTT credential C(mlp-<pipeline>-client), which may write the input topic and
        read the output and error topics.
      - By default derived from O(mqtt_services) - the input topic no service writes, the output topic no
        service reads, the error topic. A plan's C(topics) may be given as it is.
    type: dict
    suboptions:
      input:
        description: The pipeline's input topic.
        type: str
        required: true
      output:
        description: The pipeline's output topic.
        type: str
        required: true
      error:
        description: The pipeline's error topic.
        type: str
        required: true
        aliases: [errors]
  ca_cert_file:
    description:
      - The user's CA certificate (PEM) to sign the pipeline's certificates instead of a generated CA; copied
        to C(<path>/<pipeline>/ca.crt). Requires O(ca_key_file).
      - To go back to a generated CA, leave both options out and remove C(ca.crt) and C(ca.key) from the
        pipeline's folder.
    type: path
  ca_key_file:
    description:
      - The unencrypted private key (PEM) of O(ca_cert_file); copied to C(<path>/<pipeline>/ca.key).
    type: path
  token_file:
    description:
      - A file whose first line is the user's bearer token (for example decrypted from Ansible Vault) instead
        of a generated one; at least 16 characters of an RFC 6750 bearer token (letters, digits, C(-._~+/)).
      - When it differs from the current token, the current one is kept as line 2 of the token file, so the
        services accept both until the next change. O(rotate) does not replace a user's token.
      - A changed token waits in C(token.pending) like a rotated one (see O(rotate)).
    type: path
  rotate:
    description:
      - Make new keys and certificates for every host, broker host and the client, a new token (the previous
        one kept as line 2 of the token file) and new MQTT passwords. The CAs stay.
      - Runs that rotate always report a change.
      - The new token is written first to C(<path>/<pipeline>/token.pending) (new token, then the current
        one), which the services get (RV(service_token_file)); C(token), which clients read, keeps the current
        token until O(promote_token) moves the pending file there, once every service runs with it. A run that
        finds a pending token (a deploy that stopped midway) carries it on instead of making another.
    type: bool
    default: false
  promote_token:
    description:
      - Only move a pending token (C(token.pending)) to the token file; nothing else is made or changed. The
        last step of a deploy, after every service rolled out with the pending token and passed its health
        gate. Without a pending token, nothing changes.
    type: bool
    default: false
  validity_days:
    description:
      - How long new host, broker and client certificates are valid, in days (never beyond their CA). More
        than 30.
    type: int
    default: 825
  ca_validity_days:
    description:
      - How long a new generated CA is valid, in days. More than 30.
    type: int
    default: 3650
notes:
  - The files are the only copy of the keys; back up O(path) like any other secret store.
  - Mosquitto 2.0 checks the ACL's C(read) when it delivers a message, not when a client subscribes (every
    subscription is granted). So no user reads beyond its topics, but any user of the broker who joins a
    service's share group (C($share/<group>/<topic>)) takes turns whose messages are then dropped.
  - A generated CA that expires within 30 days is replaced, and with it every certificate it signed.
seealso:
  - name: MLPacker security model
    description: The settings, the folder layout and what the services and the managed broker do with them.
    link: https://github.com/mlpacker/mlpacker/blob/main/docs/security.md
author:
  - MLPacker contributors (@mlpacker)
"""

EXAMPLES = r"""
- name: Plan the pipeline
  mlpacker.core.pipeline_plan:
    pipeline: "{{ mlpacker_pipeline }}"
    groups: "{{ groups }}"
  delegate_to: localhost
  run_once: true
  register: mlpacker_placement

- name: Make the pipeline's credentials
  mlpacker.core.pipeline_credentials:
    path: "{{ mlpacker_credentials_dir }}"
    pipeline: "{{ plan.name }}"
    hosts: "{{ dict(plan.services | map(attribute='host') | zip(plan.services | map(attribute='address'))) }}"
    broker_hosts: "{{ {plan.broker.inventory_host: plan.broker.host} if plan.broker.managed | default(false)
      else {} }}"
    mqtt_services: "{{ plan.services if plan.mode == 'stream' else [] }}"
    mqtt_client_topics: "{{ plan.topics if plan.mode == 'stream' else omit }}"
    rotate: "{{ mlpacker_rotate_credentials | bool }}"
  vars:
    plan: "{{ mlpacker_placement.plan }}"
  run_once: true
  register: mlpacker_credentials

- name: Use the user's CA and a token kept in Ansible Vault
  mlpacker.core.pipeline_credentials:
    pipeline: iris
    hosts: {edge1: 10.0.0.5, cloud1: cloud1.example.org}
    ca_cert_file: /etc/pki/mlpacker/ca.crt
    ca_key_file: /etc/pki/mlpacker/ca.key
    token_file: "{{ playbook_dir }}/files/iris.token"
  run_once: true
"""

RETURN = r"""
dir:
  description: The pipeline's folder of credentials.
  returned: success
  type: str
  sample: /home/me/.mlpacker/credentials/iris
ca_file:
  description: The pipeline CA's certificate (what clients verify the services against).
  returned: success
  type: str
  sample: /home/me/.mlpacker/credentials/iris/ca.crt
token_file:
  description: The bearer token file (line 1 the current token, line 2 the previous one after a change);
    what clients read.
  returned: success
  type: str
  sample: /home/me/.mlpacker/credentials/iris/token
service_token_file:
  description: The token file the services get - C(token.pending) while a new token waits to be promoted
    (RV(token_pending)), else the same as RV(token_file).
  returned: success and not O(promote_token)
  type: str
  sample: /home/me/.mlpacker/credentials/iris/token.pending
token_pending:
  description: Whether a new token waits in C(token.pending) for O(promote_token).
  returned: success
  type: bool
  sample: false
client:
  description: The client certificate and key (mutual TLS).
  returned: success
  type: dict
  contains:
    cert_file:
      description: The certificate.
      type: str
      sample: /home/me/.mlpacker/credentials/iris/client.crt
    key_file:
      description: The private key.
      type: str
      sample: /home/me/.mlpacker/credentials/iris/client.key
hosts:
  description: Per inventory name of O(hosts), the server certificate and key files (C(cert_file),
    C(key_file)).
  returned: success
  type: dict
  sample:
    edge1:
      cert_file: /home/me/.mlpacker/credentials/iris/hosts/edge1.crt
      key_file: /home/me/.mlpacker/credentials/iris/hosts/edge1.key
broker:
  description: The managed brokers' CA and, per inventory name of O(broker_hosts), the listener certificate
    and key files. V(null) when O(broker_hosts) is empty.
  returned: success
  type: dict
  contains:
    ca_file:
      description: The brokers' CA certificate (what MQTT clients verify the broker against).
      type: str
      sample: /home/me/.mlpacker/credentials/_broker/ca.crt
    hosts:
      description: Per broker host, C(cert_file) and C(key_file).
      type: dict
      sample:
        broker1:
          cert_file: /home/me/.mlpacker/credentials/_broker/broker1.crt
          key_file: /home/me/.mlpacker/credentials/_broker/broker1.key
mqtt:
  description: The pipeline's MQTT users. V(null) when there are none (no O(mqtt_services) and no
    O(mqtt_client_topics)).
  returned: success
  type: dict
  contains:
    passwd_file:
      description: Mosquitto password-file lines of the pipeline's users (C($7$), PBKDF2-SHA512).
      type: str
      sample: /home/me/.mlpacker/credentials/iris/mqtt/passwd
    acl_file:
      description: Mosquitto ACL (C(user) blocks) of the pipeline's users.
      type: str
      sample: /home/me/.mlpacker/credentials/iris/mqtt/acl
    users:
      description:
        - Per service id, its C(username), C(password_file) and C(share_group), the shared-subscription group
          of its replicas. The group name carries a part derived from a per-pipeline secret
          (C(mqtt/share_group.salt), never rotated), because Mosquitto 2.0 grants every subscription and
          checks C(read) only on delivery; a guessable group could be joined by any user of the broker, whose
          turns of the input would then be dropped.
      type: dict
      sample:
        iris-scale:
          username: mlp-iris-iris-scale
          password_file: /home/me/.mlpacker/credentials/iris/mqtt/mlp-iris-iris-scale.password
          share_group: mlpacker-iris-scale-3f1c0a9be4d27c55
    client:
      description: The user's credential, C(username) and C(password_file).
      type: dict
      sample:
        username: mlp-iris-client
        password_file: /home/me/.mlpacker/credentials/iris/mqtt/mlp-iris-client.password
changes:
  description: What was (in check mode, would be) made or changed, one entry per file or folder with C(path)
    and C(change) (why; never a content).
  returned: success
  type: list
  elements: dict
  sample:
    - path: /home/me/.mlpacker/credentials/iris/hosts/edge1.crt
      change: "new certificate (addresses changed: 10.0.0.5, edge1, localhost, 127.0.0.1 instead of 10.0.0.6,
        edge1, localhost, 127.0.0.1)"
"""
