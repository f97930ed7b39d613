"""mlpacker.core.stage_container on the local inventory, through real ansible-playbook runs, real engine.

Each test builds real images from a real wheelhouse, runs real containers and compares their answers with the
same stages run in-process here.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from tests.containers.conftest import (
    ContainerPipeline,
    changed_total,
    docker,
    failures,
    free_port,
    labelled,
    task_results,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

RUN_TASK = (
    "Run the service container (a changed image is health-checked in a canary before it replaces the old one)"
)


def post(url: str, body: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def inspect(name: str) -> dict[str, Any]:
    return json.loads(docker("inspect", name).stdout)[0]


def rest_service(
    pipeline: str, sid: str, stages: list[str], port: int, next_hops: list[str]
) -> dict[str, Any]:
    return {
        "id": sid,
        "host": "localhost",
        "address": "127.0.0.1",
        "stages": stages,
        "port": port,
        "url": f"http://127.0.0.1:{port}/predict",
        "next_hops": next_hops,
        "input_topic": None,
        "output_topic": None,
        "output_kind": None,
        "error_topic": None,
        "share_group": f"mlpacker-{sid}",
        "client_id": f"mlpacker-{sid}-localhost",
        "containers": True,
    }


def stages(models: dict[str, Any], classifier: str = "classifier.joblib") -> list[dict[str, Any]]:
    folder = models["dir"]
    return [
        {"name": "scale", "artifact": str(folder / "scaler.joblib"), "method": "transform"},
        {"name": "reduce", "artifact": str(folder / "pca.joblib"), "method": "transform"},
        {"name": "classify", "artifact": str(folder / classifier), "method": "predict"},
    ]


def test_rest_atomic_in_a_bridged_container(
    local_pipeline: ContainerPipeline, models: dict[str, Any]
) -> None:
    """Atomic REST: one non-root container, port published as planned, limits set; a rerun changes nothing;
    a failed rollout keeps the old container serving; undeploy removes exactly the pipeline's objects."""
    name = local_pipeline.name
    port = free_port()
    service = rest_service(name, name, ["scale", "reduce", "classify"], port, [])
    variables = {
        "test_mode": "rest",
        "test_stages": stages(models),
        "test_services": [service],
        "test_memory": "512m",
        "test_cpus": "1.5",
    }
    first = local_pipeline.deploy(**variables)
    assert first["rc"] == 0, failures(first)

    container = inspect(f"mlpacker-{name}")
    assert container["State"]["Running"]
    assert container["Config"]["User"] == "10001:10001"
    assert docker("exec", f"mlpacker-{name}", "id", "-u").stdout.strip() == "10001"
    assert container["HostConfig"]["NetworkMode"] == "bridge"
    assert container["HostConfig"]["PortBindings"] == {f"{port}/tcp": [{"HostIp": "", "HostPort": str(port)}]}
    assert container["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert container["HostConfig"]["Memory"] == 512 * 1024 * 1024
    assert container["HostConfig"]["NanoCpus"] == 1_500_000_000
    assert container["HostConfig"]["LogConfig"]["Type"] == "json-file"
    assert container["Config"]["Labels"]["mlpacker.pipeline"] == name
    assert container["Config"]["Labels"]["mlpacker.service"] == name
    assert container["Config"]["Healthcheck"]["Test"][0] == "CMD"

    answer = post(f"http://127.0.0.1:{port}/predict", {"instances": models["rows"]})
    assert answer["predictions"] == models["expected"]
    # logs go through the engine
    assert docker("logs", f"mlpacker-{name}").stdout + docker("logs", f"mlpacker-{name}").stderr

    second = local_pipeline.deploy(**variables)
    assert second["rc"] == 0, failures(second)
    assert changed_total(second) == 0, second["stats"]
    assert inspect(f"mlpacker-{name}")["Id"] == container["Id"]

    # a check run of a change reports it and touches nothing
    checked = local_pipeline.deploy(check_mode=True, **{**variables, "test_memory": "384m"})
    assert checked["rc"] == 0, failures(checked)
    assert [r["operation"] for r in task_results(checked, RUN_TASK)] == ["replaced"]
    assert inspect(f"mlpacker-{name}")["Id"] == container["Id"]

    # a new container that cannot become healthy (far too little memory): the old one keeps serving
    broken = local_pipeline.deploy(**{**variables, "test_memory": "24m"})
    assert broken["rc"] != 0
    assert "keeps serving" in failures(broken)
    assert inspect(f"mlpacker-{name}")["Id"] == container["Id"]
    assert (
        post(f"http://127.0.0.1:{port}/predict", {"instances": models["rows"]})["predictions"]
        == models["expected"]
    )
    assert docker("inspect", f"mlpacker-{name}-canary", check=False).returncode != 0

    # undeploy removes the pipeline's containers and images, and nothing labelled for another pipeline
    bystander = docker(
        "create",
        "--label",
        "mlpacker.pipeline=someone-else",
        "--name",
        f"bystander-{name}",
        "mlpacker-base:bookworm",
        "true",
    ).stdout.strip()
    try:
        assert labelled("image", name)
        gone = local_pipeline.undeploy()
        assert gone["rc"] == 0, failures(gone)
        assert labelled("container", name) == []
        assert labelled("image", name) == []
        assert labelled("volume", name) == []
        assert inspect(f"bystander-{name}")["Id"] == bystander
        assert docker("image", "inspect", "mlpacker-base:bookworm", check=False).returncode == 0
    finally:
        docker("rm", "-f", bystander, check=False)


def test_rest_distributed_update_replaces_only_that_container(
    local_pipeline: ContainerPipeline, models: dict[str, Any]
) -> None:
    """Distributed REST on loopback: answers equal the in-process pipeline; a new classifier artifact
    replaces the classifier's container only (after its canary), and the new answers follow it."""
    name = local_pipeline.name
    ports = [free_port() for _ in range(2)]
    ids = [f"{name}-prep", f"{name}-classify"]
    services = [
        rest_service(name, ids[0], ["scale", "reduce"], ports[0], [f"http://127.0.0.1:{ports[1]}/predict"]),
        rest_service(name, ids[1], ["classify"], ports[1], []),
    ]
    variables = {"test_mode": "rest", "test_stages": stages(models), "test_services": services}
    first = local_pipeline.deploy(**variables)
    assert first["rc"] == 0, failures(first)
    before = {sid: inspect(f"mlpacker-{sid}")["Id"] for sid in ids}
    # next hops on loopback need the host network; the last service has none, so it is bridged and published
    modes = [inspect(f"mlpacker-{sid}")["HostConfig"]["NetworkMode"] for sid in ids]
    assert modes == ["host", "bridge"]
    answer = post(f"http://127.0.0.1:{ports[0]}/predict", {"instances": models["rows"]})
    assert answer["predictions"] == models["expected"]

    assert models["expected_v2"] != models["expected"]  # else the update would not show in the answers
    updated = local_pipeline.deploy(**{**variables, "test_stages": stages(models, "classifier-v2.joblib")})
    assert updated["rc"] == 0, failures(updated)
    after = {sid: inspect(f"mlpacker-{sid}")["Id"] for sid in ids}
    assert after[ids[0]] == before[ids[0]]
    assert after[ids[1]] != before[ids[1]]
    assert [r["operation"] for r in task_results(updated, RUN_TASK)] == ["none", "replaced"]
    answer = post(f"http://127.0.0.1:{ports[0]}/predict", {"instances": models["rows"]})
    assert answer["predictions"] == models["expected_v2"]


def test_stream_services_reach_the_broker_by_address(
    local_pipeline: ContainerPipeline, models: dict[str, Any], mosquitto_broker: tuple[str, int]
) -> None:
    """Stream mode: containers on the host network reach the plan's broker (127.0.0.1 here) and answer like
    the in-process pipeline; their health endpoints are on the plan's ports."""
    import paho.mqtt.client as mqtt

    name = local_pipeline.name
    host, port = mosquitto_broker
    ports = [free_port(), free_port()]
    prefix = f"mlpacker/{name}"
    services = []
    for index, (sid, stage_names, input_topic, output_topic, kind) in enumerate(
        [
            (f"{name}-prep", ["scale", "reduce"], f"{prefix}/in", f"{prefix}/stage/classify/in", "instances"),
            (f"{name}-classify", ["classify"], f"{prefix}/stage/classify/in", f"{prefix}/out", "predictions"),
        ]
    ):
        service = rest_service(name, sid, stage_names, ports[index], [])
        service.update(
            url=None,
            input_topic=input_topic,
            output_topic=output_topic,
            output_kind=kind,
            error_topic=f"{prefix}/err",
        )
        services.append(service)
    variables = {
        "test_mode": "stream",
        "test_stages": stages(models),
        "test_services": services,
        "test_broker": {"host": host, "port": port},
    }
    first = local_pipeline.deploy(**variables)
    assert first["rc"] == 0, failures(first)
    for service in services:
        with urllib.request.urlopen(f"http://127.0.0.1:{service['port']}/health/ready", timeout=5) as ready:
            assert ready.status == 200

    received: list[dict[str, Any]] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{name}")
    client.on_message = lambda _client, _userdata, message: received.append(json.loads(message.payload))
    client.connect(host, port)
    client.subscribe(f"{prefix}/out", qos=1)
    client.subscribe(f"{prefix}/err", qos=1)
    client.loop_start()
    try:
        time.sleep(0.5)  # let the subscription reach the broker before publishing
        client.publish(
            f"{prefix}/in", json.dumps({"id": "m1", "instances": models["rows"]}), qos=1
        ).wait_for_publish()
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        client.loop_stop()
        client.disconnect()
    assert received == [{"id": "m1", "predictions": models["expected"]}]
