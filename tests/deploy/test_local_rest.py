"""REST pipelines deployed with the real playbooks on this machine (inventories/local, supervisord path).

One distributed deployment, secure by default (HTTPS with the pipeline's CA, bearer token), is shared by the
tests of this module, in order: predictions, record, status, what the security refuses and allows (no token,
a wrong token, plain HTTP, a client trusting only the pipeline CA, open health probes, /info, the record's
curl line run through the shell), the service user and its files, the controller's credentials, idempotence,
a credential rotation under load, check mode, an artifact update, a release that fails its check, one that
passes its check but fails its canary's health check, undeploy. Then one deploy with ``mlpacker_insecure``
proves the lab switch. The atomic REST layout on this machine is deployed through the Python API in
``tests/api/test_local.py`` (idempotence and leftovers are checked there).
"""

from __future__ import annotations

import grp
import hashlib
import http.client
import importlib
import json
import os
import pwd
import ssl
import stat
import subprocess
import tarfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import requests
from cryptography import x509
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from tests.deploy.helpers import (
    IRIS_SAMPLES,
    LOCAL_INVENTORY,
    changed_tasks,
    free_port_block,
    in_process_predictions,
    iris_spec,
    load_marker_artifact,
    pipeline_leftovers,
    port_is_listening,
    post_predict,
    processes_mentioning,
    record_credentials,
    request_options,
    run_as_pasted,
    run_playbook,
    supervisor_pids,
    write_vars_file,
)

pytestmark = [pytest.mark.slow]


STAGES = ("scale", "reduce", "classify")


class Deployment:
    """A pipeline deployed on this machine, with what the tests need to drive it again."""

    def __init__(
        self,
        name: str,
        spec_file: Path,
        controller_vars: Path,
        base_port: int,
        models: dict[str, Path],
        controller: dict[str, str],
    ):
        self.name = name
        self.spec_file = spec_file
        self.controller_vars = controller_vars
        self.base_port = base_port
        self.models = models
        self.controller = controller

    def play(
        self,
        playbook: str,
        spec_file: Path | None = None,
        check: bool = False,
        extra_vars: dict[str, Any] | None = None,
    ):
        return run_playbook(
            playbook,
            LOCAL_INVENTORY,
            [spec_file or self.spec_file, self.controller_vars],
            check=check,
            extra_vars=extra_vars,
        )

    def url(self, offset: int = 0, path: str = "/predict", scheme: str = "https") -> str:
        """URL of the service of stage ``offset`` (0 = the entry point) on loopback."""
        return f"{scheme}://127.0.0.1:{self.base_port + offset}{path}"

    def record(self) -> dict[str, Any]:
        return json.loads((Path(self.controller["mlpacker_state_dir"]) / f"{self.name}.json").read_text())

    @property
    def credentials(self) -> dict[str, Any]:
        credentials = record_credentials(self.controller["mlpacker_state_dir"], self.name)
        assert credentials, "the deployment record has no credentials"
        return credentials

    @property
    def credentials_dir(self) -> Path:
        return Path(self.controller["mlpacker_credentials_dir"])

    def tokens(self) -> list[str]:
        return Path(self.credentials["token_file"]).read_text().split()

    def ca_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(Path(self.credentials["ca_file"]).read_bytes())

    def host_certificate(self) -> x509.Certificate:
        """The server certificate the controller made for host ``localhost``."""
        path = self.credentials_dir / self.name / "hosts" / "localhost.crt"
        return x509.load_pem_x509_certificate(path.read_bytes())

    def served_certificate(self, offset: int = 0) -> x509.Certificate:
        pem = ssl.get_server_certificate(("127.0.0.1", self.base_port + offset), timeout=15)
        return x509.load_pem_x509_certificate(pem.encode())

    def expected(self, instances: list[list[float]]) -> list[Any]:
        return in_process_predictions(
            [self.models["scaler"], self.models["pca"], self.models["classifier"]], instances
        )


def controller_vars_file(deploy_root: Path, controller_dirs: dict[str, str], name: str) -> dict[str, str]:
    """The session's controller settings plus a credentials folder of this module's own (not the user's
    ~/.mlpacker/credentials), written as ``controller-<name>.yml``."""
    controller = dict(controller_dirs, mlpacker_credentials_dir=str(deploy_root / f"credentials-{name}"))
    write_vars_file(deploy_root / f"controller-{name}.yml", controller)
    return controller


def untrusted_spec(case: str, deploy_root: Path, iris_models: dict[str, Path], name: str) -> tuple[dict, str]:
    """An iris spec that must be refused before anything is loaded or deployed, and the message expected."""
    spec = iris_spec(name, "rest", "distributed", iris_models, free_port_block(3))
    pipeline = spec["mlpacker_pipeline"]
    scaler = iris_models["scaler"]
    actual = hashlib.sha256(scaler.read_bytes()).hexdigest()
    if case == "pin-mismatch":
        pipeline["stages"][0]["sha256"] = "0" * 64
        return spec, (
            f"mlpacker_pipeline.stages[0].sha256: artifact {scaler} has sha256 {actual},"
            f" expected (pinned) {'0' * 64}; refusing to load it"
        )
    if case == "function-outside-code-dir":
        empty = deploy_root / "models" / "empty-code"
        empty.mkdir(exist_ok=True)
        pipeline["code_dir"] = str(empty)
        pipeline["stages"][0] = {"name": "scale", "function": "subprocess:check_output", "group": "edge"}
        return spec, (
            f"mlpacker_pipeline.stages[0].function: module 'subprocess' is not a file under code_dir {empty}"
        )
    pipeline["base_dir"] = str(scaler.parent / "elsewhere")
    (scaler.parent / "elsewhere").mkdir(exist_ok=True)
    return (
        spec,
        f"mlpacker_pipeline.stages[0].artifact: {scaler} is outside base_dir {scaler.parent / 'elsewhere'}",
    )


@pytest.mark.parametrize("case", ["pin-mismatch", "function-outside-code-dir", "outside-base-dir"])
def test_untrusted_spec_is_refused_before_anything_loads_or_deploys(
    case: str, deploy_root: Path, iris_models: dict[str, Path], controller_dirs: dict[str, str]
) -> None:
    name = "t-untrusted"
    spec, message = untrusted_spec(case, deploy_root, iris_models, name)
    spec_file = write_vars_file(deploy_root / f"{name}-{case}.yml", spec)
    controller_vars_file(deploy_root, controller_dirs, name)
    started = time.monotonic()
    refused = run_playbook("deploy.yml", LOCAL_INVENTORY, [spec_file, deploy_root / f"controller-{name}.yml"])
    assert refused.rc != 0, refused.describe()
    assert message in refused.output, refused.describe()
    assert "Validate the spec and plan where each service runs" in refused.output
    assert "Describe each stage's artifact" not in refused.output, "an artifact was inspected"
    assert not pipeline_leftovers(name)
    print(f"{case}: refused in {time.monotonic() - started:.1f} s")


@pytest.fixture(scope="module")
def distributed(deploy_root: Path, iris_models: dict[str, Path], controller_dirs: dict[str, str]):
    name = "t-rest-dist"
    base_port = free_port_block(3)
    spec_file = write_vars_file(
        deploy_root / f"{name}.yml", iris_spec(name, "rest", "distributed", iris_models, base_port)
    )
    controller = controller_vars_file(deploy_root, controller_dirs, name)
    controller_vars = deploy_root / f"controller-{name}.yml"
    deployment = Deployment(name, spec_file, controller_vars, base_port, dict(iris_models), controller)
    first = deployment.play("deploy.yml")
    try:
        assert first.rc == 0, first.describe()
        deployment.first_run = first
        yield deployment
    finally:
        # Undeploy whatever the tests left, also when one failed half-way.
        if pipeline_leftovers(name):
            deployment.play("undeploy.yml")


def test_entry_point_answers_like_the_in_process_pipeline(distributed: Deployment) -> None:
    url = distributed.url()
    assert url.startswith("https://")
    expected = distributed.expected(IRIS_SAMPLES)
    assert post_predict(url, IRIS_SAMPLES, credentials=distributed.credentials) == expected
    output = distributed.first_run.output
    assert f"POST {url}" in output
    # The deploy ends by showing how to call the pipeline: the record's curl line (as JSON in the output).
    [line] = distributed.record()["client_commands"]
    assert "Try it:" in output and json.dumps(line) in output, distributed.first_run.describe()
    # A secure deploy warns of nothing (an insecure one does: see the end of this module).
    assert [line for line in output.splitlines() if "WARNING" in line] == []


def test_record_describes_every_stage(distributed: Deployment) -> None:
    record = distributed.record()
    assert record["entry_points"]["rest"] == [distributed.url()]
    # Where the credentials are: paths to the controller's files, never their values.
    folder = distributed.credentials_dir / distributed.name
    assert record["credentials"] == {
        "ca_file": str(folder / "ca.crt"),
        "token_file": str(folder / "token"),
        "mqtt": None,
    }
    assert record["security"] == {"tls": True, "auth": True}
    [line] = record["client_commands"]
    assert line.startswith("curl -sS --fail-with-body ") and line.endswith(f" {distributed.url()}"), line
    assert f"--cacert {folder / 'ca.crt'}" in line
    assert f'-H "Authorization: Bearer $(head -n1 {folder / "token"})"' in line
    text = json.dumps(record)
    for secret in [*distributed.tokens(), *(folder / "ca.key").read_text().splitlines()[1:-1]]:
        assert secret not in text
    by_name = {stage["name"]: stage for stage in record["stages"]}
    for offset, (stage, model) in enumerate(
        (("scale", "scaler"), ("reduce", "pca"), ("classify", "classifier"))
    ):
        assert by_name[stage]["sha256"] == hashlib.sha256(distributed.models[model].read_bytes()).hexdigest()
        assert by_name[stage]["ports"] == [distributed.base_port + offset]
        assert by_name[stage]["hosts"] == ["localhost"]
        assert by_name[stage]["runtime_version"]
        assert by_name[stage]["urls"] == [distributed.url(offset)]


def test_status_reports_every_service_ready(distributed: Deployment) -> None:
    status = distributed.play("status.yml")
    assert status.rc == 0, status.describe()
    for stage in ("scale", "reduce", "classify"):
        assert f'"service": "{distributed.name}-{stage}"' in status.output
    assert '"ready": false' not in status.output
    # status.yml shows and publishes how to reach the pipeline (from the controller's record).
    [line] = distributed.record()["client_commands"]
    assert "Try it:" in status.output and json.dumps(line) in status.output, status.describe()


def test_every_service_refuses_a_request_without_the_right_token(distributed: Deployment) -> None:
    ca_only = {"verify": distributed.credentials["ca_file"], "timeout": 15}
    body = {"instances": IRIS_SAMPLES}
    for offset, stage in enumerate(STAGES):
        for path in ("/predict", "/info", "/metrics", "/openapi.json"):
            url = distributed.url(offset, path)
            sent = dict(ca_only, json=body) if path == "/predict" else ca_only
            method = requests.post if path == "/predict" else requests.get
            missing = method(url, **sent)
            assert missing.status_code == 401, (stage, path, missing.status_code, missing.text)
            assert missing.headers["WWW-Authenticate"] == 'Bearer realm="mlpacker"', (stage, path)
            assert missing.headers["Content-Type"].startswith("application/json"), (stage, path)
            assert missing.json() == {
                "error": "authentication required: send 'Authorization: Bearer <token>'"
            }, (stage, path)
            wrong = method(url, headers={"Authorization": "Bearer not-the-token"}, **sent)
            assert wrong.status_code == 401, (stage, path, wrong.status_code, wrong.text)
            assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="mlpacker", error="invalid_token"'
            assert wrong.json() == {"error": "invalid bearer token"}, (stage, path)
            # Another scheme, or the token without it, is no better.
            token = distributed.tokens()[0]
            for header in (f"Basic {token}", token, f"Bearer {token[:-1]}"):
                refused = method(url, headers={"Authorization": header}, **sent)
                assert refused.status_code == 401, (stage, path, header[:6])
    # The right token passes.
    assert post_predict(distributed.url(), IRIS_SAMPLES, credentials=distributed.credentials)


def test_openapi_of_the_entry_point_says_number_columns(distributed: Deployment) -> None:
    """The input signature recorded at packaging (from the scaler: 4 columns that take numbers only) reaches
    the entry service's config.json and its /openapi.json."""
    entry = Path(f"/opt/mlpacker/{distributed.name}/{distributed.name}-scale/current/config.json")
    recorded = json.loads(entry.read_text())["stages"][0]["input_signature"]
    assert recorded == {"source": "artifact", "columns": [{"name": None, "type": "number"}] * 4}
    response = requests.get(
        distributed.url(0, "/openapi.json"), timeout=15, **request_options(distributed.credentials)
    )
    assert response.status_code == 200, response.text
    body = response.json()["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    row = body["schema"]["properties"]["instances"]["items"]
    assert row["prefixItems"] == [{"type": "number"}] * 4, row
    assert (row["minItems"], row["maxItems"], row["items"]) == (4, 4, False), row


def test_plain_http_to_the_https_port_fails(distributed: Deployment) -> None:
    ca_file = distributed.credentials["ca_file"]
    for offset, stage in enumerate(STAGES):
        # The port answers HTTPS ...
        assert requests.get(distributed.url(offset, "/health/live"), verify=ca_file, timeout=15).ok, stage
        # ... and no plain HTTP request gets an answer.
        for path in ("/health/live", "/predict"):
            with pytest.raises(requests.exceptions.ConnectionError):
                requests.get(distributed.url(offset, path, scheme="http"), timeout=15)
        # Nor does a raw HTTP request get any HTTP status line back.
        connection = http.client.HTTPConnection("127.0.0.1", distributed.base_port + offset, timeout=15)
        try:
            with pytest.raises((http.client.HTTPException, ConnectionError)):
                connection.request("GET", "/health/live")
                connection.getresponse()
        finally:
            connection.close()


def test_a_client_trusting_only_the_pipeline_ca_reaches_the_entry_point(distributed: Deployment) -> None:
    credentials = distributed.credentials
    only_the_ca = ssl.create_default_context(cafile=credentials["ca_file"])
    headers = {"Authorization": f"Bearer {distributed.tokens()[0]}", "Content-Type": "application/json"}
    # By the address the inventory gives (127.0.0.1) and by name (localhost).
    for host in ("127.0.0.1", "localhost"):
        connection = http.client.HTTPSConnection(host, distributed.base_port, context=only_the_ca, timeout=15)
        try:
            connection.request("POST", "/predict", json.dumps({"instances": IRIS_SAMPLES}), headers)
            answer = connection.getresponse()
            assert answer.status == 200, (host, answer.status)
            assert json.loads(answer.read())["predictions"] == distributed.expected(IRIS_SAMPLES)
            served = x509.load_der_x509_certificate(connection.sock.getpeercert(binary_form=True))
        finally:
            connection.close()
        # The certificate it checked is the host's from the controller, issued by the pipeline CA.
        assert served == distributed.host_certificate(), host
        assert served.issuer == distributed.ca_certificate().subject, host
    # A client that trusts the usual public CAs only does not accept the service.
    with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        requests.get(distributed.url(path="/health/live"), timeout=15)


def test_health_probes_answer_without_a_token(distributed: Deployment) -> None:
    ca_file = distributed.credentials["ca_file"]
    for offset, stage in enumerate(STAGES):
        live = requests.get(distributed.url(offset, "/health/live"), verify=ca_file, timeout=15)
        assert (live.status_code, live.json()) == (200, {"status": "alive"}), (stage, live.text)
        ready = requests.get(distributed.url(offset, "/health/ready"), verify=ca_file, timeout=15)
        assert ready.status_code == 200, (stage, ready.text)


def test_fuzzing_the_entry_point_from_its_openapi_finds_nothing(
    distributed: Deployment, deploy_root: Path
) -> None:
    """schemathesis, every check, drives the deployed entry service (HTTPS, bearer token) from its
    /openapi.json: no server error, and every answer conforms (status, content type, body, Allow on 405)."""
    from tests.openapi_fuzz import run_schemathesis

    result = run_schemathesis(
        distributed.url(path=""),
        deploy_root / f"fuzz-{distributed.name}",
        token=distributed.tokens()[0],
        ca_file=distributed.credentials["ca_file"],
        max_examples=1000,
    )
    print(result.describe())
    assert result.requests >= 1000, result.describe()
    assert (result.failures, result.errors, result.exit_code) == ([], [], 0), result.describe()
    # The pipeline still answers as before.
    assert post_predict(distributed.url(), IRIS_SAMPLES, credentials=distributed.credentials) == (
        distributed.expected(IRIS_SAMPLES)
    )


def json_strings(value: Any) -> list[str]:
    """Every string of a JSON document, keys included."""
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in (str(key), *json_strings(item))]
    if isinstance(value, list):
        return [text for item in value for text in json_strings(item)]
    return [value] if isinstance(value, str) else []


def test_info_holds_no_secret_and_no_controller_path(distributed: Deployment) -> None:
    options = request_options(distributed.credentials)
    secrets = distributed.tokens()
    folder = distributed.credentials_dir / distributed.name
    secrets += (folder / "ca.key").read_text().splitlines()[1:-1]
    secrets += (folder / "hosts" / "localhost.key").read_text().splitlines()[1:-1]
    for offset, stage in enumerate(STAGES):
        response = requests.get(distributed.url(offset, "/info"), timeout=15, **options)
        assert response.status_code == 200, (stage, response.text)
        info = response.json()
        for secret in secrets:
            assert secret not in response.text, stage
        for path in (str(distributed.credentials_dir), distributed.controller["mlpacker_state_dir"]):
            assert path not in response.text, (stage, path)
        # No absolute path at all (the controller's or the host's): artifacts by file name, no secret files.
        assert not [text for text in json_strings(info) if text.startswith("/")], (stage, info)
        assert info["security"] == {"tls": True, "client_certificates": False, "auth": True}, stage
        expected_hops = [distributed.url(offset + 1)] if offset < 2 else []
        assert info["next_hops"] == expected_hops, (stage, info["next_hops"])


def test_the_records_curl_line_answers_through_the_shell(distributed: Deployment) -> None:
    [line] = distributed.record()["client_commands"]
    assert line.count("[[...]]") == 1, line
    rows = IRIS_SAMPLES[:2]
    command = line.replace("[[...]]", json.dumps(rows))
    result = run_as_pasted(command)
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    assert json.loads(result.stdout) == {"predictions": distributed.expected(rows)}
    # The token is read from its file when the line runs: it is not in the line.
    for token in distributed.tokens():
        assert token not in line


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def proc_limits(pid: int) -> dict[str, tuple[str, str]]:
    """/proc/<pid>/limits as {name: (soft, hard)}."""
    limits = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        name, soft, hard = line[:26].strip(), line[26:47].strip(), line[47:68].strip()
        limits[name] = (soft, hard)
    return limits


def test_services_run_as_the_pipelines_user_with_its_limits(distributed: Deployment) -> None:
    user = pwd.getpwnam(f"mlp-{distributed.name}")
    assert user.pw_shell == "/usr/sbin/nologin" and grp.getgrgid(user.pw_gid).gr_name == user.pw_name
    assert user.pw_name in Path("/opt/mlpacker/.state/created-user").read_text().split()
    programs = [f"mlpacker-{distributed.name}-{stage}" for stage in ("scale", "reduce", "classify")]
    masters = supervisor_pids(programs)
    assert sorted(masters) == sorted(programs), masters
    for program, master in masters.items():
        # gunicorn's master and its workers: prlimit exec'd the runtime, the workers inherit its limits.
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        assert children, f"{program}: gunicorn has no workers"
        for pid in [master, *map(int, children)]:
            status = proc_status(pid)
            assert status["Uid"].split() == [str(user.pw_uid)] * 4, (program, status["Uid"])
            assert status["Gid"].split() == [str(user.pw_gid)] * 4, (program, status["Gid"])
            # supervisord gives the user its own group only (no supplementary groups)
            assert set(status["Groups"].split()) <= {str(user.pw_gid)}, (program, status["Groups"])
            assert status["Umask"] == "0027", (program, status["Umask"])
            assert status["CapEff"] == "0000000000000000", (program, status["CapEff"])
            limits = proc_limits(pid)
            # the service role's defaults: mlpacker_service_tasks_max 1024, mlpacker_service_memory_max 2G
            assert limits["Max processes"] == ("1024", "1024"), (program, limits["Max processes"])
            assert limits["Max data size"] == ("2147483648", "2147483648"), (program, limits["Max data size"])
    # The user owns its log folder and nothing of the release; the configuration is root's, group-readable.
    pipeline_dir = Path("/opt/mlpacker") / distributed.name
    release = (pipeline_dir / f"{distributed.name}-classify" / "current").resolve()
    expected = {
        pipeline_dir: (0, user.pw_gid, 0o750),
        release: (0, 0, 0o755),
        release / "config.json": (0, user.pw_gid, 0o640),
        Path("/var/log/mlpacker") / distributed.name: (user.pw_uid, user.pw_gid, 0o750),
        Path("/etc/mlpacker/supervisor/supervisord.conf"): (0, 0, 0o644),
    }
    for path, (uid, gid, mode) in expected.items():
        info = path.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (uid, gid, mode), path
    artifacts = list((release / "artifacts").iterdir())
    assert artifacts and all(
        (a.stat().st_uid, a.stat().st_gid, stat.S_IMODE(a.stat().st_mode)) == (0, user.pw_gid, 0o640)
        for a in artifacts
    )
    # The virtualenv is root's and holds bytecode (the user cannot write it: without it, every process the
    # user starts compiles numpy, scipy and scikit-learn again); test suites are not compiled.
    site_packages = next((release / "venv").resolve().glob("lib/python3*/site-packages"))
    assert owner_and_mode(site_packages)[0] == 0
    assert list((site_packages / "sklearn" / "__pycache__").glob("__init__.cpython-*.pyc"))
    assert list((site_packages / "scipy" / "linalg" / "__pycache__").glob("*.pyc"))
    assert not list((site_packages / "sklearn" / "tests").glob("__pycache__/*.pyc"))


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    info = path.lstat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def test_each_release_holds_its_credentials_for_the_pipelines_user_only(distributed: Deployment) -> None:
    user = pwd.getpwnam(f"mlp-{distributed.name}")
    folder = distributed.credentials_dir / distributed.name
    shipped_from = {
        "ca.crt": folder / "ca.crt",
        "server.crt": folder / "hosts" / "localhost.crt",
        "server.key": folder / "hosts" / "localhost.key",
        "token": folder / "token",
    }
    for stage in STAGES:
        release = (
            Path("/opt/mlpacker") / distributed.name / f"{distributed.name}-{stage}" / "current"
        ).resolve()
        secrets = release / "secrets"
        assert owner_and_mode(secrets) == (0, user.pw_gid, 0o750), stage
        assert sorted(path.name for path in secrets.iterdir()) == sorted(shipped_from), stage
        for name, source in shipped_from.items():
            assert owner_and_mode(secrets / name) == (0, user.pw_gid, 0o640), (stage, name)
            assert (secrets / name).read_bytes() == source.read_bytes(), (stage, name)
        # The configuration points at the shipped files and holds no secret itself.
        config_text = (release / "config.json").read_text()
        config = json.loads(config_text)
        assert config["security"]["tls"]["cert_file"] == str(secrets / "server.crt"), stage
        assert config["security"]["auth"]["token_file"] == str(secrets / "token"), stage
        for secret in [*distributed.tokens(), *(secrets / "server.key").read_text().splitlines()[1:-1]]:
            assert secret not in config_text, stage
    # The service user can read them (it runs with them); another unprivileged user cannot.
    probe = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat", str(secrets / "token")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode != 0 and "Permission denied" in probe.stderr, probe


def test_controller_credentials_are_private(distributed: Deployment) -> None:
    controller_uid = os.getuid()
    root = distributed.credentials_dir
    folders = [root, *(path for path in root.rglob("*") if path.is_dir())]
    files = [path for path in root.rglob("*") if not path.is_dir()]
    assert root / distributed.name in folders and (root / distributed.name / "ca.key") in files
    for folder in folders:
        assert owner_and_mode(folder)[::2] == (controller_uid, 0o700), folder
    for path in files:
        assert path.is_file() and not path.is_symlink(), path
        assert owner_and_mode(path)[::2] == (controller_uid, 0o600), path
    # The record that names them is the controller user's alone too.
    record = Path(distributed.controller["mlpacker_state_dir"]) / f"{distributed.name}.json"
    assert owner_and_mode(record)[::2] == (controller_uid, 0o600)


def test_second_run_changes_nothing(distributed: Deployment) -> None:
    second = distributed.play("deploy.yml")
    assert second.rc == 0, second.describe()
    assert second.changed() == {"localhost": 0}, second.describe()


class ContinuousClient:
    """Posts to the entry point over and over in a thread, as a user's client would during a rotation: it
    re-reads the controller's token file before each request, sends line 1 and, refused (401), the next lines
    (the previous token while the services still run with it). Trusts only the pipeline CA (which stays).
    Bounded: at most ``max_requests`` requests and ``max_seconds`` seconds."""

    def __init__(self, deployment: Deployment, max_requests: int = 20000, max_seconds: float = 600) -> None:
        self.url = deployment.url()
        self.ca_file = deployment.credentials["ca_file"]
        self.token_file = Path(deployment.credentials["token_file"])
        self.expected = deployment.expected(IRIS_SAMPLES)
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.answered = 0
        self.answered_with_line = {1: 0, 2: 0}
        self.failures: list[str] = []
        self.failure_times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ContinuousClient:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _one(self) -> None:
        tokens = self.token_file.read_text().split()
        outcome = "no token"
        for line, token in enumerate(tokens, start=1):
            try:
                response = requests.post(
                    self.url,
                    json={"instances": IRIS_SAMPLES},
                    headers={"Authorization": f"Bearer {token}"},
                    verify=self.ca_file,
                    timeout=15,
                )
            except requests.RequestException as exc:
                outcome = f"{type(exc).__name__}: {exc}"
                break
            if response.status_code == 401:
                outcome = f"401 with line {line}"
                continue
            if response.status_code == 200 and response.json()["predictions"] == self.expected:
                self.answered += 1
                self.answered_with_line[line] = self.answered_with_line.get(line, 0) + 1
                return
            outcome = f"{response.status_code}: {response.text[:200]}"
            break
        self.failures.append(outcome)
        self.failure_times.append(time.monotonic())

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        for _ in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            self._one()
            time.sleep(0.02)  # leave the two cores to the deploy

    def report(self) -> str:
        """Counts, the failures by kind and the windows in which they happened (1 s apart = one window)."""
        kinds = Counter(
            "connection refused" if "Connection refused" in failure else failure[:120]
            for failure in self.failures
        )
        windows: list[list[float]] = []
        for moment in self.failure_times:
            if windows and moment - windows[-1][-1] < 1:
                windows[-1].append(moment)
            else:
                windows.append([moment])
        spans = [f"{len(window)} in {window[-1] - window[0]:.1f}s" for window in windows]
        return (
            f"{self.answered} answered (by token line {self.answered_with_line}), {len(self.failures)} failed"
            f" by kind {dict(kinds)}, in {len(windows)} windows: {spans}"
        )


def test_rotation_keeps_the_pipeline_answering_throughout(distributed: Deployment) -> None:
    folder = distributed.credentials_dir / distributed.name
    ca_before = (folder / "ca.crt").read_bytes()
    ca_key_before = (folder / "ca.key").read_bytes()
    tokens_before = distributed.tokens()
    host_certificate_before = distributed.host_certificate()
    served_before = [distributed.served_certificate(offset) for offset in range(3)]
    assert all(served == host_certificate_before for served in served_before)
    programs = [f"mlpacker-{distributed.name}-{stage}" for stage in STAGES]
    pids_before = supervisor_pids(programs)
    workers_before = {program: worker_pids(pid) for program, pid in pids_before.items()}

    with ContinuousClient(distributed) as client:
        wait_for_answers(client, 5)
        rotated = distributed.play("deploy.yml", extra_vars={"mlpacker_rotate_credentials": True})
        answered_during_deploy = client.answered
        wait_for_answers(client, answered_during_deploy + 5)
    assert rotated.rc == 0, rotated.describe()
    assert rotated.changed()["localhost"] > 0, rotated.describe()
    assert client.answered > 10, client.report()

    # A new token on line 1, the previous one kept on line 2 (accepted while the rotation rolls out). The
    # pending file the services got meanwhile became the token file at the deploy's end.
    tokens_after = distributed.tokens()
    assert len(tokens_after) == 2 and tokens_after[1] == tokens_before[0], (len(tokens_after),)
    assert tokens_after[0] not in tokens_before
    assert not (folder / "token.pending").exists()
    promoted = [task for task in changed_tasks(rotated.output) if "Promote the pending token" in task]
    assert promoted, rotated.describe()
    # The CA stays; every service serves a new certificate of that CA.
    assert (folder / "ca.crt").read_bytes() == ca_before
    assert (folder / "ca.key").read_bytes() == ca_key_before
    host_certificate_after = distributed.host_certificate()
    assert host_certificate_after != host_certificate_before
    assert host_certificate_after.public_key() != host_certificate_before.public_key()
    assert host_certificate_after.issuer == distributed.ca_certificate().subject
    for offset in range(3):
        assert distributed.served_certificate(offset) == host_certificate_after, STAGES[offset]
    # Reloaded, not restarted: the same gunicorn master (its listeners never closed), only new workers.
    pids_after = supervisor_pids(programs)
    assert pids_after == pids_before and len(pids_after) == 3, (pids_before, pids_after)
    for program, pid in pids_after.items():
        workers = worker_pids(pid)
        assert len(workers) == 2 and not workers & workers_before[program], (program, workers_before, workers)
    # Both tokens are accepted by every service now; the old certificate's key is of no use.
    for offset in range(3):
        for token in tokens_after:
            answer = requests.get(
                distributed.url(offset, "/info"),
                headers={"Authorization": f"Bearer {token}"},
                verify=distributed.credentials["ca_file"],
                timeout=15,
            )
            assert answer.status_code == 200, (STAGES[offset], answer.text)
    # The record names the same files (paths, not values): its client line still works unchanged.
    assert distributed.record()["credentials"]["token_file"] == str(folder / "token")
    distributed.rotation_client = client


def test_no_request_fails_during_the_rotation(distributed: Deployment) -> None:
    client = getattr(distributed, "rotation_client", None)
    assert client is not None, "the rotation test did not run"
    print(f"rotation client: {client.report()}")
    assert client.failures == [], client.report()
    # Clients sent line 1 of the token file throughout: the old token until the deploy's end, then the new.
    assert client.answered_with_line.get(2, 0) == 0, client.report()


def worker_pids(master: int) -> set[int]:
    """The children of a gunicorn master: its workers."""
    return {int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()}


def wait_for_answers(client: ContinuousClient, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.answered < count and time.monotonic() < deadline:
        if client.failures and not client._thread.is_alive():  # noqa: SLF001
            break
        time.sleep(0.1)
    assert client.answered >= count, client.report()


def test_run_after_the_rotation_changes_nothing(distributed: Deployment) -> None:
    tokens = distributed.tokens()
    certificate = distributed.host_certificate()
    again = distributed.play("deploy.yml")
    assert again.rc == 0, again.describe()
    assert again.changed() == {"localhost": 0}, again.describe()
    assert distributed.tokens() == tokens and distributed.host_certificate() == certificate
    assert post_predict(distributed.url(), IRIS_SAMPLES, credentials=distributed.credentials)


def new_classifier(models: dict[str, Path], folder: Path) -> Path:
    """A classifier with other weights for the same PCA output (a model update of the last stage)."""
    features, labels = load_iris(return_X_y=True)
    reduced = joblib.load(models["pca"]).transform(joblib.load(models["scaler"]).transform(features))
    classifier = LogisticRegression(C=0.05, max_iter=500).fit(reduced, labels)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "classifier-v2.joblib"
    joblib.dump(classifier, path)
    return path


def test_check_mode_then_artifact_update_restarts_only_that_stage(
    distributed: Deployment, deploy_root: Path
) -> None:
    programs = [f"mlpacker-{distributed.name}-{stage}" for stage in ("scale", "reduce", "classify")]
    pids_before = supervisor_pids(programs)
    assert len(pids_before) == 3, pids_before
    updated_models = dict(
        distributed.models, classifier=new_classifier(distributed.models, deploy_root / "v2")
    )
    updated_spec = write_vars_file(
        deploy_root / f"{distributed.name}-v2.yml",
        iris_spec(distributed.name, "rest", "distributed", updated_models, distributed.base_port),
    )

    checked = distributed.play("deploy.yml", updated_spec, check=True)
    assert checked.rc == 0, checked.describe()
    assert checked.changed()["localhost"] > 0, "check mode should report the update it would make"
    assert supervisor_pids(programs) == pids_before, "check mode restarted a service"
    url = distributed.url()
    credentials = distributed.credentials
    old_pipeline = [distributed.models["scaler"], distributed.models["pca"], distributed.models["classifier"]]
    new_pipeline = [updated_models["scaler"], updated_models["pca"], updated_models["classifier"]]
    probe = np.asarray(load_iris().data[::5]).tolist()
    assert in_process_predictions(old_pipeline, probe) != in_process_predictions(new_pipeline, probe)
    assert post_predict(url, probe, credentials=credentials) == in_process_predictions(old_pipeline, probe)

    updated = distributed.play("deploy.yml", updated_spec)
    assert updated.rc == 0, updated.describe()
    pids_after = supervisor_pids(programs)
    assert pids_after[programs[0]] == pids_before[programs[0]], "scale restarted without a change"
    assert pids_after[programs[1]] == pids_before[programs[1]], "reduce restarted without a change"
    assert pids_after[programs[2]] != pids_before[programs[2]], "classify kept its old process"
    assert post_predict(url, probe, credentials=credentials) == in_process_predictions(new_pipeline, probe)
    distributed.spec_file = updated_spec
    distributed.models = updated_models


def wrapped_classifier(
    deploy_root: Path, monkeypatch: pytest.MonkeyPatch, module_name: str, source: str, classifier: Path
) -> tuple[Path, Path]:
    """Write ``source`` as ``module_name`` in a code folder the controller imports from (its ansible runs
    too, through PYTHONPATH); pickle its ``WrappedClassifier`` around ``classifier``. -> (folder, artifact)"""
    code_dir = deploy_root / f"{module_name}-code"
    code_dir.mkdir(exist_ok=True)
    (code_dir / f"{module_name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(code_dir))
    monkeypatch.setenv("PYTHONPATH", str(code_dir))
    module = importlib.import_module(module_name)
    artifact = deploy_root / f"classifier-{module_name}.joblib"
    joblib.dump(module.WrappedClassifier(joblib.load(classifier)), artifact)
    return code_dir, artifact


CUSTOM_MODULE = """
class WrappedClassifier:
    \"\"\"Exists on the controller only (a classic: custom code not shipped to the hosts).\"\"\"

    def __init__(self, inner):
        self.inner = inner
        self.n_features_in_ = inner.n_features_in_

    def predict(self, data):
        return self.inner.predict(data)
"""


def test_release_that_fails_its_check_keeps_the_old_one_serving(
    distributed: Deployment, deploy_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The controller (PYTHONPATH) can load and describe the artifact; the release on the host cannot load it.
    _, broken_artifact = wrapped_classifier(
        deploy_root, monkeypatch, "mlpacker_test_unshipped", CUSTOM_MODULE, distributed.models["classifier"]
    )
    broken_models = dict(distributed.models, classifier=broken_artifact)
    broken_spec = write_vars_file(
        deploy_root / f"{distributed.name}-broken.yml",
        iris_spec(distributed.name, "rest", "distributed", broken_models, distributed.base_port),
    )
    programs = [f"mlpacker-{distributed.name}-{stage}" for stage in ("scale", "reduce", "classify")]
    pids_before = supervisor_pids(programs)
    current = Path(f"/opt/mlpacker/{distributed.name}/{distributed.name}-classify/current")
    release_before = current.resolve()

    failed = distributed.play("deploy.yml", broken_spec)
    assert failed.rc != 0, failed.describe()
    assert f"service '{distributed.name}-classify'" in failed.output, failed.describe()
    assert "mlpacker_test_unshipped" in failed.output, failed.describe()
    assert "previous release keeps serving" in failed.output, failed.describe()
    assert current.resolve() == release_before
    assert supervisor_pids(programs) == pids_before
    expected = distributed.expected(IRIS_SAMPLES)
    assert post_predict(distributed.url(), IRIS_SAMPLES, credentials=distributed.credentials) == expected


ROOT_ONLY_MODULE = """
import os
import sys


class WrappedClassifier:
    \"\"\"Loads as root (the controller) and in the deploy's check (run as the service user), but not in the
    service itself (the canary): a release that passes its check and still fails its health check.\"\"\"

    def __init__(self, inner):
        self.inner = inner
        self.n_features_in_ = inner.n_features_in_

    def __setstate__(self, state):
        if os.geteuid() != 0 and "check" not in sys.argv:
            raise PermissionError("mlpacker_test_root_only refuses to load as uid %d" % os.geteuid())
        self.__dict__.update(state)

    def predict(self, data):
        return self.inner.predict(data)
"""


def test_release_that_fails_its_canary_health_check_keeps_the_old_one_serving(
    distributed: Deployment, deploy_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code_dir, artifact = wrapped_classifier(
        deploy_root,
        monkeypatch,
        "mlpacker_test_root_only",
        ROOT_ONLY_MODULE,
        distributed.models["classifier"],
    )
    spec = iris_spec(
        distributed.name,
        "rest",
        "distributed",
        dict(distributed.models, classifier=artifact),
        distributed.base_port,
    )
    spec["mlpacker_pipeline"]["code_dir"] = str(code_dir)  # shipped: the check on the host can load it
    spec_file = write_vars_file(deploy_root / f"{distributed.name}-root-only.yml", spec)
    program = f"mlpacker-{distributed.name}-classify"
    pid_before = supervisor_pids([program])[program]
    current = Path(f"/opt/mlpacker/{distributed.name}/{distributed.name}-classify/current")
    release_before = current.resolve()

    failed = run_playbook(
        "deploy.yml",
        LOCAL_INVENTORY,
        [spec_file, distributed.controller_vars],
        # The canary never gets ready: do not wait a minute for it. But the pipeline-wide code_dir restarts
        # every service, and the others must still get ready within these retries on a loaded machine.
        extra_vars={"mlpacker_health_retries": 20},
    )
    assert failed.rc != 0, failed.describe()
    assert "failed its health check on canary port" in failed.output, failed.describe()
    assert "previous release keeps serving" in failed.output, failed.describe()
    assert "mlpacker_test_root_only refuses to load" in failed.output, (
        failed.describe()
    )  # the canary's log tail
    assert current.resolve() == release_before
    assert supervisor_pids([program])[program] == pid_before
    assert not any("canary" in path.name for path in Path("/etc/mlpacker/supervisor/conf.d").iterdir())
    expected = distributed.expected(IRIS_SAMPLES)
    assert post_predict(distributed.url(), IRIS_SAMPLES, credentials=distributed.credentials) == expected


def test_a_pickle_that_runs_code_at_load_never_runs_as_root_on_the_host(
    distributed: Deployment, deploy_root: Path
) -> None:
    """The classifier becomes a pickle that writes a marker (its uid, argv, interpreter) whenever it is
    loaded, into the pipeline's log folder (the one the service's user may write): the deploy's check and the
    service load it as mlp-<pipeline>, never as root. The controller loads it too (as root, from its own
    Python)."""
    log_dir = Path(f"/var/log/mlpacker/{distributed.name}")
    for old in log_dir.glob("load-*"):
        old.unlink()
    artifact = load_marker_artifact(
        distributed.models["classifier"],
        distributed.models["classifier"].parent / "classifier-marker.joblib",
        str(log_dir),
    )
    spec_file = write_vars_file(
        deploy_root / f"{distributed.name}-marker.yml",
        iris_spec(
            distributed.name,
            "rest",
            "distributed",
            dict(distributed.models, classifier=artifact),
            distributed.base_port,
        ),
    )
    deployed = distributed.play("deploy.yml", spec_file)
    assert deployed.rc == 0, deployed.describe()
    assert post_predict(distributed.url(), IRIS_SAMPLES, credentials=distributed.credentials) == (
        distributed.expected(IRIS_SAMPLES)
    )
    markers = [json.loads(path.read_text()) for path in log_dir.glob("load-*")]
    host_venvs = f"/opt/mlpacker/{distributed.name}/"
    on_host = [marker for marker in markers if marker["prefix"].startswith(host_venvs)]
    user = pwd.getpwnam(f"mlp-{distributed.name}")
    assert user.pw_uid != 0
    assert {(marker["uid"], marker["euid"]) for marker in on_host} == {(user.pw_uid, user.pw_uid)}, markers
    assert any("check" in marker["argv"] for marker in on_host), markers  # mlpacker-runtime check
    assert any("check" not in marker["argv"] for marker in on_host), markers  # the canary and the service
    distributed.spec_file = spec_file  # what the services now run (the same answers)


def test_a_damaged_wheelhouse_is_repaired_by_the_next_deploy(distributed: Deployment) -> None:
    """One wheel deleted, one altered and the digests file gone (an interrupted unpacking) on the host: the
    next deploy with the same inputs sees the drift, unpacks the wheelhouse again and writes SHA256SUMS last;
    the services are left running."""
    (wheelhouse,) = Path(f"/opt/mlpacker/{distributed.name}/.wheelhouse").iterdir()
    wheels = sorted(wheelhouse.glob("*.whl"))
    assert len(wheels) >= 2, wheels
    digests = (wheelhouse / "SHA256SUMS").read_text()
    assert f"  {wheels[0].name}\n" in digests and f"  {wheels[1].name}\n" in digests
    wheels[0].unlink()
    wheels[1].write_bytes(b"not the wheel the controller downloaded")
    programs = [f"mlpacker-{distributed.name}-{stage}" for stage in STAGES]
    pids_before = supervisor_pids(programs)

    repaired = distributed.play("deploy.yml")
    assert repaired.rc == 0, repaired.describe()
    changed = changed_tasks(repaired.output)
    assert any("Ship the wheelhouse (hosts install offline from it)" in task for task in changed), changed
    checked = subprocess.run(
        ["sha256sum", "--check", "--strict", "--quiet", "SHA256SUMS"], cwd=wheelhouse, capture_output=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (wheelhouse / "SHA256SUMS").read_text() == digests
    assert supervisor_pids(programs) == pids_before, "repairing the wheelhouse restarted a service"


def test_without_controller_inspection_the_smoke_test_uses_the_users_answers(distributed: Deployment) -> None:
    """mlpacker_inspect_artifacts false: nothing is loaded on the controller; the smoke test compares with
    mlpacker_smoke_expected, or is skipped saying why; the entry stage's signature comes from the smoke
    rows."""
    expected = distributed.expected(IRIS_SAMPLES)
    settings = {"mlpacker_inspect_artifacts": False, "mlpacker_smoke_instances": IRIS_SAMPLES}
    compared = distributed.play("deploy.yml", extra_vars=dict(settings, mlpacker_smoke_expected=expected))
    assert compared.rc == 0, compared.describe()
    reference_task = compared.output.split("Compute the expected answers on the controller]", 1)[1]
    assert reference_task.lstrip("*\n ").startswith("skipping: [localhost]"), compared.describe()
    assert "Send the same instances through the deployed pipeline and compare" in compared.output
    entry = Path(f"/opt/mlpacker/{distributed.name}/{distributed.name}-scale/current/config.json")
    signature = json.loads(entry.read_text())["stages"][0]["input_signature"]
    assert signature == {"source": "smoke_instances", "columns": [{"name": None, "type": "number"}] * 4}
    wrong = ["not what the pipeline answers"] * len(expected)
    mismatch = distributed.play("deploy.yml", extra_vars=dict(settings, mlpacker_smoke_expected=wrong))
    assert mismatch.rc != 0, mismatch.describe()
    skipped = distributed.play("deploy.yml", extra_vars=settings)
    assert skipped.rc == 0, skipped.describe()
    assert "Smoke test skipped: mlpacker_inspect_artifacts is false" in skipped.output, skipped.describe()
    assert post_predict(distributed.url(), IRIS_SAMPLES, credentials=distributed.credentials) == expected


def test_hop_settings_reach_every_service_and_a_bad_one_fails_naming_it(distributed: Deployment) -> None:
    """mlpacker_rest_hops: a changed setting redeploys every service (it is part of the host's fingerprint and
    of each release id) and reaches its config.json, which 'mlpacker-runtime check' validated before the
    switch; a bad value fails the preflight naming the key, and nothing is deployed."""
    pipeline_dir = Path("/opt/mlpacker") / distributed.name
    currents = {stage: pipeline_dir / f"{distributed.name}-{stage}" / "current" for stage in STAGES}
    before = {stage: current.resolve() for stage, current in currents.items()}
    hops = {"timeout_s": 4, "retry_timeouts": True, "ejection": {"consecutive_failures": 2, "max_s": 60}}
    changed = distributed.play("deploy.yml", extra_vars={"mlpacker_rest_hops": hops})
    assert changed.rc == 0, changed.describe()
    for stage, current in currents.items():
        assert current.resolve() != before[stage], f"{stage}: not redeployed for the changed setting"
        rest = json.loads((current / "config.json").read_text())["rest"]
        assert (rest["hop_timeout_s"], rest["hop_retry_timeouts"], rest["hop_ejection"]) == (
            4,
            True,
            {"consecutive_failures": 2, "base_s": 5.0, "max_s": 60},
        ), stage
    expected = distributed.expected(IRIS_SAMPLES)
    assert post_predict(distributed.url(), IRIS_SAMPLES, credentials=distributed.credentials) == expected
    deployed = {stage: current.resolve() for stage, current in currents.items()}
    refused = distributed.play("deploy.yml", extra_vars={"mlpacker_rest_hops": {"ejection": {"base_s": 600}}})
    assert refused.rc != 0, refused.describe()
    message = "mlpacker_rest_hops.ejection.max_s: the longest ejection (300.0, the default) is shorter than"
    assert message in refused.output, refused.describe()
    assert {stage: current.resolve() for stage, current in currents.items()} == deployed


def test_undeploy_leaves_no_process_port_or_file(
    distributed: Deployment, controller_dirs: dict[str, str]
) -> None:
    removed = distributed.play("undeploy.yml")
    assert removed.rc == 0, removed.describe()
    assert pipeline_leftovers(distributed.name) == []
    assert processes_mentioning(f"/opt/mlpacker/{distributed.name}/") == []
    for offset in range(3):
        assert not port_is_listening("127.0.0.1", distributed.base_port + offset)
    assert not (Path(controller_dirs["mlpacker_state_dir"]) / f"{distributed.name}.json").exists()
    # The pipeline's user (MLPacker created it) and its group went with it.
    with pytest.raises(KeyError):
        pwd.getpwnam(f"mlp-{distributed.name}")
    with pytest.raises(KeyError):
        grp.getgrnam(f"mlp-{distributed.name}")
    created = Path("/opt/mlpacker/.state/created-user")
    assert not created.exists() or f"mlp-{distributed.name}" not in created.read_text().split()
    again = distributed.play("undeploy.yml")
    assert again.rc == 0 and again.changed() == {"localhost": 0}, again.describe()


def lock_from_wheelhouse(archive: Path, leave_out: set[str]) -> str:
    """A requirements_lock (pip's --hash form) of every wheel in a wheelhouse archive but ``leave_out``."""
    lines = []
    with tarfile.open(archive) as tar:
        for member in tar:
            filename = Path(member.name).name
            if not member.isfile() or not filename.endswith(".whl"):
                continue
            project, version = filename.split("-")[:2]
            if project.replace("_", "-").lower() in leave_out:
                continue
            source = tar.extractfile(member)
            assert source is not None
            digest = hashlib.sha256(source.read()).hexdigest()
            lines.append(f"{project}=={version} \\\n    --hash=sha256:{digest}")
    return "\n".join(sorted(lines)) + "\n"


def test_a_requirements_lock_pins_every_wheel_by_hash(
    distributed: Deployment, deploy_root: Path, iris_models: dict[str, Path], controller_dirs: dict[str, str]
) -> None:
    """An atomic pipeline with a requirements_lock made from the wheels an earlier deploy of this session
    downloaded (the distributed pipeline's): a lock with one wrong hash fails the deploy with pip's words,
    naming the lock, before any host is touched; the right lock deploys, ships the lock in the host's
    wheelhouse and the pipeline answers as before."""
    archives = sorted(Path(controller_dirs["mlpacker_cache_dir"], "wheelhouse").glob("*.tar"))
    assert archives, "no wheelhouse in the session's cache"
    lock = lock_from_wheelhouse(archives[0], {"mlpacker-runtime", "supervisor", "uv"})
    assert "scikit_learn==" in lock or "scikit-learn==" in lock, lock
    name = "t-rest-lock"
    base_port = free_port_block(1)
    spec = iris_spec(name, "rest", "atomic", iris_models, base_port)
    lock_file = iris_models["scaler"].parent / "requirements.lock"  # beside the artifacts, in base_dir
    spec["mlpacker_pipeline"]["requirements_lock"] = str(lock_file)
    spec_file = write_vars_file(deploy_root / f"{name}.yml", spec)
    controller = controller_vars_file(deploy_root, controller_dirs, name)
    deployment = Deployment(
        name, spec_file, deploy_root / f"controller-{name}.yml", base_port, dict(iris_models), controller
    )
    try:
        first_hash = lock.split("sha256:", 1)[1][:64]
        lock_file.write_text(lock.replace(first_hash, "0" * 64, 1))
        refused = deployment.play("deploy.yml")
        assert refused.rc != 0, refused.describe()
        assert "pip download of the requirements_lock" in refused.output, refused.describe()
        assert "DO NOT MATCH THE HASHES" in refused.output, refused.describe()
        assert pipeline_leftovers(name) == [], "a refused lock still touched the host"

        lock_file.write_text(lock)
        deployed = deployment.play("deploy.yml")
        assert deployed.rc == 0, deployed.describe()
        assert post_predict(deployment.url(), IRIS_SAMPLES, credentials=deployment.credentials) == (
            deployment.expected(IRIS_SAMPLES)
        )
        (shipped,) = Path(f"/opt/mlpacker/{name}/.wheelhouse").glob("*/requirements.lock")
        assert shipped.read_text() == lock
    finally:
        if pipeline_leftovers(name):
            removed = deployment.play("undeploy.yml")
            assert removed.rc == 0, removed.describe()
        lock_file.unlink(missing_ok=True)


# --- The lab switch: mlpacker_insecure (the one deploy of the suite that runs without TLS and auth) ---------


def one_line(text: str) -> str:
    """``text`` with every run of white space made one space (Ansible wraps long warnings)."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def insecure(deploy_root: Path, iris_models: dict[str, Path], controller_dirs: dict[str, str]):
    name = "t-rest-insecure"
    base_port = free_port_block(1)
    spec = iris_spec(name, "rest", "atomic", iris_models, base_port)
    spec["mlpacker_insecure"] = True
    spec_file = write_vars_file(deploy_root / f"{name}.yml", spec)
    controller = controller_vars_file(deploy_root, controller_dirs, name)
    controller_vars = deploy_root / f"controller-{name}.yml"
    deployment = Deployment(name, spec_file, controller_vars, base_port, dict(iris_models), controller)
    first = deployment.play("deploy.yml")
    try:
        assert first.rc == 0, first.describe()
        deployment.first_run = first
        yield deployment
    finally:
        if pipeline_leftovers(name):
            deployment.play("undeploy.yml")


def test_insecure_deploy_answers_plain_http_without_a_token_and_says_so(insecure: Deployment) -> None:
    output = one_line(insecure.first_run.output)
    # pipeline_plan's warning, and the deploy's last word.
    assert f"[WARNING]: pipeline {insecure.name}: deployed without TLS (mlpacker_insecure)" in output
    assert (
        f"WARNING: mlpacker_insecure is true - pipeline {insecure.name} answers anyone who reaches its hosts,"
        " over plain HTTP. Use it in a lab only."
    ) in output, insecure.first_run.describe()
    url = insecure.url(scheme="http")
    assert f"POST {url}" in output
    answer = requests.post(url, json={"instances": IRIS_SAMPLES}, timeout=15)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == insecure.expected(IRIS_SAMPLES)
    for path in ("/info", "/metrics", "/health/ready"):
        assert requests.get(insecure.url(path=path, scheme="http"), timeout=15).status_code == 200, path
    # It is plain HTTP: a TLS client gets no handshake.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(insecure.url(path="/health/live"), verify=False, timeout=15)

    # The record: no credentials, and a curl line without CA or token.
    record = insecure.record()
    assert record["entry_points"]["rest"] == [url]
    assert record["credentials"] is None
    assert record["security"] == {"tls": False, "auth": False}
    assert record["client_commands"] == [
        "curl -sS --fail-with-body -H 'Content-Type: application/json' -d '{\"instances\": [[...]]}' " + url
    ]
    # Nothing was made on the controller, nothing shipped to the host.
    assert not (insecure.credentials_dir / insecure.name).exists()
    release = (Path("/opt/mlpacker") / insecure.name / insecure.name / "current").resolve()
    assert (release / "config.json").is_file() and not (release / "secrets").exists()


def test_insecure_undeploy_leaves_nothing(insecure: Deployment) -> None:
    removed = insecure.play("undeploy.yml")
    assert removed.rc == 0, removed.describe()
    assert pipeline_leftovers(insecure.name) == []
    assert processes_mentioning(f"/opt/mlpacker/{insecure.name}/") == []
    assert not port_is_listening("127.0.0.1", insecure.base_port)
    assert not (Path(insecure.controller["mlpacker_state_dir"]) / f"{insecure.name}.json").exists()
