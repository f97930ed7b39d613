"""A small HTTP server for stream mode: /health/live, /health/ready, /metrics, /info (stdlib only)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mlpacker_runtime.metrics import CONTENT_TYPE
from mlpacker_runtime.service import Service

log = logging.getLogger("mlpacker_runtime.health")

Readiness = Callable[[], tuple[int, dict[str, Any]]]


class HealthServer:
    def __init__(self, bind: str, port: int, service: Service, readiness: Readiness):
        self.service = service
        self.readiness = readiness
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                try:
                    status, content_type, body = owner.route(self.path)
                except Exception:
                    log.exception("health endpoint %s failed", self.path)
                    status, content_type, body = 500, "application/json", b'{"error":"internal error"}'
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
                log.debug("%s " + format, self.address_string(), *args)

        self.httpd = ThreadingHTTPServer((bind, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="mlpacker-health", daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

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
        self.thread.start()
        log.info("health endpoint on %s:%s", *self.httpd.server_address[:2])

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
