# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The pipeline role's preflight on mlpacker_request_limits, run by a real ``ansible-playbook`` over the
role's own preflight.yml (the request_limits filter), and the rest section the runtime_config filter makes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# The rest section a service gets from the checked limits.
SHOWN_REST = (
    "({'id': 'p-a', 'port': 8000} | mlpacker.core.runtime_config(pipeline='p', mode='rest', stages=[],"
    " release_dir='/r', request_limits=mlpacker_request_limits | mlpacker.core.request_limits)).rest"
    " | to_json"
)


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
def test_preflight_on_request_limits(
    tmp_path: Path, pipeline_preflight, limits: dict[str, Any], failure: str | None
) -> None:
    variables = {
        "mlpacker_pipeline": {"name": "p", "mode": "rest", "layout": "atomic", "stages": []},
        "mlpacker_request_limits": limits,
    }
    run = pipeline_preflight(tmp_path, SHOWN_REST, variables)
    output = run.output
    if failure is None:
        assert run.returncode == 0, output
        rest = run.resolved
        assert (rest["max_instances"], rest["max_body_bytes"], rest["body_read_timeout_s"]) == (
            64,
            10485760,
            10,
        )
    else:
        assert run.returncode != 0, output
        assert failure in " ".join(output.split()), output
