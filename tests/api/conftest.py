"""Fixtures of the controller API tests: trained iris artifacts, spec files, free ports, the CLI."""

from __future__ import annotations

import json
import secrets
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LOCAL_INVENTORY = REPO / "inventories" / "local"
# Three iris rows, one of each class.
SAMPLE = [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]]


def post(url: str, instances: list[list[float]], credentials: dict[str, Any] | None = None) -> Any:
    """POST instances to a REST entry point and return its predictions; with a deployment's ``credentials``
    (the record's paths) as its user would: trusting only the pipeline CA, with the bearer token."""
    headers = {"Content-Type": "application/json"}
    context = None
    if credentials and credentials.get("ca_file"):
        context = ssl.create_default_context(cafile=credentials["ca_file"])
    if credentials and credentials.get("token_file"):
        token = Path(credentials["token_file"]).read_text().splitlines()[0].strip()
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps({"instances": instances}).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        return json.loads(response.read())["predictions"]


def expected_predictions(models: Path, instances: list[list[float]]) -> list[int]:
    """What scale -> reduce -> classify predicts, computed here with scikit-learn."""
    scaler, pca, classifier = (
        joblib.load(models / f) for f in ("scaler.joblib", "pca.joblib", "classifier.joblib")
    )
    return [int(p) for p in classifier.predict(pca.transform(scaler.transform(instances)))]


@pytest.fixture(scope="session")
def iris_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The iris example's three stages, trained by the example's own script into a fresh folder."""
    output = tmp_path_factory.mktemp("iris-models")
    subprocess.run(
        [sys.executable, str(REPO / "examples" / "iris" / "train.py"), "--output-dir", str(output)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return output


def unique_name(prefix: str) -> str:
    """A pipeline name no other test (or engineer) on this machine uses: services and paths are per name."""
    return f"{prefix}-{secrets.token_hex(3)}"


def free_port_block(size: int = 4) -> int:
    """First port of ``size`` consecutive ports free right now on the loopback address."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + size >= 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + size):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("0.0.0.0", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no block of free ports found")


def iris_pipeline(
    name: str, models: Path, *, mode: str = "rest", layout: str = "distributed"
) -> dict[str, Any]:
    """The iris pipeline spec (``mlpacker_pipeline`` mapping) over ``models``."""
    pipeline: dict[str, Any] = {"name": name, "mode": mode, "layout": layout, "base_dir": str(models)}
    stages = [
        {"name": "scale", "artifact": "scaler.joblib", "group": "edge"},
        {"name": "reduce", "artifact": "pca.joblib", "group": "fog"},
        {"name": "classify", "artifact": "classifier.joblib", "group": "cloud"},
    ]
    if layout == "atomic":
        pipeline["group"] = "cloud"
        for stage in stages:
            del stage["group"]
    pipeline["stages"] = stages
    return pipeline


def write_spec(path: Path, pipeline: dict[str, Any], **extra: Any) -> Path:
    path.write_text(yaml.safe_dump({"mlpacker_pipeline": pipeline, **extra}, sort_keys=False))
    return path


def run_cli_command(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the installed ``mlpacker`` console script (falls back to ``python -m mlpacker``)."""
    script = Path(sys.executable).parent / "mlpacker"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "mlpacker"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli_command
