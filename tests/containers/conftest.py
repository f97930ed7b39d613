"""Fixtures for the container suite: the real Docker engine, a real wheelhouse, models, playbook runs.

Everything a test makes carries the label ``mlpacker.pipeline=<a name unique to the test>``, and every test
undeploys its pipeline at the end (also on failure), so no container is left running.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomllib

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
CACHE_DIR = REPO_ROOT / ".cache" / "containers"
BASE_IMAGE = "mlpacker-base:bookworm"
TEST_ROOT = Path("/var/tmp/mlpacker-container-tests")
LOCAL_INVENTORY = REPO_ROOT / "inventories" / "local" / "hosts.yml"
# The libraries the models are made with here; the image must hold the same versions (the runtime checks).
PINNED = ("scikit-learn", "numpy", "scipy", "joblib", "threadpoolctl")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
        pytest.skip("the docker CLI is not installed")
    sys.path.insert(0, str(REPO_ROOT))
    from tests.testbed import testbed

    testbed.ensure_main_dockerd()
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        testbed.build_base_image()


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in PINNED}


@pytest.fixture(scope="session")
def wheelhouse(docker_engine: None) -> dict[str, Any]:
    """A wheelhouse for the base image's Python 3.11: the runtime wheel and its dependencies, pinned to the
    controller's versions; built once (pip talks to PyPI) and cached under .cache/containers/."""
    runtime_files = sorted(
        p for p in (REPO_ROOT / "runtime").rglob("*") if p.is_file() and "build" not in p.parts
    )
    digest = hashlib.sha256()
    for path in runtime_files:
        if "egg-info" in str(path) or "__pycache__" in path.parts:
            continue
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(path.read_bytes())
    versions = _versions()
    digest.update(json.dumps(versions, sort_keys=True).encode())
    wheelhouse_id = "cp311-x86_64-" + digest.hexdigest()[:16]
    target = CACHE_DIR / "wheelhouse" / wheelhouse_id
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # The dependencies depend only on the pinned versions: downloaded once, reused while the runtime changes.
    # the runtime's own dependencies, read from its pyproject (so the set follows it)
    project = tomllib.loads((REPO_ROOT / "runtime" / "pyproject.toml").read_text())["project"]
    requirements = [f"{name}=={value}" for name, value in versions.items()] + project["dependencies"]
    deps_key = hashlib.sha256(json.dumps(requirements).encode()).hexdigest()[:16]
    deps = CACHE_DIR / "deps" / deps_key
    if not deps.exists():
        partial_deps = deps.with_suffix(".partial")
        shutil.rmtree(partial_deps, ignore_errors=True)
        subprocess.run(
            [*pip, "download", "--only-binary=:all:", "--python-version", "3.11", "-d", str(partial_deps)]
            + requirements,
            check=True,
            timeout=900,
        )
        partial_deps.rename(deps)
    if not target.exists():
        partial = target.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        source = partial / "src"
        shutil.copytree(
            REPO_ROOT / "runtime", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
        )
        (partial / "wheels").mkdir()
        for wheel in deps.iterdir():
            os.link(wheel, partial / "wheels" / wheel.name)
        subprocess.run([*pip, "wheel", "--no-deps", "-w", str(partial / "wheels"), str(source)], check=True)
        (partial / "wheels").rename(target)
        shutil.rmtree(partial)
        # older wheelhouses of a runtime that has changed since
        for old in (CACHE_DIR / "wheelhouse").iterdir():
            if old not in (target, target.with_suffix(".tar")):
                if old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.unlink(missing_ok=True)
    # the pipeline role ships wheelhouses as a .tar with a MANIFEST (mlpacker.core.stage unpacks it)
    archive = target.with_suffix(".tar")
    if not archive.exists():
        (target / "MANIFEST").write_text("".join(f"{wheel.name}\n" for wheel in sorted(target.glob("*.whl"))))
        subprocess.run(["tar", "-cf", f"{archive}.partial", "-C", str(target), "."], check=True)
        os.replace(f"{archive}.partial", archive)
    runtime_version = next(target.glob("mlpacker_runtime-*.whl")).name.split("-")[1]
    return {
        "test_wheelhouse": str(target),
        "test_wheelhouse_id": wheelhouse_id,
        "test_wheelhouse_archive_path": str(archive),
        "test_requirements": sorted(f"{name}=={value}" for name, value in versions.items())
        + [f"mlpacker-runtime=={runtime_version}"],
    }


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Real fitted iris stages (scaler -> pca -> classifier), a second classifier for updates, and rows."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    folder = tmp_path_factory.mktemp("container-models")
    features, labels = load_iris(return_X_y=True)
    scaler = StandardScaler().fit(features)
    pca = PCA(n_components=3).fit(scaler.transform(features))
    reduced = pca.transform(scaler.transform(features))
    classifier = LogisticRegression(max_iter=500).fit(reduced, labels)
    # an "update": same interface, different parameters (it predicts differently on some rows)
    updated = LogisticRegression(max_iter=500, C=0.01).fit(reduced, labels)
    joblib.dump(scaler, folder / "scaler.joblib")
    joblib.dump(pca, folder / "pca.joblib")
    joblib.dump(classifier, folder / "classifier.joblib")
    joblib.dump(updated, folder / "classifier-v2.joblib")
    rows = [list(map(float, row)) for row in features[::15]]
    return {
        "dir": folder,
        "rows": rows,
        "expected": classifier.predict(pca.transform(scaler.transform(rows))).tolist(),
        "expected_v2": updated.predict(pca.transform(scaler.transform(rows))).tolist(),
    }


@dataclass
class ContainerPipeline:
    """One test pipeline: its variables, the playbook runs against an inventory, and its undeploy."""

    name: str
    inventory: Path
    variables: dict[str, Any]
    workdir: Path
    runs: list[dict[str, Any]] = field(default_factory=list)

    def _playbook(self, playbook: str, extra: dict[str, Any], check_mode: bool) -> dict[str, Any]:
        variables_file = self.workdir / f"vars-{len(self.runs)}.json"
        variables_file.write_text(json.dumps({**self.variables, **extra}))
        env = dict(os.environ)
        env.update(
            {
                "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
                "ANSIBLE_COLLECTIONS_PATH": str(REPO_ROOT / "collections"),
                "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
                "ANSIBLE_LOCALHOST_WARNING": "0",
                "ANSIBLE_HOST_KEY_CHECKING": "0",
                "PATH": f"{VENV_BIN}:{env.get('PATH', '')}",
            }
        )
        argv = [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            str(self.inventory),
            str(PLAYBOOKS / playbook),
            "-e",
            f"@{variables_file}",
        ]
        if check_mode:
            argv.append("--check")
        completed = subprocess.run(
            argv, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=900, check=False
        )
        try:
            document = json.loads(completed.stdout)
        except ValueError:
            raise AssertionError(
                f"ansible-playbook printed no JSON:\n{completed.stdout}\n{completed.stderr}"
            ) from None
        result = {"rc": completed.returncode, "stats": document["stats"], "plays": document["plays"]}
        self.runs.append(result)
        return result

    def deploy(self, check_mode: bool = False, **extra: Any) -> dict[str, Any]:
        return self._playbook("deploy.yml", extra, check_mode)

    def undeploy(self) -> dict[str, Any]:
        return self._playbook("undeploy.yml", {}, False)


def failures(result: dict[str, Any]) -> str:
    """The failed tasks' messages (for assertion messages)."""
    lines = []
    for play in result["plays"]:
        for task in play["tasks"]:
            for host, outcome in task["hosts"].items():
                if outcome.get("failed") or outcome.get("unreachable"):
                    lines.append(f"{host} / {task['task']['name']}: {outcome.get('msg', outcome)}")
    return "\n".join(lines)


def changed_total(result: dict[str, Any]) -> int:
    return sum(stats["changed"] for stats in result["stats"].values())


def task_results(result: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Every host result of the tasks called ``name`` (include_role loops run them once per service)."""
    found = []
    for play in result["plays"]:
        for task in play["tasks"]:
            # tasks of an included role are named "<role> : <task>"
            if task["task"]["name"].split(" : ", 1)[-1] == name:
                found.extend(task["hosts"].values())
    return found


@pytest.fixture(scope="session")
def layer_cache(
    wheelhouse: dict[str, Any], models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Build one image through the role and keep it for the session, so the installed-wheelhouse layers it
    shares with the tests' images survive each test's undeploy (as they would for a user's other pipelines):
    the wheelhouse is installed once per session, not once per test. Its container is removed at once."""
    name = "ct-cache-" + uuid.uuid4().hex[:6]
    workdir = tmp_path_factory.mktemp("layer-cache")
    port = free_port()
    service = {"id": name, "host": "localhost", "address": "127.0.0.1", "stages": ["scale"], "port": port}
    pipeline = ContainerPipeline(
        name=name,
        inventory=LOCAL_INVENTORY,
        variables={
            **wheelhouse,
            "test_pipeline": name,
            "test_base_image": BASE_IMAGE,
            "test_root": str(TEST_ROOT / name),
            "test_mode": "rest",
            "test_stages": [
                {"name": "scale", "artifact": str(models["dir"] / "scaler.joblib"), "method": "transform"}
            ],
            "test_services": [service],
        },
        workdir=workdir,
    )
    try:
        built = pipeline.deploy()
        assert built["rc"] == 0, failures(built)
        docker("rm", "--force", f"mlpacker-{name}")
        yield
    finally:
        pipeline.undeploy()
        shutil.rmtree(TEST_ROOT / name, ignore_errors=True)


@pytest.fixture()
def local_pipeline(
    wheelhouse: dict[str, Any], models: dict[str, Any], layer_cache: None, tmp_path: Path
) -> Iterator[ContainerPipeline]:
    """A pipeline name of its own on the local inventory; undeployed (containers, images, dirs) afterwards."""
    name = "ct-" + uuid.uuid4().hex[:8]
    pipeline = ContainerPipeline(
        name=name,
        inventory=LOCAL_INVENTORY,
        variables={
            **wheelhouse,
            "test_pipeline": name,
            "test_base_image": BASE_IMAGE,
            # not under /tmp: containers get a tmpfs there, which would hide the release baked into the image
            "test_root": str(TEST_ROOT / name),
            "test_controller_dir": str(tmp_path / "controller-cache"),
        },
        workdir=tmp_path,
    )
    try:
        yield pipeline
    finally:
        pipeline.undeploy()
        # the undeploy's own guarantee is asserted by a test; here, make sure nothing survives a failed one
        shutil.rmtree(TEST_ROOT / name, ignore_errors=True)
        for kind in ("container", "image"):
            leftovers = labelled(kind, name)
            if leftovers:
                docker("container" if kind == "container" else "image", "rm", "-f", *leftovers, check=False)


@pytest.fixture()
def mosquitto_broker(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A real mosquitto on a free loopback port (the containers reach it over the host network)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(binary):
        pytest.skip("mosquitto is not installed")
    import time

    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen(
        [binary, "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mosquitto did not start") from None
                time.sleep(0.05)
        yield "127.0.0.1", port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
