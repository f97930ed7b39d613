"""Shared pieces of the runtime benchmarks: a model, free ports, process control, a table printer."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.datasets import load_iris
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

HERE = Path(__file__).resolve().parent
RUNTIME_BIN = Path(sys.executable).with_name("mlpacker-runtime")
WORKDIR = Path(tempfile.mkdtemp(prefix="mlpacker-bench-"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train() -> tuple[np.ndarray, dict[str, Path]]:
    X, y = load_iris(return_X_y=True)
    pipeline = Pipeline(
        [
            ("scale", StandardScaler()),
            ("reduce", PCA(n_components=2)),
            ("classify", LogisticRegression(max_iter=500)),
        ]
    ).fit(X, y)
    files = {"pipeline": WORKDIR / "pipeline.joblib"}
    joblib.dump(pipeline, files["pipeline"])
    for name, step in pipeline.named_steps.items():
        files[name] = WORKDIR / f"{name}.joblib"
        joblib.dump(step, files[name])
    return X, files


def stage(name: str, path: Path, method: str) -> dict[str, Any]:
    return {
        "name": name,
        "artifact": str(path),
        "format": "joblib",
        "method": method,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "versions": {"scikit-learn": sklearn.__version__, "numpy": np.__version__},
    }


class Proc:
    def __init__(self, argv: list[str], env: dict[str, str] | None = None, name: str = "proc"):
        self.log = WORKDIR / f"{name}-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )

    def wait_http(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"not ready: {url}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def runtime_env(runtime_dir: str | None) -> dict[str, str]:
    """Environment that makes a service import the runtime from ``runtime_dir`` (an older copy, to compare
    two versions in the same run) instead of the installed one."""
    if not runtime_dir:
        return {}
    return {"PYTHONPATH": os.pathsep.join(filter(None, [runtime_dir, os.environ.get("PYTHONPATH")]))}


def runtime_service(config: dict[str, Any], health_url: str, runtime_dir: str | None = None) -> Proc:
    path = WORKDIR / f"{config['service']}.json"
    path.write_text(json.dumps(config))
    proc = Proc(
        [str(RUNTIME_BIN), "serve", "--config", str(path)],
        env=runtime_env(runtime_dir),
        name=config["service"],
    )
    proc.wait_http(health_url)
    return proc


def start_mosquitto() -> tuple[Proc, int]:
    port = free_port()
    directory = WORKDIR / f"mosquitto-{port}"
    directory.mkdir()
    conf = directory / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
        "max_inflight_messages 100\nmax_queued_messages 100000\n"
    )
    proc = Proc([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)], name="mosquitto")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def median(values: list[float]) -> float:
    return statistics.median(values)


def p50(samples: list[float]) -> float:
    """Median of round-trip times in seconds, as milliseconds."""
    return statistics.median(samples) * 1000


def rotated(names: list[str], shift: int) -> list[str]:
    """The target order for one round: rotating it spreads machine-load drift evenly over the targets."""
    shift %= len(names)
    return names[shift:] + names[:shift]


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    print(f"\n{title}")
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    line = " | ".join(str(cell).ljust(width) for cell, width in zip(header, widths, strict=True))
    print(line)
    print("-+-".join("-" * width for width in widths))
    for row in rows:
        print(" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def cleanup() -> None:
    shutil.rmtree(WORKDIR, ignore_errors=True)
