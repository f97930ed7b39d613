# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Shared fixtures for mlpacker.core's unit tests.

Puts the repository's ``collections`` folder on sys.path so ``ansible_collections.mlpacker.core`` imports
work from the repo root (``pytest collections/ansible_collections/mlpacker/core/tests/unit``), and
provides real fixtures: small models trained here, a real mosquitto broker, and a runner that executes a
module through a real ``ansible`` ad-hoc run.

A test that cannot run because something it needs is missing skips with a reason starting with
``missing component `` (the repository's tests/outcomes.py turns such skips into failures under CI; the
prefix is written out here, not imported, so these tests need nothing outside the collection).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

COLLECTIONS_DIR = Path(__file__).resolve().parents[5]
if str(COLLECTIONS_DIR) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS_DIR))

ANSIBLE = Path(sys.executable).with_name("ansible")
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")

FUNCTION_CODE = '''
import numpy as np


def double(batch):
    """Multiply every value by two (a stand-in for feature engineering code)."""
    return np.asarray(batch, dtype=float) * 2.0
'''


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]


def run_ansible_module(
    module: str,
    args: dict[str, Any],
    cwd: str | None = None,
    check_mode: bool = False,
    extra_vars: list[str] | None = None,
) -> dict[str, Any]:
    """Run ``mlpacker.core.<module>`` (or a module given by its full name) through a real
    ``ansible localhost -m`` with ``-e`` for each of ``extra_vars``; return its result dict."""
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS_DIR),
            "ANSIBLE_STDOUT_CALLBACK": "json",
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
            "ANSIBLE_LOCALHOST_WARNING": "0",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        }
    )
    name = module if "." in module else "mlpacker.core." + module
    command = [str(ANSIBLE), "localhost", "-m", name, "-a", json.dumps(args)]
    for variables in extra_vars or []:
        command += ["-e", variables]
    if check_mode:
        command.append("--check")
    completed = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=cwd, timeout=120, check=False
    )
    try:
        document = json.loads(completed.stdout)
    except ValueError as exc:
        raise AssertionError(f"ansible printed no JSON:\n{completed.stdout}\n{completed.stderr}") from exc
    return document["plays"][0]["tasks"][0]["hosts"]["localhost"]


PREFLIGHT_PLAYBOOK = """
- name: Run the pipeline role's preflight
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Preflight
      ansible.builtin.import_role:
        name: mlpacker.core.pipeline
        tasks_from: preflight.yml
    - name: Show what the settings resolve to
      ansible.builtin.debug:
        msg: "RESOLVED {{ SHOWN }}"
"""


class PreflightRun:
    """An ``ansible-playbook`` run of the pipeline role's preflight; ``resolved``: the shown expression."""

    def __init__(self, completed: subprocess.CompletedProcess):
        self.returncode = completed.returncode
        self.stdout = completed.stdout
        self.output = completed.stdout + completed.stderr

    @property
    def resolved(self) -> Any:
        [line] = [line for line in self.stdout.splitlines() if '"msg": "RESOLVED ' in line]
        return json.loads(json.loads("{" + line.strip() + "}")["msg"][len("RESOLVED ") :])


def run_pipeline_preflight(tmp_path: Path, shown: str, variables: dict[str, Any]) -> PreflightRun:
    """Run the pipeline role's own preflight.yml through a real ``ansible-playbook`` with ``variables`` as
    extra vars, then show the Jinja expression ``shown`` (e.g. a filter over the checked settings) as JSON."""
    playbook = tmp_path / "preflight.yml"
    playbook.write_text(PREFLIGHT_PLAYBOOK.replace("SHOWN", shown))
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS_DIR),
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_NOCOLOR="1",
    )
    command = [str(ANSIBLE_PLAYBOOK), str(playbook), "-c", "local", "-e", json.dumps(variables)]
    return PreflightRun(
        subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    )


@pytest.fixture()
def pipeline_preflight():
    """Run the pipeline role's preflight through a real ``ansible-playbook`` (see run_pipeline_preflight)."""
    return run_pipeline_preflight


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real fitted iris models in every format the collection handles."""
    try:
        import joblib
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError as error:
        pytest.skip(f"missing component scikit-learn: {error}")

    folder = tmp_path_factory.mktemp("models")
    features, labels = load_iris(return_X_y=True)
    scaler = StandardScaler().fit(features)
    classifier = LogisticRegression(max_iter=500).fit(scaler.transform(features), labels)
    pipeline = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=500))]).fit(
        features, labels
    )
    joblib.dump(pipeline, folder / "pipeline.joblib")
    joblib.dump(scaler, folder / "scaler.joblib")
    with open(folder / "classifier.pkl", "wb") as handle:
        pickle.dump(classifier, handle)
    joblib.dump(classifier, folder / "classifier-joblib.pkl")  # a common habit: joblib.dump to a .pkl name

    import skops.io

    skops.io.dump(pipeline, folder / "pipeline.skops")

    from skl2onnx import to_onnx

    onnx_model = to_onnx(pipeline, features[:1].astype("float32"), target_opset=17)
    (folder / "pipeline.onnx").write_bytes(onnx_model.SerializeToString())

    code_dir = folder / "code" / "features"
    code_dir.mkdir(parents=True)
    (code_dir / "__init__.py").write_text("")
    (code_dir / "scaling.py").write_text(FUNCTION_CODE)
    return folder


@pytest.fixture()
def unused_port() -> int:
    """A TCP port nothing listens on right now (for connection-refused cases and servers we start)."""
    return free_port()


@pytest.fixture()
def run_module():
    """Run a module through a real ``ansible localhost -m`` (see run_ansible_module)."""
    return run_ansible_module


@pytest.fixture(scope="session")
def iris_rows() -> list[list[float]]:
    return [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.fixture()
def mosquitto(tmp_path: Path):
    """A real mosquitto broker on a free loopback port; yields (host, port) and kills it afterwards."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(binary):
        pytest.skip(f"missing component mosquitto: no mosquitto binary at {binary}")
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen(
        [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start: {process.stderr.read()!r}") from None
                time.sleep(0.05)
        yield "127.0.0.1", port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
