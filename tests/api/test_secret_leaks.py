"""Secrets never leak: a full secure deploy through ansible-runner at -vvv with --diff, then every job event,
every artifact of the run and the deployment record are searched for each secret the deploy made.

A stream pipeline on the managed broker, deployed over SSH to the test bed (the pipeline and the broker on
cloud1), carries every kind of secret there is: the bearer token, the TLS private keys (pipeline CA, the
host's server key, the client key, the broker's CA and listener key) and the MQTT passwords of each service
and of the client; at -vvv the run's output also holds every SSH command and transfer. The deploy must also
work: the pipeline answers through the broker with the client's credential over TLS.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlpacker
from tests.api.conftest import SAMPLE, expected_predictions, iris_pipeline, unique_name, write_spec
from tests.deploy.helpers import (
    leftovers_on_testbed_host,
    managed_broker_inventory,
    mqtt_roundtrip,
    record_credentials,
)

pytestmark = [pytest.mark.slow, pytest.mark.mqtt, pytest.mark.testbed]
MANAGED_BROKER_TLS_PORT = 8883
HOST = "cloud1"  # the atomic pipeline's group (cloud) and managed_broker_inventory's broker group
# In cloud1's own network namespace, clear of the other test-bed deploys' ports (8300, 8400, 8500-8502,
# 8600-8610, 20000-39999); the test-bed tests run one at a time.
SERVICE_PORT = 8700


def secrets_made(credentials_dir: Path) -> dict[str, str]:
    """Every secret value under the pipeline's and the brokers' credential folders: token lines, passwords,
    and for each private key its longest base64 line (a key's body never appears, whole or in part)."""
    found: dict[str, str] = {}
    for path in sorted(credentials_dir.rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text()
        if path.name == "token" or path.suffix == ".password":
            for line in text.splitlines():
                if line.strip():
                    found[f"{path.relative_to(credentials_dir)}:{line[:4]}..."] = line.strip()
        elif path.suffix == ".key":
            body = [line for line in text.splitlines() if line and not line.startswith("-----")]
            found[str(path.relative_to(credentials_dir))] = max(body, key=len)
    return found


@pytest.fixture(scope="module")
def leak_run(
    testbed: Any, tmp_path_factory: pytest.TempPathFactory, iris_models: Path
) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("leaks")
    inventory = managed_broker_inventory(testbed, work / "inventory.yml")
    name = unique_name("leaks")
    spec = write_spec(work / "pipeline.yml", iris_pipeline(name, iris_models, layout="atomic", mode="stream"))
    options: dict[str, Any] = {
        "state_dir": work / "state",
        "extravars": {
            "mlpacker_default_port": SERVICE_PORT,
            "mlpacker_credentials_dir": str(work / "credentials"),
        },
    }
    result = mlpacker.deploy(
        spec,
        inventory,
        private_data_dir=work / "runner",
        verbosity=3,
        envvars={"ANSIBLE_DIFF_ALWAYS": "True"},
        **options,
    )
    try:
        yield {"work": work, "name": name, "result": result, "state_dir": work / "state", "bed": testbed}
    finally:
        removed = mlpacker.undeploy(spec, inventory, **options)
    assert removed.ok, [failure.describe() for failure in removed.failures]
    assert leftovers_on_testbed_host(testbed, HOST, name) == ""
    assert testbed.run(HOST, "test -e /etc/mlpacker/mosquitto", check=False).returncode != 0


def test_secure_stream_deploy_answers_with_the_clients_credential(
    leak_run: dict[str, Any], iris_models: Path
) -> None:
    result = leak_run["result"]
    assert result.ok, [failure.describe() for failure in result.failures]
    credentials = record_credentials(leak_run["state_dir"], leak_run["name"])
    assert credentials["mqtt"]["username"] == f"mlp-{leak_run['name']}-client"
    name = leak_run["name"]
    broker = leak_run["bed"].address(HOST)
    answer = mqtt_roundtrip(
        broker, MANAGED_BROKER_TLS_PORT, f"mlpacker/{name}/in", f"mlpacker/{name}/out", SAMPLE,
        credentials=credentials,
    )  # fmt: skip
    assert answer == expected_predictions(iris_models, SAMPLE)


def test_no_secret_appears_in_events_artifacts_or_the_record(leak_run: dict[str, Any]) -> None:
    work: Path = leak_run["work"]
    made = secrets_made(work / "credentials")
    kinds = {key.split(":")[0].rsplit("/", 1)[-1] for key in made}
    # The deploy made every kind of secret this test is about.
    assert {"token", "ca.key", "client.key"} <= kinds, sorted(made)
    assert any(key.endswith(".password") or ".password:" in key for key in made), sorted(made)
    searched = [path for path in (work / "runner").rglob("*") if path.is_file()]
    searched += [path for path in leak_run["state_dir"].rglob("*") if path.is_file()]
    assert any(path.parent.name == "job_events" for path in searched), "no job events were recorded"
    hits = []
    for path in searched:
        text = path.read_text(errors="replace")
        hits += [f"{label} in {path.relative_to(work)}" for label, value in made.items() if value in text]
    assert hits == []
