"""Deploys over real SSH to the network-namespace test bed (edge1, edge2, fog1, cloud1, broker1): offline
hosts without systemd, so the supervisord path, the shipped wheelhouse and the offline venv are all real.

Three of the four combinations: REST atomic (group edge) and stream, atomic and distributed (edge -> fog ->
cloud). REST distributed over SSH is deployed through the CLI and the Python API in tests/api/test_testbed.py
(the same playbook), with its idempotence and leftovers checked there.
Stream atomic uses the managed Mosquitto (broker group moved to cloud1, whose port 1883 is free); stream
distributed uses the test bed's own Mosquitto on broker1 (mlpacker_broker from the test bed's inventory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.helpers import (
    IRIS_SAMPLES,
    assert_rerun_changes_nothing,
    in_process_predictions,
    iris_spec,
    leftovers_on_testbed_host,
    mqtt_roundtrip,
    post_predict,
    run_playbook,
    write_vars_file,
)

pytestmark = [pytest.mark.slow, pytest.mark.testbed]
SERVICE_PORT = 8300  # each test bed host has its own network namespace: no clash with this machine


def spec_for(mode: str, layout: str, models: dict[str, Path]) -> dict[str, Any]:
    return iris_spec(f"tb-{mode}-{layout[:4]}", mode, layout, models, SERVICE_PORT)


def managed_broker_inventory(bed: Any, path: Path) -> Path:
    """The test bed's inventory with the broker group on cloud1 and no mlpacker_broker: MLPacker installs
    and runs its own Mosquitto there."""
    inventory = yaml.safe_load(Path(bed.inventory_path).read_text())
    inventory["all"]["vars"].pop("mlpacker_broker", None)
    children = inventory["all"]["children"]
    children["broker"] = {"hosts": {"cloud1": None}}
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("mode", "layout"),
    [("rest", "atomic"), ("stream", "distributed"), ("stream", "atomic")],
)
def test_deploy_over_ssh(
    testbed: Any,
    deploy_root: Path,
    iris_models: dict[str, Path],
    controller_dirs: dict[str, str],
    mode: str,
    layout: str,
) -> None:
    spec = spec_for(mode, layout, iris_models)
    name = spec["mlpacker_pipeline"]["name"]
    inventory = Path(testbed.inventory_path)
    if mode == "stream" and layout == "atomic":
        inventory = managed_broker_inventory(testbed, deploy_root / "testbed-managed-broker.yml")
    files = [
        write_vars_file(deploy_root / f"{name}.yml", spec),
        write_vars_file(deploy_root / "ctl.yml", controller_dirs),
    ]
    hosts = ["edge1", "edge2"] if layout == "atomic" else ["edge1", "edge2", "fog1", "cloud1"]
    expected = in_process_predictions(
        [iris_models["scaler"], iris_models["pca"], iris_models["classifier"]], IRIS_SAMPLES
    )
    try:
        first = run_playbook("deploy.yml", inventory, files)
        assert first.rc == 0, first.describe()
        assert set(first.recap) >= set(hosts), first.describe()
        if mode == "rest":
            # Every host of the first stage's group is an entry point.
            for host in ("edge1", "edge2"):
                assert (
                    post_predict(f"http://{testbed.address(host)}:{SERVICE_PORT}/predict", IRIS_SAMPLES)
                    == expected
                )
        else:
            broker = testbed.address("cloud1" if layout == "atomic" else "broker1")
            answer = mqtt_roundtrip(broker, 1883, f"mlpacker/{name}/in", f"mlpacker/{name}/out", IRIS_SAMPLES)
            assert answer == expected
        # The services run detached under supervisord on each host, not tied to the SSH session.
        for host in hosts:
            assert testbed.run(host, "pgrep -f '[s]upervisord -c' >/dev/null", check=False).returncode == 0, (
                host
            )

        if (mode, layout) == ("stream", "atomic"):
            # Idempotence over SSH with the managed broker; REST distributed's is checked on every host in
            # tests/api/test_testbed.py, the other two save the time.
            assert_rerun_changes_nothing(inventory, files)
    finally:
        removed = run_playbook("undeploy.yml", inventory, files)
    assert removed.rc == 0, removed.describe()
    for host in hosts:
        assert leftovers_on_testbed_host(testbed, host, name) == "", host
    if mode == "stream" and layout == "atomic":
        assert testbed.run("cloud1", "test -e /etc/mlpacker/mosquitto", check=False).returncode != 0
