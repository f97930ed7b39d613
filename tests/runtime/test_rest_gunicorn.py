"""Process-level REST behaviour against real gunicorn processes started with `mlpacker-runtime serve`."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import urllib3
from runtime_helpers import IrisModels, Runtimes, base_config, free_port, function_stage, get, post_json


def worker_pids(master_pid: int) -> set[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return {int(pid) for pid in children}


def metric_value(text: str, name: str, labels: str = "", default: float | None = None) -> float:
    """A sample's value; ``default`` when it is absent (else absence fails the test)."""
    pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" ([0-9.e+-]+)"
    match = re.search(pattern, text)
    if match is None and default is not None:
        return default
    assert match, f"{name}{{{labels}}} not in metrics:\n{text[:2000]}"
    return float(match.group(1))


def test_serve_predict_and_metrics_aggregate_over_workers(
    runtimes: Runtimes, iris_models: IrisModels
) -> None:
    service = runtimes.start(base_config(iris_models.three_stages(), rest={"workers": 2}))
    rows = iris_models.X[::3]
    for start in range(0, len(rows), 5):
        status, body = post_json(
            service.base_url + "/predict", {"instances": rows[start : start + 5].tolist()}
        )
        assert status == 200
        assert body["predictions"] == iris_models.expected(rows[start : start + 5])
    assert len(worker_pids(service.proc.pid)) == 2
    status, text = get(service.base_url + "/metrics")
    assert status == 200
    metrics = text.decode()
    # Requests were spread over two worker processes; the exposition sums both (multiprocess mode).
    assert metric_value(metrics, "mlpacker_requests_total", 'code="200",endpoint="/predict"') == 10.0
    assert metric_value(metrics, "mlpacker_stage_duration_seconds_count", 'stage="classify"') == 10.0
    assert metric_value(metrics, "mlpacker_batch_size_sum") == float(len(rows))
    status, info = get(service.base_url + "/info")
    assert json.loads(info)["service"] == service.config["service"]


def test_error_paths_never_kill_a_worker(runtimes: Runtimes, iris_models: IrisModels, code_dir: Path) -> None:
    stages = [iris_models.stage("scale", "scaler", "transform"), function_stage("guard", "mlfuncs.ops:guard")]
    service = runtimes.start(
        base_config(stages, code_dir=str(code_dir), rest={"workers": 2, "max_body_bytes": 2048})
    )
    pids_before = worker_pids(service.proc.pid)
    url = service.base_url + "/predict"
    for _ in range(3):  # several rounds so both workers see every kind of bad request
        assert post_json(url, None, raw=b'{"instances": [[1,2')[0] == 400
        status, body = post_json(url, {"instances": [[1, 2]]})
        assert (status, body) == (422, {"error": "instances[0]: expected 4 features, received 2"})
        status, body = post_json(url, {"instances": [[1.0, 2.0, 3.0, 4.0]] * 200})
        assert (status, body) == (413, {"error": "request body exceeds rest.max_body_bytes (2048 bytes)"})
        status, body = post_json(url, {"instances": [[1e9, 1, 1, 1]]})
        assert status == 500
        assert body == {"error": "stage 'guard' failed: OverflowError: value out of the trained range"}
    assert worker_pids(service.proc.pid) == pids_before
    status, body = post_json(url, {"instances": [[5.1, 3.5, 1.4, 0.2]]})
    assert status == 200
    assert "Traceback" in service.log()  # stage failures are logged with their traceback


def test_keep_alive_connection_is_reused(runtimes: Runtimes, iris_models: IrisModels) -> None:
    service = runtimes.start(base_config(iris_models.three_stages()))
    conn = http.client.HTTPConnection("127.0.0.1", service.config["rest"]["port"], timeout=10)
    sockets = []
    for _ in range(3):
        conn.request("POST", "/predict", body=json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}))
        response = conn.getresponse()
        assert response.status == 200
        response.read()
        sockets.append(conn.sock)
    # A chunked body (no Content-Length) is served by the Flask route instead of the fast path: same
    # answer, and the connection stays usable.
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    conn.request(
        "POST", "/predict", body=iter([json.dumps({"instances": rows}).encode()]), encode_chunked=True
    )
    response = conn.getresponse()
    assert (response.status, json.loads(response.read())) == (
        200,
        {"predictions": iris_models.expected(np.asarray(rows))},
    )
    sockets.append(conn.sock)
    conn.close()
    assert sockets[0] is not None and sockets[0] is sockets[1] is sockets[2] is sockets[3]


@pytest.mark.slow
def test_chain_of_three_services_equals_pipeline(runtimes: Runtimes, iris_models: IrisModels) -> None:
    ports = [free_port() for _ in range(3)]
    configs = []
    for index, stage in enumerate(iris_models.three_stages()):
        hops = [f"http://127.0.0.1:{ports[index + 1]}/predict"] if index < 2 else []
        config = base_config([stage], rest={"port": ports[index], "next_hops": hops, "workers": 1})
        config["service"] = f"iris-{stage['name']}"
        configs.append(config)
    services = runtimes.start_many(configs)
    entry = services[0].base_url + "/predict"
    rows = iris_models.X
    for start in range(0, len(rows), 50):
        status, body = post_json(entry, {"instances": rows[start : start + 50].tolist()})
        assert status == 200, body
        assert body == {"predictions": iris_models.expected(rows[start : start + 50])}
    metrics = get(services[0].base_url + "/metrics")[1].decode()
    hop = f"http://127.0.0.1:{ports[1]}/predict"
    assert metric_value(metrics, "mlpacker_hop_duration_seconds_count", f'hop="{hop}"') == 3.0
    # A bad request is rejected at the entry, with the entry's feature count.
    status, body = post_json(entry, {"instances": [[1, 2, 3]]})
    assert (status, body) == (422, {"error": "instances[0]: expected 4 features, received 3"})


@pytest.mark.slow
def test_round_robin_fails_over_dead_replica(runtimes: Runtimes, iris_models: IrisModels) -> None:
    live_port = free_port()
    live = f"http://127.0.0.1:{live_port}/predict"
    dead = f"http://127.0.0.1:{free_port()}/predict"  # nothing listens there
    # The entry (scale) has two replicas of its next hop (reduce + classify); the first one is down.
    downstream = base_config(
        [iris_models.stage("reduce", "pca", "transform"), iris_models.stage("classify", "clf", "predict")],
        rest={"port": live_port},
    )
    entry_config = base_config(
        [iris_models.stage("scale", "scaler", "transform")], rest={"next_hops": [dead, live]}
    )
    entry, _ = runtimes.start_many([entry_config, downstream])
    rows = iris_models.X[::10]
    for row in rows:
        status, body = post_json(entry.base_url + "/predict", {"instances": [row.tolist()]})
        assert status == 200, body
        assert body["predictions"] == iris_models.expected(row[None, :])
    metrics = get(entry.base_url + "/metrics")[1].decode()
    failures = metric_value(metrics, "mlpacker_hop_errors_total", f'hop="{dead}",kind="unreachable"')
    # Round robin starts on the dead replica every other call and fails over to the live one, until the
    # dead one has failed rest.hop_ejection.consecutive_failures (3) calls in a row: then it is ejected.
    assert failures == 3.0
    assert metric_value(metrics, "mlpacker_hop_replica_ejected", f'hop="{dead}"') == 1.0
    assert metric_value(metrics, "mlpacker_hop_ejections_total", f'hop="{dead}"') == 1.0
    assert metric_value(metrics, "mlpacker_hop_duration_seconds_count", f'hop="{live}"') == float(len(rows))


@pytest.mark.slow
def test_a_hung_replica_is_ejected_probed_and_put_back(runtimes: Runtimes, iris_models: IrisModels) -> None:
    """One of two next-hop replicas stops answering (SIGSTOP: it still accepts connections). It costs
    rest.hop_ejection.consecutive_failures timed-out requests, then none: every later request goes to the
    other replica. Resumed (SIGCONT), it answers its readiness probe when its ejection is up and serves
    again."""
    ports = [free_port(), free_port()]
    hops = [f"http://127.0.0.1:{port}/predict" for port in ports]
    stages = [
        iris_models.stage("reduce", "pca", "transform"),
        iris_models.stage("classify", "clf", "predict"),
    ]
    replicas = [base_config(stages, rest={"port": port}) for port in ports]
    ejection = {"consecutive_failures": 3, "base_s": 2, "max_s": 4}
    entry_config = base_config(
        [iris_models.stage("scale", "scaler", "transform")],
        rest={"next_hops": hops, "hop_timeout_s": 1, "hop_ejection": ejection},
    )
    entry, _, hung = runtimes.start_many([entry_config, *replicas])
    assert hung.proc is not None
    row = iris_models.X[:1]
    expected = {"predictions": iris_models.expected(row)}

    def statuses(count: int) -> list[int]:
        answers = [post_json(entry.base_url + "/predict", {"instances": row.tolist()}) for _ in range(count)]
        assert all(body == expected for status, body in answers if status == 200), answers
        return [status for status, _ in answers]

    def entry_metric(name: str) -> float:
        return metric_value(get(entry.base_url + "/metrics")[1].decode(), name, f'hop="{hops[1]}"')

    def wait_until(condition: Any, what: str) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline, what
            statuses(1)  # a request lets the entry see that an ejection is up, and start its probe
            time.sleep(0.2)

    # The gunicorn master and its workers; the kernel still accepts connections for them.
    os.killpg(hung.proc.pid, signal.SIGSTOP)
    try:
        answered = statuses(20)
        # Before: every other request waited the full timeout and got 504, for as long as the replica hung.
        assert answered.count(504) == 3 and answered.count(200) == 17, answered
        assert answered[-10:] == [200] * 10, answered
        # Its ejection is up after 2 s: the probe finds it still hung, and it is ejected again, for 4 s.
        wait_until(lambda: entry_metric("mlpacker_hop_ejections_total") >= 2, "no second ejection")
        assert entry_metric("mlpacker_hop_replica_ejected") == 1.0
        assert statuses(10) == [200] * 10
    finally:
        os.killpg(hung.proc.pid, signal.SIGCONT)
    wait_until(lambda: entry_metric("mlpacker_hop_replica_ejected") == 0, "the replica never came back")
    served_before = served(hung)
    assert statuses(10) == [200] * 10
    assert served(hung) >= served_before + 4  # back in the round robin: about every other request


def test_next_hop_unreachable_is_502(runtimes: Runtimes, iris_models: IrisModels) -> None:
    dead = f"http://127.0.0.1:{free_port()}/predict"
    entry = runtimes.start(
        base_config([iris_models.stage("scale", "scaler", "transform")], rest={"next_hops": [dead]})
    )
    status, body = post_json(entry.base_url + "/predict", {"instances": [[5.1, 3.5, 1.4, 0.2]]})
    assert status == 502
    assert body["error"].startswith(f"next hop unreachable: {dead} (")


@pytest.mark.slow
def test_next_hop_timeout_and_downstream_errors(
    runtimes: Runtimes, iris_models: IrisModels, code_dir: Path
) -> None:
    slow_port, wrong_port = free_port(), free_port()
    slow_hop = f"http://127.0.0.1:{slow_port}/predict"
    wrong_hop = f"http://127.0.0.1:{wrong_port}/predict"
    scale = [iris_models.stage("scale", "scaler", "transform")]
    configs = [
        base_config(
            [function_stage("slow", "mlfuncs.ops:slow")], code_dir=str(code_dir), rest={"port": slow_port}
        ),
        # Expects 4 features, but its caller sends the 2 PCA components.
        base_config(scale, rest={"port": wrong_port}),
        base_config(scale, rest={"next_hops": [slow_hop], "hop_timeout_s": 0.5}),
        base_config(
            [*scale, iris_models.stage("reduce", "pca", "transform")], rest={"next_hops": [wrong_hop]}
        ),
    ]
    _, _, timing_out, rejected = runtimes.start_many(configs, env={"SLOW_STAGE_SECONDS": "3"})
    row = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
    status, body = post_json(timing_out.base_url + "/predict", row)
    assert (status, body) == (504, {"error": f"next hop {slow_hop} did not answer within 0.5s"})
    status, body = post_json(rejected.base_url + "/predict", row)
    assert (status, body) == (
        502,
        {"error": f"next hop {wrong_hop} answered 422: instances[0]: expected 4 features, received 2"},
    )


def test_env_override_and_sigterm(runtimes: Runtimes, iris_models: IrisModels) -> None:
    port = free_port()
    service = runtimes.prepare(base_config(iris_models.three_stages()), env={"MLPACKER_REST_PORT": str(port)})
    service.base_url = f"http://127.0.0.1:{port}"
    service.start().wait_ready()
    assert post_json(service.base_url + "/predict", {"instances": [[5.1, 3.5, 1.4, 0.2]]})[0] == 200
    service.send_signal(signal.SIGTERM)
    assert service.proc.wait(20) == 0


def test_serve_refuses_bad_config_and_failed_load(runtimes: Runtimes, iris_models: IrisModels) -> None:
    stages = iris_models.three_stages()
    stages[0]["method"] = "predictt"
    bad = runtimes.prepare(base_config(stages)).start()
    assert bad.proc.wait(30) == 2
    assert "error: stages[0].method: 'predictt' is not one of" in bad.log()

    stages = iris_models.three_stages()
    stages[2]["versions"] = {"numpy": "1.0.0"}
    failing = runtimes.prepare(base_config(stages)).start()
    # The worker cannot load its stages: gunicorn halts instead of respawning it forever.
    assert failing.proc.wait(60) != 0
    assert "stages[2].versions.numpy: packaged with numpy 1.0.0, installed numpy" in failing.log()


@pytest.mark.slow
def test_hop_reconnects_when_kept_alive_connection_was_closed(
    runtimes: Runtimes, iris_models: IrisModels
) -> None:
    down_port = free_port()
    hop = f"http://127.0.0.1:{down_port}/predict"
    downstream = base_config(
        [iris_models.stage("reduce", "pca", "transform"), iris_models.stage("classify", "clf", "predict")],
        rest={"port": down_port, "keepalive_s": 1},  # closes idle keep-alive connections quickly
    )
    entry_config = base_config([iris_models.stage("scale", "scaler", "transform")], rest={"next_hops": [hop]})
    entry, _ = runtimes.start_many([entry_config, downstream])
    row = iris_models.X[:1]
    for _ in range(3):
        status, body = post_json(entry.base_url + "/predict", {"instances": row.tolist()})
        assert (status, body) == (200, {"predictions": iris_models.expected(row)})
        time.sleep(2)  # the downstream closes the idle connection the entry keeps
    metrics = get(entry.base_url + "/metrics")[1].decode()
    assert (
        "mlpacker_hop_errors_total"
        not in metrics.split("# TYPE mlpacker_hop_errors_total counter")[-1].split("#")[0]
    )


@pytest.mark.slow
def test_hop_connections_are_pooled_and_survive_idle_past_read_timeout(
    runtimes: Runtimes, iris_models: IrisModels
) -> None:
    """The worker has a thread per client connection: the hop client shares its connections between them
    (about rest.threads per replica, not one per thread), and a kept-alive hop connection idle for longer
    than the replica's rest.body_read_timeout_s is still served (idle is not a stalled request)."""
    down_port = free_port()
    hop = f"http://127.0.0.1:{down_port}/predict"
    downstream = base_config(
        [iris_models.stage("reduce", "pca", "transform"), iris_models.stage("classify", "clf", "predict")],
        rest={"port": down_port, "body_read_timeout_s": 1},
    )
    entry_config = base_config(
        [iris_models.stage("scale", "scaler", "transform")], rest={"next_hops": [hop], "threads": 2}
    )
    entry, _ = runtimes.start_many([entry_config, downstream])
    rows = iris_models.X[:2]
    expected = (200, {"predictions": iris_models.expected(rows)})
    results: list[tuple[int, Any]] = []

    def client() -> None:
        for _ in range(10):
            results.append(post_json(entry.base_url + "/predict", {"instances": rows.tolist()}))

    clients = [threading.Thread(target=client) for _ in range(16)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    assert results == [expected] * 160

    def hop_connections() -> float:
        metrics = get(entry.base_url + "/metrics")[1].decode()
        return metric_value(metrics, "mlpacker_hop_connections_total", f'handshake="plain",hop="{hop}"')

    opened = hop_connections()
    # At most rest.threads requests run (and call the next hop) at once; 16 client connections, 16 threads.
    assert 1 <= opened <= 2
    time.sleep(2.5)  # the hop connections sit idle past the downstream's body_read_timeout_s
    for _ in range(3):
        assert post_json(entry.base_url + "/predict", {"instances": rows.tolist()}) == expected
    assert hop_connections() == opened  # reused: not cut by the downstream, not reopened
    metrics = get(entry.base_url + "/metrics")[1].decode()
    assert "mlpacker_hop_errors_total{" not in metrics


@pytest.mark.slow
def test_with_hop_retry_timeouts_a_timed_out_request_goes_to_the_next_replica(
    runtimes: Runtimes, iris_models: IrisModels
) -> None:
    """rest.hop_retry_timeouts (off by default: a replica may still be working on it): a request the hung
    replica did not answer in time is sent to the other one. Ejection off, so every other request retries."""
    ports = [free_port(), free_port()]
    hops = [f"http://127.0.0.1:{port}/predict" for port in ports]
    stages = [iris_models.stage("classify", "clf", "predict")]
    replicas = [base_config(stages, rest={"port": port}) for port in ports]
    entry_config = base_config(
        [iris_models.stage("scale", "scaler", "transform"), iris_models.stage("reduce", "pca", "transform")],
        rest={
            "next_hops": hops,
            "hop_timeout_s": 1,
            "hop_retry_timeouts": True,
            "hop_ejection": {"consecutive_failures": 0, "base_s": 5, "max_s": 300},
        },
    )
    entry, _, hung = runtimes.start_many([entry_config, *replicas])
    assert hung.proc is not None
    row = iris_models.X[:1]
    os.killpg(hung.proc.pid, signal.SIGSTOP)
    try:
        answers = [post_json(entry.base_url + "/predict", {"instances": row.tolist()}) for _ in range(6)]
    finally:
        os.killpg(hung.proc.pid, signal.SIGCONT)
    assert answers == [(200, {"predictions": iris_models.expected(row)})] * 6
    metrics = get(entry.base_url + "/metrics")[1].decode()
    assert metric_value(metrics, "mlpacker_hop_errors_total", f'hop="{hops[1]}",kind="timeout"') == 3.0


def served(service: Any) -> float:
    """The /predict requests a service has answered with 200 (0 before the first)."""
    text = get(service.base_url + "/metrics")[1].decode()
    return metric_value(text, "mlpacker_requests_total", 'code="200",endpoint="/predict"', default=0.0)


def test_listens_on_each_bind_address(runtimes: Runtimes, iris_models: IrisModels) -> None:
    port = free_port()
    config = base_config(iris_models.three_stages(), rest={"bind": ["127.0.0.1", "::1"], "port": port})
    runtimes.start(config)
    for host in ("127.0.0.1", "[::1]"):
        assert get(f"http://{host}:{port}/health/ready")[0] == 200
    with pytest.raises(urllib3.exceptions.HTTPError):
        get(f"http://127.0.0.2:{port}/health/live")  # a loopback address it was not told to listen on
