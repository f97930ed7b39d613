"""A mixed pipeline through the real playbooks/deploy.yml: `scale` in a virtualenv under supervisord,
`reduce` and `classify` in Docker (`containers: true` on those stages), all on this machine."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
from sklearn.preprocessing import StandardScaler

from tests.containers.conftest import BASE_IMAGE, docker, labelled
from tests.deploy.helpers import (
    IRIS_SAMPLES,
    LOCAL_INVENTORY,
    PlaybookRun,
    free_port_block,
    in_process_predictions,
    pipeline_leftovers,
    port_is_listening,
    post_predict,
    processes_mentioning,
    run_playbook,
    supervisor_pids,
    train_iris,
    write_vars_file,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CONTAINER_STAGES = ("reduce", "classify")


class MixedDeployment:
    def __init__(self, name: str, base_port: int, models: dict[str, Path], var_files: list[Path]):
        self.name = name
        self.base_port = base_port
        self.models = models
        self.var_files = var_files

    def play(self, playbook: str) -> PlaybookRun:
        return run_playbook(playbook, LOCAL_INVENTORY, self.var_files)


@pytest.fixture(scope="module")
def mixed(
    docker_engine: None, container_settings: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MixedDeployment]:
    workdir = tmp_path_factory.mktemp("mixed")
    models = train_iris(workdir / "models")
    name = "t-mixed-" + uuid.uuid4().hex[:6]
    base_port = free_port_block(3)
    stages: list[dict[str, Any]] = [
        {"name": "scale", "artifact": str(models["scaler"]), "group": "edge", "port": base_port},
        {"name": "reduce", "artifact": str(models["pca"]), "group": "fog", "port": base_port + 1},
        {"name": "classify", "artifact": str(models["classifier"]), "group": "cloud", "port": base_port + 2},
    ]
    for stage in stages:
        stage["containers"] = stage["name"] in CONTAINER_STAGES
    spec = {"mlpacker_pipeline": {"name": name, "mode": "rest", "layout": "distributed", "stages": stages}}
    deployment = MixedDeployment(
        name,
        base_port,
        models,
        [
            write_vars_file(workdir / "spec.yml", spec),
            write_vars_file(workdir / "settings.yml", container_settings),
        ],
    )
    try:
        first = deployment.play("deploy.yml")
        assert first.rc == 0, first.describe()
        yield deployment
    finally:
        if pipeline_leftovers(name) or labelled("container", name) or labelled("image", name):
            deployment.play("undeploy.yml")
        # nothing must survive a failed test either
        for kind in ("container", "image"):
            leftovers = labelled(kind, name)
            if leftovers:
                docker(kind, "rm", "--force", *leftovers, check=False)


def test_entry_point_answers_like_the_in_process_pipeline(mixed: MixedDeployment) -> None:
    expected = in_process_predictions(
        [mixed.models["scaler"], mixed.models["pca"], mixed.models["classifier"]], IRIS_SAMPLES
    )
    assert post_predict(f"http://127.0.0.1:{mixed.base_port}/predict", IRIS_SAMPLES) == expected


def test_container_stages_run_in_containers_and_scale_in_supervisord(mixed: MixedDeployment) -> None:
    running = docker(
        "ps", "--filter", f"label=mlpacker.pipeline={mixed.name}", "--format", "{{.Names}}"
    ).stdout.split()
    assert sorted(running) == sorted(f"mlpacker-{mixed.name}-{stage}" for stage in CONTAINER_STAGES)
    scale_program = f"mlpacker-{mixed.name}-scale"
    assert list(supervisor_pids([scale_program])) == [scale_program]
    # the container services are not supervisord programs
    assert supervisor_pids([f"mlpacker-{mixed.name}-{stage}" for stage in CONTAINER_STAGES]) == {}


def test_second_run_changes_nothing(mixed: MixedDeployment) -> None:
    second = mixed.play("deploy.yml")
    assert second.rc == 0, second.describe()
    assert second.changed() == {"localhost": 0}, second.describe()


def test_undeploy_removes_containers_images_processes_and_ports(mixed: MixedDeployment) -> None:
    removed = mixed.play("undeploy.yml")
    assert removed.rc == 0, removed.describe()
    assert labelled("container", mixed.name) == []
    assert labelled("image", mixed.name) == []
    assert pipeline_leftovers(mixed.name) == []
    assert processes_mentioning(f"/opt/mlpacker/{mixed.name}") == []
    listening = [
        port for port in range(mixed.base_port, mixed.base_port + 3) if port_is_listening("127.0.0.1", port)
    ]
    assert listening == []
    # the engine itself is still there (undeploy removes only what carries the pipeline's label)
    assert subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode == 0


def test_image_python_other_than_the_hosts_is_refused_before_anything_is_deployed(
    tmp_path: Path,
) -> None:
    # the host's wheelhouse is what the image installs: an image of another Python could not use it
    name = "t-mixpy-" + uuid.uuid4().hex[:6]
    base_port = free_port_block(2)
    artifact = str(tmp_path / "scaler.joblib")
    joblib.dump(StandardScaler().fit([[0.0], [1.0]]), artifact)
    stages = [
        {"name": "scale", "artifact": artifact, "group": "edge", "port": base_port},
        {
            "name": "classify",
            "artifact": artifact,
            "group": "cloud",
            "port": base_port + 1,
            "containers": True,
        },
    ]
    spec = {"mlpacker_pipeline": {"name": name, "mode": "rest", "layout": "distributed", "stages": stages}}
    settings = {
        "mlpacker_cache_dir": str(tmp_path / "cache"),
        "mlpacker_state_dir": str(tmp_path / "state"),
        "mlpacker_container_python_version": "3.99",
    }
    refused = run_playbook(
        "deploy.yml",
        LOCAL_INVENTORY,
        [write_vars_file(tmp_path / "spec.yml", spec), write_vars_file(tmp_path / "settings.yml", settings)],
    )
    assert refused.rc != 0, refused.describe()
    assert "mlpacker_container_python_version is '3.99'" in refused.output, refused.describe()
    assert pipeline_leftovers(name) == []
