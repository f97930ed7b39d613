"""MQTT benchmark (not a test): the runtime's consumer vs a bare paho loop, and 3-stage chains vs one stage.

Same model, same broker, same publisher. Throughput: N one-row messages published at QoS 1 as fast as
possible, timed until the last result arrives. Latency: sequential round trips (publish, wait for the
result), interleaved one message at a time over all targets (rotating the order every round), so every
target sees the same machine load; p50 per repeat, medians over repeats.

Per-hop cost = (p50 of the 3-stage chain - p50 of one service running the whole pipeline) / 2. The same
figure for a chain of bare paho loops (``bare3``) is the floor set by the broker and paho themselves.
``--baseline-runtime DIR`` also runs the services from an older copy of the runtime (DIR holds its
``mlpacker_runtime`` package), to compare two versions in one run.

    .venv/bin/python bench/runtime/bench_mqtt.py [--repeats 5] [--messages 1000] [--rounds 300]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    HERE,
    WORKDIR,
    Proc,
    cleanup,
    free_port,
    median,
    p50,
    print_table,
    rotated,
    runtime_service,
    stage,
    start_mosquitto,
    train,
)

CHAIN = [("scale", "transform"), ("reduce", "transform"), ("classify", "predict")]
HOPS = len(CHAIN) - 1


class Driver:
    """Publishes inputs and counts results on the output topics."""

    def __init__(self, port: int, out_topics: list[str]):
        self.counts = dict.fromkeys(out_topics, 0)
        self.cond = threading.Condition()
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"drv-{uuid.uuid4().hex[:6]}")
        self.client.max_inflight_messages_set(100)
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in out_topics])
        self.client.on_socket_open = lambda c, u, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        ready.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.counts[message.topic] += 1
            self.cond.notify_all()

    def wait(self, topic: str, count: int, timeout: float = 120) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.counts[topic] >= count, timeout):
                raise RuntimeError(f"{topic}: {self.counts[topic]}/{count} results")

    def throughput(self, in_topic: str, out_topic: str, payload: bytes, messages: int) -> float:
        start_count = self.counts[out_topic]
        began = time.perf_counter()
        for _ in range(messages):
            self.client.publish(in_topic, payload, qos=1)
        self.wait(out_topic, start_count + messages)
        return messages / (time.perf_counter() - began)

    def round_trip(self, in_topic: str, out_topic: str, payload: bytes) -> float:
        expected = self.counts[out_topic] + 1
        began = time.perf_counter()
        self.client.publish(in_topic, payload, qos=1)
        self.wait(out_topic, expected)
        return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument(
        "--baseline-runtime", default=None, help="directory holding an older mlpacker_runtime"
    )
    args = parser.parse_args()

    X, files = train()
    payload = json.dumps({"id": 1, "instances": [X[0].tolist()]}).encode()
    broker, port = start_mosquitto()
    procs: list[Proc] = [broker]
    targets: dict[str, tuple[str, str]] = {}
    try:

        def bare(name: str, model: Path, method: str, kind: str, in_topic: str, out_topic: str) -> None:
            ready_file = WORKDIR / f"{name}.ready"
            env = {"BARE_MODEL": str(model), "BARE_METHOD": method, "BARE_OUTPUT_KIND": kind}
            argv = [sys.executable, str(HERE / "bare_consumer.py"), str(port), in_topic, out_topic]
            procs.append(Proc([*argv, str(ready_file)], env=env, name=name))
            deadline = time.monotonic() + 30
            while not ready_file.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not subscribed")
                time.sleep(0.05)

        def consumer(
            name: str, stages: list, in_topic: str, out_topic: str, kind: str, runtime_dir: str | None
        ) -> None:
            health = free_port()
            config: dict[str, Any] = {
                "pipeline": "bench",
                "service": name,
                "mode": "stream",
                "stages": stages,
                "stream": {
                    "broker": {"host": "127.0.0.1", "port": port},
                    "input_topic": in_topic,
                    "output_topic": out_topic,
                    "error_topic": "b/errors",
                    "output_kind": kind,
                    "client_id": f"bench-{name}-{uuid.uuid4().hex[:6]}",
                    "health_bind": "127.0.0.1",
                    "health_port": health,
                },
            }
            procs.append(runtime_service(config, f"http://127.0.0.1:{health}/health/ready", runtime_dir))

        def chain_topics(prefix: str) -> list[tuple[str, str, str, str, str]]:
            """(name, method, in topic, out topic, output kind) of each stage of a 3-stage chain."""
            rows = []
            for index, (name, method) in enumerate(CHAIN):
                last = index == len(CHAIN) - 1
                out = f"{prefix}/out" if last else f"{prefix}/{CHAIN[index + 1][0]}/in"
                rows.append(
                    (name, method, f"{prefix}/{name}/in", out, "predictions" if last else "instances")
                )
            return rows

        bare("bare", files["pipeline"], "predict", "predictions", "b/bare/in", "b/bare/out")
        targets["bare"] = ("b/bare/in", "b/bare/out")
        for name, method, in_topic, out_topic, kind in chain_topics("b/bare3"):
            bare(f"bare3-{name}", files[name], method, kind, in_topic, out_topic)
        targets["bare3"] = ("b/bare3/scale/in", "b/bare3/out")
        versions = {"": None}
        if args.baseline_runtime:
            versions["@base"] = args.baseline_runtime
        for suffix, runtime_dir in versions.items():
            prefix = f"b/stage{suffix}"
            consumer(
                f"stage{suffix}",
                [stage("all", files["pipeline"], "predict")],
                f"{prefix}/in",
                f"{prefix}/out",
                "predictions",
                runtime_dir,
            )
            targets[f"stage{suffix}"] = (f"{prefix}/in", f"{prefix}/out")
            prefix = f"b/chain3{suffix}"
            for name, method, in_topic, out_topic, kind in chain_topics(prefix):
                consumer(
                    f"chain3{suffix}-{name}",
                    [stage(name, files[name], method)],
                    in_topic,
                    out_topic,
                    kind,
                    runtime_dir,
                )
            targets[f"chain3{suffix}"] = (f"{prefix}/scale/in", f"{prefix}/out")

        names = list(targets)
        driver = Driver(port, [out for _, out in targets.values()])
        for in_topic, out_topic in targets.values():  # warm-up
            driver.throughput(in_topic, out_topic, payload, 200)
        thr: dict[str, list[float]] = {name: [] for name in names}
        lat: dict[str, list[float]] = {name: [] for name in names}
        for repeat in range(args.repeats):
            for name in rotated(names, repeat):
                thr[name].append(driver.throughput(*targets[name], payload, args.messages))
            samples: dict[str, list[float]] = {name: [] for name in names}
            for round_index in range(args.rounds):
                for name in rotated(names, round_index):
                    samples[name].append(driver.round_trip(*targets[name], payload))
            for name in names:
                lat[name].append(p50(samples[name]))

        def per_hop(chain: str, single: str) -> float:
            return median([(c - s) / HOPS for c, s in zip(lat[chain], lat[single], strict=True)])

        thr_ratio = median([s / b for s, b in zip(thr["stage"], thr["bare"], strict=True)])
        print_table(
            f"MQTT QoS 1, 1-row messages, {args.repeats} repeats ({args.messages} messages for throughput, "
            f"{args.rounds} interleaved sequential round trips per target for p50)",
            ["target", "msg/s", "p50 ms"],
            [[n, f"{median(thr[n]):.0f}", f"{median(lat[n]):.2f}"] for n in names],
        )
        rows = [
            ["stage/bare throughput", f"{thr_ratio:.2f}x", ">= 0.85x", thr_ratio >= 0.85],
            [
                "extra p50 per hop (runtime)",
                f"{per_hop('chain3', 'stage'):.2f} ms",
                "<= 0.5 ms",
                per_hop("chain3", "stage") <= 0.5,
            ],
            ["extra p50 per hop (bare paho)", f"{per_hop('bare3', 'bare'):.2f} ms", "(floor)", ""],
        ]
        if args.baseline_runtime:
            rows.append(
                [
                    "extra p50 per hop (baseline runtime)",
                    f"{per_hop('chain3@base', 'stage@base'):.2f} ms",
                    "",
                    "",
                ]
            )
            base_ratio = median([s / b for s, b in zip(thr["stage@base"], thr["bare"], strict=True)])
            rows.append(["stage@base/bare throughput", f"{base_ratio:.2f}x", "", ""])
        print_table("MQTT ratios (median over repeats)", ["metric", "measured", "target", "ok"], rows)
        driver.client.disconnect()
        driver.client.loop_stop()
    finally:
        for proc in reversed(procs):
            proc.stop()
        cleanup()


if __name__ == "__main__":
    main()
