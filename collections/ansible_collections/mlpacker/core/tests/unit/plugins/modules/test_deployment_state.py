# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""mlpacker.core.deployment_state through real Ansible runs, with a real HTTP server as the service."""

from __future__ import annotations

import contextlib
import datetime
import http.server
import json
import shutil
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils import pki


@contextlib.contextmanager
def serving_ready(context: ssl.SSLContext | None = None) -> Iterator[str]:
    """A real HTTP server answering /health/ready with 200 and anything else with 503; over TLS with
    ``context``. -> its base URL"""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(200 if self.path == "/health/ready" else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if context else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def ready_server() -> Iterator[str]:
    with serving_ready() as url:
        yield url


def _write_pem(path: Path, key: Any, certificate: Any) -> tuple[str, str]:
    path.with_suffix(".crt").write_bytes(pki.certificate_pem(certificate))
    path.with_suffix(".key").write_bytes(pki.private_key_pem(key))
    return str(path.with_suffix(".crt")), str(path.with_suffix(".key"))


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A pipeline-like CA with a server certificate for 127.0.0.1 and a client certificate; another CA."""
    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, ca_cert = pki.make_ca("test CA", 30, now)
    other_key, other_cert = pki.make_ca("other CA", 30, now)
    files = {
        "ca": _write_pem(folder / "ca", ca_key, ca_cert)[0],
        "other_ca": _write_pem(folder / "other", other_key, other_cert)[0],
    }
    sans = pki.subject_alt_names("127.0.0.1", "localhost")
    server = pki.issue_certificate(ca_key, ca_cert, "server", sans, 30, now, ("server",))
    files["server_cert"], files["server_key"] = _write_pem(folder / "server", *server)
    client = pki.issue_certificate(ca_key, ca_cert, "client", [], 30, now, ("client",))
    files["client_cert"], files["client_key"] = _write_pem(folder / "client", *client)
    return files


@pytest.fixture(params=["tls", "mutual-tls"])
def https_ready_server(request: pytest.FixtureRequest, tls_files: dict[str, str]):
    """The ready server over HTTPS with the CA's server certificate; "mutual-tls" also requires a client
    certificate of that CA. -> (base URL, whether a client certificate is required)"""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files["server_cert"], tls_files["server_key"])
    mutual = request.param == "mutual-tls"
    if mutual:
        context.load_verify_locations(tls_files["ca"])
        context.verify_mode = ssl.CERT_REQUIRED
    with serving_ready(context) as url:
        yield url, mutual


def state_args(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    tree = tmp_path / "iris"
    (tree / "svc").mkdir(parents=True, exist_ok=True)
    if not (tree / "svc" / "config.json").exists():
        (tree / "svc" / "config.json").write_text("{}")
    args = {"path": str(tree / ".deployed.json"), "fingerprint": "f1", "tree": str(tree)}
    args.update(overrides)
    return args


def test_record_then_query_is_in_sync_and_recording_again_changes_nothing(
    run_module, tmp_path: Path, ready_server: str
) -> None:
    before = run_module("deployment_state", state_args(tmp_path))
    assert (before["in_sync"], before["reasons"]) == (False, ["no deployment recorded on this host"])
    checked = run_module("deployment_state", state_args(tmp_path, state="present"), check_mode=True)
    assert checked["changed"] is True and not (tmp_path / "iris" / ".deployed.json").exists()
    recorded = run_module("deployment_state", state_args(tmp_path, state="present"))
    assert recorded["changed"] is True
    assert (tmp_path / "iris" / ".deployed.json").stat().st_mode & 0o777 == 0o600
    again = run_module("deployment_state", state_args(tmp_path, state="present"))
    assert again["changed"] is False
    query = run_module("deployment_state", state_args(tmp_path, health_urls=[ready_server + "/health/ready"]))
    assert (query["in_sync"], query["changed"], query["reasons"]) == (True, False, [])
    assert "fingerprint" in json.loads((tmp_path / "iris" / ".deployed.json").read_text())


@pytest.mark.parametrize(
    ("drift", "reason"),
    [
        ({"fingerprint": "f2"}, "the deployment's inputs changed"),
        ({"edit": True}, "config.json: changed since the deployment was recorded"),
        ({"health": "/health/live"}, "HTTP 503"),
        ({"health_port": True}, "Connection refused"),
    ],
)
def test_query_names_what_differs(
    run_module, tmp_path: Path, ready_server: str, drift: dict, reason: str
) -> None:
    assert run_module("deployment_state", state_args(tmp_path, state="present"))["changed"] is True
    overrides: dict[str, Any] = {"fingerprint": drift.get("fingerprint", "f1")}
    if drift.get("edit"):
        (tmp_path / "iris" / "svc" / "config.json").write_text('{"edited": true}')
    if "health" in drift:
        overrides["health_urls"] = [ready_server + drift["health"]]
    if drift.get("health_port"):
        overrides["health_urls"] = ["http://127.0.0.1:9/health/ready"]  # discard port: nothing listens
    result = run_module("deployment_state", state_args(tmp_path, **overrides))
    assert result["in_sync"] is False
    assert any(reason in text for text in result["reasons"]), result["reasons"]


@pytest.mark.parametrize(
    ("ca", "client", "in_sync"),
    [
        ("ca", True, True),
        ("ca", False, None),  # None: in sync only where the server requires no client certificate
        ("other_ca", True, False),
        (None, True, False),
    ],
    ids=["pipeline-ca", "no-client-certificate", "other-ca", "system-trust-store"],
)
def test_https_health_checks_verify_the_ca_and_present_the_client_certificate(
    run_module,
    tmp_path: Path,
    tls_files: dict[str, str],
    https_ready_server,
    ca: str | None,
    client: bool,
    in_sync: bool | None,
) -> None:
    url, mutual = https_ready_server
    assert run_module("deployment_state", state_args(tmp_path, state="present"))["changed"] is True
    overrides: dict[str, Any] = {"health_urls": [url + "/health/ready"]}
    if ca:
        overrides["health_ca_file"] = tls_files[ca]
    if client:
        overrides["health_client_cert"] = tls_files["client_cert"]
        overrides["health_client_key"] = tls_files["client_key"]
    result = run_module("deployment_state", state_args(tmp_path, **overrides))
    expected = (not mutual) if in_sync is None else in_sync
    assert result["in_sync"] is expected, result["reasons"]
    if not expected:
        assert result["reasons"] and result["reasons"][0].startswith(url), result["reasons"]


def test_a_client_certificate_without_its_key_is_refused(
    run_module, tmp_path: Path, tls_files: dict[str, str]
) -> None:
    result = run_module("deployment_state", state_args(tmp_path, health_client_cert=tls_files["client_cert"]))
    assert (
        result["failed"] is True
        and "health_client_cert" in result["msg"]
        and "health_client_key" in result["msg"]
    )


def test_unwritable_record_fails_naming_the_path(run_module, tmp_path: Path) -> None:
    args = state_args(tmp_path, state="present", path=str(tmp_path / "missing-folder" / "state.json"))
    result = run_module("deployment_state", args)
    assert result["failed"] is True and "path: cannot write" in result["msg"], result


def _docker_running() -> bool:
    return (
        shutil.which("docker") is not None
        and subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0
    )


@pytest.mark.docker
@pytest.mark.skipif(not _docker_running(), reason="missing component docker: no running Docker engine")
def test_containers_are_part_of_the_state(run_module, tmp_path: Path) -> None:
    """A container recorded is in sync while it is the same one; re-created or removed, it is drift."""
    label = f"unit-state-{uuid.uuid4().hex[:8]}"
    image, name = f"mlpacker/{label}/svc:1", f"mlpacker-{label}"
    # An image from scratch: nothing to pull, and created (not started) containers need nothing to run.
    (tmp_path / "Dockerfile").write_text(f"FROM scratch\nLABEL mlpacker.pipeline={label}\n")
    subprocess.run(["docker", "build", "-q", "-t", image, str(tmp_path)], capture_output=True, check=True)

    def create() -> str:
        argv = ["docker", "create", "--name", name, "--label", f"mlpacker.pipeline={label}", image, "/none"]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()

    try:
        first_id = create()
        args = state_args(tmp_path, containers=[name])
        assert run_module("deployment_state", {**args, "state": "present"})["changed"] is True
        record = json.loads((tmp_path / "iris" / ".deployed.json").read_text())
        assert record["manifest"][f"container:{name}"] == f"{first_id}:created"
        assert run_module("deployment_state", args)["in_sync"] is True

        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=True)
        gone = run_module("deployment_state", args)
        assert (gone["in_sync"], gone["reasons"]) == (False, [f"container:{name}: missing"])

        create()
        replaced = run_module("deployment_state", args)
        assert replaced["in_sync"] is False
        assert replaced["reasons"] == [f"container:{name}: changed since the deployment was recorded"]
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True, check=False)
