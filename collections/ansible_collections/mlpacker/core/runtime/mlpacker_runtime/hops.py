"""Next-hop client: POST local results to the next service's replicas.

Round-robin over the replica list, failing over to the next replica when one cannot be connected to.
Connections are kept alive in one pool per replica, shared by the worker's threads: a request takes the most
recently returned idle connection (or opens one) and gives it back after the answer; at most ``pool_size``
idle ones are kept (the app passes rest.threads, at least 4: requests that run their stages and hops at
once). So a hop costs one request, not a TCP handshake, and a service opens about rest.threads connections
per replica whatever its thread count (the REST worker has a thread per client connection, rest/worker.py: a
pool per thread opened a connection per thread, each used rarely, and the replica closed the idle ones).
Every hop sits on the request's critical path, so the client is a minimal HTTP/1.1 one over a plain (or TLS)
socket: one ``sendall`` of headers and body, one ``recv`` for a small answer. http.client costs about 0.1 ms
more per call (a file object per response and the email package's header parser), measured on the
benchmark's 2-core machine.
Responses with Content-Length, chunked or read-until-close bodies are understood.
A read timeout is not retried unless ``rest.hop_retry_timeouts`` says so: the replica may still be working on
it, and retrying doubles the wait; it surfaces as HopTimeout (HTTP 504). A replica that answers 503 (not
ready) is failed over like one that cannot be connected to. A replica that fails requests in a row (no
connection, no answer in time, 503) is taken out of the rotation for a while and probed before it comes back
(``rest.hop_ejection``, outliers.py).

https replicas are called with one TLS context (tls.hop_client_context: the replica's certificate is
verified against the pipeline CA, host name or IP included); a replica whose certificate fails is
unreachable like a closed port, never retried without verification. Each replica's last TLS session is
kept, so a new connection (after the replica closed an idle one) resumes it instead of a full handshake.
With bearer auth, requests carry the first token; a 401 is retried with the next ones, so a replica not
yet restarted with a rotated token file still accepts the call.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mlpacker_runtime.outliers import EjectionPolicy, Outliers
from mlpacker_runtime.redaction import public_url

log = logging.getLogger("mlpacker_runtime.hops")

MAX_HEADER_BYTES = 65536
RECV_BYTES = 65536


class HopError(Exception):
    """No replica of the next hop could be reached (HTTP 502)."""


class HopTimeout(HopError):
    """A replica accepted the request but did not answer within the timeout (HTTP 504)."""


class _Unreachable(Exception):
    """Connecting to (or talking to) one replica failed; the caller tries the next one."""


class _TLSFailed(_Unreachable):
    """The TLS handshake with one replica failed (e.g. its certificate is not trusted)."""


class _BadResponse(Exception):
    """The replica's answer is not valid HTTP/1.x."""


@dataclass
class HopResponse:
    url: str
    status: int
    body: Any  # parsed JSON, or None when the hop answered something that is not JSON
    raw: bytes


@dataclass(frozen=True)
class _Target:
    url: str  # without user-info or query: what messages and metric labels show
    https: bool
    host: str
    port: int
    path: str
    host_header: str

    @property
    def ready_path(self) -> str:
        """The replica's readiness endpoint, beside its /predict (a service may sit under a path prefix)."""
        prefix = self.path.split("?", 1)[0].rsplit("/", 1)[0]
        return f"{prefix}/health/ready"


def _parse(url: str) -> _Target:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    host_header = f"[{host}]" if ":" in host else host
    if port != (443 if https else 80):
        host_header += f":{port}"
    return _Target(public_url(url), https, host, port, path, host_header)


class _Connection:
    """One kept-alive HTTP/1.1 connection to one replica (used by one thread only)."""

    def __init__(
        self,
        target: _Target,
        connect_timeout: float,
        read_timeout: float,
        tls_context: ssl.SSLContext | None = None,
        tls_session: ssl.SSLSession | None = None,
    ):
        sock = socket.create_connection((target.host, target.port), timeout=connect_timeout)
        self.tls = False
        try:
            # Small JSON bodies: do not let Nagle hold a segment back waiting for an ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if target.https:
                assert tls_context is not None
                # The handshake runs here, under the connect timeout.
                sock = tls_context.wrap_socket(sock, server_hostname=target.host, session=tls_session)
                self.tls = True
            sock.settimeout(read_timeout)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.head_prefix = (
            f"POST {target.path} HTTP/1.1\r\nHost: {target.host_header}\r\n"
            "Content-Type: application/json\r\nConnection: keep-alive\r\n"
        ).encode("latin-1")
        self.buffer = bytearray()  # bytes received but not consumed yet

    def close(self) -> None:
        self.sock.close()

    @property
    def handshake(self) -> str:
        """How this connection started: plain, tls_full or tls_resumed (a kept TLS session)."""
        if not self.tls:
            return "plain"
        return "tls_resumed" if self.sock.session_reused else "tls_full"  # type: ignore[attr-defined]

    def post(self, body: bytes, authorization: bytes = b"") -> tuple[int, bytes, bool]:
        """Send one request; return (status, body, whether the replica closes the connection).

        ``authorization`` is a whole header line (with its CRLF), or empty.
        """
        self.sock.sendall(
            b"".join(
                (
                    self.head_prefix,
                    authorization,
                    b"Content-Length: ",
                    str(len(body)).encode(),
                    b"\r\n\r\n",
                    body,
                )
            )
        )
        while True:
            status, headers, http10 = self._read_head()
            if status >= 200:
                break  # 1xx interim answers (100 Continue) are followed by the real one
        connection = headers.get("connection", "").lower()
        will_close = connection == "close" or (http10 and connection != "keep-alive")
        if status in (204, 304):
            return status, b"", will_close
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return status, self._read_chunked(), will_close
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise _BadResponse(f"invalid Content-Length {length!r}")
            return status, self._read_exact(int(length)), will_close
        return status, self._read_to_close(), True

    def _fill(self) -> None:
        data = self.sock.recv(RECV_BYTES)
        if not data:
            raise ConnectionResetError("the replica closed the connection")
        self.buffer += data

    def _read_head(self) -> tuple[int, dict[str, str], bool]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > MAX_HEADER_BYTES:
                raise _BadResponse("response headers too long")
            self._fill()
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        version, _space, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise _BadResponse(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return int(code), headers, version == "HTTP/1.0"

    def _read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def _read_line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > MAX_HEADER_BYTES:
                raise _BadResponse("chunk header too long")
            self._fill()
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size_text = self._read_line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as exc:
                raise _BadResponse(f"invalid chunk size {size_text[:20]!r}") from exc
            if size == 0:
                while self._read_line():  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            parts.append(self._read_exact(size))
            self._read_exact(2)  # CRLF after the chunk

    def _read_to_close(self) -> bytes:
        while True:
            data = self.sock.recv(RECV_BYTES)
            if not data:
                break
            self.buffer += data
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


class NextHops:
    def __init__(
        self,
        urls: list[str],
        timeout_s: float,
        metrics: Any = None,
        pool_size: int = 8,
        tls_context: ssl.SSLContext | None = None,
        tokens: list[str] | None = None,
        ejection: EjectionPolicy | None = None,
        retry_timeouts: bool = False,
    ):
        self.urls = list(urls)
        self.targets = [_parse(url) for url in self.urls]
        self.read_timeout = timeout_s
        self.connect_timeout = min(timeout_s, 3.0)
        self.metrics = metrics
        self.retry_timeouts = retry_timeouts
        self.outliers = Outliers(
            len(self.targets), ejection or EjectionPolicy(), self._ready, changed=self._ejection_changed
        )
        if tls_context is None and any(target.https for target in self.targets):
            tls_context = ssl.create_default_context()  # the system's CAs: still verified
        self.tls_context = tls_context
        # Whole header lines, one per token, in the order they are tried; one empty line without auth.
        header_lines = [f"Authorization: Bearer {token}\r\n".encode() for token in tokens or []]
        self.authorizations = header_lines or [b""]
        if tokens and any(not target.https for target in self.targets):
            log.warning(
                "the bearer token is sent in clear to the plain HTTP next hops %s",
                ", ".join(target.url for target in self.targets if not target.https),
            )
        self._tls_sessions: dict[str, ssl.SSLSession] = {}  # url -> last session, shared by all threads
        self.pool_size = max(1, pool_size)
        self._idle: dict[str, list[_Connection]] = {target.url: [] for target in self.targets}  # LIFO
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.urls)

    def _start_index(self) -> int:
        with self._lock:
            return next(self._counter) % len(self.urls)

    def post(self, payload: dict[str, Any]) -> HopResponse:
        body = json.dumps(payload, separators=(",", ":")).encode()
        order = self.outliers.order(self._start_index())
        failures = []
        for position, index in enumerate(order):
            target = self.targets[index]
            last = position == len(order) - 1
            began = time.perf_counter()
            try:
                status, raw = self._request_authorized(target, body)
            except HopTimeout as exc:
                self._count_error(target.url, "timeout")
                self.outliers.failed(index)
                if last or not self.retry_timeouts:
                    raise
                log.warning("%s; trying the next replica (rest.hop_retry_timeouts)", exc)
                failures.append(f"{target.url} (no answer within {self.read_timeout}s)")
                continue
            except _Unreachable as exc:
                self._count_error(target.url, "tls" if isinstance(exc, _TLSFailed) else "unreachable")
                self.outliers.failed(index)
                log.warning("next hop %s unreachable: %s", target.url, exc)
                failures.append(f"{target.url} ({exc})")
                continue
            if self.metrics is not None:
                self.metrics.hop_seconds.labels(target.url).observe(time.perf_counter() - began)
            if status == 503:
                # Not ready (loading, draining): the request did not run there; another replica may take it.
                self.outliers.failed(index)
                self._count_error(target.url, "not_ready")
                if not last:
                    failures.append(f"{target.url} (503 not ready)")
                    continue
            else:
                self.outliers.succeeded(index)
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            return HopResponse(url=target.url, status=status, body=parsed, raw=raw)
        raise HopError("next hop unreachable: " + "; ".join(failures))

    def _ready(self, index: int) -> bool:
        """Whether replica ``index`` answers 200 on its readiness endpoint (ejection probe; never raises)."""
        target = self.targets[index]
        connection: http.client.HTTPConnection
        if target.https:
            connection = http.client.HTTPSConnection(
                target.host, target.port, timeout=self.connect_timeout, context=self.tls_context
            )
        else:
            connection = http.client.HTTPConnection(target.host, target.port, timeout=self.connect_timeout)
        try:
            connection.request("GET", target.ready_path, headers={"Host": target.host_header})
            return connection.getresponse().status == 200
        except Exception:  # noqa: BLE001 - any failure means not ready; the probe thread must not die
            return False
        finally:
            connection.close()

    def _ejection_changed(self, index: int, ejected: bool) -> None:
        url = self.targets[index].url
        if ejected:
            log.warning(
                "next hop %s out of the rotation after failed requests in a row; probed when its time is up",
                url,
            )
            self._drop_idle(url)
        else:
            # Its probe answered, or a request did while every replica was out.
            log.info("next hop %s answers again: back in the rotation", url)
        if self.metrics is not None:
            self.metrics.hop_ejected.labels(url).set(1 if ejected else 0)
            if ejected:
                self.metrics.hop_ejections.labels(url).inc()

    def _drop_idle(self, url: str) -> None:
        """Close the kept-alive connections to an ejected replica (it may have hung with them)."""
        with self._lock:
            idle, self._idle[url] = self._idle[url], []
        for conn in idle:
            conn.close()

    def _take(self, url: str) -> _Connection | None:
        """The most recently returned idle connection to ``url`` (the least likely to be closed), or None."""
        with self._lock:
            idle = self._idle[url]
            return idle.pop() if idle else None

    def _give_back(self, url: str, conn: _Connection) -> None:
        with self._lock:
            idle = self._idle[url]
            if len(idle) < self.pool_size:
                idle.append(conn)
                return
        conn.close()

    def _connect(self, target: _Target) -> _Connection:
        try:
            conn = _Connection(
                target,
                self.connect_timeout,
                self.read_timeout,
                self.tls_context,
                self._tls_sessions.get(target.url),
            )
        except ssl.SSLError as exc:
            raise _TLSFailed(_describe(exc)) from exc
        except (TimeoutError, OSError) as exc:
            raise _Unreachable(_describe(exc)) from exc
        if self.metrics is not None:
            self.metrics.hop_connections.labels(target.url, conn.handshake).inc()
        return conn

    def _request_authorized(self, target: _Target, body: bytes) -> tuple[int, bytes]:
        """One request with the first token; on 401, again with each next token (a rotation rolling out)."""
        for authorization in self.authorizations:
            status, raw = self._request(target, body, authorization)
            if status != 401:
                break
        return status, raw

    def _request(self, target: _Target, body: bytes, authorization: bytes) -> tuple[int, bytes]:
        for attempt in (1, 2):
            conn = self._take(target.url) if attempt == 1 else None
            reused = conn is not None
            if conn is None:
                conn = self._connect(target)
            try:
                status, raw, will_close = conn.post(body, authorization)
            except TimeoutError as exc:
                conn.close()
                raise HopTimeout(f"next hop {target.url} did not answer within {self.read_timeout}s") from exc
            except (OSError, _BadResponse) as exc:
                conn.close()
                if reused and attempt == 1:
                    # A kept-alive connection the replica had already closed: retry once on a fresh
                    # connection. Safe because prediction is idempotent.
                    continue
                # TLS 1.3 reports a refused client certificate on the first read, not in the handshake.
                failure = _TLSFailed if isinstance(exc, ssl.SSLError) else _Unreachable
                raise failure(_describe(exc)) from exc
            if conn.tls and not reused:
                # Read after the first answer: TLS 1.3 sends its session tickets after the handshake.
                self._tls_sessions[target.url] = conn.sock.session  # type: ignore[attr-defined]
            if will_close:
                conn.close()
            else:
                self._give_back(target.url, conn)
            return status, raw
        raise AssertionError("unreachable")

    def _count_error(self, url: str, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.hop_errors.labels(url, kind).inc()

    def close(self) -> None:
        with self._lock:
            idle = [conn for connections in self._idle.values() for conn in connections]
            for connections in self._idle.values():
                connections.clear()
        for conn in idle:
            conn.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "connect timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
