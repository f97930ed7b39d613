"""A REST worker killed (``kill -9``) while a client posts: gunicorn's master forks a replacement, which takes
connections only once its stages are loaded (it would answer 503 while loading), so only the request in
flight on the killed worker fails. Real gunicorn, real TLS, a new connection per request."""

from __future__ import annotations

import os
import signal

from runtime_helpers import IrisModels, Pki, Runtimes, base_config, free_port
from test_rest_gunicorn import worker_pids
from test_rest_reload import ROW, Client, wait_until


def test_a_killed_worker_costs_only_its_request_in_flight(
    runtimes: Runtimes, iris_models: IrisModels, pki: Pki
) -> None:
    stages = iris_models.three_stages()
    service = runtimes.start(
        base_config(
            stages,
            rest={"port": free_port(), "workers": 2},
            security={"tls": pki.server_tls(), "auth": {"token_file": None}},
        ),
        http=pki.https_client(),
    )
    service.wait_ready()
    assert service.proc is not None
    wait_until(lambda: service.log().count("loaded stage classify") == 2, 60, "both workers' stages loaded")
    master = service.proc.pid
    workers = worker_pids(master)
    with Client(service.base_url + "/predict", pki.ca.cert, "", iris_models.expected(ROW)) as client:
        wait_until(lambda: client.answered >= 20, 60, "answers before the kill")
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(worker_pids(master) - workers) == 1, 30, "a replacement worker")
        wait_until(lambda: service.log().count("loaded stage classify") == 3, 60, "the replacement loaded")
        at_load = client.answered
        wait_until(lambda: client.answered >= at_load + 20, 60, "answers after the replacement loaded")
    # The request in flight on the killed worker (at most one: the client has one at a time), nothing else:
    # no 503 from the replacement while it loaded.
    assert len(client.failures) <= 1, client.failures
    assert not [failure for failure in client.failures if failure.startswith("503")], client.failures
    assert worker_pids(master) - {victim} == worker_pids(master) and len(worker_pids(master)) == 2
