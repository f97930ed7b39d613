# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The pipeline role's preflight on mlpacker_rest_hops and mlpacker_stream_max_consecutive_refusals, run by a
real ``ansible-playbook`` over the role's own preflight.yml (the resilience_settings filter), and the sections
the runtime_config filter makes of them as the deploy passes them (role defaults, extra vars as text)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# The rest and stream sections services get from the checked settings.
SETTINGS = (
    "mlpacker_rest_hops | mlpacker.core.resilience_settings("
    "max_consecutive_refusals=mlpacker_stream_max_consecutive_refusals)"
)
SHOWN = (
    "{'rest': ({'id': 'p-a', 'port': 8000} | mlpacker.core.runtime_config(pipeline='p', mode='rest',"
    f" stages=[], release_dir='/r', resilience={SETTINGS})).rest,"
    " 'stream': ({'id': 'p-a', 'port': 8000} | mlpacker.core.runtime_config(pipeline='p', mode='stream',"
    f" stages=[], release_dir='/r', broker={{'host': 'b'}}, resilience={SETTINGS})).stream}}"
    " | to_json"
)


@pytest.mark.parametrize(
    ("settings", "failure"),
    [
        ({}, None),
        (
            {
                "mlpacker_rest_hops": {"timeout_s": 2.5, "ejection": {"consecutive_failures": 1}},
                "mlpacker_stream_max_consecutive_refusals": "4",
            },
            None,
        ),
        ({"mlpacker_rest_hops": {"timeout": 3}}, "mlpacker_rest_hops.timeout: unknown setting"),
        (
            {"mlpacker_rest_hops": {"ejection": {"base_s": 10, "max_s": 5}}},
            "mlpacker_rest_hops.ejection.max_s: the longest ejection (5) is shorter than base_s (10)",
        ),
        (
            {"mlpacker_rest_hops": {"retry_timeouts": "sometimes"}},
            "mlpacker_rest_hops.retry_timeouts: expected true or false, got 'sometimes'",
        ),
        (
            {"mlpacker_stream_max_consecutive_refusals": 0},
            "mlpacker_stream_max_consecutive_refusals: expected a whole number >= 1, got 0",
        ),
    ],
    ids=["defaults", "set", "unknown-key", "max-below-base", "retry-not-a-bool", "no-refusal-allowed"],
)
def test_preflight_on_resilience(
    tmp_path: Path, pipeline_preflight, settings: dict[str, Any], failure: str | None
) -> None:
    pipeline = {"name": "p", "mode": "rest", "layout": "atomic", "stages": []}
    variables = {"mlpacker_pipeline": pipeline, **settings}
    run = pipeline_preflight(tmp_path, SHOWN, variables)
    output = run.output
    if failure is not None:
        assert run.returncode != 0, output
        assert failure in " ".join(output.split()), output
        return
    assert run.returncode == 0, output
    sections = run.resolved
    rest = {key: sections["rest"][key] for key in ("hop_timeout_s", "hop_retry_timeouts", "hop_ejection")}
    if settings:
        assert rest == {
            "hop_timeout_s": 2.5,
            "hop_retry_timeouts": False,
            "hop_ejection": {"consecutive_failures": 1, "base_s": 5.0, "max_s": 300.0},
        }
        assert sections["stream"]["max_consecutive_refusals"] == 4
    else:  # the role's defaults: the runtime's
        assert rest == {
            "hop_timeout_s": 10.0,
            "hop_retry_timeouts": False,
            "hop_ejection": {"consecutive_failures": 3, "base_s": 5.0, "max_s": 300.0},
        }
        assert sections["stream"]["max_consecutive_refusals"] == 10
