"""gunicorn settings derived from the runtime config.

Loaded with ``-c python:mlpacker_runtime.rest.gunicorn_conf``; ``serve`` sets MLPACKER_RUNTIME_CONFIG
(the config path) and PROMETHEUS_MULTIPROC_DIR before exec'ing gunicorn.

A reload (SIGHUP to the master: ``supervisorctl signal HUP``, ``systemctl reload``) is how a deploy moves a
running service to a release that differs only by its credentials (a rotation), or to its restored secrets:
the listening sockets stay, gunicorn starts new workers and stops the old ones gracefully, and connections
arriving meanwhile wait in the listen backlog. gunicorn re-reads its settings on a reload, but a ``python:``
config is a cached import, so ``on_reload`` runs this module again against the configuration the service's
path names now (a new release's ``config.json`` names its own secrets files), and workers forked after a
reload accept connections only once their stages are loaded (``post_worker_init``).
"""

from __future__ import annotations

import importlib
import os
import shutil
import ssl
import sys
from pathlib import Path
from typing import Any

from mlpacker_runtime.config import bind_addresses, load_config
from mlpacker_runtime.metrics import MULTIPROC_ENV
from mlpacker_runtime.rest import CONFIG_AS_GIVEN_ENV
from mlpacker_runtime.security_check import check_security_files
from mlpacker_runtime.tls import server_context

_config = load_config(os.environ["MLPACKER_RUNTIME_CONFIG"])
_rest = _config["rest"]

bind = [
    f"[{address}]:{_rest['port']}" if ":" in address else f"{address}:{_rest['port']}"
    for address in bind_addresses(_rest["bind"])
]
workers = _rest["workers"]
# gthread: a thread pool per worker and real HTTP keep-alive (sync workers close after every request).
worker_class = "gthread"
threads = _rest["threads"]
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


def ssl_context(conf: Any, default_ssl_context_factory: Any) -> ssl.SSLContext:
    return _server_context if _server_context is not None else default_ssl_context_factory()


# True in a master that has reloaded (and so in the workers it forks after): see post_worker_init.
_reloaded = False


def on_reload(server: Any) -> None:
    """SIGHUP, in the master, before it forks the new workers: read the configuration again and rebuild the
    shared TLS context (new certificate and key, client CA of mutual TLS) from the files it names.

    A new configuration that cannot serve (unreadable, a secrets file missing or not matching) raises: the
    master stops, and the supervisor starts the service again from its path (the deploy's health gate then
    reports it). Settings that need other listeners (bind, port) take a restart, not a reload.
    """
    global _reloaded
    previous = os.environ["MLPACKER_RUNTIME_CONFIG"]
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
    server.num_workers = server.cfg.workers
    _reloaded = True
    server.log.info("reloaded %s", os.environ["MLPACKER_RUNTIME_CONFIG"])


def post_worker_init(worker: Any) -> None:
    """A worker forked by a reload accepts connections only once its stages are loaded.

    At the first start a worker accepts at once and answers /health/ready with 503 while it loads (the deploy
    waits for 200). After a reload the old workers stop accepting as soon as the new ones are forked, and
    clients are being served: a new worker that answered 503 would fail their requests. So it waits here,
    before its accept loop, while connections queue in the listen backlog, and tells the master it is alive
    (its worker timeout counts from its last notify). A worker told to stop meanwhile stops waiting.
    """
    if not _reloaded:
        return
    service = worker.wsgi.extensions["mlpacker_service"]
    while worker.alive and not service.wait_loaded(0.5):
        worker.notify()


def on_starting(server: Any) -> None:
    # Stale metric files from a previous run would be summed into this one's counters.
    directory = os.environ.get(MULTIPROC_ENV)
    if directory and os.path.isdir(directory):
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    directory = os.environ.get(MULTIPROC_ENV)
    if directory and os.environ.get("MLPACKER_RUNTIME_OWNS_METRICS_DIR") == "1":
        shutil.rmtree(directory, ignore_errors=True)
