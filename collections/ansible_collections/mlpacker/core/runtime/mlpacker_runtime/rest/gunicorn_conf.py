"""gunicorn settings derived from the runtime config.

Loaded with ``-c python:mlpacker_runtime.rest.gunicorn_conf``; ``serve`` sets MLPACKER_RUNTIME_CONFIG
(the config path) and PROMETHEUS_MULTIPROC_DIR before exec'ing gunicorn.
"""

from __future__ import annotations

import os
import shutil
import ssl
from typing import Any

from mlpacker_runtime.config import bind_addresses, load_config
from mlpacker_runtime.metrics import MULTIPROC_ENV
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
