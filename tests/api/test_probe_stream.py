"""playbooks/probe.yml in stream mode, against a real Mosquitto this test starts.

No pipeline is deployed, so nothing answers: the probe must reach the broker given as ``mlpacker_broker``,
publish the instances on the pipeline's input topic (a real MQTT subscriber here receives them), wait on the
output topic and fail naming both topics. The REST path of probe.yml runs in test_local.py / test_testbed.py.
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


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        skip_missing("mosquitto", f"no mosquitto binary at {binary}")
    port = free_port_block(1)
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        probe = mqtt_client.Client(mqtt_client.CallbackAPIVersion.VERSION2)
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
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_stream_probe_publishes_and_reports_no_answer(
    mosquitto: int, tmp_path: Path, iris_models: Path
) -> None:
    name = unique_name("apistream")
    spec = write_spec(
        tmp_path / "pipeline.yml", iris_pipeline(name, iris_models, mode="stream", layout="atomic")
    )
    received: list[dict[str, Any]] = []
    got_message = threading.Event()
    subscribed = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        client.subscribe(f"mlpacker/{name}/in", qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(client, userdata, message):
        received.append(json.loads(message.payload))
        got_message.set()

    listener = mqtt_client.Client(mqtt_client.CallbackAPIVersion.VERSION2)
    listener.on_connect, listener.on_subscribe, listener.on_message = on_connect, on_subscribe, on_message
    listener.connect("127.0.0.1", mosquitto)
    listener.loop_start()
    try:
        assert subscribed.wait(30)
        result = mlpacker.probe(
            spec,
            LOCAL_INVENTORY,
            broker={"host": "127.0.0.1", "port": mosquitto},
            extravars={"mlpacker_probe_instances": SAMPLE, "mlpacker_probe_timeout": 3},
        )
        assert got_message.wait(30)
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
