"""REST benchmark (not a test): the runtime's stage vs a bare Flask app, a 3-hop chain vs one service, and
each runtime target secured (HTTPS + bearer token) vs the same target insecure, all in one run.

Same model, same gunicorn settings (1 gthread worker, 4 threads), same load generator (keep-alive
http.client connections, HTTPS for the secure targets). Throughput runs rotate their order every repeat;
p50 comes from sequential requests interleaved one at a time over all targets, so every target sees the
same machine load. Medians of per-repeat ratios are reported.

Per-hop cost = (p50 of the 3-service chain - p50 of one service running the whole pipeline) / 2. The same
figure for a chain of bare Flask apps (``bare3``, forwarding over kept-alive http.client connections) is
the floor set by gunicorn and Flask themselves. ``--baseline-runtime DIR`` also runs the services from an
older copy of the runtime (DIR holds its ``mlpacker_runtime`` package), to compare versions in one run.
This runtime's services get an ``input_signature`` on their entry stage, as a deploy records one (issue #13,
"Cost": ``stage/stage@base`` throughput >= 0.95x); ``--no-signature`` leaves it out.

Security (issue #12, "Cost"): ``stage-tls`` and ``chain3-tls`` are ``stage`` and ``chain3`` with
``security.tls`` (a bench CA and server certificate made with the openssl command line) and
``security.auth.token_file``: the client speaks HTTPS verifying the CA and sends the bearer token, every
chain hop verifies the next service's certificate against the CA and sends the token. The load generator
is a client pool: its kept-alive connections live across measurement windows, and a connection the server
closed while idle reconnects resuming the target's TLS session, as the runtime's hops do.

    .venv/bin/python bench/runtime/bench_rest.py [--repeats 5] [--seconds 2] [--rounds 300] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import joblib

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    HERE,
    Pki,
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
    train,
)

CHAIN = [("scale", "transform"), ("reduce", "transform"), ("classify", "predict")]
HOPS = len(CHAIN) - 1
TLS = "-tls"  # name suffix of the secured variant of a target


def signature(stage_config: dict) -> dict:
    """The input signature a deploy records for an sklearn artifact: one number column per feature."""
    features = joblib.load(stage_config["artifact"]).n_features_in_
    return {"source": "artifact", "columns": [{"name": None, "type": "number"}] * features}


@dataclass
class Target:
    """One entry point: its URL, how a client reaches it (TLS context, token) and the processes serving it."""

    url: str
    procs: list[Proc]
    context: ssl.SSLContext | None = None  # HTTPS, verifying the bench CA
    token: str | None = None
    session: ssl.SSLSession | None = None  # the last TLS session, resumed by new connections
    connections: dict[str, int] = field(default_factory=dict)  # "plain" | "tls_full" | "tls_resumed" -> n
    services: list[str] = field(default_factory=list)  # base URLs of the runtime services behind it

    def __post_init__(self) -> None:
        parsed = urlparse(self.url)
        self.host, self.port, self.path = parsed.hostname or "", parsed.port, parsed.path
        self.headers = {"Content-Type": "application/json"}
        if self.token:
            self.headers["Authorization"] = f"Bearer {self.token}"
        self.lock = threading.Lock()

    def cpu_seconds(self) -> float:
        return sum(proc.cpu_seconds() for proc in self.procs)

    def hop_connections(self) -> dict[str, int]:
        """Connections the services' next-hop clients opened, by handshake (the runtime's own counter)."""
        totals: dict[str, int] = {}
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        for base in self.services:
            request = urllib.request.Request(f"{base}/metrics", headers=headers)
            with urllib.request.urlopen(request, timeout=10, context=self.context) as response:
                text = response.read().decode()
            for line in text.splitlines():
                if line.startswith("mlpacker_hop_connections_total{"):
                    kind = line.split('handshake="', 1)[1].split('"', 1)[0]
                    totals[kind] = totals.get(kind, 0) + round(float(line.rsplit(" ", 1)[1]))
        return totals

    def connect(self) -> http.client.HTTPConnection:
        if self.context is None:
            conn: http.client.HTTPConnection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        else:
            conn = _ResumingHTTPSConnection(self, timeout=10)
        conn.connect()  # here rather than inside the first request, to count the handshake kind
        kind = "plain"
        if self.context is not None:
            kind = "tls_resumed" if conn.sock.session_reused else "tls_full"  # type: ignore[union-attr]
        with self.lock:
            self.connections[kind] = self.connections.get(kind, 0) + 1
        return conn


class _ResumingHTTPSConnection(http.client.HTTPSConnection):
    """http.client's HTTPS connection, resuming the target's last TLS session (http.client cannot)."""

    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout, context=target.context)
        self.target = target

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)  # TCP, with TCP_NODELAY
        self.sock = self._context.wrap_socket(  # type: ignore[attr-defined]
            self.sock, server_hostname=self.host, session=self.target.session
        )


class Client:
    """One kept-alive connection to a target, as a pooled client keeps it: reused for every request and
    every measurement window; if the server closed it while it sat idle (gunicorn's keep-alive timeout),
    the request is sent again once on a new connection (resuming the TLS session)."""

    def __init__(self, target: Target):
        self.target = target
        self.conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes) -> None:
        target = self.target
        for _attempt in (1, 2):
            fresh = self.conn is None
            if self.conn is None:
                self.conn = target.connect()
            try:
                self.conn.request("POST", target.path, body=body, headers=target.headers)
                response = self.conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if fresh:
                    raise
                continue  # a kept-alive connection the server had closed
            if fresh and target.context is not None:
                # Read after the first answer: TLS 1.3 sends its session tickets after the handshake.
                target.session = self.conn.sock.session  # type: ignore[union-attr]
            if response.status != 200:
                raise RuntimeError(f"{target.url}: HTTP {response.status}")
            if response.will_close:
                self.close()
            return
        raise RuntimeError(f"{target.url}: connection closed twice")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Load:
    throughput: float  # requests per second
    cpu_us: float  # CPU time of the target's service processes per request, microseconds
    client_cpu_us: float  # CPU time of the load generator (this process) per request, microseconds


def run_load(target: Target, clients: list[Client], body: bytes, seconds: float) -> Load:
    """Closed-loop load: each client sends the next request when the previous answer arrived."""
    counts = [0] * len(clients)
    stop_at = time.perf_counter() + seconds
    errors: list[BaseException] = []

    def run(index: int) -> None:
        client = clients[index]
        try:
            while time.perf_counter() < stop_at:
                client.post(body)
                counts[index] += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
    cpu_before = target.cpu_seconds()
    client_before = time.process_time()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    client_cpu = time.process_time() - client_before
    cpu = target.cpu_seconds() - cpu_before
    if errors:
        raise RuntimeError(f"{target.url}: {errors[0]!r}") from errors[0]
    total = sum(counts)
    return Load(total / elapsed, cpu / total * 1e6, client_cpu / total * 1e6)


def interleaved_p50(clients: dict[str, Client], body: bytes, rounds: int) -> dict[str, float]:
    """Sequential requests, one per target in turn (order rotated every round): every target sees the
    same machine load, which on a shared machine matters more than anything else. p50 per target, in ms."""
    samples: dict[str, list[float]] = {name: [] for name in clients}
    for round_index in range(rounds):
        for name in rotated(list(clients), round_index):
            began = time.perf_counter()
            clients[name].post(body)
            samples[name].append(time.perf_counter() - began)
    return {name: p50(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32, help="clients of the throughput runs")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare Flask targets")
    parser.add_argument("--no-tls", action="store_true", help="skip the secured (-tls) targets")
    parser.add_argument(
        "--no-signature",
        action="store_true",
        help="no input_signature on this runtime's entry stages (a deploy records one by default)",
    )
    parser.add_argument(
        "--baseline-runtime", default=None, help="directory holding an older mlpacker_runtime"
    )
    args = parser.parse_args()

    X, files = train()
    body = json.dumps({"instances": [X[0].tolist()]}).encode()
    rest = {"bind": "127.0.0.1", "workers": 1, "threads": 4}
    pki: Pki | None = None if args.no_tls else make_pki()
    procs: list[Proc] = []
    targets: dict[str, Target] = {}
    try:

        def bare(name: str, model: Path, method: str, next_hop: str | None) -> Target:
            port = free_port()
            argv = [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "1", "--threads", "4"]
            argv += ["--keep-alive", "30", "-b", f"127.0.0.1:{port}", "--chdir", str(HERE), "bare_app:app"]
            env = {"BARE_MODEL": str(model), "BARE_METHOD": method, "BARE_NEXT_HOP": next_hop or ""}
            proc = Proc(argv, env=env, name=name)
            procs.append(proc)
            proc.wait_http(f"http://127.0.0.1:{port}/health/ready")
            return Target(f"http://127.0.0.1:{port}/predict", [proc])

        def service(
            name: str, stages: list, hops: list[str], runtime_dir: str | None, secure: bool
        ) -> Target:
            port = free_port()
            scheme = "https" if secure else "http"
            if runtime_dir is None and not args.no_signature:
                # As deployed: the entry stage checks each row against the signature before it runs.
                stages = [{**stages[0], "input_signature": signature(stages[0])}, *stages[1:]]
            config = {
                "pipeline": "bench",
                "service": name,
                "mode": "rest",
                "stages": stages,
                "rest": {**rest, "port": port, "next_hops": hops},
            }
            context = None
            if secure:
                assert pki is not None
                config["security"] = pki.security()
                context = pki.client_context()
            url = f"{scheme}://127.0.0.1:{port}"
            procs.append(runtime_service(config, f"{url}/health/ready", runtime_dir, context))
            token = pki.token if secure and pki is not None else None
            return Target(f"{url}/predict", [procs[-1]], context, token, services=[url])

        def chain(prefix: str, runtime_dir: str | None, secure: bool) -> Target:
            members: list[Target] = []
            for name, method in reversed(CHAIN):  # last stage first: each one needs its next hop's URL
                hops = [members[-1].url] if members else []
                members.append(
                    service(f"{prefix}-{name}", [stage(name, files[name], method)], hops, runtime_dir, secure)
                )
            entry = members[-1]
            entry.procs = [proc for member in members for proc in member.procs]
            entry.services = [url for member in members for url in member.services]
            return entry

        if not args.no_bare:
            targets["bare"] = bare("bare", files["pipeline"], "predict", None)
            hop = None
            for name, method in reversed(CHAIN):
                bare_target = bare(f"bare3-{name}", files[name], method, hop)
                hop = bare_target.url
            assert bare_target is not None
            bare_target.procs = procs[-len(CHAIN) :]
            targets["bare3"] = bare_target
        variants: list[tuple[str, str | None, bool]] = [("", None, False)]
        if not args.no_tls:
            variants.append((TLS, None, True))
        if args.baseline_runtime:
            variants.append(("@base", args.baseline_runtime, False))
        for suffix, runtime_dir, secure in variants:
            targets[f"stage{suffix}"] = service(
                f"stage{suffix}", [stage("all", files["pipeline"], "predict")], [], runtime_dir, secure
            )
        for suffix, runtime_dir, secure in variants:
            targets[f"chain3{suffix}"] = chain(f"chain3{suffix}", runtime_dir, secure)

        # Variants of one target next to each other: with the order rotated every repeat, a secured target
        # and its plain twin mostly run back to back, so slow drifts of the machine's load cancel out.
        names = list(targets)
        pools = {name: [Client(target) for _ in range(args.concurrency)] for name, target in targets.items()}
        sequential = {name: Client(target) for name, target in targets.items()}
        for name, target in targets.items():  # warm-up; opens every pooled connection
            run_load(target, pools[name], body, 0.5)
            interleaved_p50({name: sequential[name]}, body, 20)
        thr: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        client_cpu: dict[str, list[float]] = {name: [] for name in names}
        lat: dict[str, list[float]] = {name: [] for name in names}
        for repeat in range(args.repeats):
            for name in rotated(names, repeat):
                load = run_load(targets[name], pools[name], body, args.seconds)
                thr[name].append(load.throughput)
                cpu[name].append(load.cpu_us)
                client_cpu[name].append(load.client_cpu_us)
            for name, value in interleaved_p50(sequential, body, args.rounds).items():
                lat[name].append(value)
        for clients in [*pools.values(), sequential.values()]:
            for client in clients:
                client.close()

        def ratio(values: dict[str, list[float]], a: str, b: str) -> float:
            return median([x / y for x, y in zip(values[a], values[b], strict=True)])

        def per_hop(chain: str, single: str) -> float:
            return median([(c - s) / HOPS for c, s in zip(lat[chain], lat[single], strict=True)])

        def extra_per_hop(secure: str, plain: str) -> float:
            """Per repeat: per-hop cost of the secured chain minus that of the plain one; median."""
            columns = [lat[f"chain3{secure}"], lat[f"stage{secure}"]]
            columns += [lat[f"chain3{plain}"], lat[f"stage{plain}"]]
            return median([((ct - st) - (c - s)) / HOPS for ct, st, c, s in zip(*columns, strict=True)])

        def connections(name: str) -> str:
            text = ", ".join(f"{n} {kind}" for kind, n in sorted(targets[name].connections.items()))
            hops = targets[name].hop_connections() if name.startswith("chain3") else {}
            if hops:
                text += "; hops: " + ", ".join(f"{n} {kind}" for kind, n in sorted(hops.items()))
            return text

        print_table(
            f"REST, 1-row requests, {args.repeats} repeats (throughput: {args.seconds}s at concurrency "
            f"{args.concurrency}; p50: {args.rounds} interleaved sequential requests per target; CPU per "
            "request under load: the target's service processes, and the load generator; connections: opened "
            "by the bench's clients over the run)",
            ["target", "req/s", "p50 ms", "service CPU us/req", "client CPU us/req", "connections"],
            [
                [
                    n,
                    f"{median(thr[n]):.0f}",
                    f"{median(lat[n]):.2f}",
                    f"{median(cpu[n]):.0f}",
                    f"{median(client_cpu[n]):.0f}",
                    connections(n),
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
                [f"stage{TLS} - stage p50 (client's request)", f"{entry:.2f} ms", "", ""],
                [f"stage{TLS}/stage CPU per request", f"{ratio(cpu, f'stage{TLS}', 'stage'):.2f}x", "", ""],
                [f"chain3{TLS}/chain3 CPU/request", f"{ratio(cpu, f'chain3{TLS}', 'chain3'):.2f}x", "", ""],
                [f"p50 per hop (runtime{TLS})", f"{per_hop(f'chain3{TLS}', f'stage{TLS}'):.2f} ms", "", ""],
            ]
        rows.append(
            [
                "extra p50 per hop (runtime)",
                f"{per_hop('chain3', 'stage'):.2f} ms",
                "<= 1.5 ms",
                per_hop("chain3", "stage") <= 1.5,
            ]
        )
        if not args.no_bare:
            rows += [
                [
                    "stage/bare throughput",
                    f"{ratio(thr, 'stage', 'bare'):.2f}x",
                    ">= 0.85x",
                    ratio(thr, "stage", "bare") >= 0.85,
                ],
                [
                    "stage/bare p50",
                    f"{ratio(lat, 'stage', 'bare'):.2f}x",
                    "<= 1.15x",
                    ratio(lat, "stage", "bare") <= 1.15,
                ],
                ["extra p50 per hop (bare Flask)", f"{per_hop('bare3', 'bare'):.2f} ms", "(floor)", ""],
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
            base_thr = ratio(thr, "stage", "stage@base")
            label = "stage/stage@base throughput" + ("" if args.no_signature else " (signature check on)")
            rows.append([label, f"{base_thr:.3f}x", ">= 0.95x", base_thr >= 0.95])
            if not args.no_bare:
                rows += [
                    ["stage@base/bare throughput", f"{ratio(thr, 'stage@base', 'bare'):.2f}x", "", ""],
                    ["stage@base/bare p50", f"{ratio(lat, 'stage@base', 'bare'):.2f}x", "", ""],
                ]
        print_table("REST ratios (median over repeats)", ["metric", "measured", "target", "ok"], rows)
    finally:
        for proc in procs:
            proc.stop()
        cleanup()


if __name__ == "__main__":
    main()
