"""REST benchmark (not a test): the runtime's stage vs a bare Flask app, and a 3-hop chain vs one service.

Same model, same gunicorn settings (1 gthread worker, 4 threads), same load generator (keep-alive
http.client connections). Runs are interleaved and repeated; the table shows medians and ratios.

    .venv/bin/python bench/runtime/bench_rest.py [--repeats 5] [--seconds 2]
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
    print_table,
    runtime_service,
    stage,
    train,
)


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    X, files = train()
    body = json.dumps({"instances": [X[0].tolist()]}).encode()
    rest = {"bind": "127.0.0.1", "workers": 1, "threads": 4}
    procs: list[Proc] = []
    try:
        bare_port = free_port()
        bare = Proc(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-k",
                "gthread",
                "-w",
                "1",
                "--threads",
                "4",
                "--keep-alive",
                "30",
                "-b",
                f"127.0.0.1:{bare_port}",
                "--chdir",
                str(HERE),
                "bare_app:app",
            ],
            env={"BARE_MODEL": str(files["pipeline"])},
            name="bare",
        )
        procs.append(bare)
        bare.wait_http(f"http://127.0.0.1:{bare_port}/health/ready")

        def service(name: str, stages: list, hops: list[str], port: int) -> str:
            config = {
                "pipeline": "bench",
                "service": name,
                "mode": "rest",
                "stages": stages,
                "rest": {**rest, "port": port, "next_hops": hops},
            }
            procs.append(runtime_service(config, f"http://127.0.0.1:{port}/health/ready"))
            return f"http://127.0.0.1:{port}/predict"

        single = service("single", [stage("all", files["pipeline"], "predict")], [], free_port())
        ports = [free_port() for _ in range(3)]
        names = [("scale", "transform"), ("reduce", "transform"), ("classify", "predict")]
        for index in reversed(range(3)):
            hop = [f"http://127.0.0.1:{ports[index + 1]}/predict"] if index < 2 else []
            service(
                f"chain-{names[index][0]}",
                [stage(names[index][0], files[names[index][0]], names[index][1])],
                hop,
                ports[index],
            )
        chain = f"http://127.0.0.1:{ports[0]}/predict"
        bare_url = f"http://127.0.0.1:{bare_port}/predict"
        targets = {"bare": bare_url, "stage": single, "chain3": chain}

        for url in targets.values():  # warm-up
            run_load(url, body, 1, 0.5)
        results: dict[str, dict[str, list[float]]] = {k: {"thr": [], "p50": []} for k in targets}
        for repeat in range(args.repeats):
            order = list(targets) if repeat % 2 == 0 else list(reversed(targets))
            for name in order:
                throughput, _ = run_load(targets[name], body, args.concurrency, args.seconds)
                _, p50 = run_load(targets[name], body, 1, args.seconds)
                results[name]["thr"].append(throughput)
                results[name]["p50"].append(p50)

        thr_ratios = [s / b for s, b in zip(results["stage"]["thr"], results["bare"]["thr"], strict=True)]
        p50_ratios = [s / b for s, b in zip(results["stage"]["p50"], results["bare"]["p50"], strict=True)]
        per_hop = [
            (c - s) / 2 for c, s in zip(results["chain3"]["p50"], results["stage"]["p50"], strict=True)
        ]
        rows = [[name, f"{median(r['thr']):.0f}", f"{median(r['p50']):.2f}"] for name, r in results.items()]
        print_table(
            f"REST, 1-row requests, {args.repeats} interleaved repeats x {args.seconds}s "
            f"(throughput at concurrency {args.concurrency}, p50 at concurrency 1)",
            ["target", "req/s", "p50 ms"],
            rows,
        )
        print_table(
            "REST ratios (median over repeats)",
            ["metric", "measured", "target", "ok"],
            [
                [
                    "stage/bare throughput",
                    f"{median(thr_ratios):.2f}x",
                    ">= 0.85x",
                    median(thr_ratios) >= 0.85,
                ],
                ["stage/bare p50", f"{median(p50_ratios):.2f}x", "<= 1.15x", median(p50_ratios) <= 1.15],
                ["extra p50 per hop", f"{median(per_hop):.2f} ms", "<= 1.5 ms", median(per_hop) <= 1.5],
            ],
        )
    finally:
        for proc in procs:
            proc.stop()
        cleanup()


if __name__ == "__main__":
    main()
