# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""module_utils/host_services: the plan's services a host runs, and how."""

from __future__ import annotations

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.host_services import host_services


def service(name: str, host: str, containers: bool = False) -> dict:
    return {"id": name, "host": host, "containers": containers}


PLAN = {
    "services": [
        service("iris-scale", "edge1"),
        service("iris-scale", "edge2", containers=True),
        service("iris-reduce", "edge1", containers=True),
        service("iris-classify", "cloud1"),
        service("iris-extra", "edge1"),
    ]
}


@pytest.mark.parametrize(
    ("host", "broker_host", "venv", "container", "containers_only"),
    [
        ("edge1", "", ["iris-scale", "iris-extra"], ["iris-reduce"], False),
        ("edge2", "", [], ["iris-scale"], True),
        # The managed broker runs from the host's own Python: not containers only.
        ("edge2", "edge2", [], ["iris-scale"], False),
        ("cloud1", "", ["iris-classify"], [], False),
        # The broker's host without services of its own.
        ("broker1", "broker1", [], [], False),
    ],
)
def test_services_split_by_how_they_run(
    host: str, broker_host: str, venv: list[str], container: list[str], containers_only: bool
) -> None:
    result = host_services(PLAN, host, broker_host)
    assert [s["id"] for s in result["venv"]] == venv
    assert [s["id"] for s in result["container"]] == container
    # Plan order is kept, both kinds together.
    assert [s["id"] for s in result["all"]] == [s["id"] for s in PLAN["services"] if s["host"] == host]
    assert result["containers_only"] is containers_only


@pytest.mark.parametrize(
    ("services", "positions"),
    [
        (PLAN["services"], [0, 1, 2]),  # edge1 runs three
        ([service("a", "h1"), service("b", "h2")], [0]),
        ([], []),
    ],
)
def test_positions_cover_the_busiest_host(services: list[dict], positions: list[int]) -> None:
    # The same on every host, also on one that runs nothing.
    assert host_services({"services": services}, "nobody")["positions"] == positions
