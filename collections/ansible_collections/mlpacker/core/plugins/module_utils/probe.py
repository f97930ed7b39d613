# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Send instances through a deployed pipeline (REST or MQTT) and compare what comes back."""

from __future__ import annotations

import json
import math
import ssl
import threading
import time
import urllib.error
import uuid
from typing import Any

from ansible.module_utils.urls import open_url
from ansible_collections.mlpacker.core.plugins.module_utils.runtime_contract import DEFAULT_BROKER_PORT


class ProbeError(Exception):
    """The pipeline did not answer as expected; the message says where and what came back."""


def read_secret(field: str, path: str | None) -> str | None:
    """The first line of a secret file (a token, a password), or None when no file is named."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            line = handle.readline().strip()
    except OSError as exc:
        raise ProbeError(f"{field}: cannot read {path}: {exc.strerror or exc}") from exc
    if not line:
        raise ProbeError(f"{field}: {path} is empty")
    return line


def post_instances(
    url: str,
    instances: list[Any],
    timeout: float,
    *,
    ca_file: str | None = None,
    token: str | None = None,
    client_cert_file: str | None = None,
    client_key_file: str | None = None,
) -> tuple[Any, float]:
    """POST ``{"instances": ...}`` to a REST entry point; return (predictions, latency in ms).

    An https URL is verified against ``ca_file`` (the pipeline CA) or the system's CAs; ``token`` goes in an
    ``Authorization: Bearer`` header; the client certificate is presented where the entry wants mutual TLS.
    """
    body = json.dumps({"instances": instances}).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    started = time.monotonic()
    try:
        # Ansible's wrapper around urllib (stdlib only); proxies from the environment are honoured.
        response = open_url(
            url,
            data=body,
            headers=headers,
            method="POST",
            timeout=timeout,
            validate_certs=True,
            ca_path=ca_file,
            client_cert=client_cert_file,
            client_key=client_key_file,
        )
        payload = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", errors="replace")[:2000]
        raise ProbeError(f"POST {url} answered HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ProbeError(f"POST {url} failed: {reason}") from exc
    latency_ms = (time.monotonic() - started) * 1000.0
    try:
        document = json.loads(payload)
    except ValueError as exc:
        raise ProbeError(f"POST {url} answered with a body that is not JSON: {payload[:200]!r}") from exc
    if not isinstance(document, dict) or "predictions" not in document:
        raise ProbeError(f"POST {url} answered without 'predictions': {document!r}")
    return document["predictions"], latency_ms


def mqtt_round_trip(
    broker: dict[str, Any],
    input_topic: str,
    output_topic: str,
    error_topic: str | None,
    instances: list[Any],
    timeout: float,
) -> tuple[Any, float]:
    """Publish ``{"id", "instances"}`` (QoS 1) and wait for the answer with the same id.

    Returns (predictions, latency in ms); an answer on the error topic raises ProbeError naming the stage.
    """
    try:
        from paho.mqtt import client as mqtt_client
    except ImportError as exc:
        raise ProbeError("the Python library 'paho-mqtt' (>= 2.0) is needed for stream mode probes") from exc

    message_id = str(uuid.uuid4())
    answer: dict[str, Any] = {}
    answered = threading.Event()
    subscribed = threading.Event()
    connect_result: dict[str, Any] = {}

    def on_connect(client, userdata, flags, reason_code, properties):
        connect_result["reason"] = str(reason_code)
        if reason_code.is_failure:
            subscribed.set()
            return
        topics = [(output_topic, 1)] + ([(error_topic, 1)] if error_topic else [])
        client.subscribe(topics)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(client, userdata, message):
        try:
            document = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(document, dict) and document.get("id") == message_id and not answered.is_set():
            answer["topic"] = message.topic
            answer["document"] = document
            answer["received"] = time.monotonic()
            answered.set()

    client = mqtt_client.Client(
        callback_api_version=mqtt_client.CallbackAPIVersion.VERSION2,
        client_id=f"mlpacker-probe-{message_id[:8]}",
        protocol=mqtt_client.MQTTv5,
    )
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    if broker.get("username"):
        client.username_pw_set(broker["username"], broker.get("password"))
    tls = broker.get("tls") or {}
    if tls.get("enabled"):
        client.tls_set(
            ca_certs=tls.get("ca_file"),
            certfile=tls.get("cert_file"),
            keyfile=tls.get("key_file"),
            cert_reqs=ssl.CERT_NONE if tls.get("insecure") else ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(bool(tls.get("insecure")))
    host = broker.get("host")
    port = int(broker.get("port") or DEFAULT_BROKER_PORT)
    try:
        client.connect(host, port, keepalive=30)
    except (OSError, ValueError) as exc:
        raise ProbeError(f"cannot connect to the MQTT broker {host}:{port}: {exc}") from exc
    client.loop_start()
    try:
        if not subscribed.wait(timeout):
            raise ProbeError(
                f"the MQTT broker {host}:{port} did not accept the subscription within {timeout}s"
            )
        if connect_result.get("reason") not in (None, "Success"):
            raise ProbeError(
                f"the MQTT broker {host}:{port} refused the connection: {connect_result['reason']}"
            )
        started = time.monotonic()
        info = client.publish(input_topic, json.dumps({"id": message_id, "instances": instances}), qos=1)
        info.wait_for_publish(timeout)
        if not answered.wait(timeout):
            raise ProbeError(
                "no answer with id {} on {}{} within {}s after publishing to {}".format(
                    message_id,
                    output_topic,
                    f" or {error_topic}" if error_topic else "",
                    timeout,
                    input_topic,
                )
            )
    finally:
        client.loop_stop()
        client.disconnect()
    document = answer["document"]
    latency_ms = (answer["received"] - started) * 1000.0
    if error_topic and answer["topic"] == error_topic:
        raise ProbeError(
            "the pipeline reported an error on {}: stage {}: {}".format(
                error_topic, document.get("stage", "?"), document.get("error", document)
            )
        )
    if "predictions" not in document:
        raise ProbeError(f"the answer on {output_topic} has no 'predictions': {document!r}")
    return document["predictions"], latency_ms


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def first_difference(expected: Any, got: Any, tolerance: float, path: str = "") -> str | None:
    """Where ``got`` first differs from ``expected`` (e.g. ``[2][1]``), or None when they match.

    Numbers match within ``tolerance`` (absolute, or relative to the larger magnitude); other values
    must be equal.
    """
    if isinstance(expected, bool) != isinstance(got, bool):
        # JSON keeps true and 1 apart, and so does a classifier's output.
        return path or "[]"
    if is_number(expected) and is_number(got):
        if math.isclose(float(expected), float(got), rel_tol=tolerance, abs_tol=tolerance):
            return None
        return path or "[]"
    if isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)):
        for index, (expected_item, got_item) in enumerate(zip(expected, got, strict=False)):
            difference = first_difference(expected_item, got_item, tolerance, f"{path}[{index}]")
            if difference is not None:
                return difference
        if len(expected) != len(got):
            return f"{path}[{min(len(expected), len(got))}]"
        return None
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in sorted(set(expected) | set(got), key=str):
            if key not in expected or key not in got:
                return f"{path}[{key!r}]"
            difference = first_difference(expected[key], got[key], tolerance, f"{path}[{key!r}]")
            if difference is not None:
                return difference
        return None
    return None if expected == got else (path or "[]")


def value_at(document: Any, path: str) -> Any:
    """The value at a path produced by first_difference, or '<missing>' when the path runs past the end."""
    current = document
    for part in path.strip("[]").split("]["):
        if part == "":
            continue
        try:
            key: Any = int(part)
        except ValueError:
            key = part.strip("'\"")
        try:
            current = current[key]
        except (IndexError, KeyError, TypeError):
            return "<missing>"
    return current


def compare_predictions(expected: Any, got: Any, tolerance: float) -> str | None:
    """A message describing the first mismatch, or None when ``got`` matches ``expected``."""
    difference = first_difference(expected, got, tolerance)
    if difference is None:
        return None
    return (
        f"predictions differ at index {difference}: expected {value_at(expected, difference)!r},"
        f" got {value_at(got, difference)!r} (tolerance {tolerance:g})"
    )
