"""Shared pytest configuration for the whole repository.

Fixtures that need real infrastructure live next to what they build:
the network-namespace test bed in ``tests/testbed/fixtures.py``.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.testbed.fixtures"]

# Tests that deploy nothing on this machine: they share no host state with the local deploy tests, so
# scripts/test can run them beside the test-bed tests (marked `standalone` here, by where they live).
STANDALONE_PATHS = (
    "tests/runtime/",
    "collections/ansible_collections/mlpacker/core/tests/unit/",
    "tests/test_quality.py",
    "tests/test_outcomes.py",  # pytest subprocesses that deploy nothing and never touch the real test bed
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(STANDALONE_PATHS):
            item.add_marker(pytest.mark.standalone)
