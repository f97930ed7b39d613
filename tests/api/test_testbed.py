"""The Python API over real SSH: a distributed pipeline on the test bed's edge/fog/cloud hosts.

Deploys iris (scale on edge1+edge2, reduce on fog1, classify on cloud1) with ``mlpacker deploy``, checks the
entry points it prints answer from the controller and that the services run under supervisord, deploys again
(changed=0 on every host), runs status (inventory given as a mapping), probe and undeploy through the Python
API, and checks that no file or process of the pipeline is left on any host. This is also the suite's REST
distributed deploy over SSH (the playbook under the CLI is the same); the other three combinations are in
``tests/deploy/test_testbed.py``. The module always undeploys at the end, also on failure.

The deploy is secure by default (docs/security.md): the entry points are ``https://`` URLs of the inventory
addresses, answered for a client that trusts only the pipeline CA and sends the bearer token; another host
without the token gets 401 from every service; the services listen on their address and loopback only; a
next hop whose certificate comes from another CA is refused (502 naming the hop) until a redeploy restores it.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

import mlpacker
from tests.api.conftest import (
    SAMPLE,
    expected_predictions,
    iris_pipeline,
    run_cli_command,
    unique_name,
    write_spec,
)
from tests.deploy.helpers import (
    SUPERVISORCTL,
    http_status_from_testbed_host,
    leftovers_on_testbed_host,
    listen_addresses_on_testbed_host,
    post_predict,
    read_first_line,
    record_credentials,
    request_options,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.testbed]
FLEET = ("edge1", "edge2", "fog1", "cloud1")
OUTSIDER = "broker1"  # a test-bed host that runs none of the pipeline's services


@pytest.fixture(scope="module")
def fleet_deployment(
    testbed, tmp_path_factory: pytest.TempPathFactory, iris_models: Path
) -> Iterator[dict[str, Any]]:
    """The pipeline deployed through the CLI (``mlpacker deploy``); undeployed at the end in any case."""
    work = tmp_path_factory.mktemp("testbed-deploy")
    # Ports live in each host's own network namespace; a random block keeps clear of other suites' services.
    port = 20000 + secrets.randbelow(20000)
    name = unique_name("apifleet")
    spec = write_spec(work / "pipeline.yml", iris_pipeline(name, iris_models, mode="rest"))
    credentials_dir = work / "credentials"
    extravars = {"mlpacker_default_port": port, "mlpacker_credentials_dir": str(credentials_dir)}
    options: dict[str, Any] = {"state_dir": work / "state", "extravars": extravars}
    deploy = run_cli_command(
        "deploy",
        str(spec),
        "-i",
        str(testbed.inventory_path),
        "--state-dir",
        str(options["state_dir"]),
        "-e",
        f"mlpacker_default_port={port}",
        "-e",
        f"mlpacker_credentials_dir={credentials_dir}",
    )
    state = {
        "spec": spec,
        "name": name,
        "port": port,
        "deploy": deploy,
        "options": options,
        "bed": testbed,
        "work": work,
        "credentials_dir": credentials_dir,
    }
    try:
        yield state
    finally:
        if not state.get("undeployed"):
            mlpacker.undeploy(spec, testbed.inventory_path, **options)


def deployment_record(fleet: dict[str, Any]) -> dict[str, Any]:
    return json.loads((fleet["options"]["state_dir"] / f"{fleet['name']}.json").read_text())


def credentials_of(fleet: dict[str, Any]) -> dict[str, Any]:
    credentials = record_credentials(fleet["options"]["state_dir"], fleet["name"])
    assert credentials and credentials["ca_file"] and credentials["token_file"], credentials
    return credentials


def service_on(record: dict[str, Any], host: str) -> dict[str, Any]:
    return next(service for service in record["services"] if service["host"] == host)


def test_cli_deploy_over_ssh(fleet_deployment: dict[str, Any], iris_models: Path) -> None:
    deploy: subprocess.CompletedProcess[str] = fleet_deployment["deploy"]
    bed = fleet_deployment["bed"]
    assert deploy.returncode == 0, deploy.stderr
    # Progress on stderr with the recap of every host; entry points last, on stdout.
    assert "  - pipeline : Validate" in deploy.stderr
    for host in FLEET:
        assert f"  {host}: ok=" in deploy.stderr and f"  {host}: ok=0" not in deploy.stderr
    assert "deploy: successful" in deploy.stderr
    port = fleet_deployment["port"]
    expected_urls = sorted(f"https://{bed.address(h)}:{port}/predict" for h in ("edge1", "edge2"))
    printed = yaml.safe_load(deploy.stdout)
    assert sorted(printed["entry_points"]["rest"]) == expected_urls
    # Where the credentials are (paths on the controller, as in the record) and a curl line per entry point.
    credentials = credentials_of(fleet_deployment)
    assert printed["credentials"] == credentials
    assert Path(credentials["ca_file"]).is_relative_to(fleet_deployment["credentials_dir"])
    assert len(printed["try"]) == 2 and all(line.startswith("curl ") for line in printed["try"])
    # Every entry point runs the whole chain over the fleet: edge -> fog -> cloud.
    want = expected_predictions(iris_models, SAMPLE)
    for url in expected_urls:
        assert post_predict(url, SAMPLE, credentials=credentials) == want
    # The services run detached under supervisord on each host, not tied to the SSH session.
    for host in FLEET:
        assert bed.run(host, "pgrep -f '[s]upervisord -c' >/dev/null", check=False).returncode == 0, host


def test_a_client_trusting_only_the_pipeline_ca_reaches_every_entry_point(
    fleet_deployment: dict[str, Any], iris_models: Path
) -> None:
    bed = fleet_deployment["bed"]
    credentials = credentials_of(fleet_deployment)
    want = expected_predictions(iris_models, SAMPLE)
    token = {"Authorization": "Bearer " + read_first_line(credentials["token_file"])}
    for host in ("edge1", "edge2"):
        url = f"https://{bed.address(host)}:{fleet_deployment['port']}/predict"
        # requests' verify=<file>: that CA and no other (not the system's store), the inventory address
        # checked against the certificate's SANs.
        answer = requests.post(url, json={"instances": SAMPLE}, verify=credentials["ca_file"], headers=token)
        assert answer.status_code == 200 and answer.json()["predictions"] == want, answer.text
        # The system's trust store alone does not know the pipeline CA: the CA file is what lets it in.
        with pytest.raises(requests.exceptions.SSLError):
            requests.post(url, json={"instances": SAMPLE}, headers=token, timeout=15)


def test_another_host_without_the_token_gets_401_from_every_service(fleet_deployment: dict[str, Any]) -> None:
    bed = fleet_deployment["bed"]
    credentials = credentials_of(fleet_deployment)
    token = read_first_line(credentials["token_file"])
    ca_file = credentials["ca_file"]
    record = deployment_record(fleet_deployment)
    assert {service["host"] for service in record["services"]} == set(FLEET)
    for service in record["services"]:
        url = service["url"]
        assert url == f"https://{bed.address(service['host'])}:{service['port']}/predict"
        info = url.replace("/predict", "/info")
        for target, method in ((url, "POST"), (info, "GET")):
            code, headers = http_status_from_testbed_host(bed, OUTSIDER, target, ca_file, method=method)
            assert code == 401 and "www-authenticate: bearer" in headers.lower(), (target, code, headers)
            code, _ = http_status_from_testbed_host(
                bed, OUTSIDER, target, ca_file, method=method, token="wrong"
            )
            assert code == 401, (target, code)
        # From the same host: the health probe needs no token, and the right token is let in.
        ready = url.replace("/predict", "/health/ready")
        code, _ = http_status_from_testbed_host(bed, OUTSIDER, ready, ca_file, method="GET")
        assert code == 200, (ready, code)
        code, _ = http_status_from_testbed_host(bed, OUTSIDER, info, ca_file, method="GET", token=token)
        assert code == 200, (info, code)


def test_services_listen_on_their_address_and_loopback_only(fleet_deployment: dict[str, Any]) -> None:
    bed = fleet_deployment["bed"]
    for service in deployment_record(fleet_deployment)["services"]:
        addresses = listen_addresses_on_testbed_host(bed, service["host"], service["port"])
        assert addresses == {bed.address(service["host"]), "127.0.0.1"}, (service["host"], addresses)


def test_second_deploy_changes_nothing_on_any_host(fleet_deployment: dict[str, Any]) -> None:
    bed = fleet_deployment["bed"]
    again = mlpacker.deploy(fleet_deployment["spec"], bed.inventory_path, **fleet_deployment["options"])
    assert again.ok, [f.describe() for f in again.failures]
    changed = {host: stats.changed for host, stats in again.hosts.items()}
    assert set(changed) >= set(FLEET) and set(changed.values()) == {0}, changed


def test_status_with_inventory_mapping(fleet_deployment: dict[str, Any]) -> None:
    from tests.testbed.testbed import inventory_data

    bed = fleet_deployment["bed"]
    result = mlpacker.status(fleet_deployment["spec"], inventory_data(bed), **fleet_deployment["options"])
    assert result.ok, [f.describe() for f in result.failures]
    assert {"edge1", "edge2", "fog1", "cloud1"} <= set(result.hosts)
    published = result.service_status
    for host, stage in (("edge1", "scale"), ("edge2", "scale"), ("fog1", "reduce"), ("cloud1", "classify")):
        assert [s["stages"] for s in published[host]] == [[stage]], host
        assert all(s["ready"] for s in published[host]), host


def test_probe_over_the_fleet(fleet_deployment: dict[str, Any], iris_models: Path) -> None:
    options = fleet_deployment["options"]
    options = options | {"extravars": options["extravars"] | {"mlpacker_probe_instances": SAMPLE}}
    result = mlpacker.probe(fleet_deployment["spec"], fleet_deployment["bed"].inventory_path, **options)
    assert result.ok, [f.describe() for f in result.failures]
    want = expected_predictions(iris_models, SAMPLE)
    assert len(result.probe["results"]) == 2
    assert all(r["predictions"] == want for r in result.probe["results"])


def foreign_certificate(folder: Path, address: str, host: str) -> dict[str, Path]:
    """A CA that is not the pipeline's and a server certificate of it for ``host`` with the same SANs the
    pipeline's would have (the address, the name, localhost, 127.0.0.1): only the issuer is wrong."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in ("ca.crt", "ca.key", "server.csr", "server.crt", "server.key")}
    extensions = folder / "server.ext"
    extensions.write_text(
        f"subjectAltName = IP:{address}, DNS:{host}, DNS:localhost, IP:127.0.0.1\n"
        "extendedKeyUsage = serverAuth\nkeyUsage = digitalSignature\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for argv in (
        ["req", "-x509", *ec, "-keyout", paths["ca.key"], "-out", paths["ca.crt"], "-days", "2"]
        + ["-subj", "/CN=not the pipeline CA"],
        ["req", *ec, "-keyout", paths["server.key"], "-out", paths["server.csr"], "-subj", f"/CN={host}"],
        ["x509", "-req", "-in", paths["server.csr"], "-CA", paths["ca.crt"], "-CAkey", paths["ca.key"]]
        + ["-CAcreateserial", "-out", paths["server.crt"], "-days", "2", "-extfile", extensions],
    ):
        subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True, text=True)
    return paths


def serves_a_certificate_of(url: str, ca_file: Path | str) -> bool:
    """The service at ``url`` answers its readiness probe over TLS verified against ``ca_file``."""
    try:
        return requests.get(url.replace("/predict", "/health/ready"), verify=str(ca_file), timeout=5).ok
    except requests.RequestException:
        return False


def test_a_hop_with_a_wrong_certificate_is_refused(fleet_deployment: dict[str, Any]) -> None:
    """fog1's service (the hop after edge1's) gets a server certificate of another CA: edge1 answers 502
    naming that hop and the certificate check."""
    bed = fleet_deployment["bed"]
    credentials = credentials_of(fleet_deployment)
    fog = service_on(deployment_record(fleet_deployment), "fog1")
    entry = f"https://{bed.address('edge1')}:{fleet_deployment['port']}/predict"
    foreign = foreign_certificate(fleet_deployment["work"] / "foreign-ca", bed.address("fog1"), "fog1")
    secrets_dir = f"/opt/mlpacker/{fleet_deployment['name']}/{fog['id']}/current/secrets"
    # As root on fog1: the files keep their owner and mode (root:<pipeline user> 0640), only their content
    # changes.
    for name in ("server.crt", "server.key"):
        bed.run(
            "fog1",
            f"test -f {secrets_dir}/{name} && cat > {secrets_dir}/{name}",
            input=foreign[name].read_text(),
        )
    bed.run("fog1", f"{' '.join(SUPERVISORCTL)} restart mlpacker-{fog['id']}")
    fleet_deployment["foreign_ca"] = foreign["ca.crt"]
    wait_for(
        lambda: serves_a_certificate_of(fog["url"], foreign["ca.crt"]),
        60,
        "fog1's service to serve the foreign certificate",
    )
    refused = requests.post(entry, json={"instances": SAMPLE}, timeout=30, **request_options(credentials))
    assert refused.status_code == 502, refused.text
    error = refused.json()["error"]
    assert fog["url"] in error and "certificate verify failed" in error.lower(), error


def test_a_redeploy_restores_the_hops_certificate(
    fleet_deployment: dict[str, Any], iris_models: Path
) -> None:
    bed = fleet_deployment["bed"]
    credentials = credentials_of(fleet_deployment)
    foreign_ca = fleet_deployment.get("foreign_ca")
    assert foreign_ca is not None, "the wrong-certificate test did not run"
    fog = service_on(deployment_record(fleet_deployment), "fog1")
    again = mlpacker.deploy(fleet_deployment["spec"], bed.inventory_path, **fleet_deployment["options"])
    on_disk = bed.run(
        "fog1", f"cat /opt/mlpacker/{fleet_deployment['name']}/{fog['id']}/current/secrets/server.crt"
    ).stdout
    controller_copy = fleet_deployment["credentials_dir"] / fleet_deployment["name"] / "hosts" / "fog1.crt"
    assert again.ok, (
        [failure.describe() for failure in again.failures],
        f"fog1's server.crt restored on disk: {on_disk == controller_copy.read_text()}",
        f"fog1 still serves the foreign certificate: {serves_a_certificate_of(fog['url'], foreign_ca)}",
    )
    entry = f"https://{bed.address('edge1')}:{fleet_deployment['port']}/predict"
    assert post_predict(entry, SAMPLE, credentials=credentials) == expected_predictions(iris_models, SAMPLE)


def test_undeploy_over_ssh(fleet_deployment: dict[str, Any]) -> None:
    bed = fleet_deployment["bed"]
    credentials = credentials_of(fleet_deployment)
    result = mlpacker.undeploy(fleet_deployment["spec"], bed.inventory_path, **fleet_deployment["options"])
    assert result.ok, [f.describe() for f in result.failures]
    fleet_deployment["undeployed"] = True  # the fixture need not undeploy again
    url = f"https://{bed.address('edge1')}:{fleet_deployment['port']}/predict"
    with pytest.raises(requests.exceptions.ConnectionError) as refused:
        requests.post(url, json={"instances": SAMPLE}, timeout=15, **request_options(credentials))
    # Nothing listens any more: not a TLS failure (requests' SSLError is a ConnectionError too).
    assert not isinstance(refused.value, requests.exceptions.SSLError), refused.value
    for host in FLEET:
        assert leftovers_on_testbed_host(bed, host, fleet_deployment["name"]) == "", host
