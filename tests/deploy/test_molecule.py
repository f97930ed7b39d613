"""The service role's molecule scenario (syntax, prepare, converge, idempotence, check, verify, cleanup)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICE_ROLE = REPO / "collections" / "ansible_collections" / "mlpacker" / "core" / "roles" / "service"


@pytest.mark.slow
def test_service_role_molecule_scenario() -> None:
    # molecule calls ansible-playbook, ansible-config and friends by name: the virtualenv's bin goes first.
    venv_bin = Path(sys.executable).parent
    result = subprocess.run(
        [str(venv_bin / "molecule"), "test"],
        cwd=SERVICE_ROLE,
        capture_output=True,
        text=True,
        timeout=580,
        env={**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "NO_COLOR": "1"},
        check=False,
    )
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    assert result.returncode == 0, output[-8000:]
    # The scenario must really have run the idempotence and check steps, not skipped them.
    for step in ("converge", "idempotence", "check", "verify"):
        assert re.search(rf"{step}: Executed: Successful", output), f"{step} did not run:\n{output[-4000:]}"
