# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A pipeline's MQTT users for the managed Mosquitto: names, passwords, the password-file lines in
Mosquitto 2.0's own hash format and the ACL that confines each user to its topics.

Password lines are ``<username>:$7$101$<base64 salt>$<base64 hash>``: PBKDF2-HMAC-SHA512, 101 iterations, a
12-byte salt and a 64-byte hash, standard base64 with padding (what ``mosquitto_passwd`` writes and
Mosquitto 2.0 reads), so the broker host needs no tool to make them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets

HASH_ID = "7"
ITERATIONS = 101
SALT_BYTES = 12
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
SERVICE_TOPIC_KEYS = ("input_topic", "output_topic", "error_topic")
CLIENT_TOPIC_KEYS = ("input", "output", "error")


def service_username(pipeline, service_id):
    return f"mlp-{pipeline}-{service_id}"


def client_username(pipeline):
    return f"mlp-{pipeline}-client"


def new_password():
    return secrets.token_urlsafe(24)


def share_group(service_id, salt):
    """The shared-subscription group of a service's replicas, with a part only the pipeline knows.

    Mosquitto 2.0's ACL checks ``read`` on delivery, not on SUBSCRIBE: any user of the broker could join a
    guessable group (``mlpacker-<id>``), take its turn of the input and have it dropped. A group name derived
    from a per-pipeline secret (kept across rotations, so a rolling restart never splits the replicas over
    two groups) cannot be joined by anyone who cannot read the services' configuration.
    """
    digest = hmac.new(salt.encode("utf-8"), service_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"mlpacker-{service_id}-{digest[:16]}"


def password_hash(password, salt=None, iterations=ITERATIONS):
    """Mosquitto's ``$7$`` hash of ``password`` (a new random salt unless one is given)."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return "${}${}${}${}".format(
        HASH_ID, iterations, base64.b64encode(salt).decode("ascii"), base64.b64encode(digest).decode("ascii")
    )


def hash_matches(encoded, password):
    """Whether the ``$7$`` hash ``encoded`` is the hash of ``password`` (False for another or a damaged
    hash)."""
    parts = encoded.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != HASH_ID or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except (binascii.Error, ValueError):
        return False
    iterations = int(parts[2])
    if not salt or not expected or not 0 < iterations <= 1_000_000:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(digest, expected)


def parse_passwd(text):
    """``{username: hash}`` from password-file text; blank, comment and malformed lines are left out."""
    entries = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        username, encoded = line.split(":", 1)
        entries[username] = encoded
    return entries


def passwd_text(users, existing):
    """Password-file text for ``users`` (``[(username, password)]``, in that order): the hash in ``existing``
    (``{username: hash}``, from the current file) when it still matches the password, else a new one. So a
    re-run with the same passwords writes the same bytes."""
    lines = []
    for username, password in users:
        encoded = existing.get(username)
        if encoded is None or not hash_matches(encoded, password):
            encoded = password_hash(password)
        lines.append(f"{username}:{encoded}\n")
    return "".join(lines)


def check_name(value, field):
    """An error message when ``value`` cannot be part of an MQTT username or a file name, else None."""
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        return f"{field}: {value!r} must match {NAME_PATTERN.pattern}"
    return None


def check_topic(value, field):
    """An error message when ``value`` cannot be an ACL topic of a pipeline, else None."""
    if not isinstance(value, str) or not value.strip():
        return f"{field}: a topic is required"
    if value != value.strip() or any(char in value for char in "+#\n\r\0"):
        return f"{field}: {value!r} must be a plain topic (no wildcards, no surrounding spaces, one line)"
    if value.startswith("$"):
        return f"{field}: {value!r} must not start with '$' (reserved by the broker)"
    return None


def service_topics(services):
    """The services with their topics, one entry per service id in first-seen order (a plan lists a service
    once per host). Raises ValueError naming the field when an id or topic is not usable or one id comes
    with different topics."""
    unique = {}
    problems = []
    for index, service in enumerate(services):
        field = f"mqtt_services[{index}]"
        found = [check_name(service.get("id"), f"{field}.id")]
        found += [check_topic(service.get(key), f"{field}.{key}") for key in SERVICE_TOPIC_KEYS]
        found = [problem for problem in found if problem]
        if found:
            problems += found
            continue
        topics = {key: service[key] for key in SERVICE_TOPIC_KEYS}
        known = unique.setdefault(service["id"], topics)
        if known != topics:
            problems.append(f"{field}: service {service['id']!r} is listed again with other topics")
    if problems:
        raise ValueError("; ".join(problems))
    return [dict(topics, id=service_id) for service_id, topics in unique.items()]


def client_topics(services):
    """The topics of the pipeline's user derived from its services: ``input`` is the topic services read
    that none writes, ``output`` the output topic no service reads, ``error`` the error topic (each the first
    found; None when there is none)."""
    reads = [service["input_topic"] for service in services]
    writes = [service["output_topic"] for service in services]
    return {
        "input": next((topic for topic in reads if topic not in writes), None),
        "output": next((topic for topic in writes if topic not in reads), None),
        "error": next((service["error_topic"] for service in services), None),
    }


def _block(username, read, write):
    lines = [f"user {username}\n"]
    seen = set()
    for access, topics in (("read", read), ("write", write)):
        for topic in topics:
            if topic and (access, topic) not in seen:
                seen.add((access, topic))
                lines.append(f"topic {access} {topic}\n")
    return "".join(lines)


def acl_text(pipeline, services, client):
    """Mosquitto ACL text (``user`` blocks) for the pipeline's users: each service reads its input topic and
    writes its output and error topics; the client (``{input, output, error}``, or None for no client user)
    writes the input topic and reads the output and error topics. Nothing else is granted: no wildcard,
    no ``readwrite``. Mosquitto checks ``read`` when it delivers a message, so a shared subscription
    (``$share/<group>/<input topic>``) receives its input topic's messages."""
    blocks = [f"# MLPacker pipeline {pipeline}: generated by mlpacker.core.pipeline_credentials\n"]
    for service in services:
        blocks.append(
            _block(
                service_username(pipeline, service["id"]),
                read=[service["input_topic"]],
                write=[service["output_topic"], service["error_topic"]],
            )
        )
    if client is not None:
        blocks.append(
            _block(
                client_username(pipeline), read=[client["output"], client["error"]], write=[client["input"]]
            )
        )
    return "\n".join(blocks)
