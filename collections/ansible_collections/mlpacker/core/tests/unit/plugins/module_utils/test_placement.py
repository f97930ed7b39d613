# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Placement plan: services per host, ports, REST next hops, stream topics, entry points, broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.broker import resolve_broker
from ansible_collections.mlpacker.core.plugins.module_utils.placement import build_plan, predict_url
from ansible_collections.mlpacker.core.plugins.module_utils.spec_validation import (
    SpecError,
    validate_pipeline,
)

GROUPS = {
    "all": ["edge1", "edge2", "fog1", "cloud1", "mqtt1"],
    "edge": ["edge1", "edge2"],
    "fog": ["fog1"],
    "cloud": ["cloud1"],
    "broker": ["mqtt1"],
    "edgecloud": ["edge1", "cloud1"],
}
ADDRESSES = {
    "edge1": "10.0.0.2",
    "edge2": "10.0.0.3",
    "fog1": "10.0.0.4",
    "cloud1": "10.0.0.5",
    "mqtt1": "10.0.0.9",
}


@pytest.fixture()
def base_dir(tmp_path: Path) -> Path:
    for name in ("scale", "reduce", "classify"):
        (tmp_path / f"{name}.joblib").write_bytes(b"placeholder")
    return tmp_path


def plan_for(pipeline: dict[str, Any], base_dir: Path, broker: dict[str, Any] | None = None, **kwargs: Any):
    spec = validate_pipeline(pipeline, GROUPS, str(base_dir), broker_given=broker is not None)
    resolved = resolve_broker(broker, GROUPS, ADDRESSES) if spec["mode"] == "stream" else None
    return build_plan(spec, ADDRESSES, resolved, **kwargs)


def three_stages(mode: str = "rest", **stage_overrides: dict[str, Any]) -> dict[str, Any]:
    stages = [
        {"name": "scale", "artifact": "scale.joblib", "group": "edge"},
        {"name": "reduce", "artifact": "reduce.joblib", "group": "fog"},
        {"name": "classify", "artifact": "classify.joblib", "group": "cloud"},
    ]
    for stage in stages:
        stage.update(stage_overrides.get(stage["name"], {}))
    return {"name": "iris", "mode": mode, "layout": "distributed", "stages": stages}


def services_by_key(plan: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(service["id"], service["host"]): service for service in plan["services"]}


def test_distributed_rest_next_hops_point_at_every_host_of_the_next_stage(base_dir: Path) -> None:
    plan = plan_for(three_stages(), base_dir)
    services = services_by_key(plan)
    assert list(services) == [
        ("iris-scale", "edge1"),
        ("iris-scale", "edge2"),
        ("iris-reduce", "fog1"),
        ("iris-classify", "cloud1"),
    ]
    assert services[("iris-scale", "edge1")]["next_hops"] == ["https://10.0.0.4:8000/predict"]
    assert services[("iris-scale", "edge2")]["next_hops"] == ["https://10.0.0.4:8000/predict"]
    assert services[("iris-reduce", "fog1")]["next_hops"] == ["https://10.0.0.5:8000/predict"]
    assert services[("iris-classify", "cloud1")]["next_hops"] == []
    assert services[("iris-scale", "edge2")]["url"] == "https://10.0.0.3:8000/predict"
    assert plan["entry_points"] == {
        "rest": ["https://10.0.0.2:8000/predict", "https://10.0.0.3:8000/predict"]
    }
    assert plan["hosts"] == {
        "edge1": ["iris-scale"],
        "edge2": ["iris-scale"],
        "fog1": ["iris-reduce"],
        "cloud1": ["iris-classify"],
    }
    assert plan["broker"] is None
    assert all(
        service["input_topic"] is None and service["output_kind"] is None for service in plan["services"]
    )
    assert [stage["method"] for stage in plan["stages"]] == ["transform", "transform", "predict"]
    assert services[("iris-reduce", "fog1")]["share_group"] == "mlpacker-iris-reduce"
    assert services[("iris-reduce", "fog1")]["client_id"] == "mlpacker-iris-reduce-fog1"


def test_next_hops_fan_out_to_a_multi_host_stage(base_dir: Path) -> None:
    pipeline = three_stages(reduce={"group": "edge"})
    services = services_by_key(plan_for(pipeline, base_dir))
    # scale and reduce both run on edge1 and edge2: reduce gets the next free port on each.
    assert services[("iris-scale", "edge1")]["next_hops"] == [
        "https://10.0.0.2:8001/predict",
        "https://10.0.0.3:8001/predict",
    ]
    assert services[("iris-reduce", "edge2")]["port"] == 8001


def test_distributed_stream_topics_chain_the_stages(base_dir: Path) -> None:
    plan = plan_for(three_stages("stream"), base_dir)
    services = services_by_key(plan)
    scale = services[("iris-scale", "edge1")]
    reduce = services[("iris-reduce", "fog1")]
    classify = services[("iris-classify", "cloud1")]
    assert (scale["input_topic"], scale["output_topic"], scale["output_kind"]) == (
        "mlpacker/iris/in",
        "mlpacker/iris/stage/reduce/in",
        "instances",
    )
    assert (reduce["input_topic"], reduce["output_topic"], reduce["output_kind"]) == (
        "mlpacker/iris/stage/reduce/in",
        "mlpacker/iris/stage/classify/in",
        "instances",
    )
    assert (classify["input_topic"], classify["output_topic"], classify["output_kind"]) == (
        "mlpacker/iris/stage/classify/in",
        "mlpacker/iris/out",
        "predictions",
    )
    assert {service["error_topic"] for service in plan["services"]} == {"mlpacker/iris/errors"}
    assert all(service["next_hops"] == [] and service["url"] is None for service in plan["services"])
    assert plan["entry_points"] == {
        "stream": {
            "broker": {"host": "10.0.0.9", "port": 8883},
            "input_topic": "mlpacker/iris/in",
            "output_topic": "mlpacker/iris/out",
            "error_topic": "mlpacker/iris/errors",
        }
    }
    assert plan["broker"]["managed"] is True
    assert plan["broker"]["inventory_host"] == "mqtt1"


def test_custom_topics_are_used_at_the_ends(base_dir: Path) -> None:
    pipeline = three_stages("stream")
    pipeline.update({"input_topic": "plant/in", "output_topic": "plant/out", "error_topic": "plant/err"})
    plan = plan_for(pipeline, base_dir)
    services = services_by_key(plan)
    assert services[("iris-scale", "edge1")]["input_topic"] == "plant/in"
    assert services[("iris-classify", "cloud1")]["output_topic"] == "plant/out"
    assert plan["topics"] == {"input": "plant/in", "output": "plant/out", "errors": "plant/err"}


@pytest.mark.parametrize("mode", ["rest", "stream"])
def test_atomic_layout_runs_one_service_per_host_with_every_stage(base_dir: Path, mode: str) -> None:
    pipeline = {
        "name": "iris",
        "mode": mode,
        "layout": "atomic",
        "group": "edge",
        "stages": [
            {"name": "scale", "artifact": "scale.joblib", "port": 9100},
            {"name": "classify", "artifact": "classify.joblib"},
        ],
    }
    plan = plan_for(pipeline, base_dir)
    assert [(service["id"], service["host"], service["port"]) for service in plan["services"]] == [
        ("iris", "edge1", 9100),
        ("iris", "edge2", 9100),
    ]
    assert all(service["stages"] == ["scale", "classify"] for service in plan["services"])
    if mode == "rest":
        assert plan["entry_points"]["rest"] == [
            "https://10.0.0.2:9100/predict",
            "https://10.0.0.3:9100/predict",
        ]
        assert all(service["next_hops"] == [] for service in plan["services"])
    else:
        assert all(
            (service["input_topic"], service["output_topic"], service["output_kind"])
            == ("mlpacker/iris/in", "mlpacker/iris/out", "predictions")
            for service in plan["services"]
        )


@pytest.mark.parametrize(
    ("overrides", "default_port", "expected_ports"),
    [
        # default port, next free port for the second service on a shared host
        ({"scale": {"group": "edgecloud"}}, 8000, {("scale", "cloud1"): 8000, ("classify", "cloud1"): 8001}),
        # an explicit port is kept, the other service on the host starts at the default
        (
            {"scale": {"group": "edgecloud"}, "classify": {"port": 8000}},
            8000,
            {("scale", "cloud1"): 8001, ("classify", "cloud1"): 8000},
        ),
        # explicit ports are reserved before the others are allocated, whatever the stage order
        (
            {"scale": {"group": "edgecloud"}, "classify": {"port": 9000}},
            9000,
            {("scale", "cloud1"): 9001, ("scale", "edge1"): 9000, ("classify", "cloud1"): 9000},
        ),
        ({}, 7000, {("scale", "edge1"): 7000, ("classify", "cloud1"): 7000}),
    ],
)
def test_port_allocation(
    base_dir: Path, overrides: dict[str, Any], default_port: int, expected_ports: dict[tuple[str, str], int]
) -> None:
    pipeline = three_stages(**overrides)
    del pipeline["stages"][1]  # two stages: scale, classify
    plan = plan_for(pipeline, base_dir, default_port=default_port)
    ports = {(service["stages"][0], service["host"]): service["port"] for service in plan["services"]}
    for key, port in expected_ports.items():
        assert ports[key] == port, ports


def test_explicit_port_collision_on_one_host_is_an_error(base_dir: Path) -> None:
    pipeline = three_stages(scale={"port": 9000}, reduce={"group": "edge", "port": 9000})
    with pytest.raises(SpecError) as raised:
        plan_for(pipeline, base_dir)
    assert raised.value.errors == [
        "mlpacker_pipeline.stages[1].port: port 9000 on host 'edge1' is already used by service 'iris-scale'",
        "mlpacker_pipeline.stages[1].port: port 9000 on host 'edge2' is already used by service 'iris-scale'",
    ]


def test_managed_broker_port_is_reserved_on_its_host(base_dir: Path) -> None:
    groups_with_shared_broker = dict(GROUPS, broker=["cloud1"])
    pipeline = three_stages("stream", classify={"port": 8883})
    spec = validate_pipeline(pipeline, groups_with_shared_broker, str(base_dir))
    broker = resolve_broker(None, groups_with_shared_broker, ADDRESSES)
    with pytest.raises(SpecError) as raised:
        build_plan(spec, ADDRESSES, broker, default_port=8883)
    assert raised.value.errors == [
        "mlpacker_pipeline.stages[2].port: port 8883 on host 'cloud1'"
        " is already used by the managed MQTT broker"
    ]
    del pipeline["stages"][2]["port"]
    spec = validate_pipeline(pipeline, groups_with_shared_broker, str(base_dir))
    plan = build_plan(spec, ADDRESSES, broker, default_port=8883)
    assert services_by_key(plan)[("iris-classify", "cloud1")]["port"] == 8884
    assert services_by_key(plan)[("iris-scale", "edge1")]["port"] == 8883


def test_hosts_without_address_are_reached_by_name(base_dir: Path) -> None:
    spec = validate_pipeline(three_stages(), GROUPS, str(base_dir))
    plan = build_plan(spec, {}, None)
    assert plan["entry_points"]["rest"] == ["https://edge1:8000/predict", "https://edge2:8000/predict"]
    assert plan["services"][0]["address"] == "edge1"


@pytest.mark.parametrize(
    ("address", "url"),
    [("10.0.0.2", "https://10.0.0.2:8000/predict"), ("fd00::2", "https://[fd00::2]:8000/predict")],
)
def test_predict_url(address: str, url: str) -> None:
    assert predict_url(address, 8000) == url
    assert predict_url(address, 8000, tls=False) == url.replace("https://", "http://")


def test_insecure_plan_uses_plain_http(base_dir: Path) -> None:
    spec = validate_pipeline(three_stages(), GROUPS, str(base_dir))
    plan = build_plan(spec, ADDRESSES, None, tls=False)
    assert plan["tls"] is False
    assert plan["entry_points"]["rest"] == ["http://10.0.0.2:8000/predict", "http://10.0.0.3:8000/predict"]
    assert all(hop.startswith("http://") for service in plan["services"] for hop in service["next_hops"])


def test_plan_stages_carry_normalised_fields(base_dir: Path) -> None:
    plan = plan_for(three_stages(scale={"containers": True}), base_dir)
    scale = plan["stages"][0]
    assert scale == {
        "name": "scale",
        "index": 0,
        "artifact": str(base_dir / "scale.joblib"),
        "function": None,
        "format": "joblib",
        "method": "transform",
        "trusted_types": [],
        "sha256": None,
        "input": None,
        "group": "edge",
        "hosts": ["edge1", "edge2"],
        "port": None,
        "containers": True,
    }
    assert [service["containers"] for service in plan["services"]] == [True, True, False, False]
    assert (plan["name"], plan["mode"], plan["layout"], plan["base_dir"]) == (
        "iris",
        "rest",
        "distributed",
        str(base_dir),
    )
