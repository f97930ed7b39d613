"""The chaos suite runs on the test bed with the deploy tests' fixtures (trained iris artifacts, controller
folders); ``pytest -m chaos`` runs it alone."""

from __future__ import annotations

import pytest

from tests.deploy.conftest import controller_dirs, deploy_root, iris_models

__all__ = ["controller_dirs", "deploy_root", "iris_models"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/chaos/" in str(item.path):
            item.add_marker(pytest.mark.chaos)
