# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""mlpacker.core.deployment_state through real Ansible runs, with a real HTTP server as the service."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture()
def ready_server():
    """A real HTTP server answering /health/ready with 200 and anything else with 503."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(200 if self.path == "/health/ready" else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


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
