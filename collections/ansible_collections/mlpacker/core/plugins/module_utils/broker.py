# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Which MQTT broker a stream pipeline uses: the user's (``mlpacker_broker``) or a managed Mosquitto."""

from __future__ import annotations

from typing import Any

BROKER_GROUP = "broker"
DEFAULT_BROKER_PORT = 1883
DEFAULT_TLS = {"enabled": False, "ca_file": None, "cert_file": None, "key_file": None, "insecure": False}


def normalise_tls(tls: dict[str, Any] | None) -> dict[str, Any]:
    resolved = dict(DEFAULT_TLS)
    for key, value in (tls or {}).items():
        if value is not None:
            resolved[key] = value
    return resolved


def resolve_broker(
    broker: dict[str, Any] | None,
    groups: dict[str, list[str]],
    addresses: dict[str, str],
) -> dict[str, Any] | None:
    """Resolve the broker the services connect to, or None when there is none.

    A given ``broker`` (the user's own broker) wins; otherwise the first host of the inventory group
    ``broker`` runs a managed Mosquitto on 1883 (``managed: true`` tells the roles to install it).
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
        "port": DEFAULT_BROKER_PORT,
        "username": None,
        "password": None,
        "tls": dict(DEFAULT_TLS),
        "managed": True,
        "inventory_host": inventory_host,
    }
