"""All four combinations in Docker on the local inventory, through the real playbooks/deploy.yml.

REST atomic, REST distributed, stream atomic (with the managed Mosquitto) and stream distributed (with the
user's own Mosquitto), every stage with `containers: true`, built by this machine's engine from the shipped
wheelhouse. The four are deployed side by side (the later builds reuse the first one's installed-wheelhouse
layers, as a user's second pipeline would), checked against the in-process pipeline, re-run, changed, and
undeployed together by the last test.

Secure by default (docs/security.md): REST over HTTPS with the pipeline CA and the bearer token, the managed
Mosquitto on TLS 8883 with the client's MQTT credential (the user's own Mosquitto stays anonymous: it is the
user's); each container's credentials are in ``<release>/secrets`` on the host, mounted read-only at run
time, and in no layer of its image; bridged containers are published on the host's listen addresses only.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import requests
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

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
    LOCAL_INVENTORY,
    PlaybookRun,
    free_port_block,
    in_process_predictions,
    iris_spec,
    mqtt_roundtrip,
    pipeline_leftovers,
    port_is_free,
    port_is_listening,
    post_predict,
    processes_mentioning,
    record_credentials,
    run_playbook,
    supervisor_pids,
    train_iris,
    user_mosquitto,
    wait_for,
    write_vars_file,
)
from tests.outcomes import skip_missing

# The module's fixture deploys four pipelines in containers before its first test: pytest's 600 s per-test
# limit (a guard against hangs) would count all four deploys against that one test.
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.mqtt, pytest.mark.timeout(1500)]

COMBINATIONS = ["rest-atomic", "rest-distributed", "stream-atomic", "stream-distributed"]
# The managed broker's TLS listener (its plain 1883 one exists only with mlpacker_insecure).
MANAGED_BROKER_PORT = 8883
# Rows of iris on which the two classifiers of the update test disagree somewhere.
ROWS = [list(map(float, row)) for row in load_iris().data[::15]]


@dataclass
class Deployment:
    combination: str
    name: str
    base_port: int
    spec_file: Path
    settings_file: Path
    broker_port: int | None
    state_dir: Path
    removed: bool = False

    @property
    def mode(self) -> str:
        return self.combination.split("-")[0]

    @property
    def layout(self) -> str:
        return self.combination.split("-")[1]

    @property
    def files(self) -> list[Path]:
        return [self.spec_file, self.settings_file]

    def play(self, playbook: str, **options: Any) -> PlaybookRun:
        return run_playbook(playbook, LOCAL_INVENTORY, self.files, **options)

    def service_ids(self) -> list[str]:
        stages = ["scale", "reduce", "classify"]
        return [self.name] if self.layout == "atomic" else [f"{self.name}-{stage}" for stage in stages]

    def container(self, service_id: str) -> dict[str, Any]:
        return json.loads(docker("inspect", f"mlpacker-{service_id}").stdout)[0]

    def record(self) -> dict[str, Any]:
        return json.loads((self.state_dir / f"{self.name}.json").read_text())

    def credentials(self) -> dict[str, Any]:
        credentials = record_credentials(self.state_dir, self.name)
        assert credentials, f"{self.name}: a default deploy is secure, its record names its credentials"
        return credentials

    def predictions(self, rows: list[list[float]]) -> list[Any]:
        """The pipeline's answer, asked as a user would with the record's credentials: HTTPS trusting only the
        pipeline CA with the bearer token, or MQTT (over TLS with the client credential on the managed
        broker)."""
        if self.mode == "rest":
            url = f"https://127.0.0.1:{self.base_port}/predict"
            return post_predict(url, rows, credentials=self.credentials())
        assert self.broker_port is not None
        topics = (f"mlpacker/{self.name}/in", f"mlpacker/{self.name}/out")
        return mqtt_roundtrip("127.0.0.1", self.broker_port, *topics, rows, credentials=self.credentials())


@pytest.fixture(scope="module")
def user_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The user's own Mosquitto; the containers reach it over the host network."""
    with user_mosquitto(tmp_path_factory.mktemp("user-broker")) as port:
        yield port


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The iris stages, plus a second classifier (same interface, other answers) for the update test."""
    folder = tmp_path_factory.mktemp("models")
    models = train_iris(folder)
    scaler, pca = joblib.load(models["scaler"]), joblib.load(models["pca"])
    features, labels = load_iris(return_X_y=True)
    updated = LogisticRegression(max_iter=500, C=0.01).fit(pca.transform(scaler.transform(features)), labels)
    models["classifier_v2"] = folder / "classifier-v2.joblib"
    joblib.dump(updated, models["classifier_v2"])
    return models


@pytest.fixture(scope="module")
def deployments(
    docker_engine: None,
    container_settings: dict[str, str],
    models: dict[str, Path],
    user_broker: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Deployment]]:
    if not port_is_free(MANAGED_BROKER_PORT):
        # Something else (often a system-wide Mosquitto) holds the port: on a developer's machine a skip; on
        # CI's fresh machine the port must be free, or the managed-broker tests would silently not run.
        skip_missing(
            f"free port {MANAGED_BROKER_PORT}",
            f"port {MANAGED_BROKER_PORT} is taken on this machine; the managed broker needs it",
        )
    workdir = tmp_path_factory.mktemp("local-containers")
    settings = {
        **container_settings,
        # the service whose first stage is `scale` (the atomic ones, and scale's own) is limited
        "mlpacker_container_limits": {"scale": {"cpus": "1.5", "memory": "512m"}},
    }
    settings_file = write_vars_file(workdir / "settings.yml", settings)
    suffix = uuid.uuid4().hex[:6]
    deployed: dict[str, Deployment] = {}
    try:
        for combination in COMBINATIONS:
            mode, layout = combination.split("-")
            name = f"t-c{mode[0]}{layout[0]}-{suffix}"
            base_port = free_port_block(3)
            spec = iris_spec(name, mode, layout, models, base_port)
            spec["mlpacker_pipeline"]["containers"] = True
            broker_port: int | None = None
            if combination == "stream-distributed":
                spec["mlpacker_broker"] = {"host": "127.0.0.1", "port": user_broker}
                broker_port = user_broker
            elif mode == "stream":
                broker_port = MANAGED_BROKER_PORT
            deployment = Deployment(
                combination,
                name,
                base_port,
                write_vars_file(workdir / f"{combination}.yml", spec),
                settings_file,
                broker_port,
                Path(container_settings["mlpacker_state_dir"]),
            )
            deployed[combination] = deployment
            first = deployment.play("deploy.yml")
            assert first.rc == 0, first.describe()
        yield deployed
    finally:
        for deployment in deployed.values():
            if deployment.removed:
                continue
            deployment.play("undeploy.yml")
            # nothing may survive a failed test either
            for kind in ("container", "image"):
                leftovers = labelled(kind, deployment.name)
                if leftovers:
                    docker(kind, "rm", "--force", *leftovers, check=False)


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_answers_like_the_in_process_pipeline(
    deployments: dict[str, Deployment], models: dict[str, Path], combination: str
) -> None:
    expected = in_process_predictions([models["scaler"], models["pca"], models["classifier"]], ROWS)
    assert deployments[combination].predictions(ROWS) == expected


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_each_service_is_a_non_root_container_with_health_check_restart_policy_and_engine_logs(
    deployments: dict[str, Deployment], combination: str
) -> None:
    deployment = deployments[combination]
    for service_id in deployment.service_ids():
        container = deployment.container(service_id)
        assert container["State"]["Running"], service_id
        assert container["Config"]["User"] == "10001:10001"
        assert docker("exec", f"mlpacker-{service_id}", "id", "-u").stdout.strip() == "10001"
        assert container["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        assert container["HostConfig"]["LogConfig"]["Type"] == "json-file"
        assert container["Config"]["Labels"]["mlpacker.pipeline"] == deployment.name
        assert container["Config"]["Labels"]["mlpacker.service"] == service_id
        assert container["Config"]["Healthcheck"]["Test"][0] == "CMD"
        logs = docker("logs", f"mlpacker-{service_id}")
        assert logs.stdout + logs.stderr, f"{service_id} logs nothing through the engine"
    # none of them is a supervisord program
    assert supervisor_pids([f"mlpacker-{sid}" for sid in deployment.service_ids()]) == {}


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_each_container_has_least_privilege_and_limits_by_default(
    deployments: dict[str, Deployment], combination: str
) -> None:
    deployment = deployments[combination]
    for service_id in deployment.service_ids():
        host_config = deployment.container(service_id)["HostConfig"]
        assert host_config["CapDrop"] == ["ALL"], service_id
        assert host_config["ReadonlyRootfs"] is True, service_id
        assert host_config["SecurityOpt"] == ["no-new-privileges"], service_id
        # mlpacker.core.service_container's defaults: 1024 processes, 2 CPUs (at most the host's), 2 GiB
        assert host_config["PidsLimit"] == 1024, service_id
        if deployment.layout == "atomic" or service_id.endswith("-scale"):
            # the settings' limits for services whose first stage is scale win over the defaults
            cpus, memory = 1.5, 512 * 1024**2
        else:
            cpus, memory = min(2, len(os.sched_getaffinity(0))), 2 * 1024**3
        assert host_config["NanoCpus"] == int(cpus * 1e9), service_id
        assert host_config["Memory"] == memory and host_config["MemorySwap"] == memory, service_id


def test_rest_atomic_container_is_bridged_with_its_port_published_and_limited(
    deployments: dict[str, Deployment],
) -> None:
    deployment = deployments["rest-atomic"]
    container = deployment.container(deployment.name)
    port = deployment.base_port
    assert container["HostConfig"]["NetworkMode"] == "bridge"
    # on the host's listen addresses only: the local inventory's address is loopback, so 127.0.0.1 alone
    assert container["HostConfig"]["PortBindings"] == {
        f"{port}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    }
    assert container["HostConfig"]["Memory"] == 512 * 1024 * 1024
    assert container["HostConfig"]["NanoCpus"] == 1_500_000_000
    # a host that runs only containers gets no service user's virtualenv and no supervisord program
    assert not (Path("/opt/mlpacker") / deployment.name / ".venvs").exists()


def test_services_with_a_loopback_next_hop_or_a_broker_use_the_host_network(
    deployments: dict[str, Deployment],
) -> None:
    rest = deployments["rest-distributed"]
    modes = [rest.container(sid)["HostConfig"]["NetworkMode"] for sid in rest.service_ids()]
    # scale and reduce call the next stage on 127.0.0.1; classify calls no one, so it is bridged
    assert modes == ["host", "host", "bridge"]
    for combination in ("stream-atomic", "stream-distributed"):
        stream = deployments[combination]
        for service_id in stream.service_ids():
            assert stream.container(service_id)["HostConfig"]["NetworkMode"] == "host", service_id


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_record_names_the_credentials_and_secure_entry_points(
    deployments: dict[str, Deployment], combination: str
) -> None:
    deployment = deployments[combination]
    record = deployment.record()
    credentials = deployment.credentials()
    for key in ("ca_file", "token_file"):
        assert Path(credentials[key]).is_file() and Path(credentials[key]).stat().st_mode & 0o077 == 0, key
    if deployment.mode == "rest":
        assert record["entry_points"]["rest"] == [f"https://127.0.0.1:{deployment.base_port}/predict"]
        assert record["client_commands"] and record["client_commands"][0].startswith("curl "), record
    elif combination == "stream-atomic":
        # the managed broker: TLS on 8883, the client's own MQTT user
        assert (record["broker"]["host"], record["broker"]["port"]) == ("127.0.0.1", MANAGED_BROKER_PORT)
        assert credentials["mqtt"]["username"] == f"mlp-{deployment.name}-client", credentials
        assert Path(credentials["mqtt"]["password_file"]).is_file(), credentials
    else:
        # the user's own (anonymous) Mosquitto: no MQTT credential of MLPacker's
        assert record["broker"]["port"] == deployment.broker_port and credentials["mqtt"] is None, record


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_engine_health_check_finds_each_container_healthy(
    deployments: dict[str, Deployment], combination: str
) -> None:
    """The image's HEALTHCHECK reaches the ready endpoint of the secured service (HTTPS): the engine reports
    each container healthy, not unhealthy."""
    deployment = deployments[combination]
    for service_id in deployment.service_ids():
        wait_for(
            lambda sid=service_id: deployment.container(sid)["State"]["Health"]["Status"] != "starting",
            180,
            f"the engine's first health verdict on {service_id}",
            interval=2,
        )
        health = deployment.container(service_id)["State"]["Health"]
        assert health["Status"] == "healthy", (service_id, health["Log"][-3:])


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_images_hold_no_secret_and_the_secrets_are_mounted_read_only(
    deployments: dict[str, Deployment], credentials_dir: Path, combination: str
) -> None:
    deployment = deployments[combination]
    secrets = pipeline_secrets(credentials_dir, deployment.name)
    for service_id in deployment.service_ids():
        config = assert_container_keeps_its_secrets_out_of_the_image(
            local_shell, f"mlpacker-{service_id}", secrets
        )
        broker = (config.get("stream") or {}).get("broker") or {}
        if combination == "stream-atomic":
            # the service's own MQTT user on the managed broker, its password read from the mounted folder
            assert broker["username"] == f"mlp-{deployment.name}-{service_id}", broker
            assert broker["password_file"].startswith(release_folder(deployment, service_id)), broker


def release_folder(deployment: Deployment, service_id: str) -> str:
    return release_of(deployment.container(service_id))


def test_containers_listen_and_are_published_on_the_hosts_listen_addresses_only(
    deployments: dict[str, Deployment],
) -> None:
    """Bridged containers are published on the host's listen addresses (the local inventory's is loopback),
    not 0.0.0.0; host-network ones bind them: every service port listens on 127.0.0.1 alone."""
    bridged = 0
    for deployment in deployments.values():
        for service in deployment.record()["services"]:
            container = deployment.container(service["id"])
            if container["HostConfig"]["NetworkMode"] == "bridge":
                bridged += 1
                bindings = container["HostConfig"]["PortBindings"]
                published = [binding["HostIp"] for ports in bindings.values() for binding in ports]
                assert published == ["127.0.0.1"], (service["id"], bindings)
            assert listen_addresses(local_shell, service["port"]) == {"127.0.0.1"}, service["id"]
    assert bridged == 2, "rest-atomic's container and rest-distributed's classify are bridged"


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_container_endpoints_refuse_requests_without_the_token(
    deployments: dict[str, Deployment], models: dict[str, Path], combination: str
) -> None:
    """Every REST service container answers 401 without the token (with a wrong one too) and 200 with it;
    a stream container's health server does the same for /metrics and keeps /health/ready open."""
    deployment = deployments[combination]
    credentials = deployment.credentials()
    for service in deployment.record()["services"]:
        if deployment.mode == "rest":
            assert service["url"].startswith(f"https://127.0.0.1:{service['port']}/"), service
            # the rows this service takes: the iris rows through the stages before its first one
            before = ["scale", "reduce", "classify"].index(service["stages"][0])
            rows = np.asarray(ROWS)
            for stage in ("scaler", "pca")[:before]:
                rows = joblib.load(models[stage]).transform(rows)
            assert_requires_the_token(service["url"], credentials, instances=rows.tolist())
        else:
            health = f"https://127.0.0.1:{service['port']}"
            assert_requires_the_token(f"{health}/metrics", credentials, method="GET")
            ready = requests.get(f"{health}/health/ready", verify=credentials["ca_file"], timeout=15)
            assert ready.status_code == 200, (health, ready.status_code, ready.text)


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_second_run_changes_nothing(
    deployments: dict[str, Deployment], models: dict[str, Path], combination: str
) -> None:
    deployment = deployments[combination]

    def state() -> dict[str, Any]:
        """Each container, its image, and its shipped credentials (names and digests)."""
        found = {}
        for sid in deployment.service_ids():
            container = deployment.container(sid)
            secrets_dir = release_folder(deployment, sid) + "/secrets"
            digests = local_shell(f"cd {secrets_dir} && sha256sum * && stat -c '%n %i %Y' *")
            assert digests.returncode == 0, digests.stderr
            found[sid] = (container["Id"], container["Image"], digests.stdout)
        return found

    before, record = state(), deployment.record()
    again = run_playbook("deploy.yml", LOCAL_INVENTORY, deployment.files)
    # the record first: its difference says more than a changed=1 of the task that wrote it
    assert deployment.record() == record
    assert again.rc == 0 and again.changed() == {"localhost": 0}, again.describe()
    assert state() == before
    # still answering, with the same credentials
    expected = in_process_predictions([models["scaler"], models["pca"], models["classifier"]], ROWS)
    assert deployment.predictions(ROWS) == expected


def test_check_mode_reports_a_limit_change_and_touches_nothing(
    deployments: dict[str, Deployment], tmp_path: Path
) -> None:
    deployment = deployments["rest-atomic"]
    before = deployment.container(deployment.name)["Id"]
    tighter = write_vars_file(
        tmp_path / "limits.yml", {"mlpacker_container_limits": {"scale": {"cpus": "1.5", "memory": "384m"}}}
    )
    checked = run_playbook("deploy.yml", LOCAL_INVENTORY, [*deployment.files, tighter], check=True)
    assert checked.rc == 0, checked.describe()
    assert checked.changed()["localhost"] > 0, checked.describe()
    after = deployment.container(deployment.name)
    assert after["Id"] == before
    assert after["HostConfig"]["Memory"] == 512 * 1024 * 1024


def test_container_that_cannot_become_healthy_keeps_the_old_one_serving(
    deployments: dict[str, Deployment], models: dict[str, Path], tmp_path: Path
) -> None:
    deployment = deployments["rest-atomic"]
    before = deployment.container(deployment.name)["Id"]
    # far too little memory to load scikit-learn: the canary never becomes ready
    starved = write_vars_file(
        tmp_path / "starved.yml", {"mlpacker_container_limits": {"scale": {"cpus": "1.5", "memory": "24m"}}}
    )
    broken = run_playbook("deploy.yml", LOCAL_INVENTORY, [*deployment.files, starved])
    assert broken.rc != 0, broken.describe()
    assert "keeps serving" in broken.output, broken.describe()
    assert deployment.container(deployment.name)["Id"] == before
    assert docker("inspect", f"mlpacker-{deployment.name}-canary", check=False).returncode != 0
    expected = in_process_predictions([models["scaler"], models["pca"], models["classifier"]], ROWS)
    assert deployment.predictions(ROWS) == expected


def test_artifact_update_replaces_only_that_stages_container(
    deployments: dict[str, Deployment], models: dict[str, Path], tmp_path: Path
) -> None:
    deployment = deployments["rest-distributed"]
    old = in_process_predictions([models["scaler"], models["pca"], models["classifier"]], ROWS)
    new = in_process_predictions([models["scaler"], models["pca"], models["classifier_v2"]], ROWS)
    assert new != old, "the update would not show in the answers"
    before = {sid: deployment.container(sid)["Id"] for sid in deployment.service_ids()}
    spec = iris_spec(deployment.name, "rest", "distributed", models, deployment.base_port)
    spec["mlpacker_pipeline"]["containers"] = True
    spec["mlpacker_pipeline"]["stages"][2]["artifact"] = str(models["classifier_v2"])
    updated = run_playbook(
        "deploy.yml", LOCAL_INVENTORY, [write_vars_file(tmp_path / "v2.yml", spec), deployment.settings_file]
    )
    assert updated.rc == 0, updated.describe()
    after = {sid: deployment.container(sid)["Id"] for sid in deployment.service_ids()}
    scale, reduce, classify = deployment.service_ids()
    assert after[scale] == before[scale] and after[reduce] == before[reduce]
    assert after[classify] != before[classify]
    assert deployment.predictions(ROWS) == new


def test_undeploy_removes_the_pipelines_containers_images_and_files_and_nothing_else(
    deployments: dict[str, Deployment], user_broker: int
) -> None:
    bystander = docker(
        "create",
        "--label",
        "mlpacker.pipeline=someone-else",
        "--name",
        f"bystander-{uuid.uuid4().hex[:6]}",
        BASE_IMAGE,
        "true",
    ).stdout.strip()
    try:
        for deployment in deployments.values():
            assert labelled("image", deployment.name), deployment.name
            removed = deployment.play("undeploy.yml")
            deployment.removed = removed.rc == 0
            assert removed.rc == 0, removed.describe()
        for deployment in deployments.values():
            for kind in ("container", "image", "volume"):
                assert labelled(kind, deployment.name) == [], (deployment.name, kind)
            assert pipeline_leftovers(deployment.name) == []
            assert processes_mentioning(f"/opt/mlpacker/{deployment.name}/") == []
            ports = range(deployment.base_port, deployment.base_port + 3)
            assert [port for port in ports if port_is_listening("127.0.0.1", port)] == [], deployment.name
        assert json.loads(docker("inspect", bystander).stdout)[0]["Id"] == bystander
        assert docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0
        assert port_is_listening("127.0.0.1", user_broker), "undeploy touched the user's broker"
        wait_for(
            lambda: not port_is_listening("127.0.0.1", MANAGED_BROKER_PORT), 20, "the managed broker to stop"
        )
    finally:
        docker("rm", "--force", bystander, check=False)
