# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The deploy's security settings: safe defaults, one loud switch, clear errors."""

from __future__ import annotations

import re
from typing import Any

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.security_settings import (
    SecuritySettingsError,
    listen_addresses,
    resolve_security,
)


@pytest.mark.parametrize(
    ("settings", "insecure", "expected"),
    [
        ({}, False, {"tls": True, "auth": True, "bind": [], "insecure": False}),
        (None, False, {"tls": True, "auth": True, "bind": [], "insecure": False}),
        ({"auth": "no"}, False, {"tls": True, "auth": False, "bind": [], "insecure": False}),
        ({"bind": "0.0.0.0"}, False, {"tls": True, "auth": True, "bind": ["0.0.0.0"], "insecure": False}),
        ({"tls": True, "auth": True}, True, {"tls": False, "auth": False, "bind": [], "insecure": True}),
        ({}, "yes", {"tls": False, "auth": False, "bind": [], "insecure": True}),
    ],
    ids=["defaults", "null", "auth-off", "bind-all-when-asked", "insecure-wins", "insecure-as-text"],
)
def test_resolved_settings(settings: Any, insecure: Any, expected: dict[str, Any]) -> None:
    resolved = resolve_security(settings, insecure)
    assert {key: resolved[key] for key in expected} == expected
    assert resolved["token_file"] == resolved["ca_cert_file"] == ""


@pytest.mark.parametrize(
    ("settings", "insecure", "message"),
    [
        ({"tsl": True}, False, "mlpacker_security.tsl: unknown setting (known: auth, bind, ca_cert_file"),
        ({"tls": "maybe"}, False, "mlpacker_security.tls: expected true or false, got 'maybe'"),
        ({}, "perhaps", "mlpacker_insecure: expected true or false, got 'perhaps'"),
        ({"ca_cert_file": "/ca.pem"}, False, "mlpacker_security.ca_cert_file and ca_key_file: give both"),
        (
            {"client_ca_file": "/c.pem", "tls": False},
            False,
            "mlpacker_security.client_ca_file: mutual TLS needs",
        ),
        ({"bind": ["10.0.0.2", ""]}, False, "mlpacker_security.bind: expected an address or a list"),
        ({"token_file": 42}, False, "mlpacker_security.token_file: expected a file path, got 42"),
        ("on", False, "mlpacker_security: expected a mapping, got 'on'"),
    ],
)
def test_bad_settings_fail_naming_the_field(settings: Any, insecure: Any, message: str) -> None:
    with pytest.raises(SecuritySettingsError, match=re.escape(message)):
        resolve_security(settings, insecure)


@pytest.mark.parametrize(
    ("address", "bind", "expected"),
    [
        ("10.0.0.2", [], ["10.0.0.2", "127.0.0.1"]),
        ("127.0.0.1", [], ["127.0.0.1"]),
        ("localhost", [], ["127.0.0.1"]),
        ("", [], ["127.0.0.1"]),
        ("edge1.example.org", [], ["edge1.example.org", "127.0.0.1"]),
        ("fd00::2", [], ["fd00::2", "127.0.0.1"]),
        ("10.0.0.2", ["0.0.0.0"], ["0.0.0.0"]),
    ],
)
def test_listen_addresses(address: str, bind: list[str], expected: list[str]) -> None:
    assert listen_addresses(address, {"bind": bind}) == expected
