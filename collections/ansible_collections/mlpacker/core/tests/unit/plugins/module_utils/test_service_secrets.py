# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Which credential files a service gets (mlpacker.core.service_secrets), from real files on disk."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.service_secrets import (
    ServiceSecretsError,
    mqtt_username,
    probe_secrets,
    service_secrets,
)

SERVICE = {"id": "iris-scale", "host": "edge1"}
SECURE = {"tls": True, "auth": True, "client_ca_file": ""}


@pytest.fixture
def credentials(tmp_path: Path) -> dict[str, Any]:
    def write(name: str) -> str:
        path = tmp_path / name
        path.write_text(f"content of {name}\n")
        return str(path)

    return {
        "ca_file": write("ca.crt"),
        "token_file": write("token"),
        "hosts": {"edge1": {"cert_file": write("edge1.crt"), "key_file": write("edge1.key")}},
        "broker": {"ca_file": write("broker-ca.crt"), "hosts": {}},
        "mqtt": {
            "users": {
                "iris-scale": {"username": "mlp-iris-iris-scale", "password_file": write("scale.password")}
            },
            "client": {"username": "mlp-iris-client", "password_file": write("client.password")},
        },
    }


def names(files: list[dict[str, Any]]) -> list[str]:
    return [entry["name"] for entry in files]


@pytest.mark.parametrize(
    ("mode", "security", "broker", "entry", "expected"),
    [
        ("rest", SECURE, None, False, ["ca.crt", "server.crt", "server.key", "token"]),
        ("rest", dict(SECURE, auth=False), None, False, ["ca.crt", "server.crt", "server.key"]),
        ("rest", dict(SECURE, tls=False), None, False, ["token"]),
        ("rest", {"tls": False, "auth": False}, None, False, []),
        (
            "stream",
            SECURE,
            {"managed": True, "tls": {"enabled": True}},
            False,
            ["ca.crt", "server.crt", "server.key", "token", "broker_ca.crt", "mqtt.password"],
        ),
        ("stream", {"tls": False, "auth": False}, {"managed": True, "tls": {"enabled": False}}, False, []),
        (
            "stream",
            {"tls": False, "auth": False},
            {"managed": False, "password": 1234, "tls": {"enabled": False}},
            False,
            ["mqtt.password"],
        ),
    ],
    ids=[
        "rest",
        "rest-tls-only",
        "rest-auth-only",
        "rest-insecure",
        "stream-managed",
        "stream-insecure",
        "stream-users-broker-numeric-password",
    ],  # fmt: skip
)
def test_files_follow_the_settings(
    credentials: dict[str, Any],
    mode: str,
    security: dict[str, Any],
    broker: Any,
    entry: bool,
    expected: list[str],
) -> None:
    files = service_secrets(
        SERVICE, mode=mode, security=security, credentials=credentials, broker=broker, entry=entry
    )
    assert names(files) == expected
    for entry_ in files:
        if "src" in entry_:
            assert entry_["sha256"] == hashlib.sha256(Path(entry_["src"]).read_bytes()).hexdigest()


def test_numeric_password_is_the_digits_as_written(credentials: dict[str, Any]) -> None:
    broker = {"managed": False, "password": 1234, "tls": {}}
    (password,) = service_secrets(
        SERVICE, mode="stream", security={"tls": False, "auth": False}, credentials=None, broker=broker
    )
    assert password["content"] == "1234\n"
    assert password["sha256"] == hashlib.sha256(b"1234\n").hexdigest()


def test_mutual_tls_applies_to_the_entry_service_only(credentials: dict[str, Any], tmp_path: Path) -> None:
    client_ca = tmp_path / "clients.pem"
    client_ca.write_text("client CA\n")
    security = dict(SECURE, client_ca_file=str(client_ca))
    assert "client_ca.crt" in names(
        service_secrets(SERVICE, mode="rest", security=security, credentials=credentials, entry=True)
    )
    assert "client_ca.crt" not in names(
        service_secrets(SERVICE, mode="rest", security=security, credentials=credentials)
    )


def test_users_broker_ships_their_ca_and_client_certificate(
    credentials: dict[str, Any], tmp_path: Path
) -> None:
    for name in ("their-ca.pem", "edge.crt", "edge.key"):
        (tmp_path / name).write_text(name)
    tls = {"enabled": True, "ca_file": str(tmp_path / "their-ca.pem"),
           "cert_file": str(tmp_path / "edge.crt"), "key_file": str(tmp_path / "edge.key")}  # fmt: skip
    broker = {"managed": False, "username": "edge", "password": None, "tls": tls}
    files = service_secrets(SERVICE, mode="stream", security=SECURE, credentials=credentials, broker=broker)
    assert names(files)[-3:] == ["broker_ca.crt", "broker_client.crt", "broker_client.key"]
    assert mqtt_username(SERVICE, broker, credentials) == "edge"
    assert mqtt_username(SERVICE, {"managed": True}, credentials) == "mlp-iris-iris-scale"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["hosts"].clear(), "credentials.hosts.edge1: no server certificate for host 'edge1'"),
        (lambda c: c["mqtt"]["users"].clear(), "credentials.mqtt.users.iris-scale: no MQTT credential"),
        (
            lambda c: c.update(token_file="/nonexistent/token"),
            "credentials.token_file: cannot read /nonexistent/token",
        ),
        (lambda c: c.update(ca_file=None), "credentials.ca_file: expected a file path, got None"),
    ],
    ids=["no-host-certificate", "no-mqtt-user", "unreadable-token", "no-ca"],
)
def test_missing_credentials_fail_naming_the_field(
    credentials: dict[str, Any], change: Any, message: str
) -> None:
    change(credentials)
    broker = {"managed": True, "tls": {"enabled": True}}
    with pytest.raises(ServiceSecretsError, match=re.escape(message)):
        service_secrets(SERVICE, mode="stream", security=SECURE, credentials=credentials, broker=broker)


def test_secure_settings_without_credentials_fail() -> None:
    with pytest.raises(
        ServiceSecretsError, match="credentials: TLS or auth is on but no credentials were made"
    ):
        service_secrets(SERVICE, mode="rest", security=SECURE, credentials=None)


def test_an_insecure_service_needs_no_host() -> None:
    assert (
        service_secrets({"id": "fx"}, mode="rest", security={"tls": False, "auth": False}, credentials=None)
        == []
    )
    with pytest.raises(ServiceSecretsError, match="expected a plan service with an 'id' and a 'host'"):
        service_secrets({"id": "fx"}, mode="rest", security=SECURE, credentials={})


@pytest.mark.parametrize(
    ("security", "entry", "mode", "client_ca", "probe"),
    [
        (dict(SECURE, mutual_tls=True), True, "rest", "pipeline-ca", True),
        (dict(SECURE, mutual_tls=True, client_ca_file="OWN"), True, "rest", "pipeline-ca+own", True),
        (dict(SECURE, client_ca_file="OWN"), True, "rest", "pipeline-ca+own", True),
        (dict(SECURE, mutual_tls=True), False, "rest", None, False),
        (dict(SECURE, mutual_tls=False), True, "rest", None, False),
        ({"tls": False, "auth": True, "mutual_tls": True}, True, "rest", None, False),
    ],
    ids=["pipeline-ca", "own-and-pipeline-ca", "own-ca-alone-turns-it-on", "not-the-entry", "off", "no-tls"],
)
def test_mutual_tls_client_ca_and_probe_files(
    credentials: dict[str, Any],
    tmp_path: Path,
    security: dict[str, Any],
    entry: bool,
    mode: str,
    client_ca: str | None,
    probe: bool,
) -> None:
    own = tmp_path / "clients.pem"
    own.write_text("own clients CA")  # no final newline: the bundle adds one
    credentials = dict(
        credentials,
        client={"cert_file": str(tmp_path / "client.crt"), "key_file": str(tmp_path / "client.key")},
    )
    (tmp_path / "client.crt").write_text("client certificate\n")
    (tmp_path / "client.key").write_text("client key\n")
    if security.get("client_ca_file") == "OWN":
        security = dict(security, client_ca_file=str(own))
    files = service_secrets(SERVICE, mode=mode, security=security, credentials=credentials, entry=entry)
    by_name = {entry_["name"]: entry_ for entry_ in files}
    if client_ca is None:
        assert "client_ca.crt" not in by_name
    elif client_ca == "pipeline-ca":
        assert by_name["client_ca.crt"]["src"] == credentials["ca_file"]
    else:
        # The pipeline CA first (the deploy's probes present its client certificate), then the user's CA.
        bundle = by_name["client_ca.crt"]
        assert bundle["content"] == "content of ca.crt\nown clients CA\n"
        assert bundle["sha256"] == hashlib.sha256(bundle["content"].encode()).hexdigest()
        assert "src" not in bundle
    probes = probe_secrets(SERVICE, security=security, credentials=credentials, entry=entry)
    if probe:
        assert [(item["kind"], item["name"], item["src"]) for item in probes] == [
            ("probe_cert", "client.crt", str(tmp_path / "client.crt")),
            ("probe_key", "client.key", str(tmp_path / "client.key")),
        ]
        assert probes[1]["sha256"] == hashlib.sha256(b"client key\n").hexdigest()
    else:
        assert probes == []
    # The probe's files never go to the service's secrets folder.
    assert not {"client.crt", "client.key"} & set(by_name)


@pytest.mark.parametrize(
    ("client", "message"),
    [
        (None, "credentials.client.cert_file: expected a file path, got None"),
        (
            {"cert_file": "/nonexistent/client.crt", "key_file": "/x"},
            "credentials.client.cert_file: cannot read",
        ),
    ],
    ids=["no-client-certificate", "unreadable"],
)
def test_probe_files_fail_naming_the_field(credentials: dict[str, Any], client: Any, message: str) -> None:
    with pytest.raises(ServiceSecretsError, match=re.escape(message)):
        probe_secrets(
            SERVICE,
            security=dict(SECURE, mutual_tls=True),
            credentials=dict(credentials, client=client),
            entry=True,
        )


def test_unreadable_own_client_ca_fails_naming_the_field(credentials: dict[str, Any]) -> None:
    security = dict(SECURE, mutual_tls=True, client_ca_file="/nonexistent/clients.pem")
    with pytest.raises(ServiceSecretsError, match=re.escape("mlpacker_security.client_ca_file: cannot read")):
        service_secrets(SERVICE, mode="rest", security=security, credentials=credentials, entry=True)


@pytest.mark.parametrize(
    ("purpose", "names_"),
    [
        ("service", ["ca.crt", "server.crt", "server.key", "client_ca.crt", "token"]),
        ("probe", ["client.crt", "client.key"]),
    ],
    ids=["service", "probe"],
)
def test_the_filter_gives_the_files_of_each_purpose(
    credentials: dict[str, Any], tmp_path: Path, purpose: str, names_: list[str]
) -> None:
    from ansible_collections.mlpacker.core.plugins.filter.service_secrets import service_secrets_filter

    (tmp_path / "client.crt").write_text("client certificate\n")
    (tmp_path / "client.key").write_text("client key\n")
    credentials = dict(
        credentials,
        client={"cert_file": str(tmp_path / "client.crt"), "key_file": str(tmp_path / "client.key")},
    )
    security = dict(SECURE, mutual_tls=True)
    files = service_secrets_filter(SERVICE, "rest", security, credentials, entry=True, purpose=purpose)
    assert names(files) == names_


def test_the_filter_refuses_an_unknown_purpose(credentials: dict[str, Any]) -> None:
    from ansible.errors import AnsibleFilterError
    from ansible_collections.mlpacker.core.plugins.filter.service_secrets import service_secrets_filter

    with pytest.raises(
        AnsibleFilterError, match=re.escape("purpose: expected service or probe, got 'probes'")
    ):
        service_secrets_filter(SERVICE, "rest", SECURE, credentials, entry=True, purpose="probes")
