# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Placement plan: which service runs on which host, on which port, wired to what.

Input is the normalised spec from spec_validation.py; output is the ``plan`` contract of docs/architecture.md
("Placement plan") that the deploy roles consume.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.mlpacker.core.plugins.module_utils.runtime_contract import (
    OUTPUT_INSTANCES,
    OUTPUT_PREDICTIONS,
)
from ansible_collections.mlpacker.core.plugins.module_utils.spec_validation import SPEC_ROOT, SpecError

DEFAULT_PORT = 8000


def stage_topic(pipeline: str, stage: str) -> str:
    return f"mlpacker/{pipeline}/stage/{stage}/in"


def predict_url(address: str, port: int, tls: bool = True) -> str:
    # IPv6 literals need brackets inside a URL.
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return "{}://{}:{}/predict".format("https" if tls else "http", host, port)


def draft_services(spec: dict[str, Any], addresses: dict[str, str]) -> list[dict[str, Any]]:
    """One entry per deployment unit per host, in pipeline order (ports not assigned yet)."""
    name = spec["name"]
    drafts: list[dict[str, Any]] = []
    if spec["layout"] == "atomic":
        first = spec["stages"][0]
        for host in spec["hosts"]:
            drafts.append(
                {
                    "id": name,
                    "host": host,
                    "stage_indexes": list(range(len(spec["stages"]))),
                    "requested_port": first["port"],
                    "port_field": f"{SPEC_ROOT}.stages[0].port",
                    "containers": spec["containers"],
                }
            )
        return add_addresses(drafts, addresses)
    for stage in spec["stages"]:
        for host in stage["hosts"]:
            drafts.append(
                {
                    "id": "{}-{}".format(name, stage["name"]),
                    "host": host,
                    "stage_indexes": [stage["index"]],
                    "requested_port": stage["port"],
                    "port_field": f"{SPEC_ROOT}.stages[{stage['index']}].port",
                    "containers": stage["containers"],
                }
            )
    return add_addresses(drafts, addresses)


def add_addresses(drafts: list[dict[str, Any]], addresses: dict[str, str]) -> list[dict[str, Any]]:
    for draft in drafts:
        draft["address"] = addresses.get(draft["host"]) or draft["host"]
    return drafts


def assign_ports(
    drafts: list[dict[str, Any]], default_port: int, reserved: dict[str, dict[int, str]]
) -> None:
    """Explicit ports first (a clash is an error), then each other service on the host's next free port.

    ``reserved`` maps host -> {port: what uses it} for ports taken by something else (the managed broker).
    """
    errors: list[str] = []
    used: dict[str, dict[int, str]] = {host: dict(ports) for host, ports in reserved.items()}
    for draft in drafts:
        port = draft["requested_port"]
        if port is None:
            continue
        host_ports = used.setdefault(draft["host"], {})
        if port in host_ports:
            errors.append(
                f"{draft['port_field']}: port {port} on host '{draft['host']}'"
                f" is already used by {host_ports[port]}"
            )
        else:
            host_ports[port] = "service '{}'".format(draft["id"])
        draft["port"] = port
    for draft in drafts:
        if draft["requested_port"] is not None:
            continue
        host_ports = used.setdefault(draft["host"], {})
        port = default_port
        while port in host_ports:
            port += 1
        if port > 65535:
            errors.append(
                f"{draft['port_field']}: no free port left on host '{draft['host']}' from {default_port}"
            )
        host_ports[port] = "service '{}'".format(draft["id"])
        draft["port"] = port
    if errors:
        raise SpecError(errors)


def build_plan(
    spec: dict[str, Any],
    addresses: dict[str, str],
    broker: dict[str, Any] | None,
    default_port: int = DEFAULT_PORT,
    tls: bool = True,
) -> dict[str, Any]:
    """Compute the placement plan for a spec validated by spec.validate_pipeline (``tls``: https URLs)."""
    name = spec["name"]
    mode = spec["mode"]
    stages = spec["stages"]
    drafts = draft_services(spec, addresses)
    reserved: dict[str, dict[int, str]] = {}
    if mode == "stream" and broker and broker["managed"]:
        reserved[broker["inventory_host"]] = {broker["port"]: "the managed MQTT broker"}
    assign_ports(drafts, default_port, reserved)

    urls_by_stage: dict[int, list[str]] = {}
    for draft in drafts:
        urls_by_stage.setdefault(draft["stage_indexes"][0], []).append(
            predict_url(draft["address"], draft["port"], tls)
        )

    services: list[dict[str, Any]] = []
    hosts: dict[str, list[str]] = {}
    for draft in drafts:
        first_index = draft["stage_indexes"][0]
        last_index = draft["stage_indexes"][-1]
        is_last = last_index == len(stages) - 1
        service: dict[str, Any] = {
            "id": draft["id"],
            "host": draft["host"],
            "address": draft["address"],
            "stages": [stages[index]["name"] for index in draft["stage_indexes"]],
            "port": draft["port"],
            "url": None,
            "next_hops": [],
            "input_topic": None,
            "output_topic": None,
            "output_kind": None,
            "error_topic": None,
            "share_group": "mlpacker-{}".format(draft["id"]),
            "client_id": "mlpacker-{}-{}".format(draft["id"], draft["host"]),
            "containers": draft["containers"],
        }
        if mode == "rest":
            service["url"] = predict_url(draft["address"], draft["port"], tls)
            service["next_hops"] = [] if is_last else list(urls_by_stage.get(last_index + 1, []))
        else:
            service["input_topic"] = (
                spec["input_topic"] if first_index == 0 else stage_topic(name, stages[first_index]["name"])
            )
            service["output_topic"] = (
                spec["output_topic"] if is_last else stage_topic(name, stages[last_index + 1]["name"])
            )
            service["output_kind"] = OUTPUT_PREDICTIONS if is_last else OUTPUT_INSTANCES
            service["error_topic"] = spec["error_topic"]
        services.append(service)
        hosts.setdefault(draft["host"], []).append(draft["id"])

    if mode == "rest":
        entry_points: dict[str, Any] = {"rest": list(urls_by_stage.get(0, []))}
    else:
        entry_points = {
            "stream": {
                "broker": {"host": broker["host"], "port": broker["port"]} if broker else None,
                "input_topic": spec["input_topic"],
                "output_topic": spec["output_topic"],
                "error_topic": spec["error_topic"],
            }
        }

    plan_stages = []
    for stage in stages:
        plan_stages.append(
            {
                "name": stage["name"],
                "index": stage["index"],
                "artifact": stage["artifact"],
                "function": stage["function"],
                "format": stage["format"],
                "method": stage["method"],
                "trusted_types": stage["trusted_types"],
                "sha256": stage.get("sha256"),
                "input": stage.get("input"),
                "group": stage["group"],
                "hosts": list(stage["hosts"]),
                "port": stage["port"],
                "containers": stage["containers"],
            }
        )
    return {
        "name": name,
        "mode": mode,
        "tls": bool(tls),
        "layout": spec["layout"],
        "containers": spec["containers"],
        "base_dir": spec["base_dir"],
        "code_dir": spec["code_dir"],
        "requirements": spec["requirements"],
        "requirements_lock": spec.get("requirements_lock"),
        "topics": {
            "input": spec["input_topic"],
            "output": spec["output_topic"],
            "errors": spec["error_topic"],
        },
        "stages": plan_stages,
        "services": services,
        "hosts": hosts,
        "entry_points": entry_points,
        "broker": broker if mode == "stream" else None,
    }
