"""gunicorn settings derived from the runtime config.

Loaded with ``-c python:mlpacker_runtime.rest.gunicorn_conf``; ``serve`` sets MLPACKER_RUNTIME_CONFIG
(the config path) and PROMETHEUS_MULTIPROC_DIR before exec'ing gunicorn.

A reload (SIGHUP to the master: ``supervisorctl signal HUP``, ``systemctl reload``) is how a deploy moves a
running service to a release that differs only by its credentials (a rotation), or to its restored secrets:
the listening sockets stay, gunicorn starts new workers and the old ones stop gracefully. gunicorn re-reads
its settings on a reload, but a ``python:`` config is a cached import, so ``on_reload`` runs this module again
against the configuration the service's path names now (a new release's ``config.json`` names its own
secrets files). Workers forked by a reload accept connections only once their stages are loaded, and only
then retire an old worker each (``post_worker_init``): gunicorn alone stops the old workers right after it
forks the new ones, which would leave no worker accepting while the new ones load (connections would wait in
the listen backlog, and a next hop's TLS handshake gives up after 3 s).
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

from mlpacker_runtime.config import bind_addresses, load_config
from mlpacker_runtime.metrics import MULTIPROC_ENV
from mlpacker_runtime.rest import CONFIG_AS_GIVEN_ENV
from mlpacker_runtime.rest.worker import configure as configure_worker
from mlpacker_runtime.security_check import check_security_files
from mlpacker_runtime.tls import server_context

_config = load_config(os.environ["MLPACKER_RUNTIME_CONFIG"])
_rest = _config["rest"]

bind = [
    f"[{address}]:{_rest['port']}" if ":" in address else f"{address}:{_rest['port']}"
    for address in bind_addresses(_rest["bind"])
]
workers = _rest["workers"]
# gthread (a thread pool per worker and real HTTP keep-alive; sync workers close after every request), with
# a read timeout on every client socket, rest.threads predict threads for requests that have fully arrived
# and a thread for every other connection (rest/worker.py): a slow or stalled client cannot hold the threads
# health probes and other clients need. rest.threads also bounds the requests that run their stages at once
# (the app's semaphore), rest.max_connections the connections a worker holds.
worker_class = "mlpacker_runtime.rest.worker.MLPackerThreadWorker"
_tls_socket_class = configure_worker(_rest["body_read_timeout_s"])
threads = _rest["threads"]
worker_connections = _rest["max_connections"]
keepalive = _rest["keepalive_s"]
# Stages load in a background thread after fork (see wsgi.py); the gthread main loop keeps heartbeating.
timeout = 60
graceful_timeout = 15
proc_name = f"mlpacker-{_config['service']}"
# gunicorn >= 27 opens a control socket at one per-user default path, shared by every service on the
# host (they would replace each other's); the supervisor is the control plane, so turn it off.
control_socket_disable = True
accesslog = None
errorlog = "-"
loglevel = os.environ.get("MLPACKER_RUNTIME_LOG_LEVEL", "info")
# Enough for max_body_bytes JSON bodies; gunicorn's own line limits stay at their defaults.
limit_request_line = 8190

# HTTPS with security.tls.cert_file/key_file; mutual TLS with client_ca_file.
_tls = _config["security"]["tls"]
if _tls["cert_file"]:
    certfile = _tls["cert_file"]
    keyfile = _tls["key_file"]
    if _tls["client_ca_file"]:
        ca_certs = _tls["client_ca_file"]
        cert_reqs = ssl.CERT_REQUIRED
# Made once here, in the master, and inherited by every worker: gunicorn's default builds a context per
# connection (re-reading the key each time), and a context's session ticket key is its own, so clients
# could never resume a session. One shared context lets a reconnecting hop resume on any worker.
_server_context = server_context(_tls)
if _server_context is not None:
    # Its TLS sockets time out reads too (the handshake included).
    _server_context.sslsocket_class = _tls_socket_class


def ssl_context(conf: Any, default_ssl_context_factory: Any) -> ssl.SSLContext:
    return _server_context if _server_context is not None else default_ssl_context_factory()


# Set by on_reload in the master, so also in the workers it forks after: whether it has reloaded, the
# workers of the previous configuration the new ones retire (pids, oldest first), the first new one's age.
_reloaded = False
_retiring: list[int] = []
_first_new_age = 0


def on_reload(server: Any) -> None:
    """SIGHUP, in the master, before it forks the new workers: read the configuration again and rebuild the
    shared TLS context (new certificate and key, client CA of mutual TLS) from the files it names.

    A new configuration that cannot serve (unreadable, a secrets file missing or not matching) raises: the
    master stops, and the supervisor starts the service again from its path (the deploy's health gate then
    reports it). Settings that need other listeners (bind, port) take a restart, not a reload.
    """
    global _reloaded, _retiring, _first_new_age
    previous = os.environ["MLPACKER_RUNTIME_CONFIG"]
    old_workers = [pid for pid, worker in sorted(server.WORKERS.items(), key=lambda item: item[1].age)]
    given = os.environ.get(CONFIG_AS_GIVEN_ENV)
    if given:
        os.environ["MLPACKER_RUNTIME_CONFIG"] = str(Path(given).resolve())
    try:
        problems = check_security_files(load_config(os.environ["MLPACKER_RUNTIME_CONFIG"]))
        if problems:
            raise RuntimeError("; ".join(problems))
        address = list(server.cfg.address)
        # Runs this module again in its own namespace: the hooks gunicorn holds (ssl_context among them)
        # see the new globals, _server_context included.
        module = importlib.reload(sys.modules[__name__])
        for name, value in vars(module).items():
            if name in server.cfg.settings:
                server.cfg.set(name, value)
        if list(server.cfg.address) != address:
            raise RuntimeError(f"the listen addresses changed to {bind}: restart the service, not reload it")
    except Exception:
        os.environ["MLPACKER_RUNTIME_CONFIG"] = previous
        server.log.exception("reload of %s failed: the service stops", previous)
        raise
    _reloaded = True
    _retiring = old_workers
    _first_new_age = server.worker_age + 1
    # gunicorn stops every worker beyond num_workers, oldest first, right after it forks the new ones: counted
    # in, the old workers keep serving until the new ones retire them; child_exit counts them out.
    server.num_workers = len(old_workers) + server.cfg.workers
    server.log.info("reloaded %s", os.environ["MLPACKER_RUNTIME_CONFIG"])


def post_worker_init(worker: Any) -> None:
    """A worker forked by a reload, or to replace a lost one, accepts connections once its stages are loaded;
    one forked by a reload then retires an old one.

    At the first start a worker accepts at once and answers /health/ready with 503 while it loads (the deploy
    waits for 200). Later clients are being served: a new worker that answered 503 would fail their requests
    (a worker killed, ``kill -9`` or by the OOM killer, was replaced by one that answered 503 to the requests
    it took for as long as it loaded). So it waits here, before its accept loop, telling the master it is
    alive (its worker timeout counts from its last notify), while the other workers serve. Loaded, a worker of
    a reload stops one old worker gracefully (it finishes what it holds); the last new one stops any old one
    beyond, and a worker forked later (one that replaced a new worker lost during the handover) whatever old
    one is left. A worker told to stop meanwhile stops waiting.
    """
    if not _reloaded and worker.age <= worker.cfg.workers:
        return  # the first workers: the deploy's health gate waits for them
    service = worker.wsgi.extensions["mlpacker_service"]
    while worker.alive and not service.wait_loaded(0.5):
        worker.notify()
    if not _reloaded or not worker.alive or not service.ready:
        return  # a replacement, stopping, or the stages failed to load (the loader ends the worker)
    index = worker.age - _first_new_age
    last = worker.cfg.workers - 1
    if 0 <= index < last:
        retired = _retiring[index : index + 1]
    elif index == last:
        retired = _retiring[index:]
    else:
        retired = _retiring
    for pid in retired:
        _retire(pid, worker.ppid)


def _retire(pid: int, master: int) -> None:
    """SIGTERM (gunicorn's graceful stop) to ``pid`` if it is still a worker of ``master``."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            # pid (comm) state ppid ...: comm may hold spaces and parentheses.
            parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        if parent == master:
            os.kill(pid, signal.SIGTERM)
    except (OSError, IndexError, ValueError):
        pass  # gone already


def on_starting(server: Any) -> None:
    # Stale metric files from a previous run would be summed into this one's counters.
    directory = os.environ.get(MULTIPROC_ENV)
    if directory and os.path.isdir(directory):
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))


def child_exit(server: Any, worker: Any) -> None:
    """In the master, for every worker that ended: count out an old worker a reload kept."""
    if worker.pid in _retiring:
        _retiring.remove(worker.pid)
        server.num_workers = max(server.cfg.workers, server.num_workers - 1)
    from prometheus_client import multiprocess

    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    directory = os.environ.get(MULTIPROC_ENV)
    if directory and os.environ.get("MLPACKER_RUNTIME_OWNS_METRICS_DIR") == "1":
        shutil.rmtree(directory, ignore_errors=True)
