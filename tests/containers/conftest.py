"""Fixtures for the container suite: the machine's real Docker engine with the test bed's base image.

Everything a test makes carries the label ``mlpacker.pipeline=<a name unique to the test>``, and every test
undeploys its pipeline at the end (also on failure), so no container is left running.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.outcomes import skip_missing

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "mlpacker-base:bookworm"


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


def labelled(kind: str, pipeline: str) -> list[str]:
    """Ids of containers/images/volumes labelled with ``pipeline``."""
    command = {
        "container": ["ps", "-a", "-q", "--no-trunc"],
        "image": ["images", "-q", "--no-trunc"],
        "volume": ["volume", "ls", "-q"],
    }[kind]
    out = docker(*command, "--filter", f"label=mlpacker.pipeline={pipeline}").stdout
    return sorted(set(out.split()))


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """The machine's Docker engine with the local base image (started / built when missing)."""
    if shutil.which("docker") is None:
        skip_missing("docker", "the docker CLI is not installed")
    sys.path.insert(0, str(REPO_ROOT))
    from tests.testbed import testbed

    testbed.ensure_main_dockerd()
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        testbed.build_base_image()


@pytest.fixture(scope="session")
def container_settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Controller settings of every container deploy of the session: one cache (the wheelhouse is built once
    per target, as for a user's second pipeline), records, a runtime snapshot, and the test bed's local base
    image (no registry is reachable here)."""
    from tests.deploy.helpers import controller_settings

    settings = controller_settings(tmp_path_factory.mktemp("containers"))
    return {**settings, "mlpacker_container_base_image": BASE_IMAGE}
