"""MLPacker installed the two ways a user installs it, used from folders outside this repository.

- The collection: ``ansible-galaxy collection build`` makes the tarball, ``ansible-galaxy collection install``
  puts it into an empty folder, and a playbook and inventory of the user's own (written in a temporary folder)
  deploy the iris pipeline with ``mlpacker.core.pipeline`` and undeploy it with the collection's playbook
  ``mlpacker.core.undeploy``. The runtime shipped to the host is the copy inside the installed collection.
- The Python package: a wheel of this repository is ``pip install``ed into a fresh virtualenv, and its
  ``mlpacker`` CLI deploys, reports and undeploys a spec whose artifact paths are relative to the spec file,
  run from yet another folder.

Both deploy REST atomic over SSH to a host of the test bed (cloud1, named in an inventory of the user's own;
a real gunicorn under supervisord), secure by default (HTTPS with the pipeline's CA and a bearer token, found
through the deployment record as a user finds them), and check the answers against scikit-learn in this
process, that nothing is left on the host after the undeploy, and that neither run used the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sklearn
import yaml

from tests.api.conftest import SAMPLE, expected_predictions, post, unique_name
from tests.deploy.helpers import leftovers_on_testbed_host, parse_recap, record_credentials, train_iris
from tests.testbed.testbed import SSH_COMMON_ARGS

pytestmark = [pytest.mark.slow, pytest.mark.testbed]

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
COLLECTION = REPO / "collections" / "ansible_collections" / "mlpacker" / "core"
# What a copy of the repository for a wheel build leaves out (caches, virtualenvs, local build output).
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".cache",
    ".test-logs",
    "__pycache__",
    "*.pyc",
    "build",
    "dist",
    "*.egg-info",
    "output",
    ".pytest_cache",
    ".ruff_cache",
    "models",
)


# The user's one host: a test-bed host, reached over SSH. Its ports are in its own network namespace, clear of
# the other test-bed deploys' (8300, 8400, 8500-8502, 20000-39999); the test-bed tests run one at a time.
HOST = "cloud1"
TARBALL_PORT = 8600
PIP_PORT = 8610


def user_inventory(path: Path, bed: Any, *, pipelining: bool = False) -> Path:
    """The test-bed host in every group, reached over SSH with the test bed's key, as a user would write it
    (not the test bed's inventory); with ``pipelining``, SSH pipelining on for it (``ansible_pipelining``)."""
    host = {
        "ansible_host": bed.address(HOST),
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(bed.key_path),
        "ansible_ssh_common_args": SSH_COMMON_ARGS,
        "ansible_python_interpreter": "/usr/bin/python3",
    }
    if pipelining:
        host["ansible_pipelining"] = True
    inventory = {
        "all": {
            "hosts": {HOST: host},
            "vars": {"mlpacker_python": "/usr/bin/python3"},
            "children": {group: {"hosts": {HOST: None}} for group in ("edge", "fog", "cloud")},
        }
    }
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no collection path or project of this repository's tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MLPACKER_", "VIRTUAL_ENV"))}
    env.update({"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", **extra})
    return env


def run(argv: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    """Run a command that must succeed; its standard output and error, together."""
    result = run_quietly(argv, cwd, env, timeout)
    return result.stdout + result.stderr


def run_quietly(
    argv: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run a command that must succeed; the completed process (standard output kept apart)."""
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{argv[:3]} exited {result.returncode}:\n{output[-6000:]}"
    return result


def write_iris_spec(path: Path, name: str, port: int, artifacts: list[str], **extra: Any) -> Path:
    """An atomic REST iris spec on the `cloud` group (scale -> reduce -> classify), artifact paths as given;
    ``base_dir`` and other top-level keys from ``extra``."""
    base_dir = extra.pop("base_dir", None)
    stages = [
        {"name": stage, "artifact": artifact}
        for stage, artifact in zip(("scale", "reduce", "classify"), artifacts, strict=True)
    ]
    stages[0]["port"] = port
    pipeline: dict[str, Any] = {"name": name, "layout": "atomic", "group": "cloud", "stages": stages}
    if base_dir is not None:
        pipeline["base_dir"] = base_dir
    path.write_text(yaml.safe_dump({"mlpacker_pipeline": pipeline, **extra}))
    return path


def test_collection_tarball_installed_elsewhere_deploys(testbed: Any, tmp_path: Path) -> None:
    dist, installed, project = tmp_path / "dist", tmp_path / "collections", tmp_path / "project"
    project.mkdir()
    env = clean_env(ANSIBLE_COLLECTIONS_PATH=str(installed), PATH=f"{VENV_BIN}:{os.environ['PATH']}")
    galaxy = VENV_BIN / "ansible-galaxy"
    run([galaxy, "collection", "build", COLLECTION, "--output-path", dist], tmp_path, env)
    tarball = next(dist.glob("mlpacker-core-*.tar.gz"))
    run([galaxy, "collection", "install", tarball, "-p", installed], tmp_path, env)
    installed_runtime = installed / "ansible_collections" / "mlpacker" / "core" / "runtime"
    assert (installed_runtime / "mlpacker_runtime" / "__init__.py").is_file()

    models = train_iris(project / "models")
    name, port = unique_name("tarball"), TARBALL_PORT
    # A user's own playbook: playbook_dir is the project folder, so relative paths work.
    spec = write_iris_spec(
        project / "pipeline.yml",
        name,
        port,
        [models[stage].name for stage in ("scaler", "pca", "classifier")],
        base_dir="{{ playbook_dir }}/models",
        mlpacker_state_dir=str(tmp_path / "state"),
        mlpacker_cache_dir=str(tmp_path / "cache"),
        mlpacker_credentials_dir=str(tmp_path / "credentials"),
    )
    (project / "deploy.yml").write_text(
        "- name: Deploy my pipeline\n"
        "  hosts: all\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - name: Where the runtime comes from\n"
        "      ansible.builtin.debug:\n"
        "        msg: \"runtime source: {{ lookup('mlpacker.core.runtime_source') }}\"\n"
        "      run_once: true\n"
        "    - name: Deploy\n"
        "      ansible.builtin.import_role:\n"
        "        name: mlpacker.core.pipeline\n"
    )
    # The project has no ansible.cfg: the inventory turns pipelining on, as the repository's ansible.cfg does
    # (fewer SSH round trips per task; the pip-installed CLI's deploy below goes without it).
    inventory = user_inventory(project / "hosts.yml", testbed, pipelining=True)
    deploy = ["ansible-playbook", "deploy.yml", "-i", inventory, "-e", f"@{spec}"]
    undeploy = ["ansible-playbook", "mlpacker.core.undeploy", "-i", inventory, "-e", f"@{spec}"]
    try:
        output = run(deploy, project, env)
        assert f"runtime source: {installed_runtime}" in output
        assert "[WARNING]" not in output, output
        assert parse_recap(output)[HOST]["failed"] == 0
        url = f"https://{testbed.address(HOST)}:{port}/predict"
        credentials = record_credentials(tmp_path / "state", name)
        assert credentials and credentials["ca_file"] == str(tmp_path / "credentials" / name / "ca.crt")
        assert f"POST {url}" in output and "Try it:" in output
        assert post(url, SAMPLE, credentials) == expected_predictions(models["scaler"].parent, SAMPLE)
        again = run(deploy, project, env)
        assert parse_recap(again)[HOST]["changed"] == 0, again[-4000:]
    finally:
        removed = run(undeploy, project, env)
    assert parse_recap(removed)[HOST]["failed"] == 0
    assert leftovers_on_testbed_host(testbed, HOST, name) == ""


@pytest.fixture(scope="module")
def pip_installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with a wheel of this repository and the scikit-learn its artifacts need."""
    work = tmp_path_factory.mktemp("pip-install")
    source, wheels, venv = work / "source", work / "wheels", work / "venv"
    # Built from a copy: a wheel build writes build/ and *.egg-info next to the sources it reads.
    shutil.copytree(REPO, source, symlinks=True, ignore=NOT_SOURCE)
    env = clean_env()
    run([VENV_BIN / "pip", "wheel", "--no-deps", "-q", "-w", wheels, source], work, env)
    wheel = next(wheels.glob("mlpacker-*.whl"))
    run([sys.executable, "-m", "venv", venv], work, env)
    run([venv / "bin" / "pip", "install", "-q", wheel, f"scikit-learn=={sklearn.__version__}"], work, env)
    return venv


def test_pip_installed_cli_deploys_outside_a_checkout(
    testbed: Any, pip_installed: Path, tmp_path: Path
) -> None:
    spec_dir, elsewhere = tmp_path / "my-pipeline", tmp_path / "elsewhere"
    elsewhere.mkdir(parents=True)
    models = train_iris(spec_dir / "models")
    name, port = unique_name("pipcli"), PIP_PORT
    # No base_dir: the artifact paths are relative to the spec file's folder.
    spec = write_iris_spec(
        spec_dir / "pipeline.yml",
        name,
        port,
        [f"models/{models[stage].name}" for stage in ("scaler", "pca", "classifier")],
    )
    inventory = user_inventory(tmp_path / "hosts.yml", testbed)
    cli = pip_installed / "bin" / "mlpacker"
    credentials_dir = tmp_path / "credentials"
    common = [
        "-i",
        inventory,
        "--state-dir",
        tmp_path / "state",
        "-e",
        f"mlpacker_credentials_dir={credentials_dir}",
    ]
    env = clean_env(PATH=f"{pip_installed / 'bin'}:{os.environ['PATH']}")
    # The package really is the installed one, with its collection, and not this checkout.
    located = run_quietly([pip_installed / "bin" / "python", "-c", PRINT_SOURCE], elsewhere, env).stdout
    source: dict[str, Any] = json.loads(located)
    assert source["is_project"] is False
    assert source["collections_dir"].startswith(str(pip_installed)), source
    try:
        # What a user reads after `mlpacker deploy`: the entry points, where the credentials are, a curl line.
        deploying = run_quietly([cli, "deploy", spec, *common, "-q"], elsewhere, env)
        deployed = yaml.safe_load(deploying.stdout)
        url = f"https://{testbed.address(HOST)}:{port}/predict"
        assert deployed["entry_points"]["rest"] == [url]
        folder = credentials_dir / name
        assert deployed["credentials"] == {
            "ca_file": str(folder / "ca.crt"),
            "token_file": str(folder / "token"),
            "mqtt": None,
        }
        [line] = deployed["try"]
        assert line.startswith("curl ") and f"--cacert {folder / 'ca.crt'}" in line and line.endswith(url)
        assert post(url, SAMPLE, deployed["credentials"]) == expected_predictions(
            models["scaler"].parent, SAMPLE
        )
        reported = run_quietly([cli, "status", spec, *common, "--json", "-q"], elsewhere, env)
        status = json.loads(reported.stdout)
        assert status["status"] == "successful", status
    finally:
        run([cli, "undeploy", spec, *common, "-q"], elsewhere, env)
    assert leftovers_on_testbed_host(testbed, HOST, name) == ""


PRINT_SOURCE = """
import json
from mlpacker.runner import find_playbook_source
source = find_playbook_source()
print(json.dumps({"is_project": source.is_project, "collections_dir": str(source.collections_dir)}))
"""
