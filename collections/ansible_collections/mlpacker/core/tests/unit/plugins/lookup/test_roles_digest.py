# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The mlpacker.core.roles_digest lookup: a digest that follows what the roles do, on a copy of real roles."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleLookupError
from ansible_collections.mlpacker.core.plugins.lookup.roles_digest import roles_digest

COLLECTION = Path(__file__).resolve().parents[4]
COLLECTIONS_DIR = Path(__file__).resolve().parents[7]
ANSIBLE = Path(sys.executable).with_name("ansible")
ROLES = ["service", "service_container", "host"]


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    for role in ROLES:
        shutil.copytree(COLLECTION / "roles" / role, tmp_path / "roles" / role)
    return tmp_path


def test_digest_is_stable_and_changes_with_any_file_that_shapes_a_deploy(collection: Path) -> None:
    before = roles_digest(ROLES, str(collection))
    assert before == roles_digest(ROLES, str(collection))
    assert len(before) == 64
    for changed in (
        "host/files/make_venv.sh",
        "service/templates/supervisor-program.conf.j2",
        "service_container/vars/main.yml",
        "host/tasks/main.yml",
    ):
        path = collection / "roles" / changed
        original = path.read_bytes()
        path.write_bytes(original + b"\n")
        assert roles_digest(ROLES, str(collection)) != before, changed
        path.write_bytes(original)
    assert roles_digest(ROLES, str(collection)) == before
    # A renamed file is a change too (the relative paths are part of the digest).
    (collection / "roles/service/tasks/prune.yml").rename(collection / "roles/service/tasks/prune_old.yml")
    assert roles_digest(ROLES, str(collection)) != before


def test_documentation_and_tests_leave_the_digest_alone(collection: Path) -> None:
    before = roles_digest(ROLES, str(collection))
    (collection / "roles/service/README.md").write_text("changed\n")
    (collection / "roles/host/meta/argument_specs.yml").write_text("---\nargument_specs: {}\n")
    assert roles_digest(ROLES, str(collection)) == before


def test_a_missing_role_is_an_error(collection: Path) -> None:
    with pytest.raises(AnsibleLookupError, match="no role 'stage'"):
        roles_digest(["stage"], str(collection))


def test_the_lookup_runs_in_ansible_over_the_installed_collection() -> None:
    result = subprocess.run(
        [
            str(ANSIBLE),
            "localhost",
            "-m",
            "ansible.builtin.debug",
            "-a",
            "msg={{ lookup('mlpacker.core.roles_digest', 'service', 'service_container', 'host') }}",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={
            **os.environ,
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS_DIR),
            "ANSIBLE_LOCALHOST_WARNING": "0",
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert roles_digest(ROLES, str(COLLECTION)) in result.stdout
