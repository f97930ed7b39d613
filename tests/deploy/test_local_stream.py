"""Stream pipelines deployed with the real playbooks on this machine: with the user's own Mosquitto
(mlpacker_broker, started by the test on a free port; anonymous, as that broker is the user's and not
MLPacker's) and with the managed Mosquitto of the broker role (secure by default: TLS on 8883 with the
``_broker`` CA, no anonymous client, one MQTT user per service and one for the user, an ACL)."""

from __future__ import annotations

import json
import shlex
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.helpers import (
    IRIS_SAMPLES,
    LOCAL_INVENTORY,
    assert_managed_broker_confines_users,
    changed_tasks,
    free_port_block,
    in_process_predictions,
    iris_spec,
    listeners_of_processes_on,
    mqtt_roundtrip,
    pipeline_leftovers,
    port_is_free,
    port_is_listening,
    processes_mentioning,
    record_credentials,
    run_playbook,
    user_mosquitto,
    wait_for,
    write_vars_file,
)
from tests.outcomes import skip_missing

pytestmark = [pytest.mark.slow, pytest.mark.mqtt]
# The managed broker's TLS listener; its plain 1883 listener exists only with mlpacker_insecure.
MANAGED_BROKER_PORT = 8883
PLAIN_MQTT_PORT = 1883


@pytest.fixture(scope="module")
def user_broker(deploy_root: Path) -> Iterator[int]:
    with user_mosquitto(deploy_root) as port:
        yield port


def test_distributed_stream_with_the_users_broker(
    deploy_root: Path, iris_models: dict[str, Path], controller_dirs: dict[str, str], user_broker: int
) -> None:
    name = "t-stream-dist"
    base_port = free_port_block(3)
    spec = iris_spec(name, "stream", "distributed", iris_models, base_port)
    spec["mlpacker_broker"] = {"host": "127.0.0.1", "port": user_broker}
    spec["mlpacker_stream_max_consecutive_refusals"] = 7
    files = [
        write_vars_file(deploy_root / f"{name}.yml", spec),
        write_vars_file(deploy_root / "ctl.yml", controller_dirs),
    ]
    try:
        first = run_playbook("deploy.yml", LOCAL_INVENTORY, files)
        assert first.rc == 0, first.describe()
        expected = in_process_predictions(
            [iris_models["scaler"], iris_models["pca"], iris_models["classifier"]], IRIS_SAMPLES
        )
        answer = mqtt_roundtrip(
            "127.0.0.1", user_broker, f"mlpacker/{name}/in", f"mlpacker/{name}/out", IRIS_SAMPLES
        )
        assert answer == expected
        assert f"publish to mlpacker/{name}/in on 127.0.0.1:{user_broker}" in first.output
        # The setting reached every service's configuration (the runtime's default is 10).
        for stage in ("scale", "reduce", "classify"):
            config = Path(f"/opt/mlpacker/{name}/{name}-{stage}/current/config.json")
            assert json.loads(config.read_text())["stream"]["max_consecutive_refusals"] == 7, stage

        second = run_playbook("deploy.yml", LOCAL_INVENTORY, files)
        assert second.rc == 0 and second.changed() == {"localhost": 0}, second.describe()
        # The user's broker is not MLPacker's: no broker configuration may appear.
        assert not Path("/etc/mlpacker/mosquitto/pipelines", name).exists()
    finally:
        removed = run_playbook("undeploy.yml", LOCAL_INVENTORY, files)
    assert removed.rc == 0, removed.describe()
    assert pipeline_leftovers(name) == []
    assert processes_mentioning(f"/opt/mlpacker/{name}/") == []
    assert all(not port_is_listening("127.0.0.1", base_port + offset) for offset in range(3))
    assert port_is_listening("127.0.0.1", user_broker), "undeploy touched the user's broker"


def test_atomic_stream_with_the_managed_broker(
    deploy_root: Path, iris_models: dict[str, Path], controller_dirs: dict[str, str]
) -> None:
    if not port_is_free(MANAGED_BROKER_PORT):
        # Something else (often a system-wide Mosquitto) holds the port: on a developer's machine a skip; on
        # CI's fresh machine the port must be free, or the managed-broker tests would silently not run.
        skip_missing(
            f"free port {MANAGED_BROKER_PORT}",
            f"port {MANAGED_BROKER_PORT} is taken on this machine; the managed broker needs it",
        )
    name = "t-stream-atomic"
    base_port = free_port_block(1)
    spec = iris_spec(name, "stream", "atomic", iris_models, base_port)
    credentials_dir = deploy_root / f"credentials-{name}"
    controller = dict(controller_dirs, mlpacker_credentials_dir=str(credentials_dir))
    files = [
        write_vars_file(deploy_root / f"{name}.yml", spec),
        write_vars_file(deploy_root / f"ctl-{name}.yml", controller),
    ]
    try:
        first = run_playbook("deploy.yml", LOCAL_INVENTORY, files)
        assert first.rc == 0, first.describe()
        config = Path("/etc/mlpacker/mosquitto/mosquitto.conf").read_text()
        for line in (
            # ansible_host of the local inventory is 127.0.0.1: the host's address and loopback are one.
            f"listener {MANAGED_BROKER_PORT} 127.0.0.1",
            "allow_anonymous false",
            "set_tcp_nodelay true",
            # finite: with 0 Mosquitto 2.0.11 stops delivering to a client after one refused publish
            "max_queued_messages 100000",
            "max_queued_bytes 67108864",
            "persistence true",
            # saved on every change (mlpacker_broker_autosave_interval 0, the default)
            "autosave_on_changes true",
            "autosave_interval 1",
        ):
            assert line in config
        # Its persistence lives in the broker user's own folder, which no one else reads.
        data = Path("/opt/mlpacker/.broker")
        assert (data.owner(), stat.S_IMODE(data.stat().st_mode)) == ("mlpacker-broker", 0o700)
        assert (data / "mosquitto.db").owner() == "mlpacker-broker"
        assert f"listener {PLAIN_MQTT_PORT}" not in config and "0.0.0.0" not in config, config
        # The broker listens on 127.0.0.1:8883 and nowhere else (no wildcard, no plain port).
        sockets = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
        assert listeners_of_processes_on(sockets, MANAGED_BROKER_PORT) == {
            ("127.0.0.1", MANAGED_BROKER_PORT)
        }, sockets

        record = json.loads((Path(controller["mlpacker_state_dir"]) / f"{name}.json").read_text())
        credentials = record_credentials(controller["mlpacker_state_dir"], name)
        assert credentials is not None and credentials["mqtt"]["username"] == f"mlp-{name}-client"
        assert record["broker"]["host"] == "127.0.0.1" and record["broker"]["port"] == MANAGED_BROKER_PORT
        assert f"publish to mlpacker/{name}/in on 127.0.0.1:{MANAGED_BROKER_PORT}" in first.output
        expected = in_process_predictions(
            [iris_models["scaler"], iris_models["pca"], iris_models["classifier"]], IRIS_SAMPLES
        )
        answer = mqtt_roundtrip(
            "127.0.0.1",
            MANAGED_BROKER_PORT,
            f"mlpacker/{name}/in",
            f"mlpacker/{name}/out",
            IRIS_SAMPLES,
            credentials=credentials,
        )
        assert answer == expected
        assert_the_records_mosquitto_lines_work(record, expected)
        assert_managed_broker_confines_users(
            "127.0.0.1", MANAGED_BROKER_PORT, record, credentials_dir, IRIS_SAMPLES, expected
        )
        second = run_playbook("deploy.yml", LOCAL_INVENTORY, files)
        assert second.rc == 0 and second.changed() == {"localhost": 0}, (
            changed_tasks(second.output),
            second.describe(),
        )
    finally:
        removed = run_playbook("undeploy.yml", LOCAL_INVENTORY, files)
    assert removed.rc == 0, removed.describe()
    assert pipeline_leftovers(name) == []
    assert not Path("/etc/mlpacker/mosquitto").exists() or any(
        Path("/etc/mlpacker/mosquitto/pipelines").iterdir()
    )
    wait_for(
        lambda: not port_is_listening("127.0.0.1", MANAGED_BROKER_PORT), 20, "the managed broker to stop"
    )
    assert not port_is_listening("127.0.0.1", base_port)


def assert_the_records_mosquitto_lines_work(record: dict, expected: list) -> None:
    """The record's ``mosquitto_sub`` and ``mosquitto_pub`` lines, run by a shell as printed (the sample body
    filled in): the subscriber gets the pipeline's answer to the publisher's message."""
    subscribe_line, publish_line = record["client_commands"]
    assert subscribe_line.startswith("mosquitto_sub ") and publish_line.startswith("mosquitto_pub ")
    # The password is read from its file when the line runs: it is not in the record.
    assert '-P "$(head -n1 ' in publish_line
    message = json.dumps({"id": "1", "instances": IRIS_SAMPLES})
    publish_line = publish_line.replace(
        shlex.quote('{"id": "1", "instances": [[...]]}'), shlex.quote(message)
    )
    assert message in publish_line
    subscriber = subprocess.Popen(
        ["sh", "-c", f"{subscribe_line} -C 1 -W 60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # mosquitto_sub -d would say when it is subscribed; publishing until an answer comes is simpler.
        def answered() -> bool:
            published = subprocess.run(["sh", "-c", publish_line], capture_output=True, text=True, timeout=30)
            assert published.returncode == 0, published.stderr
            try:
                subscriber.wait(timeout=2)
            except subprocess.TimeoutExpired:
                return False
            return True

        wait_for(answered, 60, "mosquitto_sub to print the pipeline's answer", interval=0)
        out, err = subscriber.communicate(timeout=10)
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait(timeout=10)
    assert subscriber.returncode == 0, err
    answer = json.loads(out.splitlines()[0])
    assert answer["id"] == "1" and answer["predictions"] == expected
