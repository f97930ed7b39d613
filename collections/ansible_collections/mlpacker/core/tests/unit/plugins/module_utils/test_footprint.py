# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A pipeline's footprint on a host: its services and units, and what else keeps the shared parts alive."""

from __future__ import annotations

import os
import pwd
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


def own(path: Path, user: str) -> None:
    """Make ``path`` a folder owned by ``user`` (one of the system's own users: the tests run as root)."""
    path.mkdir(parents=True, exist_ok=True)
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def record_created(base: Path, *users: str) -> None:
    (base / "opt" / ".state").mkdir(parents=True, exist_ok=True)
    (base / "opt" / ".state" / "created-user").write_text("".join(f"{user}\n" for user in users))


def users(found: dict) -> dict:
    return {key: found[key] for key in ("user", "created_user", "created_users", "users_to_remove")}


def test_no_user_recorded_or_found(tmp_path: Path) -> None:
    lay_out(tmp_path, ["opt/iris/iris/", "log/iris/"])  # a log folder of root's: no user of the pipeline's
    assert users(footprint(tmp_path)) == {
        "user": None,
        "created_user": None,
        "created_users": [],
        "users_to_remove": [],
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give folders to other users")
class TestUsers:
    """The pipeline's user owns its log folder; system users (daemon, bin, sys) stand in for MLPacker's."""

    def test_the_pipeline_user_mlpacker_created_goes_with_it(self, tmp_path: Path) -> None:
        lay_out(tmp_path, ["opt/iris/iris/"])
        own(tmp_path / "log" / "iris", "daemon")
        record_created(tmp_path, "daemon")
        assert users(footprint(tmp_path)) == {
            "user": "daemon",
            "created_user": "daemon",
            "created_users": ["daemon"],
            "users_to_remove": ["daemon"],
        }

    def test_a_user_mlpacker_did_not_create_stays(self, tmp_path: Path) -> None:
        lay_out(tmp_path, ["opt/iris/iris/"])
        own(tmp_path / "log" / "iris", "daemon")
        record_created(tmp_path, "bin")  # the last pipeline: MLPacker's own users go, the admin's stays
        found = users(footprint(tmp_path))
        assert found["user"] == "daemon" and found["created_user"] is None
        assert found["users_to_remove"] == ["bin"]

    def test_other_pipelines_keep_their_users_and_the_record(self, tmp_path: Path) -> None:
        lay_out(tmp_path, ["opt/iris/iris/", "opt/fraud/fraud/"])
        own(tmp_path / "log" / "iris", "daemon")
        own(tmp_path / "log" / "fraud", "bin")
        record_created(tmp_path, "daemon", "bin", "sys")
        found = footprint(tmp_path)
        assert not found["last"]
        assert users(found) == {
            "user": "daemon",
            "created_user": "daemon",
            "created_users": ["daemon", "bin", "sys"],
            "users_to_remove": ["daemon"],
        }

    def test_a_user_another_pipeline_runs_as_stays(self, tmp_path: Path) -> None:
        # mlpacker_host_user set to one name for every pipeline (as all shared 'mlpacker' before)
        lay_out(tmp_path, ["opt/iris/iris/", "opt/fraud/fraud/"])
        own(tmp_path / "log" / "iris", "daemon")
        own(tmp_path / "log" / "fraud", "daemon")
        record_created(tmp_path, "daemon")
        found = users(footprint(tmp_path))
        assert found["user"] == "daemon" and found["created_user"] is None and found["users_to_remove"] == []

    def test_the_managed_brokers_user_stays_while_another_pipeline_uses_it(self, tmp_path: Path) -> None:
        lay_out(tmp_path, ["opt/iris/iris/", "etc/mosquitto/pipelines/iris", "etc/mosquitto/pipelines/fraud"])
        own(tmp_path / "log" / "iris", "daemon")
        own(tmp_path / "opt" / ".broker", "daemon")
        record_created(tmp_path, "daemon")
        found = users(footprint(tmp_path))
        assert found["created_user"] is None and found["users_to_remove"] == []

    def test_the_last_pipeline_takes_every_user_mlpacker_created(self, tmp_path: Path) -> None:
        lay_out(tmp_path, ["opt/iris/iris/", "etc/mosquitto/pipelines/iris"])
        own(tmp_path / "log" / "iris", "daemon")
        own(tmp_path / "opt" / ".broker", "sys")
        # The broker's user, the pipeline's, one left from before (blank lines and repeats are ignored).
        record_created(tmp_path, "sys", "", "daemon", "bin", "sys")
        found = footprint(tmp_path)
        assert found["last"]
        assert users(found) == {
            "user": "daemon",
            "created_user": "daemon",
            "created_users": ["sys", "daemon", "bin"],
            "users_to_remove": ["daemon", "sys", "bin"],
        }
