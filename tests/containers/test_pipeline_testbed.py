"""All four combinations in Docker through the real playbooks/deploy.yml over SSH, every stage with
`containers: true`.

Distributed: edge1+edge2 (replicas: a shared subscription in stream mode, two entry points in REST mode),
fog1 and cloud1. Atomic: the whole pipeline in one container on edge1 and on edge2. Stream distributed
reaches the test bed's own Mosquitto on broker1 (the user's broker, given in the spec as a user gives
theirs: its listener that requires a client certificate, with the user's CA, client certificate and key
files, username and password; those files reach the containers only through the read-only secrets mount);
stream atomic the managed Mosquitto, which MLPacker runs on cloud1 (TLS on 8883 with the ``_broker`` CA,
one MQTT user per service). Each host has its own offline Docker engine and builds its image from the
shipped wheelhouse, except edge1 in the REST distributed run: its image is built on the controller and
shipped with save/load (mlpacker_container_build_on: controller, as a host variable).

Secure by default (docs/security.md): REST entry points are HTTPS by the hosts' inventory addresses with the
record's CA and token, every service answers 401 without the token; each container's credentials are in its
release's secrets folder on its host, mounted read-only, and in no layer of its image (nor of the image saved
on the controller); bridged containers are published on their host's address and loopback, not 0.0.0.0.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import requests
import yaml

from tests.containers.conftest import (
    BASE_IMAGE,
    assert_container_keeps_its_secrets_out_of_the_image,
    assert_requires_the_token,
    checked,
    found_in,
    image_layer_matches,
    labelled,
    listen_addresses,
    local_shell,
    output_matches,
    pipeline_secrets,
    release_of,
    shell_on,
)
from tests.deploy.helpers import (
    IRIS_SAMPLES,
    assert_rerun_changes_nothing,
    assert_user_broker_refuses_strangers,
    in_process_predictions,
    iris_spec,
    mqtt_roundtrip,
    post_predict,
    record_credentials,
    run_playbook,
    train_iris,
    write_vars_file,
)

# One test deploys a pipeline in containers over SSH, checks it, re-runs and undeploys it: 511 s on a loaded
# machine, close to pytest's 600 s per-test guard against hangs.
pytestmark = [pytest.mark.docker, pytest.mark.testbed, pytest.mark.slow, pytest.mark.timeout(1500)]

BASE_PORT = 8400  # each test bed host has its own network namespace
MANAGED_BROKER_PORT = 8883  # the managed broker's TLS listener (plain 1883 only with mlpacker_insecure)


def labelled_on(bed: Any, host: str, kind: str, name: str) -> list[str]:
    listing = {"container": "ps --all", "image": "image ls --all", "volume": "volume ls"}[kind]
    command = f"docker {listing} --quiet --filter label=mlpacker.pipeline={name}"
    return bed.run(host, command, check=True, timeout=60).stdout.split()


def inventory_with_controller_builds_for(bed: Any, folder: Path, host: str, images: Path) -> Path:
    """The test bed's inventory, with `host` set to get images built on the controller (host variables),
    saved in ``images``."""
    folder.mkdir()
    inventory = folder / "hosts.yml"
    shutil.copy(bed.inventory_path, inventory)
    (folder / "host_vars").mkdir()
    write_vars_file(
        folder / "host_vars" / f"{host}.yml",
        {
            "mlpacker_container_build_on": "controller",
            "mlpacker_service_container_controller_dir": str(images),
        },
    )
    return inventory


def managed_broker_inventory(bed: Any, path: Path) -> Path:
    """The test bed's inventory with the broker group on cloud1 and no mlpacker_broker: MLPacker installs
    and runs its own Mosquitto there."""
    inventory = yaml.safe_load(Path(bed.inventory_path).read_text())
    inventory["all"]["vars"].pop("mlpacker_broker", None)
    inventory["all"]["children"]["broker"] = {"hosts": {"cloud1": None}}
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def rows_for(stage: str, models: dict[str, Path]) -> list[list[float]]:
    """IRIS_SAMPLES as ``stage`` takes them: through the stages before it."""
    rows = np.asarray(IRIS_SAMPLES)
    for before in ("scaler", "pca")[: ["scale", "reduce", "classify"].index(stage)]:
        rows = joblib.load(models[before]).transform(rows)
    return rows.tolist()


def user_broker_secrets(user_broker: dict[str, Any]) -> dict[str, str]:
    """The secrets of the user's broker settings, by a name that does not reveal them: the password and the
    body lines of the client key but its first (see pipeline_secrets)."""
    secrets = {"user broker password": str(user_broker["password"])}
    key = Path(user_broker["tls"]["key_file"]).read_text()
    body = [line for line in key.splitlines() if line and not line.startswith("-----")]
    secrets.update({f"user broker client key line {index}": line for index, line in enumerate(body) if index})
    assert len(secrets) > 1 and all(len(value) >= 16 for value in secrets.values()), "secrets too short"
    return secrets


def assert_user_broker_files_mounted(
    shell: Any, container: str, config: dict[str, Any], user_broker: dict[str, Any]
) -> None:
    """The container's config.json (from its image) names the user's broker CA, client certificate, client key
    and password as files of the secrets folder mounted read-only into it, with the user's name and no
    password; that folder on the host (the mount's source) holds the very bytes of the user's files. (That the
    container reads them shows in the pipeline's answer: the listener requires the client certificate, whose
    key is in no image.)"""
    secrets_dir = release_of(json.loads(checked(shell, f"docker inspect {container}"))[0]) + "/secrets"
    broker = config["stream"]["broker"]
    assert (broker["host"], broker["port"]) == (user_broker["host"], user_broker["port"]), broker
    assert broker["username"] == user_broker["username"] and broker["password"] is None, broker
    tls = user_broker["tls"]
    expected = {
        f"{secrets_dir}/broker_ca.crt": Path(tls["ca_file"]).read_bytes(),
        f"{secrets_dir}/broker_client.crt": Path(tls["cert_file"]).read_bytes(),
        f"{secrets_dir}/broker_client.key": Path(tls["key_file"]).read_bytes(),
        f"{secrets_dir}/mqtt.password": f"{user_broker['password']}\n".encode(),
    }
    named = [broker["tls"]["ca_file"], broker["tls"]["cert_file"], broker["tls"]["key_file"]]
    assert broker["tls"]["enabled"] is True and named + [broker["password_file"]] == list(expected), broker
    sums = checked(shell, f"sha256sum {' '.join(expected)}").splitlines()
    assert {line.split()[1]: line.split()[0] for line in sums} == {
        path: hashlib.sha256(content).hexdigest() for path, content in expected.items()
    }, (container, sums)


def assert_containers_secured(
    bed: Any,
    record: dict[str, Any],
    credentials_dir: Path,
    models: dict[str, Path],
    user_broker: dict[str, Any] | None = None,
) -> None:
    """On every host: the container's image holds no secret and its secrets folder is a read-only bind mount;
    a bridged container is published on its host's address and loopback only; every service listens there
    and nowhere else, and refuses requests without the token (REST: each service's /predict; stream: the
    health server's /metrics, /health/ready stays open). With ``user_broker`` (the user's own broker's
    settings), its password and client key are among the secrets no image may hold, and its files are in the
    mount."""
    credentials = record["credentials"]
    secrets = pipeline_secrets(credentials_dir, record["name"])
    if user_broker is not None:
        secrets.update(user_broker_secrets(user_broker))
    for service in record["services"]:
        host, port = service["host"], service["port"]
        shell = shell_on(bed, host)
        own = {bed.address(host), "127.0.0.1"}
        name = f"mlpacker-{service['id']}"
        config = assert_container_keeps_its_secrets_out_of_the_image(shell, name, secrets)
        if user_broker is not None:
            assert_user_broker_files_mounted(shell, name, config, user_broker)
        container = json.loads(checked(shell, f"docker inspect {name}"))[0]["HostConfig"]
        if container["NetworkMode"] != "host":
            published = {binding["HostIp"] for binding in container["PortBindings"][f"{port}/tcp"]}
            assert published == own, (host, container["PortBindings"])
        assert listen_addresses(shell, port) == own, (host, port)
        if record["mode"] == "rest":
            assert service["url"] == f"https://{bed.address(host)}:{port}/predict", service
            assert_requires_the_token(
                service["url"], credentials, instances=rows_for(service["stages"][0], models)
            )
        else:
            health = f"https://{bed.address(host)}:{port}"
            assert_requires_the_token(f"{health}/metrics", credentials, method="GET")
            ready = requests.get(f"{health}/health/ready", verify=credentials["ca_file"], timeout=15)
            assert ready.status_code == 200, (health, ready.status_code, ready.text)


def assert_controller_image_holds_no_secret(name: str, images: Path, secrets: dict[str, str]) -> None:
    """The image built on the controller, and the saved copy shipped from the controller's 0700 folder, hold
    no secret (its config.json is found in them: the search reads the layers)."""
    assert images.stat().st_mode & 0o777 == 0o700, oct(images.stat().st_mode)
    listed = checked(local_shell, f"docker image ls -q --no-trunc --filter label=mlpacker.pipeline={name}")
    (image,) = [
        image
        for image in sorted(set(listed.split()))
        if "mlpacker.service" in checked(local_shell, f"docker image inspect {image}")
    ]
    history = checked(local_shell, f"docker history --no-trunc --format '{{{{.CreatedBy}}}}' {image}")
    assert found_in(history + checked(local_shell, f"docker image inspect {image}"), secrets) == []
    control = {"config.json": '"token_file": '}
    for matches in (
        image_layer_matches(local_shell, image, {**control, **secrets}),
        *(
            output_matches(local_shell, f"cat {saved}", {**control, **secrets})
            for saved in images.rglob("*.tar")
        ),
    ):
        assert matches.pop("config.json") > 0, "the search found no config.json"
        assert [secret for secret, count in matches.items() if count] == [], (
            "a controller image holds a secret"
        )
    assert list(images.rglob("*.tar")), f"no saved image under {images}"


@pytest.mark.parametrize(
    ("mode", "layout"),
    [("stream", "distributed"), ("rest", "atomic"), ("stream", "atomic"), ("rest", "distributed")],
)
def test_pipeline_in_containers_over_ssh(
    testbed_docker: Any,
    container_settings: dict[str, str],
    credentials_dir: Path,
    tmp_path: Path,
    mode: str,
    layout: str,
) -> None:
    bed = testbed_docker
    iris_models = train_iris(tmp_path / "models")
    name = f"c{mode[0]}{layout[0]}-{uuid.uuid4().hex[:6]}"
    hosts = ("edge1", "edge2") if layout == "atomic" else ("edge1", "edge2", "fog1", "cloud1")
    spec = iris_spec(name, mode, layout, iris_models, BASE_PORT)
    spec["mlpacker_pipeline"]["containers"] = True
    # mlpacker_broker (in the inventory): the test bed's Mosquitto on broker1; stream distributed gives it in
    # the spec instead, on its listener that requires a client certificate; stream atomic: the managed one
    controller_built = mode == "rest" and layout == "distributed"
    managed_broker = mode == "stream" and layout == "atomic"
    user_broker = None
    if mode == "stream" and not managed_broker:
        user_broker = bed.broker_settings(client_certificate=True)
        spec["mlpacker_broker"] = user_broker
    files = [
        write_vars_file(tmp_path / "spec.yml", spec),
        write_vars_file(tmp_path / "settings.yml", container_settings),
    ]
    controller_images = tmp_path / "controller-images"
    if controller_built:
        inventory = inventory_with_controller_builds_for(
            bed, tmp_path / "inventory", "edge1", controller_images
        )
    elif managed_broker:
        inventory = managed_broker_inventory(bed, tmp_path / "managed-broker.yml")
    else:
        inventory = Path(bed.inventory_path)
    expected = in_process_predictions(
        [iris_models["scaler"], iris_models["pca"], iris_models["classifier"]], IRIS_SAMPLES
    )
    state_dir = Path(container_settings["mlpacker_state_dir"])
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
        record = json.loads((state_dir / f"{name}.json").read_text())
        entry_points = record["entry_points"]
        credentials = record_credentials(state_dir, name)
        assert credentials and credentials["ca_file"] and credentials["token_file"], credentials
        if mode == "stream":
            assert entry_points["stream"]["input_topic"] == f"mlpacker/{name}/in", entry_points
            if managed_broker:
                broker, port = bed.address("cloud1"), MANAGED_BROKER_PORT
                assert credentials["mqtt"]["username"] == f"mlp-{name}-client", credentials
            else:
                # the user's broker (TLS with a client certificate and a password): no MQTT credential of
                # MLPacker's; the consumers got in (the pipeline answers), strangers do not
                assert user_broker is not None
                broker, port = bed.address("broker1"), bed.broker_cert_port
                assert (user_broker["host"], user_broker["port"]) == (broker, port), user_broker
                assert credentials["mqtt"] is None, credentials
                assert_user_broker_refuses_strangers(user_broker)
            assert (record["broker"]["host"], record["broker"]["port"]) == (broker, port), record["broker"]
            answer = mqtt_roundtrip(
                broker,
                port,
                f"mlpacker/{name}/in",
                f"mlpacker/{name}/out",
                IRIS_SAMPLES,
                credentials=credentials,
                user_broker=user_broker,
            )
            assert answer == expected
        else:
            # the entry points: every host of the first stage's group (edge), in either layout, over HTTPS
            urls = [f"https://{bed.address(host)}:{BASE_PORT}/predict" for host in ("edge1", "edge2")]
            assert sorted(entry_points["rest"]) == sorted(urls), entry_points
            for url in urls:
                assert post_predict(url, IRIS_SAMPLES, credentials=credentials) == expected, url
        assert_containers_secured(bed, record, credentials_dir, iris_models, user_broker)
        if controller_built:
            assert_controller_image_holds_no_secret(
                name, controller_images, pipeline_secrets(credentials_dir, name)
            )

        containers = {host: labelled_on(bed, host, "container", name) for host in hosts}
        assert_rerun_changes_nothing(inventory, files)
        assert {host: labelled_on(bed, host, "container", name) for host in hosts} == containers
    finally:
        removed = run_playbook("undeploy.yml", inventory, files)
    assert removed.rc == 0, removed.describe()
    for host in hosts:
        for kind in ("container", "image", "volume"):
            assert labelled_on(bed, host, kind, name) == [], (host, kind)
        assert bed.run(host, f"docker image ls --quiet {BASE_IMAGE}", check=True).stdout.strip(), host
    # an image built on the controller is removed there too
    assert labelled("image", name) == []
    if managed_broker:
        assert bed.run("cloud1", "test -e /etc/mlpacker/mosquitto", check=False).returncode != 0
