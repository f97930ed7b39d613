"""Helpers for the deploy tests: run the real playbooks, read the PLAY RECAP, reach the services."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pickle
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import requests
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = REPO_ROOT / ".venv" / "bin"
PLAYBOOKS = REPO_ROOT / "playbooks"
LOCAL_INVENTORY = REPO_ROOT / "inventories" / "local"
SUPERVISORCTL = [
    "/opt/mlpacker/.supervisor/venv/bin/supervisorctl",
    "-c",
    "/etc/mlpacker/supervisor/supervisord.conf",
]
RECAP_LINE = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)
IRIS_SAMPLES = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.3, 3.3, 6.0, 2.5], [5.9, 3.0, 5.1, 1.8]]


@dataclass
class PlaybookRun:
    rc: int
    output: str
    recap: dict[str, dict[str, int]]

    def changed(self) -> dict[str, int]:
        return {host: counts["changed"] for host, counts in self.recap.items()}

    def describe(self) -> str:
        return f"exit {self.rc}, recap {self.recap}\n--- last output ---\n{self.output[-6000:]}"


def assert_rerun_changes_nothing(inventory: Path, extra_vars_files: list[Path]) -> PlaybookRun:
    """Deploy again with the same inputs: every host must report changed=0."""
    again = run_playbook("deploy.yml", inventory, extra_vars_files)
    assert again.rc == 0, again.describe()
    assert again.recap and all(count == 0 for count in again.changed().values()), (
        changed_tasks(again.output),
        again.describe(),
    )
    return again


def controller_settings(folder: Path) -> dict[str, str]:
    """Controller settings of a test's deploys: cache and deployment records under ``folder``, and a
    snapshot of the runtime source (the checkout is edited while tests run; that must not reach a deploy)."""
    runtime_copy = folder / "runtime-src"
    # Taken afresh: a folder kept between runs (the deploy bench's) must not deploy an older runtime.
    shutil.rmtree(runtime_copy, ignore_errors=True)
    shutil.copytree(
        REPO_ROOT / "runtime",
        runtime_copy,
        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"),
    )
    return {
        "mlpacker_cache_dir": str(folder / "cache"),
        "mlpacker_state_dir": str(folder / "state"),
        "mlpacker_runtime_source": str(runtime_copy),
    }


@contextlib.contextmanager
def user_mosquitto(folder: Path) -> Iterator[int]:
    """A Mosquitto of the user's own (not managed by MLPacker) on a free loopback port, for as long as the
    block runs; yields its port."""
    port = free_port_block(1)
    config = folder / f"user-mosquitto-{port}.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker = subprocess.Popen(
        ["mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: port_is_listening("127.0.0.1", port), 10, "the test's mosquitto")
        yield port
    finally:
        broker.terminate()
        broker.wait(timeout=10)


def train_iris(folder: Path) -> dict[str, Path]:
    """The example's own training script (scaler -> pca -> classifier), seeded: the same models every run."""
    spec = importlib.util.spec_from_file_location("iris_train", REPO_ROOT / "examples" / "iris" / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.train(folder, seed=0)


def iris_spec(
    name: str,
    mode: str,
    layout: str,
    models: dict[str, Path],
    base_port: int,
    base_dir: Path | None = None,
) -> dict[str, Any]:
    """The iris pipeline (scale -> reduce -> classify) as extra vars: atomic on `edge`, or distributed over
    edge/fog/cloud, with ports from ``base_port`` on. Its ``base_dir`` is ``base_dir`` or the folder holding
    the three artifacts (artifact paths and code_dir must resolve inside it)."""
    stages: list[dict[str, Any]] = [
        {"name": "scale", "artifact": str(models["scaler"])},
        {"name": "reduce", "artifact": str(models["pca"])},
        {"name": "classify", "artifact": str(models["classifier"])},
    ]
    if base_dir is None:
        base_dir = Path(os.path.commonpath([str(Path(stage["artifact"]).parent) for stage in stages]))
    pipeline: dict[str, Any] = {
        "name": name,
        "mode": mode,
        "layout": layout,
        "base_dir": str(base_dir),
        "stages": stages,
    }
    if layout == "atomic":
        pipeline["group"] = "edge"
        stages[0]["port"] = base_port
    else:
        for offset, (stage, group) in enumerate(zip(stages, ("edge", "fog", "cloud"), strict=True)):
            stage["group"] = group
            stage["port"] = base_port + offset
    return {"mlpacker_pipeline": pipeline}


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    recap_start = output.rfind("PLAY RECAP")
    if recap_start < 0:
        return {}
    return {
        match["host"]: {key: int(match[key]) for key in ("ok", "changed", "unreachable", "failed")}
        for match in RECAP_LINE.finditer(output[recap_start:])
    }


def run_playbook(
    playbook: str,
    inventory: Path,
    extra_vars_files: list[Path],
    *,
    extra_vars: dict[str, Any] | None = None,
    check: bool = False,
    timeout: float = 900,
    on_line: Callable[[str], None] | None = None,
) -> PlaybookRun:
    """Run ansible-playbook from the repository root (its ansible.cfg finds the collection). ``on_line`` sees
    each line of its output as it comes (a fault test acts at a given task)."""
    argv = [str(VENV_BIN / "ansible-playbook"), str(PLAYBOOKS / playbook), "-i", str(inventory)]
    for path in extra_vars_files:
        argv += ["-e", f"@{path}"]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    if check:
        argv += ["--check", "--diff"]
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_HOST_KEY_CHECKING"] = "False"
    if on_line is None:
        result = subprocess.run(
            argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        output = result.stdout + result.stderr
        return PlaybookRun(rc=result.returncode, output=output, recap=parse_recap(output))
    lines: list[str] = []
    with subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                on_line(line)
        finally:
            timer.cancel()
        rc = process.wait()
    output = "".join(lines)
    return PlaybookRun(rc=rc, output=output, recap=parse_recap(output))


def free_port_block(count: int, start: int = 20000, stop: int = 60000) -> int:
    """First port of ``count`` consecutive ports nobody listens on (random start: parallel runs differ)."""
    rng = np.random.default_rng()
    for _ in range(200):
        base = int(rng.integers(start, stop - count))
        if all(port_is_free(base + offset) for offset in range(count)):
            return base
    raise RuntimeError(f"no block of {count} free ports found")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def port_is_listening(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((address, port)) == 0


def write_vars_file(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def in_process_predictions(artifacts: list[Path], instances: list[list[float]]) -> list[Any]:
    """What the pipeline must answer: the fitted stages applied in order, in this process."""
    data = np.asarray(instances, dtype=float)
    stages = [joblib.load(path) for path in artifacts]
    for stage in stages[:-1]:
        data = stage.transform(data)
    return stages[-1].predict(data).tolist()


def record_credentials(state_dir: Path | str, name: str) -> dict[str, Any] | None:
    """The deployment record's ``credentials`` (paths to the controller's files), None when insecure."""
    record = json.loads((Path(state_dir) / f"{name}.json").read_text())
    return record.get("credentials")


def read_first_line(path: str) -> str:
    return Path(path).read_text().splitlines()[0].strip()


def post_predict(
    url: str, instances: list[list[float]], timeout: float = 15, credentials: dict[str, Any] | None = None
) -> list[Any]:
    """POST to an entry point as a user would: trusting only the pipeline CA, with the bearer token."""
    options = request_options(credentials)
    response = requests.post(url, json={"instances": instances}, timeout=timeout, **options)
    assert response.status_code == 200, f"POST {url}: {response.status_code} {response.text}"
    return response.json()["predictions"]


def request_options(credentials: dict[str, Any] | None) -> dict[str, Any]:
    """``requests`` keyword arguments for a deployment's credentials (none for an insecure deploy)."""
    if not credentials:
        return {}
    options: dict[str, Any] = {}
    if credentials.get("ca_file"):
        options["verify"] = credentials["ca_file"]
    if credentials.get("token_file"):
        options["headers"] = {"Authorization": "Bearer " + read_first_line(credentials["token_file"])}
    return options


def mqtt_roundtrip(
    host: str,
    port: int,
    input_topic: str,
    output_topic: str,
    instances: list[list[float]],
    timeout: float = 30,
    credentials: dict[str, Any] | None = None,
    user_broker: dict[str, Any] | None = None,
) -> list[Any]:
    """Publish one message to the pipeline's input topic and wait for its answer on the output topic (with
    the record's MQTT client credential and CA when the deployment has them; on a user's own broker with
    ``user_broker``, its ``mlpacker_broker`` settings: username, password, TLS CA and client certificate)."""
    import paho.mqtt.client as mqtt

    message_id = str(uuid.uuid4())
    answers: list[dict[str, Any]] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"mlpacker-test-{message_id[:8]}")
    mqtt_access = (credentials or {}).get("mqtt") or {}
    if user_broker is not None:
        client.username_pw_set(user_broker["username"], str(user_broker["password"]))
        tls = user_broker.get("tls") or {}
        client.tls_set(ca_certs=tls["ca_file"], certfile=tls.get("cert_file"), keyfile=tls.get("key_file"))
    if mqtt_access.get("username"):
        client.username_pw_set(mqtt_access["username"], read_first_line(mqtt_access["password_file"]))
    if mqtt_access.get("ca_file"):
        client.tls_set(ca_certs=mqtt_access["ca_file"])
    subscribed = []
    client.on_message = lambda _client, _userdata, message: answers.append(json.loads(message.payload))
    client.on_subscribe = lambda *_args: subscribed.append(True)
    client.connect(host, port)
    client.loop_start()
    try:
        client.subscribe(output_topic, qos=1)
        wait_for(lambda: bool(subscribed), 10, "MQTT subscription")
        client.publish(input_topic, json.dumps({"id": message_id, "instances": instances}), qos=1)
        wait_for(
            lambda: any(answer.get("id") == message_id for answer in answers), timeout, "pipeline answer"
        )
    finally:
        client.loop_stop()
        client.disconnect()
    answer = next(answer for answer in answers if answer.get("id") == message_id)
    return answer["predictions"]


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def supervisor_pids(programs: list[str]) -> dict[str, int]:
    """Main pid of each supervisord program (the service's gunicorn master or stream consumer); none when
    MLPacker's supervisord is not installed."""
    if not Path(SUPERVISORCTL[0]).exists():
        return {}
    result = subprocess.run(
        [*SUPERVISORCTL, "status", *programs], capture_output=True, text=True, check=False
    )
    pids = {}
    for line in result.stdout.splitlines():
        match = re.match(r"^(\S+)\s+RUNNING\s+pid (\d+),", line)
        if match:
            pids[match[1]] = int(match[2])
    return pids


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that mention ``text`` (e.g. a pipeline's directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline.strip()}")
    return found


def pipeline_leftovers(name: str) -> list[str]:
    """Files a pipeline may leave on this machine; empty after a clean undeploy."""
    candidates = [
        Path("/opt/mlpacker") / name,
        Path("/var/log/mlpacker") / name,
        Path("/etc/mlpacker/mosquitto/pipelines") / name,
    ]
    leftovers = [str(path) for path in candidates if path.exists()]
    conf_dir = Path("/etc/mlpacker/supervisor/conf.d")
    if conf_dir.is_dir():
        leftovers += [str(path) for path in conf_dir.glob(f"mlpacker-{name}*.conf")]
    return leftovers


def leftovers_on_testbed_host(bed: Any, host: str, name: str) -> str:
    """What pipeline ``name`` left on test-bed host ``host`` (files, supervisord programs, processes); empty
    after a clean undeploy."""
    listing = bed.run(
        host,
        f"ls -d /opt/mlpacker/{name} /var/log/mlpacker/{name}"
        f" /etc/mlpacker/supervisor/conf.d/mlpacker-{name}* 2>/dev/null;"
        # [/]: the pattern must not match this shell's own command line.
        f" pgrep -af '[/]opt/mlpacker/{name}/' || true",
        check=False,
    )
    return listing.stdout.strip()


def managed_broker_inventory(bed: Any, path: Path) -> Path:
    """The test bed's inventory written to ``path`` with the broker group on cloud1 and no mlpacker_broker:
    MLPacker installs and runs its own Mosquitto there."""
    inventory = yaml.safe_load(Path(bed.inventory_path).read_text())
    inventory["all"]["vars"].pop("mlpacker_broker", None)
    children = inventory["all"]["children"]
    children["broker"] = {"hosts": {"cloud1": None}}
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


# --- MQTT access checks of a secured broker (issue #12) -------------------------------------------------

# MQTT 5 reason codes; paho reports a 3.1.1 refusal (return code 4 or 5) as one of the CONNACK ones too.
MQTT_BAD_USER_NAME_OR_PASSWORD = 134
MQTT_NOT_AUTHORIZED = 135
MQTT_REFUSED = (MQTT_BAD_USER_NAME_OR_PASSWORD, MQTT_NOT_AUTHORIZED)


def service_mqtt_password(credentials_dir: Path | str, pipeline: str, service_id: str) -> tuple[str, str]:
    """Username and password of a service's MQTT credential, read from the controller's credentials folder
    (``<credentials_dir>/<pipeline>/mqtt/mlp-<pipeline>-<service>.password``)."""
    username = f"mlp-{pipeline}-{service_id}"
    password_file = Path(credentials_dir) / pipeline / "mqtt" / f"{username}.password"
    return username, read_first_line(str(password_file))


def client_mqtt_password(credentials: dict[str, Any]) -> tuple[str, str]:
    """Username and password of the record's MQTT client credential."""
    mqtt_access = credentials["mqtt"]
    return mqtt_access["username"], read_first_line(mqtt_access["password_file"])


def _mqtt_client(username: str | None, password: str | None, ca_file: str | None) -> Any:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"mlpacker-test-{uuid.uuid4().hex[:10]}",
        protocol=mqtt.MQTTv5,
    )
    if username is not None:
        client.username_pw_set(username, password)
    if ca_file:
        client.tls_set(ca_certs=ca_file)  # the broker's certificate and its name checked against this CA
    return client


def mqtt_connack(
    host: str,
    port: int,
    *,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
    timeout: float = 15,
) -> int:
    """The reason code of the broker's CONNACK to a client with these settings (0: accepted)."""
    client = _mqtt_client(username, password, ca_file)
    codes: list[int] = []
    client.on_connect = lambda _client, _userdata, _flags, reason_code, _properties: codes.append(
        reason_code.value
    )
    client.connect(host, port)
    client.loop_start()
    try:
        wait_for(lambda: bool(codes), timeout, f"the CONNACK of {host}:{port}")
    finally:
        client.loop_stop()
        client.disconnect()
    return codes[0]


class MqttSession:
    """One MQTT 5 client of a broker: what its subscriptions received (in order) and the broker's PUBACK
    reason code of each QoS 1 publish (135: not authorized, the message was dropped)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.received: list[tuple[str, bytes]] = []
        self._acks: dict[int, int] = {}
        self._subacks: dict[int, list[int]] = {}
        client.on_message = lambda _client, _userdata, message: self.received.append(
            (message.topic, message.payload)
        )
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, reason_code: Any, _properties: Any) -> None:
        self._acks[mid] = reason_code.value

    def _on_subscribe(self, _client: Any, _userdata: Any, mid: int, codes: Any, _properties: Any) -> None:
        self._subacks[mid] = [code.value for code in codes]

    def subscribe(self, topic: str, timeout: float = 15) -> list[int]:
        """Subscribe at QoS 1 and return the SUBACK's reason codes (Mosquitto 2.0 grants every one)."""
        _rc, mid = self.client.subscribe(topic, qos=1)
        wait_for(lambda: mid in self._subacks, timeout, f"the SUBACK of {topic}")
        return self._subacks[mid]

    def publish(self, topic: str, payload: str, timeout: float = 15) -> int:
        """Publish at QoS 1 and return the PUBACK's reason code (0 or 16 "no matching subscribers": taken)."""
        info = self.client.publish(topic, payload, qos=1)
        wait_for(lambda: info.mid in self._acks, timeout, f"the PUBACK of a message to {topic}")
        return self._acks[info.mid]

    def topics(self) -> list[str]:
        return [topic for topic, _payload in self.received]


@contextlib.contextmanager
def mqtt_session(
    host: str,
    port: int,
    *,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
    timeout: float = 15,
) -> Iterator[MqttSession]:
    """An accepted MQTT 5 connection for as long as the block runs."""
    client = _mqtt_client(username, password, ca_file)
    codes: list[int] = []
    client.on_connect = lambda _client, _userdata, _flags, reason_code, _properties: codes.append(
        reason_code.value
    )
    session = MqttSession(client)
    client.connect(host, port)
    client.loop_start()
    try:
        wait_for(lambda: bool(codes), timeout, f"the CONNACK of {host}:{port}")
        assert codes[0] == 0, f"{username or 'anonymous'} refused by {host}:{port}: reason code {codes[0]}"
        yield session
    finally:
        client.loop_stop()
        client.disconnect()


def listening_sockets(ss_output: str) -> list[tuple[str, int, str]]:
    """(address, port, users) of each TCP listener in ``ss -ltnpH`` output; IPv6 addresses keep their
    brackets, a wildcard is ``0.0.0.0``, ``*`` or ``[::]``."""
    sockets = []
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] != "LISTEN":
            continue
        address, _, port = fields[3].rpartition(":")
        sockets.append((address.split("%")[0], int(port), " ".join(fields[5:])))
    return sockets


def listen_addresses(ss_output: str, port: int) -> set[str]:
    """The addresses listened on at ``port`` in ``ss -ltnpH`` output."""
    return {address for address, bound, _users in listening_sockets(ss_output) if bound == port}


def listeners_of_processes_on(ss_output: str, port: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP listener of the processes that listen on ``port`` (``ss -ltnpH``
    output): what else the owner of a port listens on."""
    sockets = listening_sockets(ss_output)
    pids = {
        pid for _address, bound, users in sockets if bound == port for pid in re.findall(r"pid=(\d+)", users)
    }
    return {
        (address, bound) for address, bound, users in sockets if pids & set(re.findall(r"pid=(\d+)", users))
    }


def assert_managed_broker_confines_users(
    host: str,
    port: int,
    record: dict[str, Any],
    credentials_dir: Path | str,
    instances: list[list[float]],
    expected: list[Any],
) -> None:
    """On a stream pipeline of the managed broker at ``host:port`` (TLS, verified against the record's broker
    CA by ``host``): an anonymous client and the client's name with a wrong password are refused; each
    service's credential, subscribed to ``#``, receives only its input topic while the pipeline answers the
    client (never an output or error message), and the broker refuses (PUBACK 135, dropped) its publishes to
    another pipeline's topics and to the pipeline's topics it does not write (in an atomic pipeline its
    only service writes the output topic: there that is the input topic); the connection whose publishes were
    refused keeps getting its input."""
    name = record["name"]
    credentials = record["credentials"]
    ca_file = credentials["mqtt"]["ca_file"]
    topics = record["topics"]
    client_user, client_password = client_mqtt_password(credentials)
    assert mqtt_connack(host, port, ca_file=ca_file) in MQTT_REFUSED, "anonymous client accepted"
    wrong = mqtt_connack(
        host, port, username=client_user, password=client_password + "-wrong", ca_file=ca_file
    )
    assert wrong in MQTT_REFUSED, f"{client_user} with a wrong password: reason code {wrong}"
    # The same client with its own password is let in: the refusals above are the password's doing.
    assert mqtt_connack(host, port, username=client_user, password=client_password, ca_file=ca_file) == 0

    services = {service["id"]: service for service in record["services"]}
    for service_id, service in services.items():
        username, password = service_mqtt_password(credentials_dir, name, service_id)
        own = {service["output_topic"], service["error_topic"]}
        forbidden = [f"mlpacker/{name}-other/in", f"mlpacker/{name}-other/out"] + [
            topic for topic in (topics["input"], topics["output"]) if topic not in own
        ]
        # One connection of the service's user listens and forges: after its refused publishes it still gets
        # its input (with the managed broker's former max_queued_messages 0, Mosquitto 2.0.11 delivered
        # nothing more to a connection once it refused one of its publishes).
        with mqtt_session(host, port, username=username, password=password, ca_file=ca_file) as spy:
            spy.subscribe("#")
            for topic in forbidden:
                forged = json.dumps({"id": f"forged-{uuid.uuid4()}", "instances": instances})
                code = spy.publish(topic, forged)
                assert code == MQTT_NOT_AUTHORIZED, f"{username} published on {topic}: PUBACK {code}"
            # The pipeline answers the client twice; the second run's message on this service's input topic
            # comes after anything the broker routed for the first (one broker thread, in-order delivery).
            for _ in range(2):
                answer = mqtt_roundtrip(
                    host, port, topics["input"], topics["output"], instances, credentials=credentials
                )
                assert answer == expected
            inputs = service["input_topic"]
            wait_for(
                lambda seen=spy.received, inputs=inputs: (
                    sum(topic == inputs and b"forged-" not in body for topic, body in seen) >= 2
                ),
                30,
                f"{username} to receive both messages of its input topic {inputs}",
            )
            assert set(spy.topics()) == {inputs}, f"{username} subscribed to # received {spy.topics()}"
            assert not any(b"forged-" in payload for _topic, payload in spy.received), spy.received


def assert_user_broker_refuses_strangers(user_broker: dict[str, Any]) -> None:
    """The user's own broker (``mlpacker_broker`` settings with TLS, as the test bed's broker1 gives them)
    refuses an anonymous client and the user's name with a wrong password, and accepts the user's settings;
    a listener that requires a client certificate refuses a client without one (no CONNACK: a TLS alert)."""
    from tests.testbed.testbed import mqtt_connect

    host, port, tls = user_broker["host"], user_broker["port"], user_broker["tls"]
    certificate = {"cert_file": tls.get("cert_file"), "key_file": tls.get("key_file")}
    user, password = user_broker["username"], str(user_broker["password"])
    anonymous = mqtt_connect(host, port, ca_file=tls["ca_file"], **certificate)
    assert anonymous.startswith("refused"), f"anonymous client on {host}:{port}: {anonymous}"
    wrong = mqtt_connect(
        host, port, ca_file=tls["ca_file"], **certificate, username=user, password=password + "x"
    )
    assert wrong.startswith("refused"), f"{user} with a wrong password on {host}:{port}: {wrong}"
    right = mqtt_connect(host, port, ca_file=tls["ca_file"], **certificate, username=user, password=password)
    assert right == "accepted", f"{user} on {host}:{port}: {right}"
    if tls.get("cert_file"):
        without = mqtt_connect(host, port, ca_file=tls["ca_file"], username=user, password=password)
        assert without.startswith("no CONNACK"), f"{user} without a certificate on {host}:{port}: {without}"


# --- REST access checks on the test bed (issue #12) -------------------------------------------------------


def http_status_from_testbed_host(
    bed: Any,
    host: str,
    url: str,
    ca_file: str | Path,
    *,
    method: str = "POST",
    token: str | None = None,
    body: str = '{"instances": [[5.1, 3.5, 1.4, 0.2]]}',
) -> tuple[int, str]:
    """Status code and response headers of ``curl`` run on test-bed host ``host`` (another machine than the
    controller), trusting only ``ca_file`` (copied to the host: a CA certificate is public)."""
    remote_ca = f"/tmp/mlpacker-test-ca-{uuid.uuid4().hex[:8]}.crt"
    bed.run(host, f"cat > {remote_ca}", input=Path(ca_file).read_text())
    argv = ["curl", "-sS", "-o", "/dev/null", "-D", "-", "-w", "%{http_code}", "--cacert", remote_ca]
    argv += ["-X", method, "--max-time", "20"]
    if method == "POST":
        argv += ["-H", "Content-Type: application/json", "-d", body]
    if token is not None:
        argv += ["-H", f"Authorization: Bearer {token}"]
    argv.append(url)
    try:
        result = bed.run(host, " ".join(shlex.quote(arg) for arg in argv), check=False, timeout=60)
    finally:
        bed.run(host, f"rm -f {remote_ca}", check=False)
    assert result.returncode == 0, f"curl {url} on {host}: {result.stderr.strip()}"
    headers, _, code = result.stdout.rstrip().rpartition("\n")
    return int(code), headers


def listen_addresses_on_testbed_host(bed: Any, host: str, port: int) -> set[str]:
    """The addresses TCP port ``port`` listens on in test-bed host ``host`` (``ss -ltnH`` there)."""
    return listen_addresses(bed.run(host, "ss -ltnpH").stdout, port)


def changed_tasks(output: str) -> list[str]:
    """``TASK [...]`` headers of a playbook's output followed by a ``changed:`` result: what a re-run that
    should change nothing did change."""
    found = []
    task = ""
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line.rstrip("* ")
        elif line.startswith("changed:") and task and (not found or found[-1] != task):
            found.append(task)
    return found


def run_as_pasted(command: str) -> subprocess.CompletedProcess:
    """Run a line the deploy printed as a user pastes it: /bin/sh, from another folder, without this
    process' environment."""
    return subprocess.run(
        ["/bin/sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )


def load_marker_artifact(inner: Path, target: Path, marker_dir: str) -> Path:
    """A pickle at ``target`` that runs code when loaded, as an attacker's would, made of builtins only (no
    module of its own to ship): loading it writes ``marker_dir/load-<uid>-<pid>`` (JSON: uid, euid, argv,
    sys.prefix), when that folder exists, then returns the model pickled in ``inner`` (a joblib file), so the
    stage still answers as before."""
    model_bytes = pickle.dumps(joblib.load(inner))
    expression = (
        "(lambda os, sys, json: ([open(os.path.join(folder, 'load-%d-%d' % (os.getuid(), os.getpid())), 'w')"
        ".write(json.dumps({'uid': os.getuid(), 'euid': os.geteuid(), 'argv': sys.argv,"
        " 'prefix': sys.prefix}))"
        " for folder in [" + repr(marker_dir) + "] if os.path.isdir(folder)],"
        " __import__('pickle').loads(" + repr(model_bytes) + "))[1])"
        "(__import__('os'), __import__('sys'), __import__('json'))"
    )

    class _Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (eval, (expression, {}))

    target.write_bytes(pickle.dumps(_Payload()))
    return target


def load_markers(listing: str) -> list[dict[str, Any]]:
    """The markers ``load_marker_artifact``'s pickle wrote, from ``head -n 100 <folder>/load-*`` style output
    (one JSON object per line)."""
    return [json.loads(line) for line in listing.splitlines() if line.startswith("{")]
