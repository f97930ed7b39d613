# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A pipeline's footprint on a host: its services and units, and what else keeps the shared parts alive."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.footprint import pipeline_footprint


def lay_out(base: Path, paths: list[str]) -> None:
    """Create ``paths`` under ``base``: a trailing slash makes a folder, anything else an empty file."""
    for relative in paths:
        target = base / relative
        if relative.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("")


def footprint(base: Path, pipeline: str = "iris") -> dict:
    return pipeline_footprint(
        pipeline,
        root=str(base / "opt"),
        config_root=str(base / "etc"),
        log_root=str(base / "log"),
        supervisor_conf_dir=str(base / "etc" / "supervisor"),
        systemd_dir=str(base / "systemd"),
        run_dir=str(base / "run"),
    )


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        # nothing on the host: nothing to remove, nothing else to keep
        (
            [],
            {"exists": False, "services": [], "supervisor_programs": [], "uses_broker": False, "last": True},
        ),
        # the pipeline's services (hidden folders are MLPacker's own) and their supervisord programs
        (
            [
                "opt/iris/iris-scale/",
                "opt/iris/iris-reduce/",
                "opt/iris/.wheelhouse/",
                "etc/supervisor/conf.d/mlpacker-iris-scale.conf",
                "etc/supervisor/conf.d/mlpacker-iris-scale-canary.conf",
                "etc/supervisor/conf.d/mlpacker-fraud.conf",
            ],
            {
                "exists": True,
                "services": ["iris-reduce", "iris-scale"],
                "supervisor_programs": ["mlpacker-iris-scale.conf", "mlpacker-iris-scale-canary.conf"],
                "last": True,
            },
        ),
        # another pipeline's folder keeps the shared parts (the managed broker's hidden folder does not)
        (
            ["opt/iris/iris/", "opt/fraud/fraud/", "opt/.broker/"],
            {"other_pipelines": ["fraud"], "last": False},
        ),
        # a broker host without any stage of the pipeline: only its use of the managed broker
        (
            ["etc/mosquitto/pipelines/iris", "etc/supervisor/conf.d/mlpacker-broker.conf", "log/broker.log"],
            {
                "exists": False,
                "uses_broker": True,
                "other_broker_users": [],
                "broker_files": ["mosquitto", "broker.log"],
                "last": True,
            },
        ),
        # another pipeline still uses the managed broker here, though it has no folder on this host
        (
            ["opt/iris/iris/", "etc/mosquitto/pipelines/iris", "etc/mosquitto/pipelines/fraud"],
            {"uses_broker": True, "other_broker_users": ["fraud"], "other_pipelines": [], "last": False},
        ),
        # the pipelines' credential fragments beside their markers are not users of the broker
        (
            [
                "etc/mosquitto/pipelines/iris",
                "etc/mosquitto/pipelines/iris.passwd",
                "etc/mosquitto/pipelines/iris.acl",
                "etc/mosquitto/pipelines/fraud.acl",
            ],
            {"uses_broker": True, "other_broker_users": [], "last": True},
        ),
    ],
)
def test_footprint(tmp_path: Path, paths: list[str], expected: dict) -> None:
    lay_out(tmp_path, paths)
    found = footprint(tmp_path)
    for key in ("supervisor_programs", "broker_files"):
        found[key] = [os.path.basename(path) for path in found[key]]
    assert {key: found[key] for key in expected} == expected


def test_units_of_both_managers_and_the_broker(tmp_path: Path) -> None:
    lay_out(
        tmp_path,
        [
            "opt/iris/iris-scale/",
            "systemd/mlpacker-iris-scale.service",
            "systemd/mlpacker-broker.service",
            "systemd/mlpacker-other.service",
        ],
    )
    found = footprint(tmp_path)
    assert found["systemd_units"] == [str(tmp_path / "systemd" / "mlpacker-iris-scale.service")]
    assert found["broker_units"] == {
        "supervisor": [],
        "systemd": [str(tmp_path / "systemd" / "mlpacker-broker.service")],
    }


@pytest.mark.parametrize(
    ("pid_file", "alive"),
    [(None, False), ("not a pid", False), ("999999999", False), ("self", True)],
)
def test_supervisord_pid_only_of_a_running_process(tmp_path: Path, pid_file: str | None, alive: bool) -> None:
    if pid_file is not None:
        (tmp_path / "run").mkdir()
        content = str(os.getpid()) if pid_file == "self" else pid_file
        (tmp_path / "run" / "supervisord.pid").write_text(content)
    assert footprint(tmp_path)["supervisord_pid"] == (os.getpid() if alive else None)


def test_created_user(tmp_path: Path) -> None:
    assert footprint(tmp_path)["created_user"] is None
    lay_out(tmp_path, ["opt/.state/"])
    (tmp_path / "opt" / ".state" / "created-user").write_text("mlpacker\n")
    assert footprint(tmp_path)["created_user"] == "mlpacker"
