"""MQTT benchmark (not a test): the runtime's consumer vs a bare paho loop, 3-stage chains vs one stage, and
each runtime target on a secured broker (TLS + password + ACL) vs the same target on a plain one, one run.

Same model, same broker, same publisher. Throughput: N one-row messages published at QoS 1 as fast as
possible, timed until the last result arrives. Latency: sequential round trips (publish, wait for the
result), interleaved one message at a time over all targets (rotating the order every round), so every
target sees the same machine load; p50 per repeat, medians over repeats.

Per-hop cost = (p50 of the 3-stage chain - p50 of one service running the whole pipeline) / 2. The same
figure for a chain of bare paho loops (``bare3``) is the floor set by the broker and paho themselves.
``--baseline-runtime DIR`` also runs the services from an older copy of the runtime (DIR holds its
``mlpacker_runtime`` package), to compare two versions in one run.

Security (issue #12, "Cost"): ``stage-tls`` and ``chain3-tls`` are ``stage`` and ``chain3`` on a second
Mosquitto secured like the managed broker: a TLS listener (a bench CA and server certificate made with the
openssl command line), ``allow_anonymous false``, a password file made with ``mosquitto_passwd -b`` (one
user per service and one for the bench's client) and an ACL (each service reads only its input topic and
writes only its output and error topics; the client writes the inputs and reads the outputs). The services
read their password from ``stream.broker.password_file``, verify the broker against the CA
(``stream.broker.tls``) and serve their health port over HTTPS with the bearer token (``security``). Both
brokers run with the same settings otherwise; the plain one is the anonymous broker of ``mlpacker_insecure``.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    HERE,
    WORKDIR,
    Broker,
    Proc,
    cleanup,
    free_port,
    make_pki,
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
TLS = "-tls"  # name suffix of the secured variant of a target
CLIENT_USER = "bench-client"  # the bench's own broker user on the secured broker


@dataclass
class Target:
    broker: str  # key in brokers: "" (plain, anonymous) or TLS (secured)
    in_topic: str
    out_topic: str
    procs: list[Proc] = field(default_factory=list)  # the processes consuming for this target

    def cpu_seconds(self) -> float:
        return sum(proc.cpu_seconds() for proc in self.procs)


class Driver:
    """Publishes inputs and counts results on the output topics (one driver per broker)."""

    def __init__(self, broker: Broker, out_topics: list[str]):
        self.counts = dict.fromkeys(out_topics, 0)
        self.cond = threading.Condition()
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"drv-{uuid.uuid4().hex[:6]}")
        if broker.pki is not None:
            self.client.tls_set(ca_certs=str(broker.pki.ca))
            self.client.username_pw_set(CLIENT_USER, broker.password(CLIENT_USER))
        self.client.max_inflight_messages_set(100)
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in out_topics])
        self.client.on_socket_open = lambda c, u, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        if not ready.wait(10):
            raise RuntimeError(f"driver not subscribed on broker port {broker.port}")

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


def chain_topics(prefix: str) -> list[tuple[str, str, str, str, str]]:
    """(name, method, in topic, out topic, output kind) of each stage of a 3-stage chain."""
    rows = []
    for index, (name, method) in enumerate(CHAIN):
        last = index == len(CHAIN) - 1
        out = f"{prefix}/out" if last else f"{prefix}/{CHAIN[index + 1][0]}/in"
        rows.append((name, method, f"{prefix}/{name}/in", out, "predictions" if last else "instances"))
    return rows


def secured_acl() -> dict[str, tuple[list[str], list[str]]]:
    """The secured broker's users: one per service (reads its input topic, writes its output and error
    topics) and the bench's client (writes the pipelines' inputs, reads their outputs and errors)."""
    acl: dict[str, tuple[list[str], list[str]]] = {}
    client_read: list[str] = []
    client_write: list[str] = []
    prefix = f"b/stage{TLS}"
    acl[f"stage{TLS}"] = ([f"{prefix}/in"], [f"{prefix}/out", f"{prefix}/errors"])
    client_write.append(f"{prefix}/in")
    client_read += [f"{prefix}/out", f"{prefix}/errors"]
    prefix = f"b/chain3{TLS}"
    for name, _method, in_topic, out_topic, _kind in chain_topics(prefix):
        acl[f"chain3{TLS}-{name}"] = ([in_topic], [out_topic, f"{prefix}/errors"])
    client_write.append(f"{prefix}/{CHAIN[0][0]}/in")
    client_read += [f"{prefix}/out", f"{prefix}/errors"]
    acl[CLIENT_USER] = (client_read, client_write)
    return acl


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--no-bare", action="store_true", help="skip the bare paho targets")
    parser.add_argument("--no-tls", action="store_true", help="skip the secured (-tls) targets")
    parser.add_argument(
        "--baseline-runtime", default=None, help="directory holding an older mlpacker_runtime"
    )
    args = parser.parse_args()

    X, files = train()
    payload = json.dumps({"id": 1, "instances": [X[0].tolist()]}).encode()
    procs: list[Proc] = []
    brokers: dict[str, Broker] = {}  # "" (plain, anonymous) and TLS (secured)
    targets: dict[str, Target] = {}
    drivers: list[Driver] = []
    try:
        brokers[""] = start_mosquitto()
        procs.append(brokers[""].proc)
        if not args.no_tls:
            pki = make_pki()
            brokers[TLS] = start_mosquitto(pki, secured_acl())
            procs.append(brokers[TLS].proc)

        def bare(name: str, model: Path, method: str, kind: str, in_topic: str, out_topic: str) -> Proc:
            ready_file = WORKDIR / f"{name}.ready"
            env = {"BARE_MODEL": str(model), "BARE_METHOD": method, "BARE_OUTPUT_KIND": kind}
            argv = [sys.executable, str(HERE / "bare_consumer.py"), str(brokers[""].port), in_topic]
            procs.append(Proc([*argv, out_topic, str(ready_file)], env=env, name=name))
            deadline = time.monotonic() + 30
            while not ready_file.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not subscribed")
                time.sleep(0.05)
            return procs[-1]

        def consumer(
            name: str,
            stages: list,
            topics: tuple[str, str, str],
            kind: str,
            runtime_dir: str | None,
            broker_key: str,
        ) -> Proc:
            """A runtime stream service on broker ``broker_key``; secured like a deploy on the TLS broker."""
            in_topic, out_topic, error_topic = topics
            broker = brokers[broker_key]
            health = free_port()
            broker_config: dict[str, Any] = {"host": "127.0.0.1", "port": broker.port}
            config: dict[str, Any] = {
                "pipeline": "bench",
                "service": name,
                "mode": "stream",
                "stages": stages,
                "stream": {
                    "broker": broker_config,
                    "input_topic": in_topic,
                    "output_topic": out_topic,
                    "error_topic": error_topic,
                    "output_kind": kind,
                    "client_id": f"bench-{name}-{uuid.uuid4().hex[:6]}",
                    "health_bind": "127.0.0.1",
                    "health_port": health,
                },
            }
            context = None
            scheme = "http"
            if broker.pki is not None:
                broker_config["username"] = name
                broker_config["password_file"] = str(broker.password_files[name])
                broker_config["tls"] = {"enabled": True, "ca_file": str(broker.pki.ca)}
                config["security"] = broker.pki.security()  # the health port: HTTPS + bearer token
                context = broker.pki.client_context()
                scheme = "https"
            procs.append(
                runtime_service(config, f"{scheme}://127.0.0.1:{health}/health/ready", runtime_dir, context)
            )
            return procs[-1]

        if not args.no_bare:
            proc = bare("bare", files["pipeline"], "predict", "predictions", "b/bare/in", "b/bare/out")
            targets["bare"] = Target("", "b/bare/in", "b/bare/out", [proc])
            targets["bare3"] = Target("", "b/bare3/scale/in", "b/bare3/out")
            for name, method, in_topic, out_topic, kind in chain_topics("b/bare3"):
                targets["bare3"].procs.append(
                    bare(f"bare3-{name}", files[name], method, kind, in_topic, out_topic)
                )
        variants: list[tuple[str, str | None, str]] = [("", None, "")]  # (suffix, runtime dir, broker key)
        if not args.no_tls:
            variants.append((TLS, None, TLS))
        if args.baseline_runtime:
            variants.append(("@base", args.baseline_runtime, ""))
        # Variants of one target next to each other: with the order rotated every repeat, a secured target
        # and its plain twin mostly run back to back, so slow drifts of the machine's load cancel out.
        for suffix, runtime_dir, broker_key in variants:
            prefix = f"b/stage{suffix}"
            topics = (f"{prefix}/in", f"{prefix}/out", f"{prefix}/errors")
            stages = [stage("all", files["pipeline"], "predict")]
            proc = consumer(f"stage{suffix}", stages, topics, "predictions", runtime_dir, broker_key)
            targets[f"stage{suffix}"] = Target(broker_key, f"{prefix}/in", f"{prefix}/out", [proc])
        for suffix, runtime_dir, broker_key in variants:
            prefix = f"b/chain3{suffix}"
            target = targets[f"chain3{suffix}"] = Target(
                broker_key, f"{prefix}/{CHAIN[0][0]}/in", f"{prefix}/out"
            )
            for name, method, in_topic, out_topic, kind in chain_topics(prefix):
                proc = consumer(
                    f"chain3{suffix}-{name}",
                    [stage(name, files[name], method)],
                    (in_topic, out_topic, f"{prefix}/errors"),
                    kind,
                    runtime_dir,
                    broker_key,
                )
                target.procs.append(proc)

        names = list(targets)
        driver_of: dict[str, Driver] = {}
        for key, broker in brokers.items():
            outs = [name for name, target in targets.items() if target.broker == key]
            drivers.append(Driver(broker, [targets[name].out_topic for name in outs]))
            driver_of.update(dict.fromkeys(outs, drivers[-1]))
        for name, target in targets.items():  # warm-up
            driver_of[name].throughput(target.in_topic, target.out_topic, payload, 200)
        thr: dict[str, list[float]] = {name: [] for name in names}
        lat: dict[str, list[float]] = {name: [] for name in names}
        # CPU per message during the throughput runs: the target's consumers, its broker, this process (the
        # publishing and counting client); only that target is busy meanwhile.
        cpu: dict[str, dict[str, list[float]]] = {
            part: {name: [] for name in names} for part in ("service", "broker", "client")
        }
        for repeat in range(args.repeats):
            for name in rotated(names, repeat):
                target = targets[name]
                broker_proc = brokers[target.broker].proc
                before = (target.cpu_seconds(), broker_proc.cpu_seconds(), time.process_time())
                thr[name].append(
                    driver_of[name].throughput(target.in_topic, target.out_topic, payload, args.messages)
                )
                after = (target.cpu_seconds(), broker_proc.cpu_seconds(), time.process_time())
                for part, old, new in zip(cpu, before, after, strict=True):
                    cpu[part][name].append((new - old) / args.messages * 1e6)
            samples: dict[str, list[float]] = {name: [] for name in names}
            for round_index in range(args.rounds):
                for name in rotated(names, round_index):
                    target = targets[name]
                    samples[name].append(
                        driver_of[name].round_trip(target.in_topic, target.out_topic, payload)
                    )
            for name in names:
                lat[name].append(p50(samples[name]))

        def ratio(values: dict[str, list[float]], a: str, b: str) -> float:
            return median([x / y for x, y in zip(values[a], values[b], strict=True)])

        def per_hop(chain: str, single: str) -> float:
            return median([(c - s) / HOPS for c, s in zip(lat[chain], lat[single], strict=True)])

        def extra_per_hop(secure: str, plain: str) -> float:
            """Per repeat: per-hop cost of the secured chain minus that of the plain one; median."""
            columns = [lat[f"chain3{secure}"], lat[f"stage{secure}"]]
            columns += [lat[f"chain3{plain}"], lat[f"stage{plain}"]]
            return median([((ct - st) - (c - s)) / HOPS for ct, st, c, s in zip(*columns, strict=True)])

        print_table(
            f"MQTT QoS 1, 1-row messages, {args.repeats} repeats ({args.messages} messages for throughput, "
            f"{args.rounds} interleaved sequential round trips per target for p50; CPU per message during "
            "the throughput runs: the target's consumers, the broker, the publishing client)",
            [
                "target",
                "broker",
                "msg/s",
                "p50 ms",
                "service CPU us/msg",
                "broker CPU us/msg",
                "client CPU us/msg",
            ],
            [
                [
                    n,
                    "TLS + password + ACL" if targets[n].broker else "plain, anonymous",
                    f"{median(thr[n]):.0f}",
                    f"{median(lat[n]):.2f}",
                    *(f"{median(cpu[part][n]):.0f}" for part in cpu),
                ]
                for n in names
            ],
        )
        rows = []
        if not args.no_tls:
            tls_thr = ratio(thr, f"stage{TLS}", "stage")
            tls_hop = extra_per_hop(TLS, "")
            entry = median([a - b for a, b in zip(lat[f"stage{TLS}"], lat["stage"], strict=True)])
            rows += [
                [f"stage{TLS}/stage throughput", f"{tls_thr:.3f}x", ">= 0.90x", tls_thr >= 0.90],
                ["extra p50 per hop, secure - insecure", f"{tls_hop:.2f} ms", "<= 0.3 ms", tls_hop <= 0.3],
                [f"chain3{TLS}/chain3 throughput", f"{ratio(thr, f'chain3{TLS}', 'chain3'):.2f}x", "", ""],
                [f"stage{TLS} - stage p50 (round trip)", f"{entry:.2f} ms", "", ""],
                [f"p50 per hop (runtime{TLS})", f"{per_hop(f'chain3{TLS}', f'stage{TLS}'):.2f} ms", "", ""],
            ]
            for kind in ("stage", "chain3"):
                pairs = [zip(cpu[part][kind + TLS], cpu[part][kind], strict=True) for part in cpu]
                extra = " / ".join(f"{median([a - b for a, b in pair]):+.0f}" for pair in pairs)
                rows.append([f"{kind}{TLS} - {kind} CPU us/msg (service / broker / client)", extra, "", ""])
        rows.append(
            [
                "extra p50 per hop (runtime)",
                f"{per_hop('chain3', 'stage'):.2f} ms",
                "<= 0.5 ms",
                per_hop("chain3", "stage") <= 0.5,
            ]
        )
        if not args.no_bare:
            thr_ratio = ratio(thr, "stage", "bare")
            rows += [
                ["stage/bare throughput", f"{thr_ratio:.2f}x", ">= 0.85x", thr_ratio >= 0.85],
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
            rows.append(["stage@base/stage throughput", f"{ratio(thr, 'stage@base', 'stage'):.2f}x", "", ""])
        print_table("MQTT ratios (median over repeats)", ["metric", "measured", "target", "ok"], rows)
    finally:
        for driver in drivers:
            driver.client.disconnect()
            driver.client.loop_stop()
        for proc in reversed(procs):
            proc.stop()
        cleanup()


if __name__ == "__main__":
    main()
