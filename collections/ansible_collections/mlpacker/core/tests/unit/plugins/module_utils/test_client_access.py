# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What the deployment record tells its user: credential paths (never values) and working client lines."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.client_access import client_access

CREDENTIALS = {
    "ca_file": "/home/me/.mlpacker/credentials/iris/ca.crt",
    "token_file": "/home/me/.mlpacker/credentials/iris/token",
    "broker": {"ca_file": "/home/me/.mlpacker/credentials/_broker/ca.crt"},
    "mqtt": {
        "client": {
            "username": "mlp-iris-client",
            "password_file": "/home/me/.mlpacker/credentials/iris/mqtt/c",
        }
    },
}
SECURE = {"tls": True, "auth": True}
REST = {"mode": "rest", "entry_points": {"rest": ["https://10.0.0.2:8000/predict"]}, "broker": None}
STREAM = {
    "mode": "stream",
    "entry_points": {},
    "broker": {"host": "10.0.0.9", "port": 8883, "managed": True},
    "topics": {"input": "mlpacker/iris/in", "output": "mlpacker/iris/out", "errors": "mlpacker/iris/errors"},
}


def test_rest_record_has_paths_and_a_curl_line() -> None:
    access = client_access(REST, CREDENTIALS, SECURE)
    assert access["security"] == {"tls": True, "auth": True}
    assert access["credentials"] == {
        "ca_file": CREDENTIALS["ca_file"],
        "token_file": CREDENTIALS["token_file"],
        "mqtt": None,
    }
    (line,) = access["client_commands"]
    argv = shlex.split(line)
    assert argv[:3] == ["curl", "-sS", "--fail-with-body"]
    assert argv[argv.index("--cacert") + 1] == CREDENTIALS["ca_file"]
    assert f"Authorization: Bearer $(head -n1 {CREDENTIALS['token_file']})" in argv
    assert argv[-1] == "https://10.0.0.2:8000/predict"


def test_stream_record_has_the_clients_mqtt_user() -> None:
    access = client_access(STREAM, CREDENTIALS, SECURE)
    assert access["credentials"]["mqtt"] == {
        "username": "mlp-iris-client",
        "password_file": CREDENTIALS["mqtt"]["client"]["password_file"],
        "ca_file": CREDENTIALS["broker"]["ca_file"],
    }
    subscribe, publish = (shlex.split(line) for line in access["client_commands"])
    assert subscribe[0] == "mosquitto_sub" and publish[0] == "mosquitto_pub"
    for argv in (subscribe, publish):
        assert argv[argv.index("-p") + 1] == "8883"
        assert argv[argv.index("--cafile") + 1] == CREDENTIALS["broker"]["ca_file"]
        assert argv[argv.index("-u") + 1] == "mlp-iris-client"
    assert publish[publish.index("-t") + 1] == "mlpacker/iris/in"


@pytest.mark.parametrize(
    ("record", "expected_start"),
    [
        (REST, "curl -sS --fail-with-body -H"),
        (dict(STREAM, broker={"host": "b", "port": 1883, "managed": True}), "mosquitto_sub"),
    ],
)
def test_insecure_record_has_no_credentials(record: dict[str, Any], expected_start: str) -> None:
    access = client_access(record, None, {"tls": False, "auth": False})
    assert access["credentials"] is None
    assert access["client_commands"][0].startswith(expected_start)
    assert "--cacert" not in access["client_commands"][0] and "--cafile" not in access["client_commands"][0]


def test_no_secret_value_can_reach_the_record(tmp_path: Any) -> None:
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n")
    access = client_access(REST, dict(CREDENTIALS, token_file=str(token)), SECURE)
    assert "s3cr3t-token" not in repr(access)


CLIENT = {
    "cert_file": "/home/me/.mlpacker/credentials/my iris/client.crt",
    "key_file": "/home/me/.mlpacker/credentials/my iris/client.key",
}


@pytest.mark.parametrize(
    ("security", "with_client"),
    [
        (dict(SECURE, mutual_tls=True), True),
        (dict(SECURE, mutual_tls=True, client_ca_file="/etc/pki/clients.pem"), True),
        (dict(SECURE, mutual_tls=False), False),
        ({"tls": False, "auth": True, "mutual_tls": True}, False),
    ],
    ids=["mutual-tls", "own-client-ca", "off", "no-tls-no-mutual-tls"],
)
def test_mutual_tls_record_gives_the_client_certificate(security: dict[str, Any], with_client: bool) -> None:
    access = client_access(REST, dict(CREDENTIALS, client=CLIENT), security)
    (line,) = access["client_commands"]
    argv = shlex.split(line)
    if with_client:
        assert access["security"] == {"tls": True, "auth": True, "mutual_tls": True}
        assert access["credentials"]["client_cert_file"] == CLIENT["cert_file"]
        assert access["credentials"]["client_key_file"] == CLIENT["key_file"]
        # Quoted for the shell: the path with a space comes back whole.
        assert argv[argv.index("--cert") + 1] == CLIENT["cert_file"]
        assert argv[argv.index("--key") + 1] == CLIENT["key_file"]
    else:
        assert "mutual_tls" not in access["security"]
        assert "client_cert_file" not in access["credentials"]
        assert "--cert" not in argv and "--key" not in argv
