# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""container_* modules through real ``ansible`` runs: bad input refused with the field named; real Docker."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def _docker_running() -> bool:
    return (
        shutil.which("docker") is not None
        and subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0
    )


needs_docker = pytest.mark.skipif(
    not _docker_running(), reason="missing component docker: no running Docker engine"
)


def test_prune_refuses_empty_labels(run_module) -> None:
    result = run_module("container_prune", {"labels": {}})
    assert result["failed"] and "labels must name at least one label" in result["msg"]


@pytest.mark.docker
@pytest.mark.skipif(shutil.which("docker") is None, reason="missing component docker: the docker CLI")
def test_prune_with_an_engine_that_does_not_answer_warns_and_changes_nothing(
    run_module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI is installed but the engine is stopped (its socket gone or stale): undeploy must go on.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/stopped-engine.sock")
    result = run_module("container_prune", {"labels": {"mlpacker.pipeline": "iris"}})
    assert result.get("failed") is not True, result
    assert (result["changed"], result["containers"]) == (False, [])
    assert any("no Docker engine answers on this host" in warning for warning in result["warnings"]), result


def test_image_name_needs_a_tag(run_module) -> None:
    result = run_module("container_image", {"name": "mlpacker/iris/svc", "build_path": "/nonexistent"})
    assert result["failed"] and "repository:tag" in result["msg"]


def test_service_refuses_published_ports_on_the_host_network(run_module) -> None:
    result = run_module(
        "container_service",
        {
            "name": "x",
            "image": "y:1",
            "network_mode": "host",
            "published_ports": ["8000:8000"],
            "container_port": 8000,
        },
    )
    assert result["failed"] and "published_ports" in result["msg"]


@pytest.mark.docker
@needs_docker
def test_image_build_is_idempotent_and_prune_removes_only_labelled(run_module, tmp_path: Path) -> None:
    base = "mlpacker-base:bookworm"
    if subprocess.run(["docker", "image", "inspect", base], capture_output=True, check=False).returncode != 0:
        pytest.skip(
            f"missing component {base}: not in the engine (the test bed and the container tests build it;"
            " by hand: python -m tests.testbed build-image)"
        )
    label = f"unit-{tmp_path.name[-8:].lower().replace('_', '-')}"
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\nRUN echo built > /built\n")
    name = f"mlpacker/{label}/svc:1"
    args = {"name": name, "build_path": str(tmp_path), "labels": {"mlpacker.pipeline": label}}
    try:
        first = run_module("container_image", args)
        assert first.get("changed") and first["operation"] == "built", first
        second = run_module("container_image", args)
        assert not second.get("changed") and second["image_id"] == first["image_id"]
        checked = run_module("container_prune", {"labels": {"mlpacker.pipeline": "someone-else-" + label}})
        assert not checked.get("changed")
        pruned = run_module("container_prune", {"labels": {"mlpacker.pipeline": label}})
        assert pruned["changed"] and pruned["images"] == [first["image_id"]]
        assert (
            subprocess.run(["docker", "image", "inspect", name], capture_output=True, check=False).returncode
            != 0
        )
        assert (
            subprocess.run(["docker", "image", "inspect", base], capture_output=True, check=False).returncode
            == 0
        )
    finally:
        subprocess.run(["docker", "image", "rm", "-f", name], capture_output=True, check=False)


def _started_at(name: str) -> str:
    return subprocess.run(
        ["docker", "inspect", "--format", "{{.State.StartedAt}}", name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.mark.docker
@needs_docker
def test_restart_restarts_an_unchanged_container_that_reads_rewritten_files(
    run_module, tmp_path: Path, unused_port: int
) -> None:
    """A redeploy that rewrote the files a serving container reads at start (its mounted credentials) asks
    for a restart: the same container restarts and is ready again; without it, nothing happens."""
    base = "mlpacker-base:bookworm"
    if subprocess.run(["docker", "image", "inspect", base], capture_output=True, check=False).returncode != 0:
        pytest.skip(
            f"missing component {base}: not in the engine (the test bed and the container tests build it;"
            " by hand: python -m tests.testbed build-image)"
        )
    served = tmp_path / "srv"
    (served / "health").mkdir(parents=True)
    (served / "health" / "ready").write_text("ready\n")
    served.chmod(0o755)
    (served / "health").chmod(0o755)
    name = f"mlpacker-unit-{tmp_path.name[-8:].lower().replace('_', '-')}"
    args = {
        "name": name,
        "image": base,
        "container_port": 8080,
        "published_ports": [f"127.0.0.1:{unused_port}:8080"],
        "mounts": [f"{served}:/srv:ro"],
        "command": ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0", "--directory", "/srv"],
        "ready_timeout": 60,
    }
    try:
        created = run_module("container_service", args)
        assert created.get("changed") and created["operation"] == "created", created
        unchanged = run_module("container_service", args)
        assert (unchanged.get("changed"), unchanged["operation"]) == (False, "none"), unchanged
        started_at = _started_at(name)

        (served / "health" / "ready").write_text("ready, with rewritten files\n")
        checked = run_module("container_service", dict(args, restart=True), check_mode=True)
        assert (checked.get("changed"), checked["operation"]) == (True, "restarted"), checked
        assert _started_at(name) == started_at
        restarted = run_module("container_service", dict(args, restart=True))
        assert (restarted.get("changed"), restarted["operation"]) == (True, "restarted"), restarted
        assert restarted["container_id"] == created["container_id"]
        assert _started_at(name) != started_at
        again = run_module("container_service", args)
        assert (again.get("changed"), again["operation"]) == (False, "none"), again
    finally:
        run_module("container_service", {"name": name, "state": "absent", "container_port": 8080})
