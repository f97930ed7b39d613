"""All four combinations in Docker through the real playbooks/deploy.yml over SSH, every stage with
`containers: true`.

Distributed: edge1+edge2 (replicas: a shared subscription in stream mode, two entry points in REST mode),
fog1 and cloud1. Atomic: the whole pipeline in one container on edge1 and on edge2. Stream containers reach
the test bed's Mosquitto on broker1. Each host has its own offline Docker engine and builds its image from
the shipped wheelhouse, except edge1 in the REST distributed run: its image is built on the controller and
shipped with save/load (mlpacker_container_build_on: controller, as a host variable).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.containers.conftest import BASE_IMAGE, labelled
from tests.deploy.helpers import (
    IRIS_SAMPLES,
    assert_rerun_changes_nothing,
    in_process_predictions,
    iris_spec,
    mqtt_roundtrip,
    post_predict,
    run_playbook,
    train_iris,
    write_vars_file,
)

pytestmark = [pytest.mark.docker, pytest.mark.testbed, pytest.mark.slow]

BASE_PORT = 8400  # each test bed host has its own network namespace


def labelled_on(bed: Any, host: str, kind: str, name: str) -> list[str]:
    listing = {"container": "ps --all", "image": "image ls --all", "volume": "volume ls"}[kind]
    command = f"docker {listing} --quiet --filter label=mlpacker.pipeline={name}"
    return bed.run(host, command, check=True, timeout=60).stdout.split()


def inventory_with_controller_builds_for(bed: Any, folder: Path, host: str) -> Path:
    """The test bed's inventory, with `host` set to get images built on the controller (a host variable)."""
    folder.mkdir()
    inventory = folder / "hosts.yml"
    shutil.copy(bed.inventory_path, inventory)
    (folder / "host_vars").mkdir()
    write_vars_file(folder / "host_vars" / f"{host}.yml", {"mlpacker_container_build_on": "controller"})
    return inventory


@pytest.mark.parametrize(
    ("mode", "layout"),
    [("stream", "distributed"), ("rest", "atomic"), ("stream", "atomic"), ("rest", "distributed")],
)
def test_pipeline_in_containers_over_ssh(
    testbed_docker: Any, container_settings: dict[str, str], tmp_path: Path, mode: str, layout: str
) -> None:
    bed = testbed_docker
    iris_models = train_iris(tmp_path / "models")
    name = f"c{mode[0]}{layout[0]}-{uuid.uuid4().hex[:6]}"
    hosts = ("edge1", "edge2") if layout == "atomic" else ("edge1", "edge2", "fog1", "cloud1")
    spec = iris_spec(name, mode, layout, iris_models, BASE_PORT)
    spec["mlpacker_pipeline"]["containers"] = True
    files = [
        write_vars_file(tmp_path / "spec.yml", spec),
        write_vars_file(tmp_path / "settings.yml", container_settings),
    ]
    # mlpacker_broker (in the inventory): the test bed's Mosquitto on broker1
    controller_built = mode == "rest" and layout == "distributed"
    inventory = (
        inventory_with_controller_builds_for(bed, tmp_path / "inventory", "edge1")
        if controller_built
        else Path(bed.inventory_path)
    )
    expected = in_process_predictions(
        [iris_models["scaler"], iris_models["pca"], iris_models["classifier"]], IRIS_SAMPLES
    )
    try:
        first = run_playbook("deploy.yml", inventory, files)
        assert first.rc == 0, first.describe()
        for host in hosts:
            (container,) = labelled_on(bed, host, "container", name)
            found = json.loads(bed.run(host, f"docker inspect {container}", check=True).stdout)[0]
            assert found["State"]["Running"] and found["Config"]["User"] == "10001:10001", host
        if controller_built:
            # edge1's image came from the controller's engine (save/load), the others were built on the hosts
            assert labelled("image", name), "no image was built on the controller"
        entry_points = json.loads(
            (Path(container_settings["mlpacker_state_dir"]) / f"{name}.json").read_text()
        )["entry_points"]
        if mode == "stream":
            assert entry_points["stream"]["input_topic"] == f"mlpacker/{name}/in", entry_points
            broker = bed.address("broker1")
            answer = mqtt_roundtrip(broker, 1883, f"mlpacker/{name}/in", f"mlpacker/{name}/out", IRIS_SAMPLES)
            assert answer == expected
        else:
            # the entry points: every host of the first stage's group (edge), in either layout
            urls = [f"http://{bed.address(host)}:{BASE_PORT}/predict" for host in ("edge1", "edge2")]
            assert sorted(entry_points["rest"]) == sorted(urls), entry_points
            for url in urls:
                assert post_predict(url, IRIS_SAMPLES) == expected, url

        assert_rerun_changes_nothing(inventory, files)
    finally:
        removed = run_playbook("undeploy.yml", inventory, files)
    assert removed.rc == 0, removed.describe()
    for host in hosts:
        for kind in ("container", "image", "volume"):
            assert labelled_on(bed, host, kind, name) == [], (host, kind)
        assert bed.run(host, f"docker image ls --quiet {BASE_IMAGE}", check=True).stdout.strip(), host
    # an image built on the controller is removed there too
    assert labelled("image", name) == []
