"""Next-hop client: POST local results to the next service's replicas.

Round-robin over the replica list, failing over to the next replica when one cannot be connected to.
Connections are kept alive and pooled per thread (each gunicorn worker thread keeps one connection per
replica), so a hop costs one request, not a TCP handshake. We use http.client directly rather than a
pool library: it sends headers and body in one segment and adds the least per-request overhead, which
matters because every hop sits on the request's critical path.
A read timeout is not retried: the replica may still be working on it, and retrying would double the
wait; it surfaces as HopTimeout (HTTP 504).
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("mlpacker_runtime.hops")

HEADERS = {"Content-Type": "application/json", "Connection": "keep-alive"}


class HopError(Exception):
    """No replica of the next hop could be reached (HTTP 502)."""


class HopTimeout(HopError):
    """A replica accepted the request but did not answer within the timeout (HTTP 504)."""


class _Unreachable(Exception):
    """Connecting to (or talking to) one replica failed; the caller tries the next one."""


@dataclass
class HopResponse:
    url: str
    status: int
    body: Any  # parsed JSON, or None when the hop answered something that is not JSON
    raw: bytes


@dataclass(frozen=True)
class _Target:
    url: str
    https: bool
    host: str
    port: int
    path: str


def _parse(url: str) -> _Target:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(url, https, parts.hostname or "", parts.port or (443 if https else 80), path)


class NextHops:
    def __init__(self, urls: list[str], timeout_s: float, metrics: Any = None, pool_size: int = 8):
        self.urls = list(urls)
        self.targets = [_parse(url) for url in self.urls]
        self.read_timeout = timeout_s
        self.connect_timeout = min(timeout_s, 3.0)
        self.metrics = metrics
        self._local = threading.local()  # per thread: url -> open HTTPConnection
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.urls)

    def _start_index(self) -> int:
        with self._lock:
            return next(self._counter) % len(self.urls)

    def post(self, payload: dict[str, Any]) -> HopResponse:
        body = json.dumps(payload, separators=(",", ":")).encode()
        start = self._start_index()
        failures = []
        for offset in range(len(self.targets)):
            target = self.targets[(start + offset) % len(self.targets)]
            began = time.perf_counter()
            try:
                status, raw = self._request(target, body)
            except HopTimeout:
                self._count_error(target.url, "timeout")
                raise
            except _Unreachable as exc:
                self._count_error(target.url, "unreachable")
                log.warning("next hop %s unreachable: %s", target.url, exc)
                failures.append(f"{target.url} ({exc})")
                continue
            if self.metrics is not None:
                self.metrics.hop_seconds.labels(target.url).observe(time.perf_counter() - began)
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            return HopResponse(url=target.url, status=status, body=parsed, raw=raw)
        raise HopError("next hop unreachable: " + "; ".join(failures))

    def _connections(self) -> dict[str, http.client.HTTPConnection]:
        connections = getattr(self._local, "connections", None)
        if connections is None:
            connections = self._local.connections = {}
        return connections

    def _connect(self, target: _Target) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if target.https else http.client.HTTPConnection
        conn = cls(target.host, target.port, timeout=self.connect_timeout)
        try:
            conn.connect()
        except (TimeoutError, OSError) as exc:
            conn.close()
            raise _Unreachable(_describe(exc)) from exc
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sock.settimeout(self.read_timeout)
        return conn

    def _request(self, target: _Target, body: bytes) -> tuple[int, bytes]:
        connections = self._connections()
        for attempt in (1, 2):
            conn = connections.pop(target.url, None)
            reused = conn is not None
            if conn is None:
                conn = self._connect(target)
            try:
                conn.request("POST", target.path, body=body, headers=HEADERS)
                response = conn.getresponse()
                raw = response.read()
            except TimeoutError as exc:
                conn.close()
                raise HopTimeout(f"next hop {target.url} did not answer within {self.read_timeout}s") from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if reused and attempt == 1:
                    # A kept-alive connection the replica had already closed: retry once on a fresh
                    # connection. Safe because prediction is idempotent.
                    continue
                raise _Unreachable(_describe(exc)) from exc
            if response.will_close:
                conn.close()
            else:
                connections[target.url] = conn
            return response.status, raw
        raise AssertionError("unreachable")

    def _count_error(self, url: str, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.hop_errors.labels(url, kind).inc()

    def close(self) -> None:
        for conn in self._connections().values():
            conn.close()
        self._connections().clear()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "connect timeout"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
