"""Helpers and fixtures for the runtime suite: models trained here, real gunicorn services, real mosquitto.

A uniquely named module (not conftest) so test modules can import helpers without clashing with other
suites' conftest modules; tests/runtime/conftest.py re-exports the fixtures.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import sklearn
import urllib3
from sklearn.datasets import load_iris
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tests.outcomes import skip_missing

RUNTIME_BIN = Path(sys.executable).with_name("mlpacker-runtime")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
OPENSSL = shutil.which("openssl")
HTTP_TIMEOUT = urllib3.Timeout(connect=2, read=20)
HTTP = urllib3.PoolManager(retries=False, timeout=HTTP_TIMEOUT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def recorded_versions() -> dict[str, str]:
    return {"scikit-learn": sklearn.__version__, "numpy": np.__version__}


# ------------------------------------------------------------------ models


@dataclass
class IrisModels:
    directory: Path
    X: np.ndarray
    pipeline: Pipeline
    files: dict[str, Path]

    def stage(self, name: str, key: str, method: str, **extra: Any) -> dict[str, Any]:
        path = self.files[key]
        return {
            "name": name,
            "artifact": str(path),
            "format": "joblib",
            "method": method,
            "sha256": sha256_of(path),
            "versions": recorded_versions(),
            **extra,
        }

    def three_stages(self) -> list[dict[str, Any]]:
        return [
            self.stage("scale", "scaler", "transform"),
            self.stage("reduce", "pca", "transform"),
            self.stage("classify", "clf", "predict"),
        ]

    def expected(self, rows: np.ndarray) -> list[Any]:
        return self.pipeline.predict(rows).tolist()


@pytest.fixture(scope="session")
def iris_models(tmp_path_factory: pytest.TempPathFactory) -> IrisModels:
    directory = tmp_path_factory.mktemp("models")
    X, y = load_iris(return_X_y=True)
    pipeline = Pipeline(
        [
            ("scale", StandardScaler()),
            ("reduce", PCA(n_components=2)),
            ("classify", LogisticRegression(max_iter=500)),
        ]
    ).fit(X, y)
    files = {}
    for key, obj in (
        ("scaler", pipeline.named_steps["scale"]),
        ("pca", pipeline.named_steps["reduce"]),
        ("clf", pipeline.named_steps["classify"]),
        ("pipeline", pipeline),
    ):
        files[key] = directory / f"{key}.joblib"
        joblib.dump(obj, files[key])
    return IrisModels(directory=directory, X=X, pipeline=pipeline, files=files)


def base_config(stages: list[dict[str, Any]], **sections: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "pipeline": "iris",
        "service": f"iris-{uuid.uuid4().hex[:6]}",
        "mode": "rest",
        "code_dir": None,
        "allow_version_mismatch": False,
        "stages": stages,
        "rest": {
            "bind": "127.0.0.1",
            "port": 0,
            "workers": 1,
            "threads": 4,
            "next_hops": [],
            "hop_timeout_s": 5,
        },
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


# ------------------------------------------------------------------ processes


@dataclass
class RuntimeProcess:
    """A `mlpacker-runtime serve` subprocess (its own session, so the whole group can be signalled)."""

    config: dict[str, Any]
    config_path: Path
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    base_url: str = ""
    http: urllib3.PoolManager = HTTP  # the client wait_ready uses (one trusting the test CA for HTTPS)

    def start(self) -> RuntimeProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 (kept open for the child's lifetime)
        self.proc = subprocess.Popen(
            [str(RUNTIME_BIN), "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_shows(self, text: str, timeout: float = 15.0) -> bool:
        """Whether ``text`` appears in the log within ``timeout`` (the process may write it a bit later)."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.http.request("GET", self.base_url + "/health/ready", timeout=1).status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"runtime not ready after {timeout}s:\n{self.log()}")

    def send_signal(self, signum: int) -> None:
        """Signal the main process (the gunicorn master, as a supervisor would); SIGKILL hits the group."""
        if self.proc is not None and self.proc.poll() is None:
            if signum == signal.SIGKILL:
                os.killpg(self.proc.pid, signum)
            else:
                os.kill(self.proc.pid, signum)

    def stop(self, timeout: float = 15.0, signum: int | None = signal.SIGINT) -> int | None:
        """Stop the service; SIGINT (gunicorn's quick shutdown) keeps teardown fast; None only waits."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if signum is not None:
                self.send_signal(signum)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.send_signal(signal.SIGKILL)
                self.proc.wait(5)
        # Workers live in the same process group: make sure none survives its master.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.proc.returncode


@dataclass
class Runtimes:
    tmp_path: Path
    started: list[RuntimeProcess] = field(default_factory=list)

    def prepare(
        self,
        config: dict[str, Any],
        env: dict[str, str] | None = None,
        http: urllib3.PoolManager | None = None,
    ) -> RuntimeProcess:
        """Write the config and make the process (not started); ``http`` is the client of an HTTPS one."""
        config = json.loads(json.dumps(config))
        if config["mode"] == "rest":
            if not config["rest"].get("port"):
                config["rest"]["port"] = free_port()
            port = config["rest"]["port"]
        else:
            config["stream"].setdefault("health_bind", "127.0.0.1")
            if not config["stream"].get("health_port"):
                config["stream"]["health_port"] = free_port()
            port = config["stream"]["health_port"]
        name = config["service"]
        config_path = self.tmp_path / f"{name}-{port}.json"
        config_path.write_text(json.dumps(config, indent=2))
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MLPACKER_")}
        full_env.update(env or {})
        process = RuntimeProcess(config, config_path, self.tmp_path / f"{name}-{port}.log", full_env)
        https = bool(config.get("security", {}).get("tls", {}).get("cert_file"))
        process.base_url = f"{'https' if https else 'http'}://127.0.0.1:{port}"
        process.http = http or HTTP
        self.started.append(process)
        return process

    def start(
        self,
        config: dict[str, Any],
        env: dict[str, str] | None = None,
        wait: bool = True,
        http: urllib3.PoolManager | None = None,
    ) -> RuntimeProcess:
        process = self.prepare(config, env, http).start()
        if wait:
            process.wait_ready()
        return process

    def start_many(
        self,
        configs: list[dict[str, Any]],
        env: dict[str, str] | None = None,
        http: urllib3.PoolManager | None = None,
    ) -> list[RuntimeProcess]:
        """Start several services at once (their imports overlap) and wait until all are ready."""
        processes = [self.prepare(config, env, http).start() for config in configs]
        for process in processes:
            process.wait_ready()
        return processes

    def stop_all(self) -> None:
        # Signal every service first, then wait: the shutdowns overlap instead of adding up.
        for process in self.started:
            process.send_signal(signal.SIGINT)
        for process in self.started:
            process.stop(signum=None)


@pytest.fixture
def runtimes(tmp_path: Path) -> Iterator[Runtimes]:
    manager = Runtimes(tmp_path)
    try:
        yield manager
    finally:
        manager.stop_all()


def post_json(
    url: str,
    body: Any,
    raw: bytes | None = None,
    http: urllib3.PoolManager = HTTP,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = raw if raw is not None else json.dumps(body).encode()
    response = http.request(
        "POST", url, body=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        return response.status, json.loads(response.data)
    except ValueError:
        return response.status, response.data.decode(errors="replace")


def get(
    url: str, http: urllib3.PoolManager = HTTP, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    response = http.request("GET", url, headers=headers)
    return response.status, response.data


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------------ TLS test PKI (openssl command line)


@dataclass
class KeyPair:
    cert: Path
    key: Path


@dataclass
class Pki:
    """Test CAs and certificates made with the openssl command line (EC P-256, valid two days).

    ``ca`` issues ``server`` (SANs IP 127.0.0.1 and DNS localhost) and ``client``; ``other_ca`` is an
    unrelated CA issuing ``other_server`` (same SANs) and ``other_client``, for the untrusted cases.
    """

    directory: Path
    ca: KeyPair
    server: KeyPair
    client: KeyPair
    other_ca: KeyPair
    other_server: KeyPair
    other_client: KeyPair

    def server_tls(self, **extra: Any) -> dict[str, Any]:
        """A security.tls section: HTTPS with the server certificate, hops verified against the CA."""
        return {
            "cert_file": str(self.server.cert),
            "key_file": str(self.server.key),
            "ca_file": str(self.ca.cert),
            **extra,
        }

    def https_client(
        self, trust: Path | None = None, client_cert: KeyPair | None = None
    ) -> urllib3.PoolManager:
        """An HTTPS client trusting only ``trust`` (default: the CA), presenting ``client_cert`` if given."""
        return urllib3.PoolManager(
            retries=False,
            timeout=HTTP_TIMEOUT,
            ca_certs=str(trust or self.ca.cert),
            cert_reqs="CERT_REQUIRED",
            cert_file=str(client_cert.cert) if client_cert else None,
            key_file=str(client_cert.key) if client_cert else None,
        )


def _openssl(directory: Path, *args: str) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *args], cwd=directory, check=True, capture_output=True)


def _make_ca(directory: Path, name: str) -> KeyPair:
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    _openssl(
        directory, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(pair.key), "-out", str(pair.cert), "-days", "2", "-subj", f"/CN=mlpacker test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return pair


def _issue(directory: Path, name: str, ca: KeyPair, usage: str, san: str | None) -> KeyPair:
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    csr, ext = directory / f"{name}.csr", directory / f"{name}.ext"
    _openssl(
        directory, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(pair.key), "-out", str(csr), "-subj", f"/CN={name}",
    )  # fmt: skip
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage={usage}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
        + (f"subjectAltName={san}\n" if san else "")
    )
    _openssl(
        directory, "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "2", "-extfile", str(ext),
        "-out", str(pair.cert),
    )  # fmt: skip
    return pair


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if OPENSSL is None:
        skip_missing("openssl", "no openssl command line to make the test certificates")
    directory = tmp_path_factory.mktemp("pki")
    ca, other_ca = _make_ca(directory, "ca"), _make_ca(directory, "other-ca")
    sans = "IP:127.0.0.1,DNS:localhost"
    return Pki(
        directory=directory,
        ca=ca,
        server=_issue(directory, "server", ca, "serverAuth", sans),
        client=_issue(directory, "client", ca, "clientAuth", None),
        other_ca=other_ca,
        other_server=_issue(directory, "other-server", other_ca, "serverAuth", sans),
        other_client=_issue(directory, "other-client", other_ca, "clientAuth", None),
    )


def write_tokens(path: Path, *tokens: str) -> Path:
    """A token file as the deploy writes it: one token per line, mode 0600."""
    path.write_text("".join(f"{token}\n" for token in tokens))
    path.chmod(0o600)
    return path


# ------------------------------------------------------------------ mosquitto


@dataclass
class Broker:
    directory: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    password_file: Path | None = None
    tls: KeyPair | None = None  # a TLS listener with this certificate and key
    acl_file: Path | None = None  # what each user may read and write (re-read on SIGHUP: reload())

    def start(self) -> Broker:
        conf = self.directory / "mosquitto.conf"
        auth = f"allow_anonymous false\npassword_file {self.password_file}\n" if self.password_file else ""
        if self.acl_file:
            auth += f"acl_file {self.acl_file}\n"
        tls = f"certfile {self.tls.cert}\nkeyfile {self.tls.key}\n" if self.tls else ""
        # As root, mosquitto drops to the 'mosquitto' user, which cannot read pytest's private tmp dirs
        # (password file, persistence, log): keep root for this test-only broker.
        keep_user = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(
            f"{keep_user}listener {self.port} 127.0.0.1\n"
            f"{tls}"
            f"{auth or 'allow_anonymous true' + chr(10)}"
            "persistence true\n"
            f"persistence_location {self.directory}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 100000\n"
            f"log_dest file {self.directory}/mosquitto.log\n"
        )
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {(self.directory / 'mosquitto.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not listen")

    def reload(self) -> None:
        """Mosquitto re-reads its password and ACL files on SIGHUP."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if not os.path.exists(MOSQUITTO):
        skip_missing("mosquitto", f"no mosquitto binary at {MOSQUITTO}")
    broker = Broker(tmp_path_factory.mktemp("mosquitto"), free_port()).start()
    try:
        yield broker
    finally:
        broker.stop()


class MqttProbe:
    """A plain paho client used by the tests to publish inputs and collect outputs."""

    def __init__(
        self,
        port: int,
        topics: list[str],
        username: str | None = None,
        password: str | None = None,
        persistent: bool = False,
    ):
        """``persistent``: a session the broker keeps (and queues for) while the probe is cut off."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: dict[str, list[dict[str, Any]]] = {topic: [] for topic in topics}
        self.raw: dict[str, list[bytes]] = {topic: [] for topic in topics}
        self._cond = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"probe-{uuid.uuid4().hex[:8]}",
            clean_session=not persistent,
        )
        if username is not None:
            self.client.username_pw_set(username, password)

        def on_connect(client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
            client.subscribe([(topic, 1) for topic in topics])

        def on_subscribe(*args: Any) -> None:
            subscribed.set()

        def on_message(client: Any, userdata: Any, message: Any) -> None:
            with self._cond:
                self.raw[message.topic].append(message.payload)
                try:
                    self.messages[message.topic].append(json.loads(message.payload))
                except ValueError:
                    self.messages[message.topic].append(
                        {"unparsable": message.payload.decode(errors="replace")}
                    )
                self._cond.notify_all()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "probe could not subscribe"

    def publish(self, topic: str, payload: Any, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.client.publish(topic, data, qos=1).wait_for_publish(10)

    def wait_for(self, topic: str, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages[topic]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{topic}: got {len(self.messages[topic])} of {count} messages: "
                        f"{self.messages[topic][-3:]}"
                    )
                self._cond.wait(left)
            return list(self.messages[topic])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_probe(mosquitto: Broker) -> Iterator[Callable[[list[str]], MqttProbe]]:
    probes: list[MqttProbe] = []

    def make(topics: list[str]) -> MqttProbe:
        probe = MqttProbe(mosquitto.port, topics)
        probes.append(probe)
        return probe

    try:
        yield make
    finally:
        for probe in probes:
            probe.close()


def stream_config(
    stages: list[dict[str, Any]], broker_port: int, prefix: str, name: str, output_topic: str, **stream: Any
) -> dict[str, Any]:
    config = base_config(stages, mode="stream")
    config["service"] = f"{prefix.replace('/', '-')}-{name}"
    config["stream"] = {
        "broker": {"host": "127.0.0.1", "port": broker_port},
        "input_topic": f"{prefix}/{name}/in",
        "output_topic": output_topic,
        "error_topic": f"{prefix}/errors",
        "client_id": f"{prefix.replace('/', '-')}-{name}",
        "share_group": f"g-{name}",
        "health_bind": "127.0.0.1",
        "health_port": 0,
        **stream,
    }
    return config


# ------------------------------------------------------------------ function stages

FUNCTIONS_SOURCE = """
import os
import time

import numpy as np


def double(X):
    return np.asarray(X, dtype=float) * 2


def boom(X):
    raise ValueError("boom: this stage always fails")


def slow(X):
    time.sleep(float(os.environ.get("SLOW_STAGE_SECONDS", "3")))
    return X


def announced_slow(X):
    # Writes the first value of each batch it starts on to STAGE_STARTED_FILE, then works as slow does: a
    # test knows the message was taken (and not acknowledged yet) when the value shows up there.
    with open(os.environ["STAGE_STARTED_FILE"], "a") as started:
        started.write(f"{X[0][0]}\\n")
    return slow(X)


def guard(X):
    X = np.asarray(X, dtype=float)
    if np.abs(X).max() > 100:
        raise OverflowError("value out of the trained range")
    return X


def first_column_label(X):
    return ["big" if row[0] > 5 else "small" for row in np.asarray(X)]
"""

GATED_SOURCE = """
import os
import time

# Importing this module blocks until the flag file exists: lets a test observe "not ready yet".
while not os.path.exists(os.environ["GATE_FILE"]):
    time.sleep(0.02)


def identity(X):
    return X
"""


@pytest.fixture(scope="session")
def code_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("code")
    package = root / "mlfuncs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "ops.py").write_text(FUNCTIONS_SOURCE)
    (package / "gated.py").write_text(GATED_SOURCE)
    return root


def function_stage(name: str, ref: str, method: str = "call") -> dict[str, Any]:
    return {"name": name, "format": "function", "function": ref, "artifact": None, "method": method}
