"""Stream pipelines deployed with the real playbooks on this machine: with the user's own Mosquitto
(mlpacker_broker, started by the test on a free port) and with the managed Mosquitto of the broker role."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.helpers import (
    IRIS_SAMPLES,
    LOCAL_INVENTORY,
    free_port_block,
    in_process_predictions,
    iris_spec,
    mqtt_roundtrip,
    pipeline_leftovers,
    port_is_free,
    port_is_listening,
    processes_mentioning,
    run_playbook,
    user_mosquitto,
    wait_for,
    write_vars_file,
)
from tests.outcomes import skip_missing

pytestmark = [pytest.mark.slow, pytest.mark.mqtt]
MANAGED_BROKER_PORT = 1883


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
    files = [
        write_vars_file(deploy_root / f"{name}.yml", spec),
        write_vars_file(deploy_root / "ctl.yml", controller_dirs),
    ]
    try:
        first = run_playbook("deploy.yml", LOCAL_INVENTORY, files)
        assert first.rc == 0, first.describe()
        config = Path("/etc/mlpacker/mosquitto/mosquitto.conf").read_text()
        for line in (
            "listener 1883 0.0.0.0",
            "set_tcp_nodelay true",
            "max_queued_messages 0",
            "persistence true",
        ):
            assert line in config
        expected = in_process_predictions(
            [iris_models["scaler"], iris_models["pca"], iris_models["classifier"]], IRIS_SAMPLES
        )
        answer = mqtt_roundtrip(
            "127.0.0.1", MANAGED_BROKER_PORT, f"mlpacker/{name}/in", f"mlpacker/{name}/out", IRIS_SAMPLES
        )
        assert answer == expected
        second = run_playbook("deploy.yml", LOCAL_INVENTORY, files)
        assert second.rc == 0 and second.changed() == {"localhost": 0}, second.describe()
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
