"""The repository as an AWX project: execution environment build context, survey, AWX-style job runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import ansible_runner
import pytest
import yaml

from mlpacker.events import result_from_events
from mlpacker.results import RunResult
from tests.api.awx_layout import (
    REPO,
    SURVEY_FILE,
    local_inventory,
    make_awx_private_data_dir,
    stats_artifact_data,
    survey_defaults,
)
from tests.api.conftest import SAMPLE, expected_predictions, free_port_block, post, unique_name

TEST_PROJECT = Path(__file__).parent / "project"
AWX_SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}


def test_execution_environment_build_context(tmp_path: Path) -> None:
    context = tmp_path / "context"
    builder = Path(sys.executable).parent / "ansible-builder"
    proc = subprocess.run(
        [str(builder), "create", "-f", str(REPO / "execution-environment.yml"), "--context", str(context)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    build_files = [context / "Containerfile", context / "Dockerfile"]
    containerfile = next(p for p in build_files if p.exists())
    text = containerfile.read_text()
    # The base image is a build argument (a setting), with the definition's default.
    assert 'ARG EE_BASE_IMAGE="quay.io/centos/centos:stream9"' in text
    assert "FROM $EE_BASE_IMAGE" in text
    assert "ansible-core>=2.17,<2.20" in text and "ansible-runner>=2.4,<3" in text

    requirements = (context / "_build" / "requirements.txt").read_text().split()
    names = {line.split(">")[0].split("<")[0].split("=")[0] for line in requirements}
    assert {"scikit-learn", "onnxruntime", "skops", "paho-mqtt", "docker", "requests"} <= names

    bindep = (context / "_build" / "bindep.txt").read_text()
    assert "openssh-client [platform:dpkg]" in bindep
    assert "python3-venv [platform:dpkg]" in bindep

    galaxy = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert galaxy == yaml.safe_load((REPO / "collections" / "requirements.yml").read_text())
    assert "community.docker" in {c["name"] for c in galaxy["collections"]}


def test_survey_spec_is_awx_shaped() -> None:
    survey = json.loads(SURVEY_FILE.read_text())
    assert set(survey) == {"name", "description", "spec"}
    variables = [q["variable"] for q in survey["spec"]]
    assert len(variables) == len(set(variables))
    for question in survey["spec"]:
        assert {"question_name", "required", "type", "variable", "default"} <= set(question), question
        assert question["type"] in AWX_SURVEY_TYPES
        if question["type"] == "multiplechoice":
            assert question["default"] in question["choices"].split("\n")
        if question["type"] in {"text", "textarea"}:
            assert question["min"] <= len(question["default"]) <= question["max"]
    # Every variable is consumed by the template's extra vars, which produce what the playbooks take.
    template_vars = (REPO / "awx" / "deploy-extra-vars.yml").read_text()
    for variable in variables:
        assert variable in template_vars, f"{variable} is asked but never used"
    assert set(yaml.safe_load(template_vars)) == {"mlpacker_pipeline", "mlpacker_broker", "mlpacker_security"}


def test_credential_type_injects_files_the_template_uses() -> None:
    credential_type = json.loads((REPO / "awx" / "credential-type-secrets.json").read_text())
    assert {"name", "kind", "inputs", "injectors"} <= set(credential_type)
    fields = {field["id"]: field for field in credential_type["inputs"]["fields"]}
    # Secrets: AWX stores them encrypted and never shows them back.
    assert all(field["secret"] is True for field in fields.values())
    injected = credential_type["injectors"]["extra_vars"]
    # Each secret goes into a file of the job; only the file's path becomes an extra var.
    for variable, template in injected.items():
        assert "tower.filename." in template and "{{ token }}" not in template, variable
    template_vars = (REPO / "awx" / "deploy-extra-vars.yml").read_text()
    for variable in injected:
        assert variable in template_vars, f"{variable} is injected but never used"


def _plan_job(tmp_path: Path, answers: dict, models: Path | None = None) -> ansible_runner.Runner:
    pdd = make_awx_private_data_dir(
        tmp_path,
        project_src=REPO,
        inventory=local_inventory(["edge", "fog", "cloud"]),
        survey_answers=answers,
    )
    # The survey's default paths point at the example's trained models, which are not in git: put freshly
    # trained ones where a user's `examples/iris/train.py` run would have written them.
    if models is not None:
        project_models = pdd / "project" / "examples" / "iris" / "models"
        project_models.mkdir(parents=True, exist_ok=True)
        for artifact in models.glob("*.joblib"):
            shutil.copy(artifact, project_models / artifact.name)
    shutil.copy(TEST_PROJECT / "playbooks" / "plan.yml", pdd / "project" / "playbooks" / "plan.yml")
    return ansible_runner.run(private_data_dir=str(pdd), playbook="playbooks/plan.yml", quiet=True)


def test_survey_defaults_become_a_valid_pipeline(tmp_path: Path, iris_models: Path) -> None:
    # An AWX job with every survey default, planned by the collection's real pipeline_plan module.
    runner = _plan_job(tmp_path, survey_defaults(), iris_models)
    assert runner.status == "successful", runner.stdout.read()
    plan = stats_artifact_data(runner)["mlpacker_plan"]
    assert (plan["name"], plan["mode"], plan["layout"]) == ("iris", "rest", "distributed")
    assert [s["name"] for s in plan["stages"]] == ["scale", "reduce", "classify"]
    assert [s["group"] for s in plan["stages"]] == ["edge", "fog", "cloud"]
    project = tmp_path / "awx-job" / "project"
    assert plan["stages"][0]["artifact"] == str(project / "examples/iris/models/scaler.joblib")
    assert plan["entry_points"]["rest"]


def test_survey_atomic_stream_answers(tmp_path: Path, iris_models: Path) -> None:
    answers = survey_defaults() | {
        "mlpacker_survey_name": "iris-stream",
        "mlpacker_survey_mode": "stream",
        "mlpacker_survey_layout": "atomic",
        "mlpacker_survey_group": "fog",
        "mlpacker_survey_stages": (
            "stages:\n"
            "  - {name: scale, artifact: examples/iris/models/scaler.joblib}\n"
            "  - {name: classify, artifact: examples/iris/models/classifier.joblib}\n"
            "input_topic: plant/in\n"
        ),
        "mlpacker_survey_broker_host": "127.0.0.1",
        "mlpacker_survey_broker_port": 18830,
    }
    runner = _plan_job(tmp_path, answers, iris_models)
    assert runner.status == "successful", runner.stdout.read()
    data = stats_artifact_data(runner)
    plan = data["mlpacker_plan"]
    assert (plan["name"], plan["mode"], plan["layout"]) == ("iris-stream", "stream", "atomic")
    assert [s["id"] for s in plan["services"]] == ["iris-stream"]
    assert plan["topics"]["input"] == "plant/in"
    assert plan["broker"]["host"] == "127.0.0.1" and plan["broker"]["port"] == 18830


def test_survey_wrong_group_fails_validation_naming_the_field(tmp_path: Path, iris_models: Path) -> None:
    answers = survey_defaults() | {"mlpacker_survey_layout": "atomic", "mlpacker_survey_group": "nowhere"}
    runner = _plan_job(tmp_path, answers, iris_models)
    assert runner.status == "failed"
    failed = [e for e in runner.events if e["event"] == "runner_on_failed"]
    assert failed and failed[0]["event_data"]["task"] == "Validate the pipeline spec"
    message = failed[0]["event_data"]["res"]["msg"]
    assert "mlpacker_pipeline.group" in message and "nowhere" in message
    # The survey's distributed stages carry groups, which atomic layout rejects by name too.
    assert "mlpacker_pipeline.stages[0]" in message


@pytest.mark.parametrize(
    ("stages", "field"),
    [
        ("  - {name: steal, artifact: /etc/hostname, format: pickle}\n", "stages[0].artifact"),
        (
            "  - {name: steal, artifact: ../../../../../../etc/hostname, format: pickle}\n",
            "stages[0].artifact",
        ),
        (
            "base_dir: /\nstages:\n  - {name: steal, artifact: /etc/hostname, format: pickle}\n",
            "stages[0].artifact",
        ),
        (
            "code_dir: /usr/lib/python3\nstages:\n  - {name: steal, function: 'subprocess:check_output'}\n",
            "code_dir",
        ),
    ],
)
def test_survey_cannot_name_files_outside_the_project(
    tmp_path: Path, iris_models: Path, stages: str, field: str
) -> None:
    # A survey user fills in only the survey: the stages answer (its own base_dir included) cannot point the
    # controller at a file outside the project checkout.
    answers = survey_defaults() | {
        "mlpacker_survey_layout": "atomic",
        "mlpacker_survey_group": "fog",
        "mlpacker_survey_stages": ("stages:\n" + stages) if stages.startswith("  -") else stages,
    }
    runner = _plan_job(tmp_path, answers, iris_models)
    assert runner.status == "failed"
    failed = [e for e in runner.events if e["event"] == "runner_on_failed"]
    assert failed and failed[0]["event_data"]["task"] == "Validate the pipeline spec"
    message = failed[0]["event_data"]["res"]["msg"]
    project = os.path.realpath(tmp_path / "awx-job" / "project")
    assert f"mlpacker_pipeline.{field}: " in message and f"is outside base_dir {project}" in message, message


@pytest.mark.parametrize("answer", ["{{ lookup('env', 'HOME') }}"])
def test_survey_answers_are_not_templated(tmp_path: Path, answer: str, iris_models: Path) -> None:
    # AWX tags answers !unsafe; a name holding Jinja must reach the validator verbatim (and be rejected).
    runner = _plan_job(tmp_path, survey_defaults() | {"mlpacker_survey_name": answer}, iris_models)
    assert runner.status == "failed"
    failed = [e for e in runner.events if e["event"] == "runner_on_failed"]
    message = failed[0]["event_data"]["res"]["msg"]
    assert "mlpacker_pipeline.name" in message and "lookup" in message


def _awx_job(
    work: Path, playbook: str, answers: dict, extra_vars: dict, models: Path | None = None
) -> RunResult:
    """One AWX-style job of the real project: copied checkout (with ``models``' artifacts where the example's
    training writes them: survey paths stay inside the project), inventory script, survey answers."""
    inventory = local_inventory(["edge", "fog", "cloud", "broker"])
    inventory["_meta"]["hostvars"]["localhost"].update(
        {"ansible_host": "127.0.0.1", "mlpacker_python": "/usr/bin/python3"}
    )
    pdd = make_awx_private_data_dir(
        work, project_src=REPO, inventory=inventory, survey_answers=answers, extra_vars=extra_vars
    )
    if models is not None:
        project_models = pdd / "project" / "examples" / "iris" / "models"
        project_models.mkdir(parents=True, exist_ok=True)
        for artifact in models.glob("*.joblib"):
            shutil.copy(artifact, project_models / artifact.name)
    runner = ansible_runner.run(private_data_dir=str(pdd), playbook=playbook, quiet=True)
    return result_from_events(playbook, list(runner.events), runner_status=str(runner.status), rc=runner.rc)


@pytest.mark.slow
def test_awx_job_deploys_and_undeploys_from_survey_answers(
    tmp_path_factory: pytest.TempPathFactory, iris_models: Path
) -> None:
    port = free_port_block(2)
    answers = survey_defaults() | {
        "mlpacker_survey_name": unique_name("apiawx"),
        "mlpacker_survey_layout": "atomic",
        "mlpacker_survey_group": "cloud",
        "mlpacker_survey_stages": yaml.safe_dump(
            {
                "stages": [
                    {"name": "scale", "artifact": "examples/iris/models/scaler.joblib"},
                    {"name": "reduce", "artifact": "examples/iris/models/pca.joblib"},
                    {"name": "classify", "artifact": "examples/iris/models/classifier.joblib"},
                ],
            }
        ),
    }
    credentials_dir = tmp_path_factory.mktemp("awx-credentials")
    # What the credential type awx/credential-type-secrets.json hands a job: the token in a private file of
    # the job, its path as an extra var.
    injected = tmp_path_factory.mktemp("awx-injected") / "tmp_token"
    injected.write_text("awx-credential-token-0123456789abcdef0123456789")
    injected.chmod(0o600)
    extra_vars = {
        "mlpacker_default_port": port,
        "mlpacker_state_dir": str(tmp_path_factory.mktemp("awx-state")),
        # A folder that outlives the job (AWX: a path exposed to the job's container), as awx/README.md says.
        "mlpacker_credentials_dir": str(credentials_dir),
        "mlpacker_awx_token_file": str(injected),
    }
    deploy = _awx_job(
        tmp_path_factory.mktemp("awx-deploy"), "playbooks/deploy.yml", answers, extra_vars, iris_models
    )
    try:
        assert deploy.ok, [f.describe() for f in deploy.failures]
        entry = f"https://127.0.0.1:{port}/predict"
        assert deploy.entry_points["rest"] == [entry]
        # The job's artifacts (set_stats) say where the credentials are: paths, never the token itself.
        folder = credentials_dir / answers["mlpacker_survey_name"]
        assert deploy.credentials == {
            "ca_file": str(folder / "ca.crt"),
            "token_file": str(folder / "token"),
            "mqtt": None,
        }
        # The services take the token of the AWX credential; the job's artifacts never show it.
        token = (folder / "token").read_text().split()[0]
        assert token == injected.read_text()
        assert token not in json.dumps(deploy.stats_data)
        [line] = deploy.client_commands
        assert line.startswith("curl ") and line.endswith(f" {entry}"), line
        assert post(entry, SAMPLE, deploy.credentials) == expected_predictions(iris_models, SAMPLE)
        with pytest.raises(urllib.error.HTTPError, match="401"):
            post(entry, SAMPLE, {"ca_file": deploy.credentials["ca_file"]})
    finally:
        undeploy = _awx_job(
            tmp_path_factory.mktemp("awx-undeploy"),
            "playbooks/undeploy.yml",
            answers,
            extra_vars,
            iris_models,
        )
    assert undeploy.ok, [f.describe() for f in undeploy.failures]
