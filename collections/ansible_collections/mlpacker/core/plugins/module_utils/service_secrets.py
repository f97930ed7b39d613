# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Which credential files one service gets, under which names (docs/security.md).

The service roles ship these files into the service's secrets folder (``<release>/secrets`` under a service
manager, a folder mounted read-only into a container); ``runtime_config`` points the configuration at the
same names. Entries carry the controller path (``src``) or, for a password the user gave as a value, the
value itself (``content``: the caller keeps it under ``no_log``), and a ``sha256`` of the content so that a
new credential makes a new release while no secret appears in the release inputs.
"""

from __future__ import annotations

import hashlib
from typing import Any

# File names in the service's secrets folder, one per credential kind.
SECRET_NAMES = {
    "ca": "ca.crt",
    "cert": "server.crt",
    "key": "server.key",
    "client_ca": "client_ca.crt",
    "token": "token",
    "mqtt_password": "mqtt.password",
    "broker_ca": "broker_ca.crt",
    "broker_client_cert": "broker_client.crt",
    "broker_client_key": "broker_client.key",
}
# The deploy's own probe credential (``<release>/probe``, root only): the pipeline's client certificate, which
# the deploy's health checks present to a service that requires one (mutual TLS on the entry service).
PROBE_NAMES = {"probe_cert": "client.crt", "probe_key": "client.key"}


class ServiceSecretsError(ValueError):
    """An input cannot give the service its credentials; the message names the field."""


def file_sha256(field: str, path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 16), b""):
                digest.update(block)
    except OSError as exc:
        raise ServiceSecretsError(f"{field}: cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _from_file(kind: str, field: str, path: Any) -> dict[str, Any]:
    if not isinstance(path, str) or not path:
        raise ServiceSecretsError(f"{field}: expected a file path, got {path!r}")
    name = SECRET_NAMES.get(kind) or PROBE_NAMES[kind]
    return {"kind": kind, "name": name, "src": path, "sha256": file_sha256(field, path)}


def _read_text(field: str, path: Any) -> str:
    if not isinstance(path, str) or not path:
        raise ServiceSecretsError(f"{field}: expected a file path, got {path!r}")
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ServiceSecretsError(
            f"{field}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None


def requires_client_certificate(security: dict[str, Any], entry: bool) -> bool:
    """Whether the service requires a client certificate: mutual TLS applies to the entry service only."""
    return bool(
        entry and security.get("tls") and (security.get("mutual_tls") or security.get("client_ca_file"))
    )


def _client_ca(security: dict[str, Any], credentials: dict[str, Any]) -> dict[str, Any]:
    """The entry service's client CA: the pipeline CA (whose client certificate the deploy's probes present),
    followed by the user's own client CA when given (``mlpacker_security.client_ca_file``)."""
    if not security.get("client_ca_file"):
        return _from_file("client_ca", "credentials.ca_file", credentials.get("ca_file"))
    bundle = ""
    for field, path in (
        ("credentials.ca_file", credentials.get("ca_file")),
        ("mlpacker_security.client_ca_file", security["client_ca_file"]),
    ):
        text = _read_text(field, path)
        bundle += text if text.endswith("\n") else text + "\n"
    return {
        "kind": "client_ca",
        "name": SECRET_NAMES["client_ca"],
        "content": bundle,
        "sha256": hashlib.sha256(bundle.encode("utf-8")).hexdigest(),
    }


def _from_value(kind: str, value: Any) -> dict[str, Any]:
    text = str(value)  # a numeric password stays the digits the user wrote
    return {
        "kind": kind,
        "name": SECRET_NAMES[kind],
        "content": text + "\n",
        "sha256": hashlib.sha256((text + "\n").encode("utf-8")).hexdigest(),
    }


def service_secrets(
    service: dict[str, Any],
    *,
    mode: str,
    security: dict[str, Any],
    credentials: dict[str, Any] | None,
    broker: dict[str, Any] | None = None,
    entry: bool = False,
) -> list[dict[str, Any]]:
    """The credential files of ``service`` (one entry of the plan's ``services``), in a stable order.

    ``security``: the deploy's resolved settings (``tls``, ``auth``, ``mutual_tls``, ``client_ca_file``);
    ``credentials``:
    what mlpacker.core.pipeline_credentials returned (None for an insecure deploy); ``broker``: the services'
    broker in stream mode (``managed``, ``password``, ``tls``); ``entry``: the service takes the pipeline's
    input (mutual TLS applies to it only).
    """
    tls = bool(security.get("tls"))
    # The host names the server certificate: only TLS needs it.
    if not isinstance(service, dict) or "id" not in service or (tls and "host" not in service):
        raise ServiceSecretsError(
            "service: expected a plan service with an 'id'{}, got {!r}".format(
                " and a 'host'" if tls else "", service
            )
        )
    auth = bool(security.get("auth"))
    if (tls or auth) and not isinstance(credentials, dict):
        raise ServiceSecretsError(
            "credentials: TLS or auth is on but no credentials were made (mlpacker.core.pipeline_credentials)"
        )
    files: list[dict[str, Any]] = []
    if tls:
        host_files = (credentials.get("hosts") or {}).get(service["host"])
        if not host_files:
            raise ServiceSecretsError(
                "credentials.hosts.{0}: no server certificate for host {0!r}".format(service["host"])
            )
        files.append(_from_file("ca", "credentials.ca_file", credentials.get("ca_file")))
        files.append(
            _from_file("cert", f"credentials.hosts.{service['host']}.cert_file", host_files.get("cert_file"))
        )
        files.append(
            _from_file("key", f"credentials.hosts.{service['host']}.key_file", host_files.get("key_file"))
        )
        if requires_client_certificate(security, entry):
            files.append(_client_ca(security, credentials))
    if auth:
        files.append(_from_file("token", "credentials.token_file", credentials.get("token_file")))
    if mode == "stream":
        files += _broker_secrets(service, broker or {}, credentials, auth=auth)
    return files


def probe_secrets(
    service: dict[str, Any],
    *,
    security: dict[str, Any],
    credentials: dict[str, Any] | None,
    entry: bool = False,
) -> list[dict[str, Any]]:
    """The client certificate and key the deploy's probes (health gate, canary, status) present to ``service``
    when it requires one (mutual TLS on the entry service), else nothing. They go to ``<release>/probe``
    (root only, 0600), never into the service's secrets folder: the service's user cannot read them."""
    if not isinstance(service, dict) or "id" not in service:
        raise ServiceSecretsError(f"service: expected a plan service with an 'id', got {service!r}")
    if not requires_client_certificate(security, entry):
        return []
    client = (credentials or {}).get("client") or {}
    return [
        _from_file("probe_cert", "credentials.client.cert_file", client.get("cert_file")),
        _from_file("probe_key", "credentials.client.key_file", client.get("key_file")),
    ]


def _broker_secrets(
    service: dict[str, Any], broker: dict[str, Any], credentials: dict[str, Any] | None, *, auth: bool
) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = []
    broker_tls = broker.get("tls") or {}
    if broker.get("managed"):
        if broker_tls.get("enabled"):
            files.append(
                _from_file(
                    "broker_ca",
                    "credentials.broker.ca_file",
                    (credentials or {}).get("broker", {}).get("ca_file"),
                )
            )
        if auth:
            user = ((credentials or {}).get("mqtt") or {}).get("users", {}).get(service["id"])
            if not user:
                raise ServiceSecretsError(
                    "credentials.mqtt.users.{0}: no MQTT credential for service {0!r}".format(service["id"])
                )
            files.append(
                _from_file(
                    "mqtt_password",
                    f"credentials.mqtt.users.{service['id']}.password_file",
                    user.get("password_file"),
                )
            )
        return files
    # The user's broker: their CA and client certificate files, their password.
    for kind, key in (
        ("broker_ca", "ca_file"),
        ("broker_client_cert", "cert_file"),
        ("broker_client_key", "key_file"),
    ):
        if broker_tls.get("enabled") and broker_tls.get(key):
            files.append(_from_file(kind, f"mlpacker_broker.tls.{key}", broker_tls[key]))
    if broker.get("password") not in (None, ""):
        files.append(_from_value("mqtt_password", broker["password"]))
    return files


def mqtt_share_group(
    service: dict[str, Any], broker: dict[str, Any], credentials: dict[str, Any] | None
) -> Any:
    """The service's shared-subscription group: on the managed broker the secret one of its credential (see
    mqtt_credentials.share_group), else the plan's."""
    if broker.get("managed"):
        user = ((credentials or {}).get("mqtt") or {}).get("users", {}).get(service["id"]) or {}
        if user.get("share_group"):
            return user["share_group"]
    return service.get("share_group")


def mqtt_username(service: dict[str, Any], broker: dict[str, Any], credentials: dict[str, Any] | None) -> Any:
    """The user name the service connects to the broker with: its own on the managed broker, or the user's."""
    if broker.get("managed"):
        user = ((credentials or {}).get("mqtt") or {}).get("users", {}).get(service["id"]) or {}
        return user.get("username")
    return broker.get("username")
