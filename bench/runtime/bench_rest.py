"""REST benchmark (not a test): the runtime's stage vs a bare Flask app, and a 3-hop chain vs one service.

Same model, same gunicorn settings (1 gthread worker, 4 threads), same load generator (keep-alive
http.client connections). Throughput runs rotate their order every repeat; p50 comes from sequential
requests interleaved one at a time over all targets, so every target sees the same machine load. Medians
of per-repeat ratios are reported.

Per-hop cost = (p50 of the 3-service chain - p50 of one service running the whole pipeline) / 2. The same
figure for a chain of bare Flask apps (``bare3``, forwarding over kept-alive http.client connections) is
the floor set by gunicorn and Flask themselves. ``--baseline-runtime DIR`` also runs the services from an
older copy of the runtime (DIR holds its ``mlpacker_runtime`` package), to compare versions in one run.

    .venv/bin/python bench/runtime/bench_rest.py [--repeats 5] [--seconds 2] [--rounds 300]
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    HERE,
    Proc,
    cleanup,
    free_port,
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


def run_load(url: str, body: bytes, concurrency: int, seconds: float) -> tuple[float, float]:
    """Closed-loop load: each client sends the next request when the previous answer arrived."""
    parsed = urlparse(url)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    stop_at = time.perf_counter() + seconds
    errors: list[str] = []

    def client(index: int) -> None:
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            conn.request("POST", parsed.path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                errors.append(str(response.status))
                return
            latencies[index].append(time.perf_counter() - began)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{url}: HTTP {errors[0]}")
    flat = sorted(x for per in latencies for x in per)
    return len(flat) / elapsed, flat[len(flat) // 2] * 1000


def interleaved_p50(urls: dict[str, str], body: bytes, rounds: int) -> dict[str, float]:
    """Sequential requests, one per target in turn (order rotated every round): every target sees the
    same machine load, which on a shared machine matters more than anything else. p50 per target, in ms."""
    connections = {
        name: http.client.HTTPConnection(urlparse(url).hostname, urlparse(url).port, timeout=10)
        for name, url in urls.items()
    }
    samples: dict[str, list[float]] = {name: [] for name in urls}
    for round_index in range(rounds):
        for name in rotated(list(urls), round_index):
            conn = connections[name]
            began = time.perf_counter()
            conn.request(
                "POST", urlparse(urls[name]).path, body=body, headers={"Content-Type": "application/json"}
            )
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{urls[name]}: HTTP {response.status}")
            samples[name].append(time.perf_counter() - began)
    for conn in connections.values():
        conn.close()
    return {name: p50(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--baseline-runtime", default=None, help="directory holding an older mlpacker_runtime"
    )
    args = parser.parse_args()

    X, files = train()
    body = json.dumps({"instances": [X[0].tolist()]}).encode()
    rest = {"bind": "127.0.0.1", "workers": 1, "threads": 4}
    procs: list[Proc] = []
    targets: dict[str, str] = {}
    try:

        def bare(name: str, model: Path, method: str, next_hop: str | None) -> str:
            port = free_port()
            argv = [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "1", "--threads", "4"]
            argv += ["--keep-alive", "30", "-b", f"127.0.0.1:{port}", "--chdir", str(HERE), "bare_app:app"]
            env = {"BARE_MODEL": str(model), "BARE_METHOD": method, "BARE_NEXT_HOP": next_hop or ""}
            proc = Proc(argv, env=env, name=name)
            procs.append(proc)
            proc.wait_http(f"http://127.0.0.1:{port}/health/ready")
            return f"http://127.0.0.1:{port}/predict"

        def service(name: str, stages: list, hops: list[str], runtime_dir: str | None) -> str:
            port = free_port()
            config = {
                "pipeline": "bench",
                "service": name,
                "mode": "rest",
                "stages": stages,
                "rest": {**rest, "port": port, "next_hops": hops},
            }
            procs.append(runtime_service(config, f"http://127.0.0.1:{port}/health/ready", runtime_dir))
            return f"http://127.0.0.1:{port}/predict"

        targets["bare"] = bare("bare", files["pipeline"], "predict", None)
        hop = None
        for name, method in reversed(CHAIN):  # last stage first: each one needs its next hop's URL
            hop = bare(f"bare3-{name}", files[name], method, hop)
        assert hop is not None
        targets["bare3"] = hop
        versions = {"": None}
        if args.baseline_runtime:
            versions["@base"] = args.baseline_runtime
        for suffix, runtime_dir in versions.items():
            targets[f"stage{suffix}"] = service(
                f"stage{suffix}", [stage("all", files["pipeline"], "predict")], [], runtime_dir
            )
            hops: list[str] = []
            for name, method in reversed(CHAIN):
                hops = [
                    service(f"chain3{suffix}-{name}", [stage(name, files[name], method)], hops, runtime_dir)
                ]
            targets[f"chain3{suffix}"] = hops[0]

        names = list(targets)
        for url in targets.values():  # warm-up
            run_load(url, body, 1, 0.5)
        thr: dict[str, list[float]] = {name: [] for name in names}
        lat: dict[str, list[float]] = {name: [] for name in names}
        for repeat in range(args.repeats):
            for name in rotated(names, repeat):
                thr[name].append(run_load(targets[name], body, args.concurrency, args.seconds)[0])
            for name, value in interleaved_p50(targets, body, args.rounds).items():
                lat[name].append(value)

        def ratio(values: dict[str, list[float]], a: str, b: str) -> float:
            return median([x / y for x, y in zip(values[a], values[b], strict=True)])

        def per_hop(chain: str, single: str) -> float:
            return median([(c - s) / HOPS for c, s in zip(lat[chain], lat[single], strict=True)])

        print_table(
            f"REST, 1-row requests, {args.repeats} repeats (throughput: {args.seconds}s at concurrency "
            f"{args.concurrency}; p50: {args.rounds} interleaved sequential requests per target)",
            ["target", "req/s", "p50 ms"],
            [[n, f"{median(thr[n]):.0f}", f"{median(lat[n]):.2f}"] for n in names],
        )
        rows = [
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
            [
                "extra p50 per hop (runtime)",
                f"{per_hop('chain3', 'stage'):.2f} ms",
                "<= 1.5 ms",
                per_hop("chain3", "stage") <= 1.5,
            ],
            ["extra p50 per hop (bare Flask)", f"{per_hop('bare3', 'bare'):.2f} ms", "(floor)", ""],
        ]
        if args.baseline_runtime:
            rows += [
                ["stage@base/bare throughput", f"{ratio(thr, 'stage@base', 'bare'):.2f}x", "", ""],
                ["stage@base/bare p50", f"{ratio(lat, 'stage@base', 'bare'):.2f}x", "", ""],
                [
                    "extra p50 per hop (baseline runtime)",
                    f"{per_hop('chain3@base', 'stage@base'):.2f} ms",
                    "",
                    "",
                ],
            ]
        print_table("REST ratios (median over repeats)", ["metric", "measured", "target", "ok"], rows)
    finally:
        for proc in procs:
            proc.stop()
        cleanup()


if __name__ == "__main__":
    main()
