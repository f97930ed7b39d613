"""REST faults on the test bed under a steady load: a killed worker, a hung and a dead next-hop replica, a
full disk during a deploy.

One distributed REST pipeline, deployed once: scale on cloud1 (the entry point), reduce on edge1 and edge2
(two replicas of the next hop), classify on fog1, with a hop timeout of 3 s (``mlpacker_rest_hops``). Three
clients POST one request after another to the entry point (kept-alive connections, as a client library keeps
them), and every request's start, end and answer is kept. Then, one after the other:
1. ``kill -9`` of the gunicorn worker of the entry service that holds the most client connections: only the
   requests in flight on it fail (each client has at most one), and its master forks a replacement.
   Recovery: kill -> the master has its workers again.
2. edge1's reduce service hangs (SIGSTOP of its master and workers) for 30 s: each of the entry service's
   workers ejects it after ``consecutive_failures`` timed-out requests (rest.hop_ejection), so few requests
   wait the hop timeout and none in the second half of the hang; after SIGCONT its probe puts it back.
   Recovery: SIGSTOP -> the end of the last request that waited the hop timeout.
3. edge2's reduce service dies (``kill -9`` of its master and workers; supervisord starts it again): its
   refused connections fail over to edge1, no request fails or waits; it is ejected and put back.
   Recovery: kill -> the replica answers ``/health/ready`` again.
4. fog1's disk is full while a new release (other request limits) is deployed: a small full tmpfs over its
   service's ``releases`` folder (the running release copied in, so it stays readable). fog1 cannot stage,
   the rollout stops before any host switches ("nothing was switched: fog1 - ..." and fog1's error naming
   the full disk), every host keeps its release and the pipeline answers throughout.
Each case's counts go to the chaos table (record_case): sent, answered, unanswered, longest gap, recovery.
Then the pipeline is undeployed and nothing of it is left on any host.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.chaos.load import record_case
from tests.chaos.releases import new_release_vars, releases_running
from tests.deploy.helpers import (
    IRIS_SAMPLES,
    in_process_predictions,
    iris_spec,
    leftovers_on_testbed_host,
    post_predict,
    record_credentials,
    request_options,
    run_playbook,
    wait_for,
    write_vars_file,
)

pytestmark = [pytest.mark.testbed, pytest.mark.slow, pytest.mark.timeout(1800)]

NAME = "ch-rest"
BASE_PORT = 8440  # scale 8440 (cloud1), reduce 8441 (edge1, edge2), classify 8442 (fog1)
HOSTS = ("cloud1", "edge1", "edge2", "fog1")
HOP_TIMEOUT_S = 3.0
CONSECUTIVE_FAILURES = 3  # rest.hop_ejection's default
CLIENTS = 3
HANG_S = 30.0
SUPERVISORCTL = (
    "/opt/mlpacker/.supervisor/venv/bin/supervisorctl -c /etc/mlpacker/supervisor/supervisord.conf"
)


@dataclass
class Request:
    client: int
    start: float
    end: float
    answered: bool  # 200 with predictions
    status: str  # HTTP status, or the client-side error


@dataclass
class TimedLoad:
    """``clients`` threads, each POSTing one request after another to ``url`` over its own kept-alive
    session; every request is kept (start, end, answered or not)."""

    url: str
    instances: list[list[float]]
    expected: list[Any]
    credentials: dict[str, Any] | None
    clients: int = CLIENTS
    requests: list[Request] = field(default_factory=list)
    wrong: int = 0
    started: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> TimedLoad:
        self.started = time.monotonic()
        self._threads = [
            threading.Thread(target=self._run, args=(client,), daemon=True) for client in range(self.clients)
        ]
        for thread in self._threads:
            thread.start()
        wait_for(lambda: self.answered >= 10, 60, "the load's first answers")
        return self

    def stop(self) -> TimedLoad:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        return self

    def _run(self, client: int) -> None:
        options = request_options(self.credentials)
        session = requests.Session()
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                response = session.post(self.url, json={"instances": self.instances}, timeout=15, **options)
            except requests.RequestException as error:
                self.requests.append(Request(client, start, time.monotonic(), False, type(error).__name__))
                continue
            answered = response.status_code == 200
            self.requests.append(
                Request(client, start, time.monotonic(), answered, str(response.status_code))
            )
            if answered:
                self.wrong += response.json()["predictions"] != self.expected
            time.sleep(0.02)

    @property
    def answered(self) -> int:
        return sum(request.answered for request in self.requests)

    def failed(self) -> list[Request]:
        return [request for request in self.requests if not request.answered]

    def first_ended_after(self, moment: float) -> set[int]:
        """Ids of each client's first request that ended after ``moment``."""
        firsts: dict[int, Request] = {}
        for request in sorted(self.requests, key=lambda request: request.end):
            if request.end >= moment:
                firsts.setdefault(request.client, request)
        return {id(request) for request in firsts.values()}

    def slow(self) -> list[Request]:
        """Requests that waited at least the hop timeout."""
        return [request for request in self.requests if request.end - request.start >= HOP_TIMEOUT_S]

    def longest_gap(self) -> float:
        """The longest time without an answer, from the start of the load."""
        ends = [self.started] + sorted(request.end for request in self.requests if request.answered)
        return max(later - earlier for earlier, later in zip(ends, ends[1:], strict=False))

    def record(self, case: str, recovery_s: float | None) -> None:
        record_case(
            case,
            sent=len(self.requests),
            delivered=self.answered,
            lost=len(self.failed()),
            duplicates=0,
            longest_gap_s=self.longest_gap(),
            recovery_s=recovery_s,
        )

    def summary(self) -> str:
        failed = [(request.client, round(request.start, 2), request.status) for request in self.failed()]
        slow = [round(request.end - request.start, 2) for request in self.slow()]
        return (
            f"sent {len(self.requests)}, answered {self.answered}, wrong {self.wrong}, failed {failed}, "
            f"slow {slow}, longest gap {self.longest_gap():.2f} s"
        )


def program_pid(bed: Any, host: str, service_id: str) -> int:
    """The pid supervisord runs the service's program as (its gunicorn master); 0 when not running."""
    output = bed.run(host, f"{SUPERVISORCTL} pid mlpacker-{service_id}", check=False).stdout.strip()
    return int(output) if output.isdigit() else 0


def worker_pids(bed: Any, host: str, master: int) -> list[int]:
    output = bed.run(host, f"pgrep -P {master}", check=False).stdout
    return sorted(int(pid) for pid in output.split())


def busiest_worker(bed: Any, host: str, port: int, workers: list[int]) -> tuple[int, int]:
    """The worker holding the most established client connections on ``port``, and how many it holds."""
    output = bed.run(host, f"ss -tnpH state established '( sport = :{port} )'").stdout
    held = {worker: 0 for worker in workers}
    for pid in re.findall(r"pid=(\d+)", output):
        if int(pid) in held:
            held[int(pid)] += 1
    worker = max(workers, key=lambda pid: held[pid])
    return worker, held[worker]


def hop_metric(url: str, credentials: dict[str, Any] | None, name: str, hop: str) -> float:
    """A hop metric of the service at ``url`` (its /metrics) for the next hop whose URL contains ``hop``,
    summed over its workers' samples."""
    response = requests.get(url.replace("/predict", "/metrics"), timeout=10, **request_options(credentials))
    assert response.status_code == 200, response.text
    total = 0.0
    for line in response.text.splitlines():
        if line.startswith(name + "{") and f"{hop}/" in line.split("}")[0]:
            total += float(line.rsplit(" ", 1)[1])
    return total


def ready(url: str, credentials: dict[str, Any] | None) -> bool:
    try:
        response = requests.get(
            url.replace("/predict", "/health/ready"), timeout=2, **request_options(credentials)
        )
    except requests.RequestException:
        return False
    return response.status_code == 200


def fill_releases_disk(bed: Any, host: str) -> None:
    """Put a 1 MiB tmpfs over the host's service ``releases`` folder, holding a copy of the releases there
    (the running one stays readable), and fill it: a new release cannot be laid out."""
    bed.run(
        host,
        "set -e; releases=$(echo /opt/mlpacker/" + NAME + "/*/releases); copy=/root/.chaos-releases; "
        'rm -rf $copy; cp -a "$releases" $copy; '
        'mount -t tmpfs -o size=1m,mode=0755 mlpacker-chaos-full "$releases"; '
        'cp -a $copy/. "$releases"/; rm -rf $copy; '
        'dd if=/dev/zero of="$releases/.chaos-fill" bs=4k 2>/dev/null || true; '
        'df -k "$releases" | tail -1',
    )


def free_releases_disk(bed: Any, host: str) -> None:
    bed.run(
        host,
        f"for releases in /opt/mlpacker/{NAME}/*/releases; do "
        'if grep -q " $releases tmpfs " /proc/mounts; then umount "$releases"; fi; done',
        check=False,
    )


def after(seconds: float, what: Callable[[], bool], description: str) -> float:
    """Wait (up to ``seconds``) for ``what``; return how long it took."""
    began = time.monotonic()
    wait_for(what, seconds, description, interval=0.1)
    return time.monotonic() - began


def test_rest_faults_cost_only_in_flight_requests(
    testbed: Any, deploy_root: Path, iris_models: dict[str, Path], controller_dirs: dict[str, str]
) -> None:
    inventory = Path(testbed.inventory_path)
    spec = iris_spec(NAME, "rest", "distributed", iris_models, BASE_PORT)
    for stage, group in zip(spec["mlpacker_pipeline"]["stages"], ("cloud", "edge", "fog"), strict=True):
        stage["group"] = group
    settings = dict(
        controller_dirs,
        mlpacker_credentials_dir=str(deploy_root / f"credentials-{NAME}"),
        mlpacker_health_retries=30,
        mlpacker_health_delay=1,
        mlpacker_rest_hops={"timeout_s": HOP_TIMEOUT_S},
    )
    v1 = [
        write_vars_file(deploy_root / f"{NAME}.yml", spec),
        write_vars_file(deploy_root / f"{NAME}-ctl.yml", settings),
    ]
    v2 = v1 + [new_release_vars(deploy_root, NAME)]
    expected = in_process_predictions(
        [iris_models["scaler"], iris_models["pca"], iris_models["classifier"]], IRIS_SAMPLES
    )
    entry = f"https://{testbed.address('cloud1')}:{BASE_PORT}/predict"
    try:
        first = run_playbook("deploy.yml", inventory, v1)
        assert first.rc == 0, first.describe()
        credentials = record_credentials(controller_dirs["mlpacker_state_dir"], NAME)
        record = json.loads((Path(controller_dirs["mlpacker_state_dir"]) / f"{NAME}.json").read_text())
        service_of = {service["host"]: service["id"] for service in record["services"]}
        assert set(service_of) == set(HOSTS), record["services"]
        assert post_predict(entry, IRIS_SAMPLES, credentials=credentials) == expected
        replica = {host: f"{testbed.address(host)}:{BASE_PORT + 1}" for host in ("edge1", "edge2")}

        # 1. kill -9 of the entry service's busiest worker: only its in-flight requests fail.
        master = program_pid(testbed, "cloud1", service_of["cloud1"])
        workers = worker_pids(testbed, "cloud1", master)
        assert master and len(workers) >= 2, (master, workers)
        load = TimedLoad(entry, IRIS_SAMPLES, expected, credentials).start()
        victim, held = busiest_worker(testbed, "cloud1", BASE_PORT, workers)
        killed_at = time.monotonic()
        testbed.run("cloud1", f"kill -9 {victim}")
        recovery = after(
            30,
            lambda: len(set(worker_pids(testbed, "cloud1", master)) - {victim}) == len(workers),
            "a replacement of the killed worker",
        )
        time.sleep(5)
        load.stop()
        load.record("kill -9 of a REST worker (entry service, 3 clients)", recovery)
        assert held >= 1, "the killed worker held no client connection: nothing was tested"
        # A client whose kept-alive connection the worker held loses the request in flight on it, or the one
        # it sends on it before it sees it closed: its first request to end after the kill, none later.
        in_flight = load.first_ended_after(killed_at)
        assert all(id(request) in in_flight for request in load.failed()), load.summary()
        assert len(load.failed()) <= held, load.summary()
        assert program_pid(testbed, "cloud1", service_of["cloud1"]) == master  # not restarted
        assert load.wrong == 0 and load.answered > 0, load.summary()

        # 2. edge1's replica hangs: ejected after a few timed-out requests, none waits in the hang's 2nd half.
        ejections = hop_metric(entry, credentials, "mlpacker_hop_ejections_total", replica["edge1"])
        edge1_master = program_pid(testbed, "edge1", service_of["edge1"])
        hung = [edge1_master, *worker_pids(testbed, "edge1", edge1_master)]
        load = TimedLoad(entry, IRIS_SAMPLES, expected, credentials).start()
        stopped_at = time.monotonic()
        testbed.run("edge1", "kill -STOP " + " ".join(map(str, hung)))
        try:
            time.sleep(HANG_S)
        finally:
            testbed.run("edge1", "kill -CONT " + " ".join(map(str, hung)))
        resumed_at = time.monotonic()
        back = after(
            120,
            lambda: hop_metric(entry, credentials, "mlpacker_hop_replica_ejected", replica["edge1"]) == 0,
            "edge1 back in the rotation",
        )
        load.stop()
        slow = load.slow()
        load.record(
            f"next-hop replica hung {HANG_S:.0f} s (SIGSTOP; 2 replicas, hop timeout 3 s)",
            (max(request.end for request in slow) - stopped_at) if slow else 0.0,
        )
        print(f"edge1 back in the rotation {back:.1f} s after SIGCONT; {load.summary()}")
        assert hop_metric(entry, credentials, "mlpacker_hop_ejections_total", replica["edge1"]) > ejections
        # Each worker of the entry service ejects edge1 after consecutive_failures timeouts, plus the requests
        # of the other clients already waiting on it then; without ejection every 2nd hop would wait.
        assert len(slow) <= len(workers) * (CONSECUTIVE_FAILURES + CLIENTS - 1), load.summary()
        assert not [r for r in slow if r.start > stopped_at + HANG_S / 2], load.summary()
        # A timed-out hop answers 504; nothing else failed.
        assert all(request.status == "504" for request in load.failed()), load.summary()
        assert load.wrong == 0 and any(request.start > resumed_at for request in load.requests)

        # 3. edge2's replica dies (kill -9 of the whole service): failed over, nothing lost, nothing waits.
        ejections = hop_metric(entry, credentials, "mlpacker_hop_ejections_total", replica["edge2"])
        edge2_url = f"https://{replica['edge2']}/predict"
        edge2_master = program_pid(testbed, "edge2", service_of["edge2"])
        dead = [edge2_master, *worker_pids(testbed, "edge2", edge2_master)]
        load = TimedLoad(entry, IRIS_SAMPLES, expected, credentials).start()
        testbed.run("edge2", "kill -9 " + " ".join(map(str, dead)))
        killed_at = time.monotonic()
        wait_for(lambda: not ready(edge2_url, credentials), 10, "edge2's replica down", interval=0.05)
        recovery = time.monotonic() - killed_at
        recovery += after(60, lambda: ready(edge2_url, credentials), "edge2's replica restarted")
        after(
            60,
            lambda: hop_metric(entry, credentials, "mlpacker_hop_replica_ejected", replica["edge2"]) == 0,
            "edge2 back in the rotation",
        )
        load.stop()
        load.record("next-hop replica killed (kill -9 of its service; 2 replicas)", recovery)
        assert program_pid(testbed, "edge2", service_of["edge2"]) not in (0, edge2_master)
        assert hop_metric(entry, credentials, "mlpacker_hop_ejections_total", replica["edge2"]) > ejections
        assert load.failed() == [] and load.slow() == [], load.summary()
        assert load.wrong == 0, load.summary()

        # 4. fog1's disk full during a deploy: nothing switched anywhere, the pipeline answers throughout.
        release_v1 = releases_running(testbed, NAME, HOSTS)
        load = TimedLoad(entry, IRIS_SAMPLES, expected, credentials).start()
        fill_releases_disk(testbed, "fog1")
        try:
            full = run_playbook("deploy.yml", inventory, v2)
        finally:
            free_releases_disk(testbed, "fog1")
        load.stop()
        load.record("disk full on a host during a deploy (fog1): nothing switched", None)
        assert full.rc != 0, full.describe()
        assert "nothing was switched: fog1 - " in full.output, full.describe()
        # The hosts that stop name fog1's cause (the failure fog1 kept), not only that it dropped out.
        barrier = full.output.split("nothing was switched: fog1 - ", 1)[1].split("\n", 1)[0]
        assert barrier.startswith('task "') and "No space left on device" in barrier, barrier
        # fog1's own error (its fatal line, or a loop item's failed line) names the full disk.
        fog1_errors = [
            line for line in full.output.splitlines() if re.match(r"(fatal|failed): \[fog1\]", line)
        ]
        assert any("No space left on device" in line for line in fog1_errors), fog1_errors or full.describe()
        assert releases_running(testbed, NAME, HOSTS) == release_v1
        assert load.failed() == [] and load.wrong == 0 and load.answered > 0, load.summary()
        assert post_predict(entry, IRIS_SAMPLES, credentials=credentials) == expected
    finally:
        free_releases_disk(testbed, "fog1")
        removed = run_playbook("undeploy.yml", inventory, v1)
    assert removed.rc == 0, removed.describe()
    for host in HOSTS:
        assert leftovers_on_testbed_host(testbed, host, NAME) == "", host
