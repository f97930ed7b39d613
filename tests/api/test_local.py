"""The Python API and the CLI against real runs on this machine (``inventories/local``).

One atomic REST pipeline (scale -> reduce -> classify in one service on the `cloud` group, localhost here) is
deployed once for the module with :func:`mlpacker.deploy`, then deployed again (changed=0), inspected, probed
(through the API and the CLI) and undeployed, leaving no file, process or port on the host; the controller's
credentials stay until an undeploy with ``mlpacker_purge_credentials``. It is also the suite's atomic
REST deploy on the local inventory (the playbook under the API is the same). A real gunicorn service under
supervisord answers real HTTPS requests (secure by default: the pipeline CA and the bearer token of the
result's ``credentials``); the module always undeploys at the end. The distributed layout through the API runs
over SSH in ``tests/api/test_testbed.py``.
"""

from __future__ import annotations

import json
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import mlpacker
from mlpacker.events import ProgressEvent
from tests.api.conftest import (
    LOCAL_INVENTORY,
    SAMPLE,
    expected_predictions,
    free_port_block,
    iris_pipeline,
    post,
    unique_name,
    write_spec,
)
from tests.deploy.helpers import pipeline_leftovers, processes_mentioning, supervisor_pids

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, iris_models: Path) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("local-deploy")
    port = free_port_block(4)
    spec = write_spec(
        work / "pipeline.yml", iris_pipeline(unique_name("apilocal"), iris_models, layout="atomic")
    )
    # The controller's credentials in the test's own folder (not the user's ~/.mlpacker/credentials).
    extravars = {"mlpacker_default_port": port, "mlpacker_credentials_dir": str(work / "credentials")}
    options: dict[str, Any] = {"state_dir": work / "state", "extravars": extravars}
    progress: list[ProgressEvent] = []
    result = mlpacker.deploy(spec, LOCAL_INVENTORY, progress=progress.append, **options)
    state = {
        "spec": spec,
        "port": port,
        "result": result,
        "progress": progress,
        "options": options,
        "credentials_dir": work / "credentials",
    }
    try:
        yield state
    finally:
        # Always remove what the deploy started, also when a test (or the deploy) failed.
        if not state.get("undeployed"):
            mlpacker.undeploy(spec, LOCAL_INVENTORY, **options)


def test_deploy_result(deployment: dict[str, Any], iris_models: Path) -> None:
    result: mlpacker.RunResult = deployment["result"]
    assert result.ok, [f.describe() for f in result.failures]
    assert result.exit_code == 0 and result.failures == []
    entry = f"https://127.0.0.1:{deployment['port']}/predict"
    assert result.entry_points["rest"] == [entry]
    stats = result.hosts["localhost"]
    assert stats.failed == 0 and stats.unreachable == 0 and stats.changed > 0
    assert result.plan is not None and [s["id"] for s in result.plan["services"]] == [result.plan["name"]]
    assert result.plan["services"][0]["stages"] == ["scale", "reduce", "classify"]
    # The entry point runs the whole pipeline: scale -> reduce -> classify in one process.
    assert post(entry, SAMPLE, result.credentials) == expected_predictions(iris_models, SAMPLE)
    assert supervisor_pids([f"mlpacker-{result.plan['name']}"]), "the service runs under no supervisord"


def test_deploy_result_says_where_the_credentials_are(deployment: dict[str, Any]) -> None:
    result: mlpacker.RunResult = deployment["result"]
    name = result.plan["name"]
    folder = deployment["credentials_dir"] / name
    # Paths to the controller's files (docs/security.md), never their content.
    assert result.credentials == {
        "ca_file": str(folder / "ca.crt"),
        "token_file": str(folder / "token"),
        "mqtt": None,
    }
    token = (folder / "token").read_text().splitlines()[0].strip()
    assert len(token) >= 32
    published = json.dumps(result.stats_data)
    for secret in (token, (folder / "ca.key").read_text().strip().splitlines()[1]):
        assert secret not in published
    # One working curl line per entry point, reading the token from its file when it runs.
    entry = result.entry_points["rest"][0]
    [line] = result.client_commands
    assert line.startswith("curl ") and line.endswith(f" {entry}"), line
    assert f"--cacert {folder / 'ca.crt'}" in line
    assert f'-H "Authorization: Bearer $(head -n1 {folder / "token"})"' in line
    # The same lines are in the record on the controller.
    record = json.loads((deployment["options"]["state_dir"] / f"{name}.json").read_text())
    assert record["credentials"] == result.credentials
    assert record["client_commands"] == result.client_commands
    assert record["security"] == {"tls": True, "auth": True}


def test_entry_point_refuses_a_request_without_the_token(deployment: dict[str, Any]) -> None:
    credentials = deployment["result"].credentials
    entry = deployment["result"].entry_points["rest"][0]
    with pytest.raises(urllib.error.HTTPError) as refused:
        post(entry, SAMPLE, {"ca_file": credentials["ca_file"]})
    assert refused.value.code == 401
    assert refused.value.headers["WWW-Authenticate"] == 'Bearer realm="mlpacker"'


def test_second_deploy_changes_nothing(deployment: dict[str, Any]) -> None:
    again = mlpacker.deploy(deployment["spec"], LOCAL_INVENTORY, **deployment["options"])
    assert again.ok, [f.describe() for f in again.failures]
    assert {host: stats.changed for host, stats in again.hosts.items()} == {"localhost": 0}


def test_deploy_progress_events(deployment: dict[str, Any]) -> None:
    progress: list[ProgressEvent] = deployment["progress"]
    kinds = {p.kind for p in progress}
    assert {"play", "task", "ok", "changed"} <= kinds
    labels = [p.label for p in progress if p.kind == "task"]
    assert any("pipeline : Validate" in label for label in labels)  # role-prefixed labels
    assert all(p.host == "localhost" for p in progress if p.kind in {"ok", "changed"})
    assert not [p for p in progress if p.kind == "failed" and not p.ignored]


def test_status(deployment: dict[str, Any]) -> None:
    result = mlpacker.status(deployment["spec"], LOCAL_INVENTORY, **deployment["options"])
    assert result.ok, [f.describe() for f in result.failures]
    assert result.hosts["localhost"].failed == 0
    # status.yml publishes each host's services with set_stats (mlpacker_status: {host: [service, ...]}).
    services = result.service_status["localhost"]
    name = deployment["result"].plan["name"]
    assert [s["service"] for s in services] == [name]
    assert all(s["ready"] for s in services)
    # How to reach the pipeline, from the controller's record (paths only).
    assert result.stats_data["mlpacker_client_commands"] == deployment["result"].client_commands
    assert result.stats_data["mlpacker_credentials"] == deployment["result"].credentials


def test_probe(deployment: dict[str, Any], iris_models: Path) -> None:
    extravars = deployment["options"]["extravars"] | {"mlpacker_probe_instances": SAMPLE}
    options = deployment["options"] | {"extravars": extravars}
    result = mlpacker.probe(deployment["spec"], LOCAL_INVENTORY, **options)
    assert result.ok, [f.describe() for f in result.failures]
    probe = result.probe
    assert probe["mode"] == "rest" and probe["compared"] is True
    assert [r["url"] for r in probe["results"]] == [f"https://127.0.0.1:{deployment['port']}/predict"]
    assert probe["results"][0]["predictions"] == expected_predictions(iris_models, SAMPLE)


def test_cli_probe_shows_progress_and_results(deployment: dict[str, Any], run_cli) -> None:
    options = deployment["options"]
    proc = run_cli(
        "probe",
        str(deployment["spec"]),
        "-i",
        str(LOCAL_INVENTORY),
        "--state-dir",
        str(options["state_dir"]),
        "-e",
        f"mlpacker_default_port={deployment['port']}",
        "-e",
        f"mlpacker_credentials_dir={deployment['credentials_dir']}",
    )
    assert proc.returncode == 0, proc.stderr
    # Progress on stderr: the play, each task as it starts, the recap and the verdict.
    assert "PLAY Probe the pipeline's entry points" in proc.stderr
    assert "  - Probe every REST entry point" in proc.stderr
    assert "  localhost: ok=" in proc.stderr
    assert "probe: successful" in proc.stderr
    # Results on stdout, as YAML.
    published = yaml.safe_load(proc.stdout)["mlpacker_probe"]
    assert published["results"][0]["url"] == f"https://127.0.0.1:{deployment['port']}/predict"


def test_cli_status_prints_how_to_reach_the_pipeline(deployment: dict[str, Any], run_cli) -> None:
    options = deployment["options"]
    proc = run_cli(
        "status",
        str(deployment["spec"]),
        "-i",
        str(LOCAL_INVENTORY),
        "--state-dir",
        str(options["state_dir"]),
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed["mlpacker_client_commands"] == deployment["result"].client_commands
    assert printed["mlpacker_credentials"] == deployment["result"].credentials


def test_undeploy_stops_the_services(deployment: dict[str, Any]) -> None:
    result = mlpacker.undeploy(deployment["spec"], LOCAL_INVENTORY, **deployment["options"])
    assert result.ok, [f.describe() for f in result.failures]
    deployment["undeployed"] = True  # the fixture need not undeploy again
    with pytest.raises(urllib.error.URLError):
        post(f"https://127.0.0.1:{deployment['port']}/predict", SAMPLE, deployment["result"].credentials)
    name = deployment["result"].plan["name"]
    assert pipeline_leftovers(name) == []
    assert processes_mentioning(f"/opt/mlpacker/{name}/") == []
    # The controller keeps the pipeline's credentials (a redeploy keeps its CA and token) unless purged.
    folder = deployment["credentials_dir"] / name
    assert (folder / "ca.crt").is_file() and (folder / "token").is_file()


def test_undeploy_with_purge_removes_the_controller_credentials(deployment: dict[str, Any]) -> None:
    assert deployment.get("undeployed"), "the undeploy test did not run"
    name = deployment["result"].plan["name"]
    extravars = dict(deployment["options"]["extravars"], mlpacker_purge_credentials=True)
    options = dict(deployment["options"], extravars=extravars)
    result = mlpacker.undeploy(deployment["spec"], LOCAL_INVENTORY, **options)
    assert result.ok, [f.describe() for f in result.failures]
    # Nothing is left on the host: the one change is the controller's folder.
    assert result.hosts["localhost"].changed == 1, result.hosts["localhost"]
    assert not (deployment["credentials_dir"] / name).exists()
    assert deployment["credentials_dir"].is_dir()
