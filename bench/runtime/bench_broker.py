"""Broker durability benchmark (not a test, issue #14): stream throughput of a Mosquitto configured like the
managed broker, saving its database on every change (``autosave_on_changes true`` + ``autosave_interval 1``,
``mlpacker_broker_autosave_interval: 0``) vs every 30 s (``autosave_interval 30``), with a backlog of Q QoS 1
messages kept for an offline persistent session (a stopped consumer), because Mosquitto 2.0 rewrites its
whole database on each save.

One run: a fresh broker (its database copied from a prefilled one holding the backlog), a live MQTT v5
consumer with a persistent session (clean_start false, as the runtime's), and a publisher sending numbered
QoS 1 messages with up to 100 in flight; throughput = messages the consumer received / time, the run stopped
after ``--messages`` or ``--seconds``. Runs are interleaved: each repeat goes over every (backlog, mode) pair,
the mode order alternating; ratios on-change / every-30-s are computed per repeat, medians over repeats.

With ``--stage``, the consumer is a runtime stream service running the iris pipeline (one stage, as
bench_mqtt.py's ``stage``): the publisher sends one-row inputs and the run counts results on its output topic,
i.e. the throughput of a one-stage pipeline on each broker setting.

    .venv/bin/python bench/runtime/bench_broker.py [--repeats 5] [--backlogs 0,1000,100000] [--stage]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    MOSQUITTO,
    WORKDIR,
    Proc,
    cleanup,
    free_port,
    median,
    print_table,
    runtime_service,
    stage,
    train,
)

MODES = {
    "on-change": ["autosave_on_changes true", "autosave_interval 1"],
    "every-30s": ["autosave_interval 30"],
}
PAYLOAD_PAD = "x" * 80  # about the size of a one-row pipeline message


def broker(data: Path, mode: str) -> tuple[Proc, int]:
    """A Mosquitto with the managed broker's queue and persistence settings, plain and anonymous."""
    port = free_port()
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "set_tcp_nodelay true"]
    if os.geteuid() == 0:
        lines.append("user root")  # else mosquitto drops to 'mosquitto', which cannot write the 0700 folder
    lines += ["max_queued_messages 200000", "max_queued_bytes 0", "persistence true"]
    lines += [f"persistence_location {data}/", *MODES[mode], "log_dest stdout", "log_type error"]
    conf = data / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    proc = Proc([MOSQUITTO, "-c", str(conf)], name=f"mosquitto-{mode}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {proc.log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def connect(port: int, client_id: str, on_message=None) -> mqtt.Client:  # noqa: ANN001
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    if on_message:
        client.on_message = on_message
    connected = threading.Event()
    client.on_connect = lambda *_args: connected.set()
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    # clean_start false on the first connection too: Mosquitto 2.0.11 saves no session made with clean start.
    client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    client.loop_start()
    if not connected.wait(10):
        raise RuntimeError(f"{client_id} did not connect")
    return client


def subscribe(client: mqtt.Client, topic: str) -> None:
    done = threading.Event()
    client.on_subscribe = lambda *_args: done.set()
    client.subscribe(topic, qos=1)
    if not done.wait(10):
        raise RuntimeError(f"no SUBACK for {topic}")


def publish(client: mqtt.Client, topic: str, count: int, stop: threading.Event) -> threading.Event:
    """Publishes count numbered QoS 1 messages (paho keeps 100 in flight); the event is set on the last
    PUBACK. At most 1000 wait in paho's queue: message ids are 16 bits, more would reuse ids still waiting."""
    acked = threading.Event()
    left = [count]
    window = threading.Semaphore(1000)

    def on_publish(*_args: object) -> None:
        window.release()
        left[0] -= 1
        if left[0] == 0:
            acked.set()

    client.on_publish = on_publish
    for number in range(count):
        while not window.acquire(timeout=1):
            if stop.is_set():
                return acked
        if stop.is_set():
            break
        client.publish(topic, json.dumps({"id": number, "pad": PAYLOAD_PAD}), qos=1)
    return acked


def prefill(backlog: int) -> Path:
    """A database holding `backlog` messages queued for the offline session 'backlog' (saved on SIGTERM)."""
    data = WORKDIR / f"prefill-{backlog}"
    data.mkdir(mode=0o700)
    proc, port = broker(data, "every-30s")
    client = connect(port, "backlog")
    subscribe(client, "backlog")
    client.disconnect()
    client.loop_stop()
    if backlog:
        publisher = connect(port, "prefill")
        if not publish(publisher, "backlog", backlog, threading.Event()).wait(600):
            raise RuntimeError("prefill not acknowledged")
        publisher.disconnect()
        publisher.loop_stop()
    os.kill(proc.proc.pid, signal.SIGTERM)
    proc.proc.wait(120)
    return data / "mosquitto.db"


def run(database: Path, mode: str, messages: int, seconds: float) -> tuple[float, int]:
    data = WORKDIR / f"run-{time.monotonic_ns()}"
    data.mkdir(mode=0o700)
    shutil.copy(database, data / "mosquitto.db")
    proc, port = broker(data, mode)
    received: set[int] = set()
    all_in = threading.Event()

    def on_message(_client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        received.add(json.loads(message.payload)["id"])
        if len(received) == messages:
            all_in.set()

    try:
        consumer = connect(port, "consumer", on_message)
        subscribe(consumer, "stream")
        publisher = connect(port, "publisher")
        stop = threading.Event()
        start = time.monotonic()
        sender = threading.Thread(target=publish, args=(publisher, "stream", messages, stop), daemon=True)
        sender.start()
        all_in.wait(seconds)
        elapsed = time.monotonic() - start
        got = len(received)
        stop.set()
        for client in (publisher, consumer):
            client.disconnect()
            client.loop_stop()
        return got / elapsed, got
    finally:
        proc.stop()
        shutil.rmtree(data, ignore_errors=True)


def run_stage(
    database: Path, mode: str, messages: int, seconds: float, model: Path, row: list
) -> tuple[float, int]:
    """One run with a runtime stream service as the consumer: results received on its output topic / time."""
    data = WORKDIR / f"run-{time.monotonic_ns()}"
    data.mkdir(mode=0o700)
    shutil.copy(database, data / "mosquitto.db")
    proc, port = broker(data, mode)
    service: Proc | None = None
    results: set[int] = set()
    all_in = threading.Event()

    def on_message(_client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        results.add(json.loads(message.payload)["id"])
        if len(results) == messages:
            all_in.set()

    try:
        health = free_port()
        config = {
            "pipeline": "bench",
            "service": f"stage-{mode}",
            "mode": "stream",
            "stages": [stage("pipeline", model, "predict")],
            "stream": {
                "broker": {"host": "127.0.0.1", "port": port},
                "input_topic": "stage/in",
                "output_topic": "stage/out",
                "error_topic": "stage/errors",
                "output_kind": "predictions",
                "client_id": "bench-stage",
                "health_bind": "127.0.0.1",
                "health_port": health,
            },
        }
        service = runtime_service(config, f"http://127.0.0.1:{health}/health/ready")
        reader = connect(port, "reader", on_message)
        subscribe(reader, "stage/out")
        publisher = connect(port, "publisher")
        stop = threading.Event()
        start = time.monotonic()
        threading.Thread(target=publish_rows, args=(publisher, messages, row, stop), daemon=True).start()
        all_in.wait(seconds)
        elapsed = time.monotonic() - start
        got = len(results)
        stop.set()
        for client in (publisher, reader):
            client.disconnect()
            client.loop_stop()
        return got / elapsed, got
    finally:
        if service is not None:
            service.stop()
        proc.stop()
        shutil.rmtree(data, ignore_errors=True)


def publish_rows(client: mqtt.Client, count: int, row: list, stop: threading.Event) -> None:
    """The stage's inputs: ``{"id": n, "instances": [row]}``, through publish()'s bounded window."""
    window = threading.Semaphore(1000)
    client.on_publish = lambda *_args: window.release()
    for number in range(count):
        while not window.acquire(timeout=1):
            if stop.is_set():
                return
        if stop.is_set():
            return
        client.publish("stage/in", json.dumps({"id": number, "instances": [row]}), qos=1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backlogs", default="0,1000,100000")
    parser.add_argument("--messages", type=int, default=2000, help="per run, at most")
    parser.add_argument("--seconds", type=float, default=15, help="per run, at most")
    parser.add_argument("--stage", action="store_true", help="a runtime stream service as the consumer")
    args = parser.parse_args()
    backlogs = [int(value) for value in args.backlogs.split(",")]
    try:
        if args.stage:
            features, files = train()
            row = features[0].tolist()
        databases = {backlog: prefill(backlog) for backlog in backlogs}
        sizes = {backlog: databases[backlog].stat().st_size for backlog in backlogs}
        results: dict[tuple[int, str], list[float]] = {}
        for repeat in range(args.repeats):
            for backlog in backlogs:
                modes = list(MODES) if repeat % 2 == 0 else list(reversed(MODES))
                for mode in modes:
                    if args.stage:
                        rate, got = run_stage(
                            databases[backlog], mode, args.messages, args.seconds, files["pipeline"], row
                        )
                    else:
                        rate, got = run(databases[backlog], mode, args.messages, args.seconds)
                    results.setdefault((backlog, mode), []).append(rate)
                    print(
                        f"repeat {repeat} backlog {backlog} {mode}: {rate:.0f} msg/s ({got} received)",
                        flush=True,
                    )
        rows = []
        for backlog in backlogs:
            change, every = results[(backlog, "on-change")], results[(backlog, "every-30s")]
            ratios = [a / b for a, b in zip(change, every, strict=True)]
            rows.append(
                [
                    backlog,
                    f"{sizes[backlog] / 1e6:.1f} MB",
                    f"{median(change):.0f}",
                    f"{median(every):.0f}",
                    f"{median(ratios):.3f}x",
                    f"{1000 / median(change):.2f} ms",
                ]
            )
        header = [
            "backlog",
            "database",
            "on-change msg/s",
            "every-30s msg/s",
            "ratio",
            "time per msg on-change",
        ]
        print_table(f"median over {args.repeats} repeats, {os.cpu_count()} cores", header, rows)
    finally:
        cleanup()


if __name__ == "__main__":
    main()
