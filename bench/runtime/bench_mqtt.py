"""MQTT benchmark (not a test): the runtime's consumer vs a bare paho loop, and a 3-stage chain vs one stage.

Same model, same broker, same publisher. Throughput: N one-row messages published at QoS 1 as fast as
possible, timed until the last result arrives. Latency: sequential round trips (publish, wait for the
result). Runs are interleaved and repeated; the table shows medians.

    .venv/bin/python bench/runtime/bench_mqtt.py [--repeats 5] [--messages 2000]
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
    print_table,
    runtime_service,
    stage,
    start_mosquitto,
    train,
)


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

    def p50_ms(self, in_topic: str, out_topic: str, payload: bytes, rounds: int) -> float:
        samples = []
        for _ in range(rounds):
            expected = self.counts[out_topic] + 1
            began = time.perf_counter()
            self.client.publish(in_topic, payload, qos=1)
            self.wait(out_topic, expected)
            samples.append(time.perf_counter() - began)
        samples.sort()
        return samples[len(samples) // 2] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()

    X, files = train()
    payload = json.dumps({"id": 1, "instances": [X[0].tolist()]}).encode()
    broker, port = start_mosquitto()
    procs: list[Proc] = [broker]
    try:
        ready_file = WORKDIR / "bare.ready"
        bare = Proc(
            [
                sys.executable,
                str(HERE / "bare_consumer.py"),
                str(port),
                "b/bare/in",
                "b/bare/out",
                str(ready_file),
            ],
            env={"BARE_MODEL": str(files["pipeline"])},
            name="bare-consumer",
        )
        procs.append(bare)
        deadline = time.monotonic() + 30
        while not ready_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("bare consumer not subscribed")
            time.sleep(0.05)

        def consumer(name: str, stages: list, in_topic: str, out_topic: str, kind: str) -> None:
            health = free_port()
            config = {
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
            procs.append(runtime_service(config, f"http://127.0.0.1:{health}/health/ready"))

        consumer(
            "stage", [stage("all", files["pipeline"], "predict")], "b/stage/in", "b/stage/out", "predictions"
        )
        chain = [("scale", "transform"), ("reduce", "transform"), ("classify", "predict")]
        for index, (name, method) in enumerate(chain):
            last = index == len(chain) - 1
            consumer(
                f"chain-{name}",
                [stage(name, files[name], method)],
                f"b/chain/{name}/in",
                "b/chain/out" if last else f"b/chain/{chain[index + 1][0]}/in",
                "predictions" if last else "instances",
            )

        targets = {
            "bare": ("b/bare/in", "b/bare/out"),
            "stage": ("b/stage/in", "b/stage/out"),
            "chain3": ("b/chain/scale/in", "b/chain/out"),
        }
        driver = Driver(port, [out for _, out in targets.values()])
        for in_topic, out_topic in targets.values():  # warm-up
            driver.throughput(in_topic, out_topic, payload, 200)
        results: dict[str, dict[str, list[float]]] = {k: {"thr": [], "p50": []} for k in targets}
        for repeat in range(args.repeats):
            order = list(targets) if repeat % 2 == 0 else list(reversed(targets))
            for name in order:
                in_topic, out_topic = targets[name]
                results[name]["thr"].append(driver.throughput(in_topic, out_topic, payload, args.messages))
                results[name]["p50"].append(driver.p50_ms(in_topic, out_topic, payload, args.rounds))

        thr_ratios = [s / b for s, b in zip(results["stage"]["thr"], results["bare"]["thr"], strict=True)]
        per_hop = [
            (c - s) / 2 for c, s in zip(results["chain3"]["p50"], results["stage"]["p50"], strict=True)
        ]
        print_table(
            f"MQTT QoS 1, 1-row messages, {args.repeats} interleaved repeats "
            f"({args.messages} messages for throughput, {args.rounds} sequential round trips for p50)",
            ["target", "msg/s", "p50 ms"],
            [[n, f"{median(r['thr']):.0f}", f"{median(r['p50']):.2f}"] for n, r in results.items()],
        )
        print_table(
            "MQTT ratios (median over repeats)",
            ["metric", "measured", "target", "ok"],
            [
                [
                    "stage/bare throughput",
                    f"{median(thr_ratios):.2f}x",
                    ">= 0.85x",
                    median(thr_ratios) >= 0.85,
                ],
                ["extra p50 per hop", f"{median(per_hop):.2f} ms", "<= 0.5 ms", median(per_hop) <= 0.5],
            ],
        )
        driver.client.disconnect()
        driver.client.loop_stop()
    finally:
        for proc in reversed(procs):
            proc.stop()
        cleanup()


if __name__ == "__main__":
    main()
