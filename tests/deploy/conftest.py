"""Fixtures of the deploy tests: trained iris artifacts and a shared wheelhouse cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.helpers import controller_settings, train_iris


@pytest.fixture(scope="session")
def deploy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session folder: models, the wheelhouse cache (downloaded once) and deployment records."""
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="session")
def iris_models(deploy_root: Path) -> dict[str, Path]:
    return train_iris(deploy_root / "models")


@pytest.fixture(scope="session")
def controller_dirs(deploy_root: Path) -> dict[str, str]:
    """Controller settings of every deploy: the session's cache, records and runtime snapshot."""
    return controller_settings(deploy_root)
