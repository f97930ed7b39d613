"""Shared pieces of the runtime benchmarks: a model, free ports, process control, a table printer, and for
the secure variants a PKI (openssl command line), a bearer token and a Mosquitto with TLS, passwords and ACL.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
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
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


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

    def wait_http(self, url: str, timeout: float = 60, context: ssl.SSLContext | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1, context=context) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"not ready: {url}")

    def cpu_seconds(self) -> float:
        """CPU time used so far by this process and its live descendants (gunicorn's workers): CPU per
        request is a cost measure that other work on the machine disturbs less than time."""
        return tree_cpu_seconds(self.proc.pid)

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


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and of its live descendants, in seconds: the sum over their threads of the time
    spent on a CPU from /proc/<pid>/task/<tid>/schedstat (nanoseconds, where /proc/<pid>/stat counts
    10 ms clock ticks)."""
    total_ns = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                total_ns += int((task / "schedstat").read_text().split()[0])
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue  # the process or thread exited meanwhile
    return total_ns / 1e9


def runtime_service(
    config: dict[str, Any],
    health_url: str,
    runtime_dir: str | None = None,
    context: ssl.SSLContext | None = None,
) -> Proc:
    path = WORKDIR / f"{config['service']}.json"
    path.write_text(json.dumps(config))
    proc = Proc(
        [str(RUNTIME_BIN), "serve", "--config", str(path)],
        env=runtime_env(runtime_dir),
        name=config["service"],
    )
    proc.wait_http(health_url, context=context)
    return proc


# ------------------------------------------------------------------ security: PKI, token, broker users


@dataclass(frozen=True)
class Pki:
    """A bench CA, one server certificate signed by it (SANs IP 127.0.0.1 and DNS localhost, EC P-256 like
    the deploy's per-pipeline PKI) and a bearer token file (one token, mode 0600, as the deploy writes it)."""

    ca: Path
    cert: Path
    key: Path
    token_file: Path
    token: str

    def security(self) -> dict[str, Any]:
        """The runtime config's ``security`` section: HTTPS, hops verified against the CA, bearer auth."""
        return {
            "tls": {"cert_file": str(self.cert), "key_file": str(self.key), "ca_file": str(self.ca)},
            "auth": {"token_file": str(self.token_file)},
        }

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only the bench CA (host name or IP checked)."""
        return ssl.create_default_context(cafile=str(self.ca))


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run([OPENSSL, *args], cwd=directory, check=True, capture_output=True)


def make_pki() -> Pki:
    directory = WORKDIR / "pki"
    directory.mkdir(mode=0o700)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert, ext = (directory / f"server.{suffix}" for suffix in ("key", "csr", "crt", "ext"))
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl(
        directory, "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_cert), "-days", "2",
        "-subj", "/CN=mlpacker bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl(directory, "req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=bench")
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    _openssl(
        directory, "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-set_serial", str(secrets.randbits(63)), "-days", "2", "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    token = secrets.token_urlsafe(32)
    token_file = directory / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    return Pki(ca=ca_cert, cert=cert, key=key, token_file=token_file, token=token)


@dataclass
class Broker:
    proc: Proc
    port: int
    pki: Pki | None = None  # TLS listener with the bench server certificate, clients verify against pki.ca
    password_files: dict[str, Path] = field(default_factory=dict)  # user -> file holding its password

    def password(self, user: str) -> str:
        return self.password_files[user].read_text().splitlines()[0]


def start_mosquitto(
    pki: Pki | None = None, acl: dict[str, tuple[list[str], list[str]]] | None = None
) -> Broker:
    """A Mosquitto on 127.0.0.1. Plain and anonymous by default; with ``pki`` and ``acl`` (user -> (topics it
    may read, topics it may write)) secured like the managed broker: a TLS listener, no anonymous access,
    a password file made with ``mosquitto_passwd -b`` (one random password per user) and an ACL file."""
    port = free_port()
    directory = WORKDIR / f"mosquitto-{port}"
    directory.mkdir(mode=0o700)
    lines = [f"listener {port} 127.0.0.1"]
    password_files: dict[str, Path] = {}
    if pki is None:
        lines.append("allow_anonymous true")
    else:
        lines += [f"cafile {pki.ca}", f"certfile {pki.cert}", f"keyfile {pki.key}"]
        passwd, acl_file = directory / "passwd", directory / "acl"
        acl_lines = []
        for user, (read, write) in (acl or {}).items():
            password_files[user] = directory / f"{user}.password"
            password = secrets.token_urlsafe(24)
            password_files[user].write_text(password + "\n")
            create = [] if passwd.exists() else ["-c"]
            argv = [MOSQUITTO_PASSWD, *create, "-b", str(passwd), user, password]
            subprocess.run(argv, check=True, capture_output=True)
            acl_lines.append(f"user {user}")
            acl_lines += [f"topic read {topic}" for topic in read]
            acl_lines += [f"topic write {topic}" for topic in write]
        acl_file.write_text("\n".join(acl_lines) + "\n")
        lines += ["allow_anonymous false", f"password_file {passwd}", f"acl_file {acl_file}"]
    if os.geteuid() == 0:
        lines.append("user root")  # else mosquitto drops to 'mosquitto', which cannot read the 0700 folders
    lines += ["set_tcp_nodelay true", "max_inflight_messages 100", "max_queued_messages 100000"]
    conf = directory / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    proc = Proc([MOSQUITTO, "-c", str(conf)], name="mosquitto-tls" if pki else "mosquitto")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {proc.log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return Broker(proc, port, pki, password_files)
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
