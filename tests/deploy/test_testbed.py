"""Deploys over real SSH to the network-namespace test bed (edge1, edge2, fog1, cloud1, broker1): offline
hosts without systemd, so the supervisord path, the shipped wheelhouse and the offline venv are all real.

Three of the four combinations: REST atomic (group edge) and stream, atomic and distributed (edge -> fog ->
cloud). REST distributed over SSH is deployed through the CLI and the Python API in tests/api/test_testbed.py
(the same playbook), with its idempotence and leftovers checked there.
Stream atomic uses the managed Mosquitto (broker group moved to cloud1): secure by default, a TLS listener on
8883 with the ``_broker`` CA, no anonymous client and one MQTT user per service. Stream distributed uses the
test bed's own Mosquitto on broker1 (mlpacker_broker from the test bed's inventory), the user's own broker,
secured as one would be: TLS with the user's CA, a username and password, no anonymous client. Its CA and
password are shipped into each service's release, and the services reach it over TLS.
Every deploy is secure by default: the services listen on their host's inventory address and loopback only;
REST answers over HTTPS (pipeline CA) with the bearer token and 401 without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.helpers import (
    IRIS_SAMPLES,
    assert_managed_broker_confines_users,
    assert_rerun_changes_nothing,
    assert_user_broker_refuses_strangers,
    http_status_from_testbed_host,
    in_process_predictions,
    iris_spec,
    leftovers_on_testbed_host,
    listen_addresses_on_testbed_host,
    listeners_of_processes_on,
    load_marker_artifact,
    load_markers,
    managed_broker_inventory,
    mqtt_roundtrip,
    post_predict,
    read_first_line,
    record_credentials,
    run_playbook,
    write_vars_file,
)

pytestmark = [pytest.mark.slow, pytest.mark.testbed]
SERVICE_PORT = 8300  # each test bed host has its own network namespace: no clash with this machine
MANAGED_BROKER_PORT = 8883  # the managed broker's TLS listener (plain 1883 only with mlpacker_insecure)


def spec_for(mode: str, layout: str, models: dict[str, Path]) -> dict[str, Any]:
    return iris_spec(f"tb-{mode}-{layout[:4]}", mode, layout, models, SERVICE_PORT)


def assert_services_listen_on_their_address_and_loopback(bed: Any, record: dict[str, Any]) -> None:
    """Each service (REST port, or a stream service's health port) listens on its host's inventory address
    and 127.0.0.1, not on 0.0.0.0 (``ss`` on the host)."""
    for service in record["services"]:
        addresses = listen_addresses_on_testbed_host(bed, service["host"], service["port"])
        assert addresses == {bed.address(service["host"]), "127.0.0.1"}, (service["host"], addresses)


def assert_rest_entry_points_are_secured(bed: Any, record: dict[str, Any], expected: list[Any]) -> None:
    """Every entry point, by its inventory address, answers a client that trusts only the pipeline CA and
    sends the token; from another test-bed host, without the token, every service answers 401."""
    credentials = record["credentials"]
    assert credentials and credentials["ca_file"] and credentials["token_file"], credentials
    for host in ("edge1", "edge2"):
        url = f"https://{bed.address(host)}:{SERVICE_PORT}/predict"
        assert url in record["entry_points"]["rest"]
        assert post_predict(url, IRIS_SAMPLES, credentials=credentials) == expected
    token = read_first_line(credentials["token_file"])
    for service in record["services"]:
        code, headers = http_status_from_testbed_host(bed, "fog1", service["url"], credentials["ca_file"])
        assert code == 401 and "www-authenticate: bearer" in headers.lower(), (service["url"], code, headers)
        # The same request with the token from the same host is answered: the 401 is the token's doing.
        code, _ = http_status_from_testbed_host(
            bed, "fog1", service["url"], credentials["ca_file"], token=token
        )
        assert code == 200, (service["url"], code)


def assert_user_broker_files_shipped(bed: Any, record: dict[str, Any], user_broker: dict[str, Any]) -> None:
    """Each service's release holds the user's broker CA and password as files (``broker_ca.crt``,
    ``mqtt.password``: the controller's bytes, root:<pipeline user> 0640) and no client certificate (none was
    given); its config.json names them, with the user's name, and holds no password."""
    name = record["name"]
    ca_text = Path(user_broker["tls"]["ca_file"]).read_text()
    for service in record["services"]:
        host = service["host"]
        release = bed.run(host, f"readlink -f /opt/mlpacker/{name}/{service['id']}/current").stdout.strip()
        secrets = f"{release}/secrets"
        listing = bed.run(host, f"stat -c '%U:%G %a %n' {secrets}/*").stdout.splitlines()
        modes = {line.rsplit("/", 1)[1]: line.split()[:2] for line in listing}
        for shipped in ("broker_ca.crt", "mqtt.password"):
            assert modes.get(shipped) == [f"root:mlp-{name}", "640"], (host, service["id"], modes)
        assert not {"broker_client.crt", "broker_client.key"} & set(modes), (host, modes)
        assert bed.run(host, f"cat {secrets}/broker_ca.crt").stdout == ca_text, (host, service["id"])
        password = bed.run(host, f"head -n 1 {secrets}/mqtt.password").stdout.strip()
        assert password == str(user_broker["password"]), (host, service["id"])
        config_text = bed.run(host, f"cat {release}/config.json").stdout
        assert str(user_broker["password"]) not in config_text, (host, service["id"])
        broker = json.loads(config_text)["stream"]["broker"]
        assert (broker["host"], broker["port"]) == (user_broker["host"], user_broker["port"]), broker
        assert broker["username"] == user_broker["username"] and broker["password"] is None, broker
        assert broker["password_file"] == f"{secrets}/mqtt.password", broker
        assert broker["tls"]["enabled"] is True and broker["tls"]["ca_file"] == f"{secrets}/broker_ca.crt", (
            broker
        )


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
    marker_dir = f"/var/log/mlpacker/{name}"
    if mode == "rest":
        # The classifier as a pickle that runs code when loaded (it writes who loaded it into the pipeline's
        # log folder, then returns the classifier): on the hosts it must never run as root.
        spec["mlpacker_pipeline"]["stages"][2]["artifact"] = str(
            load_marker_artifact(
                iris_models["classifier"],
                iris_models["classifier"].parent / f"{name}-marker.joblib",
                marker_dir,
            )
        )
    inventory = Path(testbed.inventory_path)
    managed_broker = mode == "stream" and layout == "atomic"
    if managed_broker:
        inventory = managed_broker_inventory(testbed, deploy_root / "testbed-managed-broker.yml")
    credentials_dir = deploy_root / f"credentials-{name}"
    controller = dict(controller_dirs, mlpacker_credentials_dir=str(credentials_dir))
    files = [
        write_vars_file(deploy_root / f"{name}.yml", spec),
        write_vars_file(deploy_root / f"ctl-{name}.yml", controller),
    ]
    hosts = ["edge1", "edge2"] if layout == "atomic" else ["edge1", "edge2", "fog1", "cloud1"]
    expected = in_process_predictions(
        [iris_models["scaler"], iris_models["pca"], iris_models["classifier"]], IRIS_SAMPLES
    )
    try:
        first = run_playbook("deploy.yml", inventory, files)
        assert first.rc == 0, first.describe()
        assert set(first.recap) >= set(hosts), first.describe()
        record = json.loads((Path(controller["mlpacker_state_dir"]) / f"{name}.json").read_text())
        credentials = record_credentials(controller["mlpacker_state_dir"], name)
        assert credentials is not None, "a default deploy is secure: the record names its credentials"
        if mode == "rest":
            # Every host of the first stage's group is an entry point.
            assert_rest_entry_points_are_secured(testbed, record, expected)
            for host in hosts:
                uid = int(testbed.run(host, f"id -u mlp-{name}").stdout)
                listing = testbed.run(host, f"for f in {marker_dir}/load-*; do cat $f; echo; done").stdout
                markers = load_markers(listing)
                assert uid != 0 and markers, (host, listing)
                loaded_as = {(marker["uid"], marker["euid"]) for marker in markers}
                assert loaded_as == {(uid, uid)}, (host, markers)
                # mlpacker-runtime check, then the canary and the service.
                assert any("check" in marker["argv"] for marker in markers), (host, markers)
                assert any("check" not in marker["argv"] for marker in markers), (host, markers)
        elif managed_broker:
            broker = testbed.address("cloud1")
            assert record["broker"]["host"] == broker and record["broker"]["port"] == MANAGED_BROKER_PORT
            assert f"publish to mlpacker/{name}/in on {broker}:{MANAGED_BROKER_PORT}" in first.output
            answer = mqtt_roundtrip(
                broker,
                MANAGED_BROKER_PORT,
                f"mlpacker/{name}/in",
                f"mlpacker/{name}/out",
                IRIS_SAMPLES,
                credentials=credentials,
            )
            assert answer == expected
            config = testbed.run("cloud1", "cat /etc/mlpacker/mosquitto/mosquitto.conf").stdout
            for line in (
                f"listener {MANAGED_BROKER_PORT} {broker}",
                f"listener {MANAGED_BROKER_PORT} 127.0.0.1",
                "allow_anonymous false",
            ):
                assert line in config, config
            assert "listener 1883" not in config and "0.0.0.0" not in config, config
            # The broker listens on cloud1's address and loopback, on 8883 only.
            sockets = testbed.run("cloud1", "ss -ltnpH").stdout
            assert listeners_of_processes_on(sockets, MANAGED_BROKER_PORT) == {
                (broker, MANAGED_BROKER_PORT),
                ("127.0.0.1", MANAGED_BROKER_PORT),
            }, sockets
            assert_managed_broker_confines_users(
                broker, MANAGED_BROKER_PORT, record, credentials_dir, IRIS_SAMPLES, expected
            )
        else:
            # The user's broker (the test bed's Mosquitto on broker1, given in the inventory with its TLS CA,
            # username and password): the record has no MQTT credential of MLPacker's.
            assert credentials["mqtt"] is None, credentials
            user_broker = testbed.broker_settings()
            assert user_broker["host"] == testbed.address("broker1") and user_broker["tls"]["ca_file"]
            assert (record["broker"]["host"], record["broker"]["port"]) == (
                user_broker["host"],
                user_broker["port"],
            ), record["broker"]
            assert_user_broker_files_shipped(testbed, record, user_broker)
            # The consumers got in (the pipeline answers over TLS); strangers do not.
            answer = mqtt_roundtrip(
                user_broker["host"],
                user_broker["port"],
                f"mlpacker/{name}/in",
                f"mlpacker/{name}/out",
                IRIS_SAMPLES,
                user_broker=user_broker,
            )
            assert answer == expected
            assert_user_broker_refuses_strangers(user_broker)
        assert_services_listen_on_their_address_and_loopback(testbed, record)
        # The services run detached under supervisord on each host, not tied to the SSH session.
        for host in hosts:
            assert testbed.run(host, "pgrep -f '[s]upervisord -c' >/dev/null", check=False).returncode == 0, (
                host
            )

        if managed_broker:
            # Idempotence over SSH with the managed broker; REST distributed's is checked on every host in
            # tests/api/test_testbed.py, the other two save the time.
            assert_rerun_changes_nothing(inventory, files)
    finally:
        removed = run_playbook("undeploy.yml", inventory, files)
    assert removed.rc == 0, removed.describe()
    for host in hosts:
        assert leftovers_on_testbed_host(testbed, host, name) == "", host
    if managed_broker:
        assert testbed.run("cloud1", "test -e /etc/mlpacker/mosquitto", check=False).returncode != 0
