"""The systemd path of the service and broker roles, checked for what it renders: this machine runs no
systemd, but ``systemd-analyze verify`` checks a unit file without one."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.helpers import REPO_ROOT, run_playbook, write_vars_file

ROLES = REPO_ROOT / "collections" / "ansible_collections" / "mlpacker" / "core" / "roles"
RENDER_PLAYBOOK = """
- name: Render the service role's systemd units
  hosts: localhost
  gather_facts: false
  vars_files:
    - {roles}/service/defaults/main.yml
    - {roles}/service/vars/main.yml
  tasks:
    - name: Render the service unit
      ansible.builtin.template:
        src: {roles}/service/templates/mlpacker-service.service.j2
        dest: "{{{{ out_dir }}}}/mlpacker-{{{{ mlpacker_service.id }}}}.service"
        mode: "0644"
    - name: Render the canary unit
      ansible.builtin.template:
        src: {roles}/service/templates/mlpacker-service.service.j2
        dest: "{{{{ out_dir }}}}/mlpacker-{{{{ mlpacker_service.id }}}}-canary.service"
        mode: "0644"
      vars:
        _mlpacker_service_canary: true
        _mlpacker_service_canary_port: 40123
"""

# A platform skip, not a missing component (it stays a skip under CI, listed with its reason): the suite
# installs no systemd, and a machine without it (a container, a systemd-free distribution) is a fine place
# to run the tests; where systemd-analyze exists, as on Debian 12, the check runs.
pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (no systemd here)"
)


SERVICE_UNITS = ["mlpacker-iris-scale-canary.service", "mlpacker-iris-scale.service"]
# `systemd-analyze security` rates a unit from 0 (locked down) to 10; issue #12 asks 3.0 or lower ("OK").
EXPOSURE_LIMIT = 3.0


def render_service_units(tmp_path: Path, mode: str, settings: dict[str, Any] | None = None) -> Path:
    """Render the service role's unit and canary unit of iris-scale (pipeline iris) into a folder, over the
    release layout a deploy makes (systemd-analyze checks that ExecStart is executable). -> the folder"""
    root = tmp_path / "opt"
    service_dir = root / "iris" / "iris-scale"
    release = service_dir / "releases" / "0123456789ab"
    (release / "venv" / "bin").mkdir(parents=True)
    runtime = release / "venv" / "bin" / "mlpacker-runtime"
    runtime.write_text("#!/bin/sh\nexit 0\n")
    runtime.chmod(0o755)
    (service_dir / "current").symlink_to(release)
    playbook = tmp_path / "render.yml"
    playbook.write_text(RENDER_PLAYBOOK.format(roles=ROLES))
    out_dir = tmp_path / "units"
    out_dir.mkdir()
    variables = write_vars_file(
        tmp_path / "vars.yml",
        {
            "out_dir": str(out_dir),
            "mlpacker_host_root": str(root),
            "mlpacker_host_log_root": str(tmp_path / "log"),
            "mlpacker_service": {"id": "iris-scale", "port": 8000, "stages": ["scale"]},
            "mlpacker_service_deployment": {
                "pipeline": "iris",
                "mode": mode,
                "stages": {},
                "wheelhouse_id": "w",
            },
            "_mlpacker_service_release_id": "0123456789ab",
            **(settings or {}),
        },
    )
    rendered = run_playbook(str(playbook), REPO_ROOT / "inventories" / "local", [variables])
    assert rendered.rc == 0, rendered.describe()
    assert sorted(unit.name for unit in out_dir.glob("*.service")) == SERVICE_UNITS
    return out_dir


def exposure(unit: Path) -> float:
    """The overall exposure level `systemd-analyze security --offline=true` gives the unit file."""
    analysis = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    output = analysis.stdout + analysis.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", output)
    assert found, f"no exposure level for {unit.name}:\n{output}"
    return float(found.group(1))


@pytest.mark.parametrize("mode", ["rest", "stream"])
def test_rendered_units_pass_systemd_analyze_verify(tmp_path: Path, mode: str) -> None:
    out_dir = render_service_units(tmp_path, mode)
    units = [out_dir / name for name in SERVICE_UNITS]
    service_dir = tmp_path / "opt" / "iris" / "iris-scale"
    release = service_dir / "releases" / "0123456789ab"
    service = (out_dir / "mlpacker-iris-scale.service").read_text()
    # The pipeline's own user, never root nor a user shared with other pipelines.
    for line in ("User=mlp-iris", "Group=mlp-iris", "NoNewPrivileges=true", "ProtectSystem=strict"):
        assert line in service.splitlines()
    assert "Restart=on-failure" in service
    assert f"ReadWritePaths={tmp_path / 'log' / 'iris'}" in service
    assert f"ExecStart={service_dir}/current/venv/bin/mlpacker-runtime serve" in service
    canary = (out_dir / "mlpacker-iris-scale-canary.service").read_text()
    assert f"ExecStart={release}/venv/bin/mlpacker-runtime serve" in canary
    port_variable = "MLPACKER_REST_PORT" if mode == "rest" else "MLPACKER_STREAM_HEALTH_PORT"
    assert f"Environment={port_variable}=40123" in canary
    # REST: `systemctl reload` is gunicorn's reload (SIGHUP to the master), how a deploy moves the service to
    # rotated credentials; a stream consumer has none (SIGHUP would end it), nor has a canary.
    reloads = [line for line in service.splitlines() if line.startswith("ExecReload=")]
    assert reloads == (["ExecReload=/bin/kill -HUP $MAINPID"] if mode == "rest" else []), reloads
    assert not [line for line in canary.splitlines() if line.startswith("ExecReload=")]
    verify = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True, check=False
    )
    # verify exits 0 even on unknown directives (it only warns): every line about our units is a problem.
    problems = [
        line for line in (verify.stdout + verify.stderr).splitlines() if "mlpacker-iris-scale" in line
    ]
    assert verify.returncode == 0 and problems == [], verify.stdout + verify.stderr


@pytest.mark.parametrize("mode", ["rest", "stream"])
def test_service_and_canary_units_score_ok_in_systemd_analyze_security(tmp_path: Path, mode: str) -> None:
    out_dir = render_service_units(tmp_path, mode)
    scores = {name: exposure(out_dir / name) for name in SERVICE_UNITS}
    assert all(score <= EXPOSURE_LIMIT for score in scores.values()), scores
    service = (out_dir / "mlpacker-iris-scale.service").read_text().splitlines()
    # The role's default limits.
    assert "MemoryMax=2G" in service and "TasksMax=1024" in service
    assert "MemoryDenyWriteExecute=true" in service


def test_unit_limits_and_write_execute_follow_the_role_settings(tmp_path: Path) -> None:
    settings = {
        "mlpacker_service_memory_max": "512M",
        "mlpacker_service_tasks_max": 64,
        "mlpacker_service_memory_deny_write_execute": False,
    }
    out_dir = render_service_units(tmp_path, "rest", settings)
    for name in SERVICE_UNITS:
        lines = (out_dir / name).read_text().splitlines()
        assert "MemoryMax=512M" in lines and "TasksMax=64" in lines
        assert not [line for line in lines if line.startswith("MemoryDenyWriteExecute")]
        # Without it the unit still scores OK (it weighs 0.1).
        assert exposure(out_dir / name) <= EXPOSURE_LIMIT


BROKER_RENDER_PLAYBOOK = """
- name: Render the broker role's systemd unit
  hosts: localhost
  gather_facts: false
  vars_files:
    - {roles}/broker/defaults/main.yml
    - {roles}/broker/vars/main.yml
  tasks:
    - name: Render the broker unit
      ansible.builtin.template:
        src: {roles}/broker/templates/mlpacker-broker.service.j2
        dest: "{{{{ out_dir }}}}/mlpacker-broker.service"
        mode: "0644"
"""


def test_broker_unit_passes_verify_and_scores_ok_in_systemd_analyze_security(tmp_path: Path) -> None:
    # systemd-analyze checks that ExecStart is executable: a stand-in for the mosquitto binary.
    binary = tmp_path / "bin" / "mosquitto"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    playbook = tmp_path / "render-broker.yml"
    playbook.write_text(BROKER_RENDER_PLAYBOOK.format(roles=ROLES))
    out_dir = tmp_path / "units"
    out_dir.mkdir()
    variables = write_vars_file(
        tmp_path / "broker-vars.yml",
        {
            "out_dir": str(out_dir),
            "mlpacker_broker_root": str(tmp_path / "opt"),
            "mlpacker_broker_config_root": str(tmp_path / "etc"),
            "mlpacker_broker_log_root": str(tmp_path / "log"),
            "_mlpacker_broker_binary": {"stdout_lines": [str(binary)]},
        },
    )
    rendered = run_playbook(str(playbook), REPO_ROOT / "inventories" / "local", [variables])
    assert rendered.rc == 0, rendered.describe()
    unit = out_dir / "mlpacker-broker.service"
    lines = unit.read_text().splitlines()
    # Its own user; it writes only its persistence folder (systemd appends its stdout to the log file).
    for line in (
        "User=mlpacker-broker",
        "Group=mlpacker-broker",
        f"ExecStart={binary} -c {tmp_path / 'etc' / 'mosquitto' / 'mosquitto.conf'}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        f"ReadWritePaths={tmp_path / 'opt' / '.broker'}",
        f"StandardOutput=append:{tmp_path / 'log' / 'broker.log'}",
        "MemoryMax=512M",
        "TasksMax=64",
    ):
        assert line in lines, line
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    problems = [line for line in (verify.stdout + verify.stderr).splitlines() if "mlpacker-broker" in line]
    assert verify.returncode == 0 and problems == [], verify.stdout + verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    # "→ Overall exposure level for mlpacker-broker.service: 1.2 OK 🙂": 0 (locked down) to 10; issue #12 asks
    # 3.0 or lower ("OK").
    overall = [line for line in security.stdout.splitlines() if "Overall exposure level" in line]
    assert len(overall) == 1, security.stdout + security.stderr
    score = float(overall[0].rsplit(":", 1)[1].split()[0])
    assert score <= 3.0, security.stdout
