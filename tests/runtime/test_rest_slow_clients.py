"""Slow and stalled clients against a real gunicorn service (the default 2 workers x 4 threads).

A stalled client (headers and part of a body, or part of the headers, then silence) used to hold a gthread
thread for as long as it liked: 8 of them and /health/live stopped answering. The service's worker
(mlpacker_runtime/rest/worker.py) cuts a client silent for rest.body_read_timeout_s with 408, gives its
rest.threads predict threads only requests that have fully arrived, and every other connection a thread of its
own. The figures (probe latency p50/max, failures, how long until the stalled
connections were cut) are printed: run with ``-s`` to see them. Timings are asserted only as liveness
bounds (a probe answers within its own 5 s timeout).
"""

from __future__ import annotations

import json
import socket
import ssl
import statistics
import threading
import time
from typing import Any

import pytest
from runtime_helpers import IrisModels, Pki, RuntimeProcess, Runtimes, base_config

ROW = [5.1, 3.5, 1.4, 0.2]
PROBE_TIMEOUT_S = 5.0  # what an orchestrator's probe waits (Kubernetes' default is 1 s; Docker's 30 s)
READ_TIMEOUT_S = 3  # the services' rest.body_read_timeout_s here (default 10), to keep the tests short


def wait_until(condition: Any, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _connect(service: RuntimeProcess, tls: ssl.SSLContext | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", service.config["rest"]["port"]), timeout=30)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def _stalled_body(service: RuntimeProcess, tls: ssl.SSLContext | None = None) -> socket.socket:
    """Headers and the first bytes of a 1000-byte body, then nothing."""
    sock = _connect(service, tls)
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        b'{"instances": [[5.1, '
    )
    return sock


def _stalled_chunks(service: RuntimeProcess, tls: ssl.SSLContext | None = None) -> socket.socket:
    """A chunked body (served by the Flask route, not the fast path) that stops after its first chunk."""
    sock = _connect(service, tls)
    sock.sendall(b'POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"ins')
    return sock


def _stalled_headers(service: RuntimeProcess, tls: ssl.SSLContext | None = None) -> socket.socket:
    """Slowloris: part of a request head, then nothing."""
    sock = _connect(service, tls)
    sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    return sock


def _answer(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed (monotonic)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks), time.monotonic()


def _probe(service: RuntimeProcess, path: str = "/health/live", tls: ssl.SSLContext | None = None) -> float:
    """One probe on a new connection, as an orchestrator makes it: its latency, or raises on failure."""
    started = time.monotonic()
    sock = _connect(service, tls)
    sock.settimeout(PROBE_TIMEOUT_S)
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while b'"alive"' not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    return time.monotonic() - started


def _poll_health(
    service: RuntimeProcess, seconds: float, tls: ssl.SSLContext | None = None
) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    failures: list[str] = []
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        try:
            latencies.append(_probe(service, tls=tls))
        except (OSError, AssertionError) as exc:
            failures.append(f"after {time.monotonic() - started:.1f} s: {type(exc).__name__}: {exc}")
        time.sleep(0.2)
    return latencies, failures


def _report(what: str, latencies: list[float], failures: list[str], cut_after: list[float]) -> None:
    print(
        f"\n{what}: {len(latencies)} probes answered, p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms, {len(failures)} failed; stalled connections cut after "
        f"{min(cut_after):.1f}-{max(cut_after):.1f} s (rest.body_read_timeout_s {READ_TIMEOUT_S})"
    )


BODY_TIMEOUT_ERROR = b"client silent for more than rest.body_read_timeout_s (%d s)" % READ_TIMEOUT_S
HEAD_TIMEOUT_ERROR = b"request not received within rest.body_read_timeout_s (%d s)" % READ_TIMEOUT_S


def _assert_408s(answers: list[bytes], status_and_headers: bytes, error: bytes) -> None:
    """Every stalled client got a 408 starting with ``status_and_headers``, its connection closed, and the
    JSON error ``error`` naming the setting."""
    for answer in answers:
        assert answer.startswith(status_and_headers), answer[:300]
        assert b"Connection: close\r\n" in answer
        assert answer.endswith(b'{"error":"' + error + b'"}'), answer[-300:]


def _service(runtimes: Runtimes, iris_models: IrisModels, **extra: Any) -> RuntimeProcess:
    rest = {"workers": 2, "threads": 4, "body_read_timeout_s": READ_TIMEOUT_S}
    rest.update(extra.pop("rest", {}))
    http = extra.pop("http", None)
    service = runtimes.start(base_config(iris_models.three_stages(), rest=rest, **extra), http=http)
    # wait_ready saw one worker ready; the other may still be loading its stages (503, and a busy GIL).
    assert service.log_shows("loaded stage classify") and wait_until(
        lambda: service.log().count("loaded stage classify") == rest["workers"]
    ), service.log()
    return service


def _stall_and_probe(
    service: RuntimeProcess, count: int, opener: Any, tls: ssl.SSLContext | None = None
) -> tuple[list[float], list[str], list[float], list[bytes]]:
    opened = time.monotonic()
    stalled = [opener(service, tls) for _ in range(count)]
    answers: list[tuple[bytes, float]] = [(b"", 0.0)] * count

    def read(index: int) -> None:
        answers[index] = _answer(stalled[index])

    readers = [threading.Thread(target=read, args=(index,)) for index in range(count)]
    for reader in readers:
        reader.start()
    # Probe while the stalled connections hold on, and past their cut.
    latencies, failures = _poll_health(service, READ_TIMEOUT_S + 2, tls)
    for reader in readers:
        reader.join(30)
    for sock in stalled:
        sock.close()
    assert not any(reader.is_alive() for reader in readers), "a stalled connection was never closed"
    return latencies, failures, [closed - opened for _, closed in answers], [answer for answer, _ in answers]


@pytest.mark.slow
@pytest.mark.parametrize("count", [16, 64])
def test_stalled_bodies_do_not_starve_health_or_predict(
    runtimes: Runtimes, iris_models: IrisModels, count: int
) -> None:
    service = _service(runtimes, iris_models)
    stalled = [_stalled_body(service) for _ in range(count)]
    # Other clients are served while the stalled ones hold their connections.
    for _ in range(4):
        sock = _connect(service)
        body = json.dumps({"instances": [ROW]}).encode()
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        answer, _ = _answer(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    for sock in stalled:
        sock.close()
    latencies, failures, cut_after, answers = _stall_and_probe(service, count, _stalled_body)
    _report(f"{count} stalled bodies", latencies, failures, cut_after)
    assert failures == []
    assert max(latencies) < PROBE_TIMEOUT_S
    # The app's JSON 408, naming the setting, and the connection closed.
    _assert_408s(answers, b"HTTP/1.1 408 Request Timeout\r\n", BODY_TIMEOUT_ERROR)
    assert "Traceback" not in service.log()


@pytest.mark.slow
def test_stalled_chunked_bodies_get_408(runtimes: Runtimes, iris_models: IrisModels) -> None:
    service = _service(runtimes, iris_models)
    latencies, failures, cut_after, answers = _stall_and_probe(service, 16, _stalled_chunks)
    _report("16 stalled chunked bodies", latencies, failures, cut_after)
    assert failures == []
    _assert_408s(answers, b"HTTP/1.1 408 REQUEST TIMEOUT\r\n", BODY_TIMEOUT_ERROR)
    assert "Traceback" not in service.log()


@pytest.mark.slow
def test_slowloris_headers_are_cut_with_408(runtimes: Runtimes, iris_models: IrisModels) -> None:
    service = _service(runtimes, iris_models)
    latencies, failures, cut_after, answers = _stall_and_probe(service, 32, _stalled_headers)
    _report("32 stalled request heads", latencies, failures, cut_after)
    assert failures == []
    # The worker's 408: nothing of the request reached the app.
    _assert_408s(answers, b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n", HEAD_TIMEOUT_ERROR)
    assert "Traceback" not in service.log()


@pytest.mark.slow
def test_https_stalled_handshakes_and_bodies(runtimes: Runtimes, iris_models: IrisModels, pki: Pki) -> None:
    """Over TLS: a client that stops inside the handshake is closed (no HTTP to answer yet), one that stalls
    its body gets the 408; probes over HTTPS keep answering; keep-alive and a large slow body still work."""
    client_tls = ssl.create_default_context(cafile=str(pki.ca.cert))
    service = _service(runtimes, iris_models, security={"tls": pki.server_tls()}, http=pki.https_client())
    half_handshakes = []
    for _ in range(16):
        sock = _connect(service)
        sock.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello record
        half_handshakes.append(sock)
    latencies, failures, cut_after, answers = _stall_and_probe(service, 16, _stalled_body, client_tls)
    _report("16 stalled HTTPS bodies + 16 half handshakes", latencies, failures, cut_after)
    assert failures == []
    assert all(answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n") for answer in answers), answers[0][:300]
    for sock in half_handshakes:
        sock.settimeout(30)
        assert _answer(sock)[0] == b""  # closed without a byte: there is no HTTP before the handshake
        sock.close()

    # One kept-alive connection serves several requests, one of them a large body sent slowly (each pause
    # shorter than the timeout): the timeout is per read, not per request.
    sock = _connect(service, client_tls)
    rows = [ROW] * 9_000
    body = json.dumps({"instances": rows}).encode()
    for request in range(3):
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        for start in range(0, len(body), 32 * 1024):
            sock.sendall(body[start : start + 32 * 1024])
            if request == 1:
                time.sleep(READ_TIMEOUT_S / 3)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        head, _, rest = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        length = int(headers[b"Content-Length"])
        while len(rest) < length:
            rest += sock.recv(65536)
        assert len(json.loads(rest)["predictions"]) == len(rows)
    sock.close()
    assert "Traceback" not in service.log()
