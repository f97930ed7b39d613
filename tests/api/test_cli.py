"""The ``mlpacker`` CLI: messages and exit codes for a bad spec (2), an unreachable host (3), a failed
task (4).

Everything runs the real console script; the cases past the spec file check run the real deploy playbook on
this machine (``inventories/local``) or against an address nothing answers on, and fail before deploying.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.api.conftest import LOCAL_INVENTORY, iris_pipeline, unique_name, write_spec


def own_credentials(folder: Path) -> list[str]:
    """CLI arguments that keep a deploy's controller credentials in the test's folder (a deploy that fails
    after its credentials phase leaves them; they must not pile up in ~/.mlpacker/credentials)."""
    return ["-e", f"mlpacker_credentials_dir={folder / 'credentials'}"]


def test_help_documents_the_exit_codes(run_cli) -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    text = proc.stdout
    for command in ("deploy", "status", "probe", "undeploy"):
        assert command in text
    assert "exit codes:" in text
    assert "2  bad pipeline spec" in text
    assert "3  a host of the inventory could not be reached" in text
    assert "4  a task failed" in text


def test_spec_that_is_not_yaml(run_cli, tmp_path: Path) -> None:
    spec = tmp_path / "broken.yml"
    spec.write_text("mlpacker_pipeline:\n  name: iris\n stages: [\n")
    proc = run_cli("deploy", str(spec), "-i", str(LOCAL_INVENTORY))
    assert proc.returncode == 2
    assert str(spec) in proc.stderr and "not valid YAML" in proc.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("name: iris\nmode: rest\n", "missing the top-level 'mlpacker_pipeline' mapping"),
        ("mlpacker_pipeline: [scale, classify]\n", "'mlpacker_pipeline' must be a mapping, it is a list"),
        ("", "it is empty"),
    ],
)
def test_spec_without_a_pipeline_mapping(run_cli, tmp_path: Path, content: str, expected: str) -> None:
    spec = tmp_path / "pipeline.yml"
    spec.write_text(content)
    proc = run_cli("deploy", str(spec), "-i", str(LOCAL_INVENTORY))
    assert proc.returncode == 2
    assert f"{spec}: " in proc.stderr and expected in proc.stderr


def test_missing_spec_file(run_cli, tmp_path: Path) -> None:
    proc = run_cli("status", str(tmp_path / "nope.yml"), "-i", str(LOCAL_INVENTORY))
    assert proc.returncode == 2
    assert "nope.yml: pipeline spec file not found" in proc.stderr


@pytest.mark.slow
def test_wrong_mode_is_rejected_by_the_validation_task(run_cli, tmp_path: Path, iris_models: Path) -> None:
    pipeline = iris_pipeline(unique_name("apimode"), iris_models) | {"mode": "batch"}
    spec = write_spec(tmp_path / "pipeline.yml", pipeline)
    proc = run_cli(
        "deploy",
        str(spec),
        "-i",
        str(LOCAL_INVENTORY),
        "--state-dir",
        str(tmp_path / "state"),
        *own_credentials(tmp_path),
    )
    assert proc.returncode == 2, proc.stderr
    assert "bad pipeline spec" in proc.stderr
    assert "mlpacker_pipeline.mode: 'batch' is not one of rest, stream" in proc.stderr
    assert proc.stdout == ""  # nothing deployed, no entry points


@pytest.mark.slow
def test_unreachable_host(run_cli, tmp_path: Path, iris_models: Path) -> None:
    # A host at an address where nothing answers: 127.0.0.1 port 1 refuses every connection.
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "children": {
                        "cloud": {
                            "hosts": {
                                "ghost": {
                                    "ansible_host": "127.0.0.1",
                                    "ansible_port": 1,
                                    "ansible_user": "root",
                                }
                            }
                        }
                    }
                }
            }
        )
    )
    spec = write_spec(
        tmp_path / "pipeline.yml", iris_pipeline(unique_name("apighost"), iris_models, layout="atomic")
    )
    proc = run_cli(
        "deploy",
        str(spec),
        "-i",
        str(inventory),
        "--state-dir",
        str(tmp_path / "state"),
        *own_credentials(tmp_path),
        "-e",
        "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o ConnectTimeout=5'",
        "--json",
    )
    assert proc.returncode == 3, proc.stderr
    assert "UNREACHABLE ghost" in proc.stderr
    assert "a host could not be reached" in proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "unreachable" and result["exit_code"] == 3
    assert result["hosts"]["ghost"]["unreachable"] == 1
    assert [f["host"] for f in result["failures"] if f["unreachable"]] == ["ghost"]
    # Nothing was deployed: no credentials and no client line to show.
    assert result["entry_points"] is None
    assert result["credentials"] is None and result["client_commands"] == []


@pytest.mark.slow
def test_corrupt_artifact_fails_the_stage(run_cli, tmp_path: Path, iris_models: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(iris_models, models)
    (models / "classifier.joblib").write_bytes(b"this is not a joblib file\n")
    name = unique_name("apicorrupt")
    spec = write_spec(tmp_path / "pipeline.yml", iris_pipeline(name, models, layout="atomic"))
    proc = run_cli(
        "deploy",
        str(spec),
        "-i",
        str(LOCAL_INVENTORY),
        "--state-dir",
        str(tmp_path / "state"),
        *own_credentials(tmp_path),
    )
    assert proc.returncode == 4, proc.stderr
    assert "deploy: failed" in proc.stderr
    assert "host localhost" in proc.stderr
    assert str(models / "classifier.joblib") in proc.stderr  # the message names the broken artifact
    assert "bad pipeline spec" not in proc.stderr
    # The credentials phase ran before the stage failed: its files are in the folder given, not the user's.
    assert (tmp_path / "credentials" / name / "token").is_file()
    assert not (Path.home() / ".mlpacker" / "credentials" / name).exists()


@pytest.mark.slow
def test_empty_pipeline_is_rejected_by_the_role_preflight(run_cli, tmp_path: Path) -> None:
    # The file loads and holds a mapping, so the CLI runs the playbook; the role's input check rejects it,
    # naming the variable, which still counts as a bad spec.
    spec = tmp_path / "pipeline.yml"
    spec.write_text("mlpacker_pipeline: {}\n")
    proc = run_cli(
        "deploy",
        str(spec),
        "-i",
        str(LOCAL_INVENTORY),
        "--state-dir",
        str(tmp_path / "state"),
        *own_credentials(tmp_path),
    )
    assert proc.returncode == 2, proc.stderr
    assert "deploy: bad pipeline spec" in proc.stderr
    assert "mlpacker_pipeline: no pipeline spec given" in proc.stderr
