"""mlpacker.core.stage_container on the test bed: offline SSH hosts in their own namespaces, each with its own
Docker engine that holds only the base image.

edge1 gets an image built on the controller and shipped with save/load (build_on=controller); cloud1 builds
its own from the shipped wheelhouse (build_on=host). The edge container (bridged, port published on edge1's
address) calls the cloud one at cloud1's address: answers must equal the in-process pipeline.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.containers.conftest import (
    BASE_IMAGE,
    ContainerPipeline,
    changed_total,
    failures,
    labelled,
)
from tests.containers.test_local import post, rest_service, stages

pytestmark = [pytest.mark.docker, pytest.mark.testbed, pytest.mark.slow]

PORT = 8000


def host_docker(bed: Any, host: str, command: str) -> str:
    return bed.run(host, f"docker {command}", check=True, timeout=60).stdout


def test_distributed_rest_over_ssh_hosts(
    testbed_docker: Any, wheelhouse: dict[str, Any], models: dict[str, Any], tmp_path: Path
) -> None:
    bed = testbed_docker
    name = "cb-" + uuid.uuid4().hex[:8]
    edge, cloud = bed.address("edge1"), bed.address("cloud1")
    services = [
        dict(
            rest_service(name, f"{name}-prep", ["scale", "reduce"], PORT, [f"http://{cloud}:{PORT}/predict"]),
            host="edge1",
            address=edge,
        ),
        dict(rest_service(name, f"{name}-classify", ["classify"], PORT, []), host="cloud1", address=cloud),
    ]
    pipeline = ContainerPipeline(
        name=name,
        inventory=Path(bed.inventory_path),
        variables={
            **wheelhouse,
            # as the pipeline role ships it: a .tar, unpacked on the hosts and on the controller
            "test_wheelhouse_archive": wheelhouse["test_wheelhouse_archive_path"],
            "test_pipeline": name,
            "test_base_image": BASE_IMAGE,
            "test_root": "/opt/mlpacker",
            "test_controller_dir": str(tmp_path / "controller-cache"),
            "test_mode": "rest",
            "test_stages": stages(models),
            "test_services": services,
        },
        workdir=tmp_path,
    )
    try:
        first = pipeline.deploy(test_build_on_hosts={"edge1": "controller"})
        assert first["rc"] == 0, failures(first)
        for host, service in (("edge1", services[0]), ("cloud1", services[1])):
            found = json.loads(host_docker(bed, host, f"inspect mlpacker-{service['id']}"))[0]
            assert found["State"]["Running"], host
            assert found["HostConfig"]["NetworkMode"] == "bridge", host
            assert found["Config"]["User"] == "10001:10001"
        answer = post(f"http://{edge}:{PORT}/predict", {"instances": models["rows"]})
        assert answer["predictions"] == models["expected"]

        again = pipeline.deploy(test_build_on_hosts={"edge1": "controller"})
        assert again["rc"] == 0, failures(again)
        assert changed_total(again) == 0, again["stats"]
    finally:
        gone = pipeline.undeploy()
    assert gone["rc"] == 0, failures(gone)
    for host in ("edge1", "cloud1"):
        containers = host_docker(bed, host, f"ps -a -q --filter label=mlpacker.pipeline={name}").split()
        images = host_docker(bed, host, f"images -q --filter label=mlpacker.pipeline={name}").split()
        assert containers == [] and images == [], host
        assert host_docker(bed, host, f"images -q {BASE_IMAGE}").strip(), f"{host} lost the base image"
    # edge1's image was built in the controller's engine: undeploy removes it there too
    assert labelled("image", name) == []
