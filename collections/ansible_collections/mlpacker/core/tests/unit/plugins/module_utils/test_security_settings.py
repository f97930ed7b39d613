# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The deploy's security settings: safe defaults, one loud switch, clear errors."""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils import pki
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


# Mutual TLS on the entry service (docs/security.md): on with mutual_tls, or with the user's client CA.


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Real PEM files: a CA, a bundle of two CAs, a leaf certificate, a key and a text file."""
    folder = tmp_path_factory.mktemp("pem")
    now = datetime.datetime.now(datetime.timezone.utc)
    key, ca = pki.make_ca("clients CA", 30, now)
    other_ca = pki.make_ca("partners CA", 30, now)[1]
    leaf_key, leaf = pki.issue_certificate(key, ca, "client", [], 30, now, ("client",))
    files = {
        "ca": pki.certificate_pem(ca),
        "bundle": pki.certificate_pem(ca) + pki.certificate_pem(other_ca),
        "leaf": pki.certificate_pem(leaf),
        "ca-then-leaf": pki.certificate_pem(ca) + pki.certificate_pem(leaf),
        "key": pki.private_key_pem(leaf_key),
        "text": b"not a certificate\n",
    }
    paths = {}
    for name, data in files.items():
        path = folder / f"{name}.pem"
        path.write_bytes(data)
        paths[name] = str(path)
    paths["missing"] = str(folder / "missing.pem")
    return paths


@pytest.mark.parametrize(
    ("settings", "insecure", "mutual_tls"),
    [
        ({}, False, False),
        ({"mutual_tls": True}, False, True),
        ({"mutual_tls": "yes"}, False, True),
        ({"client_ca_file": "ca"}, False, True),
        ({"client_ca_file": "bundle", "mutual_tls": True}, False, True),
        ({"mutual_tls": True}, True, False),
        ({"client_ca_file": "ca"}, True, False),
        ({"client_ca_file": "text"}, True, False),
    ],
    ids=[
        "off-by-default",
        "pipeline-ca",
        "as-text",
        "own-client-ca-turns-it-on",
        "own-bundle",
        "insecure-wins",
        "insecure-wins-over-client-ca",
        "insecure-reads-no-client-ca",
    ],
)
def test_mutual_tls(
    settings: dict[str, Any], insecure: bool, mutual_tls: bool, pem_files: dict[str, str]
) -> None:
    if "client_ca_file" in settings:
        settings = dict(settings, client_ca_file=pem_files[settings["client_ca_file"]])
    resolved = resolve_security(settings, insecure)
    assert resolved["mutual_tls"] is mutual_tls
    assert resolved["tls"] is not insecure


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mutual_tls": "maybe"}, "mlpacker_security.mutual_tls: expected true or false, got 'maybe'"),
        ({"mutual_tls": True, "tls": False}, "mlpacker_security.mutual_tls: mutual TLS needs tls: true"),
        (
            {"client_ca_file": "ca", "tls": False},
            "mlpacker_security.client_ca_file: mutual TLS needs tls: true",
        ),
        (
            {"client_ca_file": "ca", "mutual_tls": False},
            "mlpacker_security.client_ca_file: given, but mutual_tls is false",
        ),
        ({"client_ca_file": "missing"}, "mlpacker_security.client_ca_file: cannot read "),
        ({"client_ca_file": "text"}, "mlpacker_security.client_ca_file: {text} holds no PEM certificate"),
        ({"client_ca_file": "key"}, "mlpacker_security.client_ca_file: {key} holds no PEM certificate"),
        (
            {"client_ca_file": "leaf"},
            "mlpacker_security.client_ca_file: {leaf}: CN=client,O=MLPacker is not a CA certificate",
        ),
        (
            {"client_ca_file": "ca-then-leaf"},
            "mlpacker_security.client_ca_file: {ca-then-leaf}: CN=client,O=MLPacker is not a CA certificate",
        ),
    ],
    ids=[
        "not-a-flag",
        "without-tls",
        "client-ca-without-tls",
        "client-ca-but-off",
        "missing-file",
        "not-pem",
        "a-key",
        "a-leaf",
        "a-leaf-after-a-ca",
    ],
)
def test_bad_mutual_tls_settings_fail_naming_the_field(
    settings: dict[str, Any], message: str, pem_files: dict[str, str]
) -> None:
    if "client_ca_file" in settings:
        settings = dict(settings, client_ca_file=pem_files[settings["client_ca_file"]])
    with pytest.raises(SecuritySettingsError, match=re.escape(message.format_map(pem_files))):
        resolve_security(settings)
