"""Pytest plugin: the session-scoped network-namespace test bed (registered in tests/conftest.py).

- ``testbed``: the hosts edge1, edge2, fog1, cloud1 and broker1 up with sshd, Mosquitto on broker1 (TLS, a
  password, no anonymous client: the tests' "user's own broker").
- ``testbed_docker``: the same test bed, with a Docker engine and the base image in every edge/fog/cloud host.

Without root or the tools, the tests that need it skip on a developer's machine and fail under CI
(``tests/outcomes.py``). One test bed per machine: a session holds its lock for its whole life, so a
second session waits.
``MLPACKER_TESTBED_KEEP=1`` leaves it up after the session (``python -m tests.testbed down`` removes it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.outcomes import skip_missing
from tests.testbed.testbed import (
    Testbed,
    TestbedError,
    enable_docker,
    file_lock,
    require_root_and_tools,
    state_dir_from_env,
    teardown,
    up,
)

KEEP_ENV = "MLPACKER_TESTBED_KEEP"
LOCK_WAIT_S = 500  # below pytest-timeout's 600 s, so waiting for another session fails with a clear message


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    try:
        require_root_and_tools()
    except TestbedError as error:
        skip_missing("test bed", f"test bed unavailable: {error}")
    state_dir = state_dir_from_env()
    with file_lock(state_dir / "lock", timeout=LOCK_WAIT_S):
        bed = up(state_dir=state_dir)
        try:
            yield bed
        finally:
            if os.environ.get(KEEP_ENV) != "1":
                teardown(state_dir)


@pytest.fixture(scope="session")
def testbed_docker(testbed: Testbed) -> Testbed:
    try:
        require_root_and_tools(docker=True)
    except TestbedError as error:
        skip_missing("docker test bed", f"docker test bed unavailable: {error}")
    return enable_docker(testbed)
