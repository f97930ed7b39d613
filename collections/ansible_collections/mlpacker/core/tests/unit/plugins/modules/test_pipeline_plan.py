# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""mlpacker.core.pipeline_plan through a real Ansible run."""

from __future__ import annotations

from pathlib import Path

GROUPS = {"all": ["edge1", "cloud1", "mqtt1"], "edge": ["edge1"], "cloud": ["cloud1"], "broker": ["mqtt1"]}
ADDRESSES = {"edge1": "10.0.0.2", "cloud1": "10.0.0.3", "mqtt1": "10.0.0.9"}


def test_plan_through_ansible(run_module, models_dir: Path) -> None:
    pipeline = {
        "name": "iris",
        "mode": "rest",
        "layout": "distributed",
        "base_dir": str(models_dir),
        "stages": [
            {"name": "scale", "artifact": "scaler.joblib", "group": "edge"},
            {"name": "classify", "artifact": "classifier.pkl", "group": "cloud", "port": 9001},
        ],
    }
    result = run_module("pipeline_plan", {"pipeline": pipeline, "groups": GROUPS, "addresses": ADDRESSES})
    assert result.get("failed") is not True, result
    assert result["changed"] is False
    plan = result["plan"]
    assert [(service["id"], service["host"], service["port"]) for service in plan["services"]] == [
        ("iris-scale", "edge1", 8000),
        ("iris-classify", "cloud1", 9001),
    ]
    assert plan["services"][0]["next_hops"] == ["https://10.0.0.3:9001/predict"]
    assert plan["stages"][1]["artifact"] == str(models_dir / "classifier.pkl")
    assert plan["stages"][1]["format"] == "pickle"
    assert result["entry_points"] == {"rest": ["https://10.0.0.2:8000/predict"]}
    assert result["broker"] is None


def test_relative_base_dir_resolves_against_working_dir_in_check_mode(run_module, models_dir: Path) -> None:
    pipeline = {
        "name": "iris",
        "mode": "stream",
        "layout": "atomic",
        "group": "cloud",
        "base_dir": models_dir.name,
        "stages": [{"name": "model", "artifact": "pipeline.joblib"}],
    }
    broker = {
        "host": "mqtt.example.org",
        "port": 8883,
        "username": "svc",
        "password": "s3cr3t-Pa55",
        "tls": {"enabled": True},
    }
    result = run_module(
        "pipeline_plan",
        {"pipeline": pipeline, "groups": GROUPS, "broker": broker, "working_dir": str(models_dir.parent)},
        check_mode=True,
    )
    assert result.get("failed") is not True, result
    assert result["plan"]["base_dir"] == str(models_dir)
    assert result["broker"]["host"] == "mqtt.example.org"
    assert result["broker"]["managed"] is False
    assert result["broker"]["tls"]["enabled"] is True
    assert result["broker"]["password"] is None
    assert "s3cr3t-Pa55" not in str(result)
    assert result["entry_points"]["stream"]["broker"] == {"host": "mqtt.example.org", "port": 8883}


def test_invalid_spec_fails_with_every_problem(run_module, models_dir: Path) -> None:
    pipeline = {
        "name": "iris",
        "layout": "distributed",
        "base_dir": str(models_dir),
        "stages": [
            {"name": "Scale", "artifact": "scaler.joblib", "group": "edge"},
            {"name": "classify", "artifact": "nope.joblib", "group": "fog", "methd": "predict"},
        ],
    }
    result = run_module("pipeline_plan", {"pipeline": pipeline, "groups": GROUPS})
    assert result["failed"] is True
    assert result["errors"] == [
        "mlpacker_pipeline.stages[0].name: 'Scale' must match ^[a-z][a-z0-9-]{0,30}$",
        "mlpacker_pipeline.stages[1]: unknown key 'methd' (did you mean 'method'?)",
        f"mlpacker_pipeline.stages[1].artifact: {models_dir}/nope.joblib does not exist on the controller",
        "mlpacker_pipeline.stages[1].group: inventory group 'fog' does not exist"
        " (existing groups: broker, cloud, edge)",
    ]
    assert result["msg"].startswith("invalid pipeline spec: 4 problem(s): mlpacker_pipeline.stages[0].name")


def test_bad_option_types_are_rejected_by_ansible(run_module) -> None:
    result = run_module("pipeline_plan", {"pipeline": {"name": "x"}, "groups": GROUPS, "default_port": 0})
    assert result["failed"] is True
    assert result["msg"] == "default_port: 0 must be between 1 and 65535"
    result = run_module("pipeline_plan", {"pipeline": {"name": "x"}, "groups": GROUPS, "broker": {"port": 1}})
    assert result["failed"] is True
    assert "host" in result["msg"] and "broker" in result["msg"]
