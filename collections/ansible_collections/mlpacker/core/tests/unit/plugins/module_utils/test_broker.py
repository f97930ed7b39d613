# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Broker resolution: the user's broker wins, else a managed Mosquitto on the broker group's first host."""

from __future__ import annotations

from typing import Any

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.broker import resolve_broker

NO_TLS = {"enabled": False, "ca_file": None, "cert_file": None, "key_file": None, "insecure": False}


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
                "port": 1883,
                "username": None,
                "password": None,
                "tls": NO_TLS,
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
                "port": 1883,
                "username": None,
                "password": None,
                "tls": NO_TLS,
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
