"""Fixtures of the deploy tests: trained iris artifacts and a shared wheelhouse cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.deploy.helpers import REPO_ROOT, train_iris


@pytest.fixture(scope="session")
def deploy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session folder: models, the wheelhouse cache (downloaded once) and deployment records."""
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="session")
def iris_models(deploy_root: Path) -> dict[str, Path]:
    return train_iris(deploy_root / "models")


@pytest.fixture(scope="session")
def controller_dirs(deploy_root: Path) -> dict[str, str]:
    """Controller settings of every deploy: session cache and records, and a snapshot of the runtime source
    (the runtime is edited in this checkout while tests run; a change would rightly restart every service)."""
    runtime_copy = deploy_root / "runtime-src"
    if not runtime_copy.exists():
        shutil.copytree(
            REPO_ROOT / "runtime",
            runtime_copy,
            ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"),
        )
    return {
        "mlpacker_cache_dir": str(deploy_root / "cache"),
        "mlpacker_state_dir": str(deploy_root / "state"),
        "mlpacker_runtime_source": str(runtime_copy),
    }
