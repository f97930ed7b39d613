# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""How a user reaches a deployed pipeline: the record's ``credentials`` (paths, never values) and a working
``curl`` or ``mosquitto_pub``/``mosquitto_sub`` line per entry point (docs/security.md)."""

from __future__ import annotations

import shlex
from typing import Any

SAMPLE_BODY = '{"instances": [[...]]}'


def record_credentials(
    credentials: dict[str, Any] | None, security: dict[str, Any], broker: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The deployment record's ``credentials``: paths to 0600 files on the controller (None when insecure);
    ``client_cert_file`` and ``client_key_file`` only with mutual TLS on the entry service."""
    if not credentials:
        return None
    access: dict[str, Any] = {
        "ca_file": credentials.get("ca_file") if security.get("tls") else None,
        "token_file": credentials.get("token_file") if security.get("auth") else None,
        "mqtt": None,
    }
    if security.get("tls") and security.get("mutual_tls"):
        # Mutual TLS on the entry service: the pipeline's client certificate, which it accepts.
        client = credentials.get("client") or {}
        access["client_cert_file"] = client.get("cert_file")
        access["client_key_file"] = client.get("key_file")
    if broker and broker.get("managed"):
        client = (credentials.get("mqtt") or {}).get("client") or {}
        access["mqtt"] = {
            "username": client.get("username"),
            "password_file": client.get("password_file"),
            "ca_file": (credentials.get("broker") or {}).get("ca_file") if security.get("tls") else None,
        }
    return access


def _quote(value: str) -> str:
    return shlex.quote(value)


def client_commands(record: dict[str, Any]) -> list[str]:
    """One shell line per way in: ``curl`` for each REST entry point, ``mosquitto_pub``/``mosquitto_sub`` for
    a stream pipeline on the managed broker (a user's broker: the topics, with the user's own credentials)."""
    access = record.get("credentials") or {}
    if record.get("mode") == "rest":
        lines = []
        for url in (record.get("entry_points") or {}).get("rest") or []:
            parts = ["curl", "-sS", "--fail-with-body"]
            if access.get("ca_file"):
                parts += ["--cacert", _quote(access["ca_file"])]
            if access.get("client_cert_file"):
                parts += [
                    "--cert",
                    _quote(access["client_cert_file"]),
                    "--key",
                    _quote(access["client_key_file"]),
                ]
            if access.get("token_file"):
                # The token is read when the line runs: it never appears in the record or the output.
                parts += ["-H", '"Authorization: Bearer $(head -n1 {})"'.format(_quote(access["token_file"]))]
            parts += ["-H", _quote("Content-Type: application/json"), "-d", _quote(SAMPLE_BODY), _quote(url)]
            lines.append(" ".join(parts))
        return lines
    broker = record.get("broker") or {}
    topics = record.get("topics") or {}
    mqtt = access.get("mqtt") or {}
    common = ["-h", _quote(str(broker.get("host"))), "-p", str(broker.get("port")), "-V", "mqttv5", "-q", "1"]
    if mqtt.get("ca_file"):
        common += ["--cafile", _quote(mqtt["ca_file"])]
    if mqtt.get("username"):
        common += ["-u", _quote(mqtt["username"])]
    if mqtt.get("password_file"):
        common += ["-P", '"$(head -n1 {})"'.format(_quote(mqtt["password_file"]))]
    publish = [
        "mosquitto_pub",
        *common,
        "-t",
        _quote(str(topics.get("input"))),
        "-m",
        _quote('{"id": "1", "instances": [[...]]}'),
    ]
    subscribe = [
        "mosquitto_sub",
        *common,
        "-t",
        _quote(str(topics.get("output"))),
        "-t",
        _quote(str(topics.get("errors"))),
    ]
    return [" ".join(subscribe), " ".join(publish)]


def client_access(
    record: dict[str, Any], credentials: dict[str, Any] | None, security: dict[str, Any]
) -> dict[str, Any]:
    """What the deployment record adds for its user: ``security`` (tls, auth, and ``mutual_tls: true`` when
    the entry service requires a client certificate), ``credentials`` (paths) and ``client_commands``."""
    with_credentials = dict(
        record, credentials=record_credentials(credentials, security, record.get("broker"))
    )
    summary = {"tls": bool(security.get("tls")), "auth": bool(security.get("auth"))}
    if summary["tls"] and security.get("mutual_tls"):
        summary["mutual_tls"] = True
    return {
        "security": summary,
        "credentials": with_credentials["credentials"],
        "client_commands": client_commands(with_credentials),
    }
