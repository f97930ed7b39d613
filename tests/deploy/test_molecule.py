"""The roles' molecule scenarios (syntax, prepare, converge, idempotence, check, verify, cleanup) on this
machine: service (a REST service under supervisord), broker (the managed Mosquitto under supervisord) and
service_container (a REST service in a container on the machine's Docker engine)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "collections" / "ansible_collections" / "mlpacker" / "core" / "roles"


@pytest.mark.slow
@pytest.mark.parametrize(
    "role",
    [
        "service",
        pytest.param("broker", marks=pytest.mark.mqtt),
        pytest.param("service_container", marks=pytest.mark.docker),
    ],
)
def test_role_molecule_scenario(role: str) -> None:
    # molecule calls ansible-playbook, ansible-config and friends by name: the virtualenv's bin goes first.
    venv_bin = Path(sys.executable).parent
    result = subprocess.run(
        [str(venv_bin / "molecule"), "test"],
        cwd=ROLES / role,
        capture_output=True,
        text=True,
        timeout=580,
        env={**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "NO_COLOR": "1"},
        check=False,
    )
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    assert result.returncode == 0, output[-8000:]
    # The scenario must really have run every step, not skipped them; prepare in particular runs again on
    # every run (the scenarios' destroy step resets molecule's state), or converge would get old inputs.
    assert "already prepared" not in output, output[-4000:]
    for step in ("prepare", "converge", "idempotence", "check", "verify", "cleanup"):
        assert re.search(rf"{step}: Executed: Successful", output), f"{step} did not run:\n{output[-4000:]}"
