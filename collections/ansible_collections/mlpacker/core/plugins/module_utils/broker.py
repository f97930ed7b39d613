# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Which MQTT broker a stream pipeline uses: the user's (``mlpacker_broker``) or a managed Mosquitto."""

from __future__ import annotations

from typing import Any

from ansible_collections.mlpacker.core.plugins.module_utils.runtime_contract import (
    DEFAULT_BROKER_PORT,
    DEFAULT_BROKER_TLS_PORT,
    DEFAULT_TLS,
)

BROKER_GROUP = "broker"


TLS_FILES = ("ca_file", "cert_file", "key_file")


def normalise_tls(tls: dict[str, Any] | None) -> dict[str, Any]:
    """The TLS settings over their defaults; keys given as null keep the default. A CA or client certificate
    given without ``enabled`` turns TLS on: a user who names TLS files means TLS, never a plain connection."""
    given = {key: value for key, value in (tls or {}).items() if value is not None}
    resolved = {**DEFAULT_TLS, **given}
    if "enabled" not in given and any(given.get(key) for key in TLS_FILES):
        resolved["enabled"] = True
    return resolved


def broker_options() -> dict[str, Any]:
    """The argument spec of a module's ``broker`` option (pipeline_plan, pipeline_probe)."""
    return {
        "host": {"type": "str", "required": True},
        "port": {"type": "int", "default": DEFAULT_BROKER_PORT},
        "username": {"type": "str"},
        "password": {"type": "str", "no_log": True},
        # A controller file whose first line is the password (an AWX credential, Ansible Vault): the roles
        # read it; the modules never need it.
        "password_file": {"type": "path"},
        "tls": {
            "type": "dict",
            "options": {
                # No default here: normalise_tls turns TLS on when files are given without ``enabled``.
                "enabled": {"type": "bool"},
                "ca_file": {"type": "path"},
                "cert_file": {"type": "path"},
                "key_file": {"type": "path"},
                "insecure": {"type": "bool", "default": DEFAULT_TLS["insecure"]},
            },
        },
    }


def resolve_broker(
    broker: dict[str, Any] | None,
    groups: dict[str, list[str]],
    addresses: dict[str, str],
    tls: bool = True,
) -> dict[str, Any] | None:
    """Resolve the broker the services connect to, or None when there is none.

    A given ``broker`` (the user's own broker) wins; otherwise the first host of the inventory group
    ``broker`` runs a managed Mosquitto (``managed: true`` tells the roles to install it): a TLS listener on
    8883 with ``tls`` (the deploy fills in the CA), plain 1883 only for an insecure deploy.
    """
    if broker and broker.get("host"):
        return {
            "host": broker["host"],
            "port": int(broker.get("port") or DEFAULT_BROKER_PORT),
            "username": broker.get("username"),
            "password": broker.get("password"),
            "tls": normalise_tls(broker.get("tls")),
            "managed": False,
            "inventory_host": None,
        }
    broker_hosts = groups.get(BROKER_GROUP) or []
    if not broker_hosts:
        return None
    inventory_host = broker_hosts[0]
    return {
        "host": addresses.get(inventory_host) or inventory_host,
        "port": DEFAULT_BROKER_TLS_PORT if tls else DEFAULT_BROKER_PORT,
        "username": None,
        "password": None,
        "tls": {**DEFAULT_TLS, "enabled": bool(tls)},
        "managed": True,
        "inventory_host": inventory_host,
    }
