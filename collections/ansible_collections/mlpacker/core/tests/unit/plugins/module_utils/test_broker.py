# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Broker resolution: the user's broker wins, else a managed Mosquitto on the broker group's first host."""

from __future__ import annotations

from typing import Any

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.broker import normalise_tls, resolve_broker

NO_TLS = {"enabled": False, "ca_file": None, "cert_file": None, "key_file": None, "insecure": False}


TLS = dict(NO_TLS, enabled=True)


@pytest.mark.parametrize(
    ("broker", "groups", "addresses", "expected"),
    [
        (
            {
                "host": "mqtt.example.org",
                "port": 8883,
                "username": "u",
                "password": "p",
                "tls": {"enabled": True},
            },
            {"broker": ["b1"]},
            {"b1": "10.0.0.9"},
            {
                "host": "mqtt.example.org",
                "port": 8883,
                "username": "u",
                "password": "p",
                "tls": dict(NO_TLS, enabled=True),
                "managed": False,
                "inventory_host": None,
            },
        ),
        (
            None,
            {"broker": ["b1", "b2"]},
            {"b1": "10.0.0.9"},
            {
                "host": "10.0.0.9",
                "port": 8883,
                "username": None,
                "password": None,
                "tls": TLS,
                "managed": True,
                "inventory_host": "b1",
            },
        ),
        (
            {"host": None},
            {"broker": ["b1"]},
            {},
            {
                "host": "b1",
                "port": 8883,
                "username": None,
                "password": None,
                "tls": TLS,
                "managed": True,
                "inventory_host": "b1",
            },
        ),
        (None, {"broker": []}, {}, None),
        (None, {}, {}, None),
    ],
)
def test_resolve_broker(
    broker: dict[str, Any] | None, groups: dict[str, list[str]], addresses: dict[str, str], expected: Any
) -> None:
    assert resolve_broker(broker, groups, addresses) == expected


@pytest.mark.parametrize(("tls", "port", "enabled"), [(True, 8883, True), (False, 1883, False)])
def test_managed_broker_listens_with_tls_unless_insecure(tls: bool, port: int, enabled: bool) -> None:
    resolved = resolve_broker(None, {"broker": ["b1"]}, {"b1": "10.0.0.9"}, tls=tls)
    assert (resolved["port"], resolved["tls"]["enabled"]) == (port, enabled)


def test_users_broker_keeps_its_own_tls_settings_in_an_insecure_deploy() -> None:
    given = {"host": "mqtt.example.org", "port": 8883, "tls": {"enabled": True}}
    assert resolve_broker(given, {}, {}, tls=False)["tls"] == TLS


@pytest.mark.parametrize(
    ("given", "enabled"),
    [
        (None, False),
        ({}, False),
        ({"enabled": True}, True),
        ({"ca_file": "/etc/ca.crt"}, True),
        ({"ca_file": "/etc/ca.crt", "enabled": None}, True),
        ({"cert_file": "/c.crt", "key_file": "/c.key"}, True),
        ({"ca_file": "/etc/ca.crt", "enabled": False}, False),
        ({"insecure": True}, False),
    ],
)
def test_tls_files_without_enabled_turn_tls_on(given: dict[str, Any] | None, enabled: bool) -> None:
    resolved = normalise_tls(given)
    assert resolved["enabled"] is enabled
    assert set(resolved) == set(NO_TLS)
