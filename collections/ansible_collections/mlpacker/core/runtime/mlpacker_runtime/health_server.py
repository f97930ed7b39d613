"""A small HTTP(S) server for stream mode: /health/live, /health/ready, /metrics, /info (stdlib only).

With ``security.tls`` it speaks HTTPS (the same server context as a REST service); with
``security.auth`` every path but the health probes needs the bearer token, as on a REST service.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mlpacker_runtime.auth import BearerAuth, Refusal
from mlpacker_runtime.config import bind_addresses
from mlpacker_runtime.metrics import CONTENT_TYPE
from mlpacker_runtime.service import Service

log = logging.getLogger("mlpacker_runtime.health")

Readiness = Callable[[], tuple[int, dict[str, Any]]]
# An idle or stalled client (a slow TLS handshake included) gives its thread back after this long.
CONNECTION_TIMEOUT_S = 30


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, tls_context: ssl.SSLContext | None):
        self.tls_context = tls_context
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls_context is None:
            super().finish_request(request, client_address)
            return
        # The handshake runs here, in the connection's own thread, not in the accept loop.
        request.settimeout(CONNECTION_TIMEOUT_S)
        with self.tls_context.wrap_socket(request, server_side=True) as tls_request:
            super().finish_request(tls_request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed handshake (plain HTTP on the HTTPS port, an untrusted client certificate) or a client
        # that went away is the client's problem: no traceback on stderr.
        log.debug("connection from %s failed", client_address, exc_info=True)


class HealthServer:
    def __init__(
        self,
        bind: str | list[str],
        port: int,
        service: Service,
        readiness: Readiness,
        tls_context: ssl.SSLContext | None = None,
        auth: BearerAuth | None = None,
    ):
        self.service = service
        self.readiness = readiness
        self.auth = auth
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = CONNECTION_TIMEOUT_S

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                headers = []
                try:
                    refusal = owner.refusal(self.path, self.headers.get("Authorization"))
                    if refusal is None:
                        status, content_type, body = owner.route(self.path)
                    else:
                        status, content_type = 401, "application/json"
                        body = json.dumps({"error": refusal.message}).encode()
                        headers.append(("WWW-Authenticate", refusal.challenge))
                except Exception:
                    log.exception("health endpoint %s failed", self.path)
                    status, content_type, body = 500, "application/json", b'{"error":"internal error"}'
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
                log.debug("%s " + format, self.address_string(), *args)

        # One listener per address; with port 0 the others take the port the first one got.
        self.servers: list[_Server] = []
        for address in bind_addresses(bind):
            self.servers.append(_Server((address, self.port if self.servers else port), Handler, tls_context))
        self.scheme = "https" if tls_context is not None else "http"
        self.threads = [
            threading.Thread(target=server.serve_forever, name="mlpacker-health", daemon=True)
            for server in self.servers
        ]

    @property
    def port(self) -> int:
        return self.servers[0].server_address[1]

    def refusal(self, target: str, authorization: str | None) -> Refusal | None:
        if self.auth is None:
            return None
        return self.auth.refusal(target.split("?", 1)[0], authorization)

    def route(self, path: str) -> tuple[int, str, bytes]:
        path = path.split("?", 1)[0]
        if path == "/health/live":
            return 200, "application/json", b'{"status":"alive"}'
        if path == "/health/ready":
            status, body = self.readiness()
            return status, "application/json", json.dumps(body).encode()
        if path == "/metrics":
            return 200, CONTENT_TYPE, self.service.metrics.render()
        if path == "/info":
            return 200, "application/json", json.dumps(self.service.info()).encode()
        return 404, "application/json", json.dumps({"error": f"Not Found: GET {path}"}).encode()

    def start(self) -> None:
        for thread in self.threads:
            thread.start()
        for server in self.servers:
            log.info("health endpoint on %s://%s:%s", self.scheme, *server.server_address[:2])

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
