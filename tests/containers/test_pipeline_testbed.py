"""Pipelines in Docker through the real playbooks/deploy.yml over SSH, every stage with `containers: true`.

Stream distributed: edge1+edge2 (replicas sharing a subscription), fog1 and cloud1, the containers reaching
the test bed's Mosquitto on broker1. REST atomic: the whole pipeline in one container on edge1 and on edge2,
each an entry point. Each host has its own offline Docker engine and builds its image from the shipped
wheelhouse.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.containers.conftest import BASE_IMAGE
from tests.deploy.helpers import (
    IRIS_SAMPLES,
    REPO_ROOT,
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


@pytest.mark.parametrize(("mode", "layout"), [("stream", "distributed"), ("rest", "atomic")])
def test_pipeline_in_containers_over_ssh(testbed_docker: Any, tmp_path: Path, mode: str, layout: str) -> None:
    bed = testbed_docker
    iris_models = train_iris(tmp_path / "models")
    name = f"c{mode[0]}{layout[0]}-{uuid.uuid4().hex[:6]}"
    hosts = ("edge1", "edge2") if layout == "atomic" else ("edge1", "edge2", "fog1", "cloud1")
    spec = iris_spec(name, mode, layout, iris_models, BASE_PORT)
    spec["mlpacker_pipeline"]["containers"] = True
    runtime_copy = tmp_path / "runtime-src"
    shutil.copytree(
        REPO_ROOT / "runtime",
        runtime_copy,
        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"),
    )
    settings = {
        "mlpacker_cache_dir": str(tmp_path / "cache"),
        "mlpacker_state_dir": str(tmp_path / "state"),
        "mlpacker_runtime_source": str(runtime_copy),
        "mlpacker_container_base_image": BASE_IMAGE,  # the hosts' engines hold only this image
    }
    files = [
        write_vars_file(tmp_path / "spec.yml", spec),
        write_vars_file(tmp_path / "settings.yml", settings),
    ]
    inventory = Path(bed.inventory_path)  # mlpacker_broker: the test bed's Mosquitto on broker1
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
        entry_points = json.loads((tmp_path / "state" / f"{name}.json").read_text())["entry_points"]
        if mode == "stream":
            assert entry_points["stream"]["input_topic"] == f"mlpacker/{name}/in", entry_points
            broker = bed.address("broker1")
            answer = mqtt_roundtrip(broker, 1883, f"mlpacker/{name}/in", f"mlpacker/{name}/out", IRIS_SAMPLES)
            assert answer == expected
        else:
            urls = [f"http://{bed.address(host)}:{BASE_PORT}/predict" for host in hosts]
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
