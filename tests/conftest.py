"""Shared pytest configuration for the whole repository.

Fixtures that need real infrastructure live next to what they build:
the network-namespace test bed in ``tests/testbed/fixtures.py``.
"""

pytest_plugins = ["tests.testbed.fixtures"]
