"""The Python API over real SSH: a distributed pipeline on the test bed's edge/fog/cloud hosts.

Deploys iris (scale on edge1+edge2, reduce on fog1, classify on cloud1) with ``mlpacker deploy``, checks the
entry points it prints answer from the controller and that the services run under supervisord, deploys again
(changed=0 on every host), runs status (inventory given as a mapping), probe and undeploy through the Python
API, and checks that no file or process of the pipeline is left on any host. This is also the suite's REST
distributed deploy over SSH (the playbook under the CLI is the same); the other three combinations are in
``tests/deploy/test_testbed.py``. The module always undeploys at the end, also on failure.
"""

from __future__ import annotations

import secrets
import subprocess
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import mlpacker
from tests.api.conftest import (
    SAMPLE,
    expected_predictions,
    iris_pipeline,
    post,
    run_cli_command,
    unique_name,
    write_spec,
)
from tests.deploy.helpers import leftovers_on_testbed_host

pytestmark = [pytest.mark.slow, pytest.mark.testbed]
FLEET = ("edge1", "edge2", "fog1", "cloud1")


@pytest.fixture(scope="module")
def fleet_deployment(
    testbed, tmp_path_factory: pytest.TempPathFactory, iris_models: Path
) -> Iterator[dict[str, Any]]:
    """The pipeline deployed through the CLI (``mlpacker deploy``); undeployed at the end in any case."""
    work = tmp_path_factory.mktemp("testbed-deploy")
    # Ports live in each host's own network namespace; a random block keeps clear of other suites' services.
    port = 20000 + secrets.randbelow(20000)
    spec = write_spec(work / "pipeline.yml", iris_pipeline(unique_name("apifleet"), iris_models, mode="rest"))
    options: dict[str, Any] = {"state_dir": work / "state", "extravars": {"mlpacker_default_port": port}}
    deploy = run_cli_command(
        "deploy",
        str(spec),
        "-i",
        str(testbed.inventory_path),
        "--state-dir",
        str(options["state_dir"]),
        "-e",
        f"mlpacker_default_port={port}",
    )
    state = {"spec": spec, "port": port, "deploy": deploy, "options": options, "bed": testbed}
    try:
        yield state
    finally:
        if not state.get("undeployed"):
            mlpacker.undeploy(spec, testbed.inventory_path, **options)


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
    expected_urls = sorted(f"http://{bed.address(h)}:{port}/predict" for h in ("edge1", "edge2"))
    assert sorted(yaml.safe_load(deploy.stdout)["entry_points"]["rest"]) == expected_urls
    # Every entry point runs the whole chain over the fleet: edge -> fog -> cloud.
    want = expected_predictions(iris_models, SAMPLE)
    for url in expected_urls:
        assert post(url, SAMPLE) == want
    # The services run detached under supervisord on each host, not tied to the SSH session.
    for host in FLEET:
        assert bed.run(host, "pgrep -f '[s]upervisord -c' >/dev/null", check=False).returncode == 0, host


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


def test_undeploy_over_ssh(fleet_deployment: dict[str, Any]) -> None:
    bed = fleet_deployment["bed"]
    result = mlpacker.undeploy(fleet_deployment["spec"], bed.inventory_path, **fleet_deployment["options"])
    assert result.ok, [f.describe() for f in result.failures]
    fleet_deployment["undeployed"] = True  # the fixture need not undeploy again
    with pytest.raises(urllib.error.URLError):
        post(f"http://{bed.address('edge1')}:{fleet_deployment['port']}/predict", SAMPLE)
    name = yaml.safe_load(fleet_deployment["spec"].read_text())["mlpacker_pipeline"]["name"]
    for host in FLEET:
        assert leftovers_on_testbed_host(bed, host, name) == "", host
