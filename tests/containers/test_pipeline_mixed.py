"""A mixed pipeline through the real playbooks/deploy.yml: `scale` in a virtualenv under supervisord,
`reduce` and `classify` in Docker (`containers: true` on those stages), all on this machine.

Secure by default: the entry point is HTTPS (the record's CA and token), the hops too; the two containers
keep their credentials in their release's secrets folder on the host, mounted read-only, never in the image;
`classify` (bridged: it calls no one) is published on the host's listen addresses only.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from tests.containers.conftest import (
    BASE_IMAGE,
    assert_container_keeps_its_secrets_out_of_the_image,
    assert_requires_the_token,
    docker,
    labelled,
    listen_addresses,
    local_shell,
    pipeline_secrets,
    release_of,
)
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
    record_credentials,
    run_playbook,
    supervisor_pids,
    train_iris,
    write_vars_file,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CONTAINER_STAGES = ("reduce", "classify")


class MixedDeployment:
    def __init__(
        self, name: str, base_port: int, models: dict[str, Path], var_files: list[Path], state_dir: Path
    ):
        self.name = name
        self.base_port = base_port
        self.models = models
        self.var_files = var_files
        self.state_dir = state_dir

    def play(self, playbook: str) -> PlaybookRun:
        return run_playbook(playbook, LOCAL_INVENTORY, self.var_files)

    def record(self) -> dict[str, Any]:
        return json.loads((self.state_dir / f"{self.name}.json").read_text())

    def credentials(self) -> dict[str, Any]:
        credentials = record_credentials(self.state_dir, self.name)
        assert credentials, f"{self.name}: a default deploy is secure, its record names its credentials"
        return credentials

    def container(self, stage: str) -> dict[str, Any]:
        return json.loads(docker("inspect", f"mlpacker-{self.name}-{stage}").stdout)[0]

    def rows_for(self, stage: str) -> list[list[float]]:
        """IRIS_SAMPLES as ``stage`` takes them: through the stages before it."""
        rows = np.asarray(IRIS_SAMPLES)
        for before in ("scaler", "pca")[: ["scale", "reduce", "classify"].index(stage)]:
            rows = joblib.load(self.models[before]).transform(rows)
        return rows.tolist()


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
    spec = {
        "mlpacker_pipeline": {
            "name": name,
            "mode": "rest",
            "layout": "distributed",
            "base_dir": str(workdir / "models"),
            "stages": stages,
        }
    }
    deployment = MixedDeployment(
        name,
        base_port,
        models,
        [
            write_vars_file(workdir / "spec.yml", spec),
            write_vars_file(workdir / "settings.yml", container_settings),
        ],
        Path(container_settings["mlpacker_state_dir"]),
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
    url = f"https://127.0.0.1:{mixed.base_port}/predict"
    assert mixed.record()["entry_points"]["rest"] == [url]
    assert post_predict(url, IRIS_SAMPLES, credentials=mixed.credentials()) == expected


def test_container_stages_run_in_containers_and_scale_in_supervisord(mixed: MixedDeployment) -> None:
    running = docker(
        "ps", "--filter", f"label=mlpacker.pipeline={mixed.name}", "--format", "{{.Names}}"
    ).stdout.split()
    assert sorted(running) == sorted(f"mlpacker-{mixed.name}-{stage}" for stage in CONTAINER_STAGES)
    scale_program = f"mlpacker-{mixed.name}-scale"
    assert list(supervisor_pids([scale_program])) == [scale_program]
    # the container services are not supervisord programs
    assert supervisor_pids([f"mlpacker-{mixed.name}-{stage}" for stage in CONTAINER_STAGES]) == {}


def test_container_images_hold_no_secret_and_the_secrets_are_mounted_read_only(
    mixed: MixedDeployment, credentials_dir: Path
) -> None:
    secrets = pipeline_secrets(credentials_dir, mixed.name)
    for stage in CONTAINER_STAGES:
        assert_container_keeps_its_secrets_out_of_the_image(
            local_shell, f"mlpacker-{mixed.name}-{stage}", secrets
        )


def test_containers_are_published_and_listen_on_the_hosts_listen_addresses_only(
    mixed: MixedDeployment,
) -> None:
    """reduce calls classify on loopback (host network, binds the listen addresses itself); classify calls
    no one, so it is bridged and published on the listen addresses (loopback here), not 0.0.0.0."""
    assert mixed.container("reduce")["HostConfig"]["NetworkMode"] == "host"
    classify = mixed.container("classify")["HostConfig"]
    port = str(mixed.base_port + 2)
    assert classify["NetworkMode"] == "bridge"
    assert classify["PortBindings"] == {f"{port}/tcp": [{"HostIp": "127.0.0.1", "HostPort": port}]}
    for offset in range(3):
        assert listen_addresses(local_shell, mixed.base_port + offset) == {"127.0.0.1"}, offset


def test_container_services_refuse_requests_without_the_token(mixed: MixedDeployment) -> None:
    credentials = mixed.credentials()
    services = {service["stages"][0]: service for service in mixed.record()["services"]}
    for stage in CONTAINER_STAGES:
        url = services[stage]["url"]
        assert url.startswith("https://"), url
        assert_requires_the_token(url, credentials, instances=mixed.rows_for(stage))


def test_second_run_changes_nothing(mixed: MixedDeployment) -> None:
    def state() -> dict[str, Any]:
        """Each container, its image, and its shipped credentials (names, digests, inodes, times)."""
        found = {}
        for stage in CONTAINER_STAGES:
            container = mixed.container(stage)
            shipped = local_shell(
                f"cd {release_of(container)}/secrets && sha256sum * && stat -c '%n %i %Y' *"
            )
            assert shipped.returncode == 0, shipped.stderr
            found[stage] = (container["Id"], container["Image"], shipped.stdout)
        return found

    before, record = state(), mixed.record()
    second = mixed.play("deploy.yml")
    assert mixed.record() == record
    assert second.rc == 0, second.describe()
    assert second.changed() == {"localhost": 0}, second.describe()
    assert state() == before


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
    spec = {
        "mlpacker_pipeline": {
            "name": name,
            "mode": "rest",
            "layout": "distributed",
            "base_dir": str(tmp_path),
            "stages": stages,
        }
    }
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
