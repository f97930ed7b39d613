"""A REST service reloaded (SIGHUP to the gunicorn master) onto a release that differs only by its
credentials, the way a deploy rotates them: the service's path goes through a 'current' link, the link moves
to the new release, the master is signalled. Real gunicorn, real TLS, a client posting throughout."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import urllib3
from runtime_helpers import (
    IrisModels,
    KeyPair,
    Pki,
    RuntimeProcess,
    Runtimes,
    _issue,
    base_config,
    bearer,
    free_port,
    write_tokens,
)
from test_rest_gunicorn import worker_pids

ROW = [[5.1, 3.5, 1.4, 0.2]]


def release(root: Path, name: str, config: dict[str, Any], server: KeyPair, tokens: list[str]) -> Path:
    """A release folder as the deploy lays it out: config.json naming the release's own secrets files."""
    folder = root / "releases" / name
    secrets = folder / "secrets"
    secrets.mkdir(parents=True)
    for source, target in ((server.cert, "server.crt"), (server.key, "server.key")):
        (secrets / target).write_bytes(source.read_bytes())
    write_tokens(secrets / "token", *tokens)
    config = json.loads(json.dumps(config))
    tls = config["security"]["tls"]
    tls.update(cert_file=str(secrets / "server.crt"), key_file=str(secrets / "server.key"))
    config["security"]["auth"]["token_file"] = str(secrets / "token")
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def point_current(root: Path, folder: Path) -> None:
    """Switch the 'current' link atomically, as ansible.builtin.file with force does."""
    link = root / "current.new"
    link.symlink_to(folder)
    os.replace(link, root / "current")


def service_at_current(
    runtimes: Any, pki: Any, config: dict[str, Any], root: Path, log: Path
) -> RuntimeProcess:
    """An HTTPS service run from ``root/current`` (the path a reload resolves again), not started yet; the
    ``runtimes`` fixture stops it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPACKER_")}
    service = RuntimeProcess(config, root / "current" / "config.json", log, env)
    service.base_url = f"https://127.0.0.1:{config['rest']['port']}"
    service.http = pki.https_client()
    runtimes.started.append(service)
    return service


def served_certificate(port: int, ca_file: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=60) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            certificate = tls.getpeercert(binary_form=True)
    assert certificate is not None
    return certificate


def pem_to_der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


class Client:
    """Posts in a thread over a new connection each time (a client without keep-alive, like `requests.post`),
    with the token both releases accept; counts answers and keeps every failure. Patient (60 s) with a
    connection that waits in the listen backlog while the new workers load: that is a slow answer, not a
    failed one."""

    def __init__(self, url: str, ca_file: Path, token: str, expected: list[Any]) -> None:
        self.url, self.token, self.expected = url, token, expected
        self.http = urllib3.PoolManager(
            retries=False, timeout=urllib3.Timeout(connect=60, read=60), ca_certs=str(ca_file), maxsize=1
        )
        self.answered = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self.http.request(
                    "POST",
                    self.url,
                    json={"instances": ROW},
                    headers={**bearer(self.token), "Connection": "close"},
                )
            except urllib3.exceptions.HTTPError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if response.status == 200 and response.json()["predictions"] == self.expected:
                self.answered += 1
            else:
                self.failures.append(f"{response.status}: {response.data[:200]!r}")


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(0.1)


def test_reload_moves_to_the_new_credentials_without_a_failed_request(
    runtimes: Runtimes, iris_models: IrisModels, pki: Pki, tmp_path: Path
) -> None:
    """The reloaded service (reduce and classify, two workers) is called directly by one client (a new
    connection per request) and, through a front service's hop (kept-alive connections), by another."""
    root = tmp_path / "service"
    port = free_port()
    stages = iris_models.three_stages()
    config = base_config(
        stages[1:],
        rest={"port": port, "workers": 2},
        security={"tls": pki.server_tls(), "auth": {"token_file": None}},
    )
    first = release(root, "first", config, pki.server, ["tok-old-token-0001"])
    rotated_server = _issue(pki.directory, f"server-rotated-{port}", pki.ca, "serverAuth", "IP:127.0.0.1")
    second = release(root, "second", config, rotated_server, ["tok-new-token-0002", "tok-old-token-0001"])
    point_current(root, first)
    service = service_at_current(runtimes, pki, config, root, tmp_path / "service.log")
    service.start()
    front_tokens = write_tokens(tmp_path / "front-token", "tok-old-token-0001")
    front = runtimes.start(
        base_config(
            stages[:1],
            rest={"next_hops": [f"https://127.0.0.1:{port}/predict"], "workers": 1},
            security={"tls": pki.server_tls(), "auth": {"token_file": str(front_tokens)}},
        ),
        http=pki.https_client(),
    )
    service.wait_ready()
    assert service.proc is not None
    # Ready is one worker's answer; at the first start the other may still be loading (and answer 503).
    wait_until(lambda: service.log().count("loaded stage classify") == 2, 60, "both workers' stages loaded")
    master = service.proc.pid
    workers_before = worker_pids(master)
    assert served_certificate(port, pki.ca.cert) == pem_to_der(pki.server.cert)
    predict = service.base_url + "/predict"
    http = pki.https_client()
    refused = http.request("POST", predict, json={"instances": ROW}, headers=bearer("tok-new-token-0002"))
    assert refused.status == 401

    direct_expected = iris_models.pipeline[1:].predict(ROW).tolist()
    with (
        Client(predict, pki.ca.cert, "tok-old-token-0001", direct_expected) as direct,
        Client(
            front.base_url + "/predict", pki.ca.cert, "tok-old-token-0001", iris_models.expected(ROW)
        ) as through_hop,
    ):
        wait_until(lambda: min(direct.answered, through_hop.answered) >= 20, 60, "answers before the reload")
        point_current(root, second)
        os.kill(master, signal.SIGHUP)
        wait_until(
            lambda: served_certificate(port, pki.ca.cert) == pem_to_der(rotated_server.cert),
            60,
            "the rotated certificate served",
        )
        # Served by a new worker: the old ones are being retired; wait until they are gone.
        wait_until(lambda: not worker_pids(master) & workers_before, 60, "the old workers retired")
        at_switch = (direct.answered, through_hop.answered)
        wait_until(
            lambda: (direct.answered, through_hop.answered) >= (at_switch[0] + 20, at_switch[1] + 20),
            60,
            "20 answers after the reload",
        )
    assert direct.failures == [], (direct.answered, direct.failures[:10])
    assert through_hop.failures == [], (through_hop.answered, through_hop.failures[:10])

    # The same master (the listeners stayed), only new workers, and they use the new release's files.
    assert service.proc.poll() is None and service.log_shows("reloaded " + str(second / "config.json"))
    workers_after = worker_pids(master)
    assert len(workers_after) == 2 and not workers_after & workers_before, (workers_before, workers_after)
    for token in ("tok-new-token-0002", "tok-old-token-0001"):
        response = http.request("POST", predict, json={"instances": ROW}, headers=bearer(token))
        assert response.status == 200, (token, response.data)


def test_reload_onto_a_release_with_a_missing_key_stops_the_service(
    runtimes: Runtimes, iris_models: IrisModels, pki: Pki, tmp_path: Path
) -> None:
    """Never a master that keeps serving the old credentials while its path names others: it stops, loudly
    (its supervisor starts it again from the path, and the deploy's health gate reports what is wrong)."""
    root = tmp_path / "service"
    port = free_port()
    config = base_config(
        iris_models.three_stages(),
        rest={"port": port},
        security={"tls": pki.server_tls(), "auth": {"token_file": None}},
    )
    first = release(root, "first", config, pki.server, ["tok-old-token-0001"])
    broken = release(root, "broken", config, pki.server, ["tok-old-token-0001"])
    (broken / "secrets" / "server.key").unlink()
    point_current(root, first)
    service = service_at_current(runtimes, pki, config, root, tmp_path / "service.log")
    service.start().wait_ready()
    assert service.proc is not None
    point_current(root, broken)
    os.kill(service.proc.pid, signal.SIGHUP)
    assert service.proc.wait(60) != 0
    assert "security.tls.key_file" in service.log() and "reload of" in service.log(), service.log()[-3000:]
