"""Shared pytest configuration for the whole repository.

Fixtures that need real infrastructure live next to what they build:
the network-namespace test bed in ``tests/testbed/fixtures.py``.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.testbed.fixtures"]

# scripts/test runs the suite on two xdist workers (--dist loadgroup). Tests that deploy on this machine share
# its /opt/mlpacker, supervisord and service user, and test-bed tests share the one test bed (its lock is held
# for a session): each of the two sets runs whole on one worker, in order; everything else is spread.
XDIST_GROUPS = {"this_machine": "this-machine", "testbed": "testbed"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker, group in XDIST_GROUPS.items():
            if item.get_closest_marker(marker):
                item.add_marker(pytest.mark.xdist_group(group))
                break
