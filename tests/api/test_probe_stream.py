"""playbooks/probe.yml in stream mode, against a real Mosquitto this test starts.

No pipeline is deployed, so nothing answers: the probe must reach the broker given as ``mlpacker_broker``,
publish the instances on the pipeline's input topic (a real MQTT subscriber here receives them), wait on the
output topic and fail naming both topics. The REST path of probe.yml runs in test_local.py / test_testbed.py.

The broker is the user's, not MLPacker's: once anonymous on a plain port (a lab broker), once as a secured
one is (a TLS listener whose certificate comes from the user's CA, no anonymous client, a password file):
the probe connects with ``tls.ca_file``, ``username`` and ``password_file``, the password never in a variable.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt import client as mqtt_client

import mlpacker
from tests.api.conftest import (
    LOCAL_INVENTORY,
    SAMPLE,
    free_port_block,
    iris_pipeline,
    unique_name,
    write_spec,
)
from tests.outcomes import skip_missing

pytestmark = pytest.mark.mqtt
PROBE_USER = "probe-user"


def user_ca_and_server_certificate(folder: Path) -> dict[str, Path]:
    """The user's own CA and a broker certificate of it for 127.0.0.1, made with openssl."""
    paths = {name: folder / name for name in ("ca.crt", "ca.key", "broker.csr", "broker.crt", "broker.key")}
    extensions = folder / "broker.ext"
    extensions.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\nextendedKeyUsage = serverAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for argv in (
        ["req", "-x509", *ec, "-keyout", paths["ca.key"], "-out", paths["ca.crt"], "-days", "2"]
        + ["-subj", "/CN=the user's CA"],
        ["req", *ec, "-keyout", paths["broker.key"], "-out", paths["broker.csr"], "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", paths["broker.csr"], "-CA", paths["ca.crt"], "-CAkey", paths["ca.key"]]
        + ["-CAcreateserial", "-out", paths["broker.crt"], "-days", "2", "-extfile", extensions],
    ):
        subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True, text=True)
    return paths


@pytest.fixture(params=["anonymous", "tls-password"])
def mosquitto(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The user's Mosquitto on a free port; yields the ``mlpacker_broker`` settings that reach it and, for the
    listener of this test, the password."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        skip_missing("mosquitto", f"no mosquitto binary at {binary}")
    port = free_port_block(1)
    config = tmp_path / "mosquitto.conf"
    broker: dict[str, Any] = {"host": "127.0.0.1", "port": port}
    password = None
    if request.param == "anonymous":
        config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    else:
        certificates = user_ca_and_server_certificate(tmp_path)
        password = "7391"  # digits only: the probe must send it as the string it is
        password_file = tmp_path / "broker.password"
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        passwd = tmp_path / "passwd"
        subprocess.run(
            ["mosquitto_passwd", "-b", "-c", str(passwd), PROBE_USER, password],
            check=True,
            capture_output=True,
        )
        config.write_text(
            f"listener {port} 127.0.0.1\n"
            f"cafile {certificates['ca.crt']}\ncertfile {certificates['broker.crt']}\n"
            f"keyfile {certificates['broker.key']}\nallow_anonymous false\npassword_file {passwd}\n"
            # Run as root, Mosquitto would drop to its own user, who cannot read pytest's 0700 folder.
            "user root\npersistence false\n"
        )
        broker |= {
            "username": PROBE_USER,
            "password_file": str(password_file),
            "tls": {"enabled": True, "ca_file": str(certificates["ca.crt"])},
        }
    process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        probe = listener_client(broker, password)
        for _ in range(100):
            try:
                probe.connect("127.0.0.1", port)
                probe.disconnect()
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(
                        f"mosquitto exited: {process.stderr.read().decode() if process.stderr else ''}"
                    )
                time.sleep(0.1)
        yield {"broker": broker, "password": password, "kind": request.param}
    finally:
        process.terminate()
        process.wait(timeout=10)


def listener_client(broker: dict[str, Any], password: str | None) -> mqtt_client.Client:
    client = mqtt_client.Client(mqtt_client.CallbackAPIVersion.VERSION2)
    if broker.get("username"):
        client.username_pw_set(broker["username"], password)
    if broker.get("tls"):
        client.tls_set(ca_certs=broker["tls"]["ca_file"])
    return client


def test_stream_probe_publishes_and_reports_no_answer(
    mosquitto: dict[str, Any], tmp_path: Path, iris_models: Path
) -> None:
    name = unique_name("apistream")
    spec = write_spec(
        tmp_path / "pipeline.yml", iris_pipeline(name, iris_models, mode="stream", layout="atomic")
    )
    broker = mosquitto["broker"]
    received: list[dict[str, Any]] = []
    got_message = threading.Event()
    subscribed = threading.Event()
    connected: list[Any] = []

    def on_connect(client, userdata, flags, reason_code, properties):
        connected.append(reason_code)
        client.subscribe(f"mlpacker/{name}/in", qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(client, userdata, message):
        received.append(json.loads(message.payload))
        got_message.set()

    if mosquitto["kind"] == "tls-password":
        # The user's broker refuses anonymous clients: the probe gets in only with what it was given.
        anonymous = listener_client({"tls": broker["tls"]}, None)
        refused: list[Any] = []
        anonymous.on_connect = lambda client, userdata, flags, reason_code, properties: refused.append(
            reason_code
        )
        anonymous.connect(broker["host"], broker["port"])
        anonymous.loop_start()
        try:
            for _ in range(150):
                if refused:
                    break
                time.sleep(0.1)
        finally:
            anonymous.loop_stop()
            anonymous.disconnect()
        assert refused and refused[0].is_failure, refused

    listener = listener_client(broker, mosquitto["password"])
    listener.on_connect, listener.on_subscribe, listener.on_message = on_connect, on_subscribe, on_message
    listener.connect(broker["host"], broker["port"])
    listener.loop_start()
    try:
        assert subscribed.wait(30), connected
        result = mlpacker.probe(
            spec,
            LOCAL_INVENTORY,
            broker=broker,
            extravars={"mlpacker_probe_instances": SAMPLE, "mlpacker_probe_timeout": 3},
        )
        assert got_message.wait(30), result.failure
    finally:
        listener.loop_stop()
        listener.disconnect()

    assert result.status == "failed" and result.exit_code == 4
    failure = result.failure
    assert failure is not None and failure.task == "Probe the stream pipeline through its broker"
    assert "no answer with id" in failure.message
    assert f"mlpacker/{name}/out or mlpacker/{name}/errors" in failure.message
    assert f"after publishing to mlpacker/{name}/in" in failure.message
    assert received[0]["instances"] == SAMPLE and received[0]["id"] in failure.message
    if mosquitto["password"]:
        assert mosquitto["password"] not in failure.message
