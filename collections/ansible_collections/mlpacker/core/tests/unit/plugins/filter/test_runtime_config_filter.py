# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The mlpacker.core.runtime_config filter, run by a real ``ansible`` over templated variables."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.runtime_config import runtime_config

RELEASE = "/opt/mlpacker/fx/fx/releases/0123456789ab"
STAGES = [
    {"name": "scale", "artifact": "/ctrl/scaler.joblib", "function": None, "format": "joblib",
     "method": "transform", "trusted_types": [], "sha256": None, "versions": {"numpy": "2.1.3"}},
    {"name": "double", "artifact": None, "function": "features.scaling:double", "format": "function",
     "method": "call", "trusted_types": [], "sha256": None, "versions": {}},
]  # fmt: skip
SERVICE = {
    "id": "fx",
    "port": 8005,
    "next_hops": [],
    "input_topic": "mlpacker/fx/in",
    "output_topic": "mlpacker/fx/out",
    "output_kind": "predictions",
    "error_topic": "mlpacker/fx/errors",
    "share_group": "mlpacker-fx",
    "client_id": "mlpacker-fx-localhost",
}
# What the roles pass: role variables as Ansible templates them (text from -e, lazily templated dicts).
EXPRESSION = (
    "{{ service | mlpacker.core.runtime_config(pipeline='fx', mode=mode, stages=stages, release_dir=release,"
    " code_dir=code_dir, broker=broker, rest_workers=workers, allow_version_mismatch=allow) }}"
)


def template(run_module: Callable[..., dict[str, Any]], variables: dict[str, Any]) -> dict[str, Any]:
    """EXPRESSION templated by ``ansible localhost -m debug`` (conftest's run_module): the host's result."""
    return run_module(
        "ansible.builtin.debug", {"msg": EXPRESSION}, extra_vars=[json.dumps(variables), "workers=3"]
    )


@pytest.mark.parametrize(
    ("mode", "broker", "code_dir", "allow"),
    [
        ("rest", {}, None, False),
        (
            "stream",
            {"host": "b", "port": 1883, "password": "p", "tls": {"enabled": True, "ca_file": None}},
            "/c",
            "yes",
        ),
    ],
    ids=["rest", "stream"],
)
def test_the_filter_writes_what_the_function_makes(
    run_module: Callable[..., dict[str, Any]], mode: str, broker: dict[str, Any], code_dir: Any, allow: Any
) -> None:
    variables = {"service": SERVICE, "stages": STAGES, "release": RELEASE, "mode": mode, "broker": broker,
                 "code_dir": code_dir, "allow": allow}  # fmt: skip
    result = template(run_module, variables)
    assert not result.get("failed"), result.get("msg")
    expected = runtime_config(
        SERVICE, STAGES, pipeline="fx", mode=mode, release_dir=RELEASE, code_dir=code_dir, broker=broker,
        rest_workers="3", allow_version_mismatch=allow,
    )  # fmt: skip
    assert result["msg"] == expected
    assert result["msg"]["allow_version_mismatch"] is (allow == "yes")
    if mode == "rest":
        assert result["msg"]["rest"]["workers"] == 3


def test_the_filter_fails_naming_the_field(run_module: Callable[..., dict[str, Any]]) -> None:
    variables = {"service": dict(SERVICE, port="http"), "stages": STAGES, "release": RELEASE, "mode": "rest",
                 "broker": {}, "code_dir": None, "allow": False}  # fmt: skip
    result = template(run_module, variables)
    assert result.get("failed")
    assert "mlpacker.core.runtime_config: service.port: expected an integer, got 'http'" in result["msg"]
