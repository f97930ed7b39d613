# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The pipeline role's preflight on mlpacker_request_limits, run by a real ``ansible-playbook`` over the
role's own preflight.yml (the request_limits filter), and the rest section the runtime_config filter makes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

COLLECTIONS_DIR = Path(__file__).resolve().parents[6]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
PLAYBOOK = """
- name: Run the pipeline role's preflight
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Preflight
      ansible.builtin.import_role:
        name: mlpacker.core.pipeline
        tasks_from: preflight.yml
    - name: Show the rest section a service gets
      ansible.builtin.debug:
        msg: "RESOLVED {{ ({'id': 'p-a', 'port': 8000} | mlpacker.core.runtime_config(pipeline='p',
              mode='rest', stages=[], release_dir='/r', request_limits=mlpacker_request_limits
              | mlpacker.core.request_limits)).rest | to_json }}"
"""


def preflight(tmp_path: Path, limits: Any) -> subprocess.CompletedProcess:
    playbook = tmp_path / "preflight.yml"
    playbook.write_text(PLAYBOOK)
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS_DIR),
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_NOCOLOR="1",
    )
    variables = {
        "mlpacker_pipeline": {"name": "p", "mode": "rest", "layout": "atomic", "stages": []},
        "mlpacker_request_limits": limits,
    }
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), str(playbook), "-c", "local", "-e", json.dumps(variables)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("limits", "failure"),
    [
        ({"max_instances": 64}, None),
        ({"max_rows": 64}, "mlpacker_request_limits.max_rows: unknown limit"),
        ({"max_instances": 0}, "mlpacker_request_limits.max_instances: expected a whole number > 0, got 0"),
        ({"max_connections": 2}, "mlpacker_request_limits.max_connections: must be more than the 4 request"),
    ],
    ids=["ok", "unknown-key", "zero", "connections-vs-threads"],
)
def test_preflight_on_request_limits(tmp_path: Path, limits: dict[str, Any], failure: str | None) -> None:
    run = preflight(tmp_path, limits)
    output = run.stdout + run.stderr
    if failure is None:
        assert run.returncode == 0, output
        [line] = [line for line in run.stdout.splitlines() if '"msg": "RESOLVED ' in line]
        rest = json.loads(json.loads("{" + line.strip() + "}")["msg"][len("RESOLVED ") :])
        assert (rest["max_instances"], rest["max_body_bytes"], rest["body_read_timeout_s"]) == (
            64,
            10485760,
            10,
        )
    else:
        assert run.returncode != 0, output
        assert failure in " ".join(output.split()), output
