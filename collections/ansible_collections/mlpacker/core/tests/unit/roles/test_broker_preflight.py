# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The broker role's preflight on its persistence and queue settings
(mlpacker_broker_autosave_interval, mlpacker_broker_max_queued_bytes), run by a real ``ansible-playbook``
over the role's own preflight.yml with its defaults and vars: whole numbers from 0 pass (also as the text
an inventory or ``-e`` gives), anything else fails naming the variable and what it means."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROLE = Path(__file__).resolve().parents[3] / "roles" / "broker"
COLLECTIONS_DIR = Path(__file__).resolve().parents[6]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")


def run_preflight(tmp_path: Path, variables: dict[str, Any]) -> subprocess.CompletedProcess:
    playbook = tmp_path / "preflight.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "localhost",
                    "gather_facts": False,
                    "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
                    "tasks": [{"ansible.builtin.import_tasks": str(ROLE / "tasks" / "preflight.yml")}],
                }
            ]
        )
    )
    # Security off: the TLS and auth checks want controller files this test does not make.
    settings = {"mlpacker_broker_pipeline": "iris", "mlpacker_broker_wheelhouse": "/unused.tar",
                "mlpacker_broker_config_root": str(tmp_path / "etc"), "mlpacker_broker_tls": False,
                "mlpacker_broker_auth": False, **variables}  # fmt: skip
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS_DIR), ANSIBLE_LOCALHOST_WARNING="0",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="0", ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_NOCOLOR="1")  # fmt: skip
    command = [
        str(ANSIBLE_PLAYBOOK),
        "-i",
        "localhost,",
        "-c",
        "local",
        str(playbook),
        "-e",
        json.dumps(settings),
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.mark.parametrize(
    ("variables", "failure"),
    [
        ({}, None),
        ({"mlpacker_broker_autosave_interval": "30", "mlpacker_broker_max_queued_bytes": 0}, None),
        (
            {"mlpacker_broker_autosave_interval": -1},
            "mlpacker_broker_autosave_interval must be a whole number from 0 (got '-1'): seconds between"
            " saves to disk, 0 to save after every change",
        ),
        (
            {"mlpacker_broker_max_queued_bytes": "64M"},
            "mlpacker_broker_max_queued_bytes must be a whole number from 0 (got '64M'): payload bytes queued"
            " per client, 0 for no byte limit",
        ),
    ],
    ids=["defaults", "set", "negative-interval", "bytes-with-a-unit"],
)
def test_preflight_on_persistence_and_queue_bytes(
    tmp_path: Path, variables: dict[str, Any], failure: str | None
) -> None:
    run = run_preflight(tmp_path, variables)
    output = " ".join((run.stdout + run.stderr).split())
    if failure is None:
        assert run.returncode == 0, output[-3000:]
    else:
        assert run.returncode != 0 and failure in output, output[-3000:]
