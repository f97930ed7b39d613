"""The REST service's gunicorn worker: gthread, made safe against slow and stalled clients.

gunicorn's gthread worker hands a connection to one of its ``threads`` as soon as it is readable, and that
thread then reads the request head and body with blocking reads and no time limit. A client that sends half a
request and stops (or drips a byte now and then) keeps the thread forever: 8 such clients on the default 2x4
service and every other client, health probes included, waits in the listen backlog.

This worker changes three things, and nothing in gunicorn's request parsing:

* Every read from a client (the TLS handshake, the request head, the body) times out after
  ``rest.body_read_timeout_s`` of silence: the socket classes below turn ``setblocking(True)`` (what
  gunicorn calls before it reads) into ``settimeout(timeout)``, on plain and TLS sockets alike (the TLS
  context makes its sockets with ``sslsocket_class``). A timeout raises :class:`ClientReadTimeout`, which
  gunicorn takes for a client gone (logged at debug level: no traceback per attacker). The request gets
  ``408`` with ``Connection: close`` when nothing was answered yet (the app answers a stalled body with its
  own JSON 408), and the connection is closed. It also bounds how long a client may take to read an answer.
* The thread pool holds one thread per connection the worker accepts (``rest.max_connections``, gunicorn's
  ``worker_connections``), so a connection never waits for a thread another connection holds: a health
  probe is read and answered by its own thread whatever the other connections do. ``rest.threads`` still
  bounds how many requests run their stages at once (a semaphore in the app), so memory and CPU use stay
  what they were. Why threads and not a separate health listener: probes (the deploy's health gate, the
  container's HEALTHCHECK, load balancers) use the service's own port, and a separate listener would miss
  the very failure a probe is for (the service's port not answering). A thread blocked in a read costs no
  CPU and little memory; connections beyond ``max_connections`` wait in the kernel's backlog.
* A closing connection's linger (gunicorn's graceful close) runs in its own thread, not in the worker's
  main loop (see :func:`_linger`).

What it does not do: a client that keeps sending a byte just often enough stays connected (the timeout is
per read, as nginx's client_body_timeout), holding one connection slot, not a predict slot; limiting
connections per client address is a firewall's or a proxy's job.
"""

from __future__ import annotations

import socket
import ssl
import time
from concurrent import futures
from typing import Any

from gunicorn.http.errors import NoMoreData
from gunicorn.workers.gthread import ThreadWorker

LINGER_S = 2.0  # as gunicorn's close_graceful
TIMEOUT_BODY = b'{"error":"request not received within rest.body_read_timeout_s (%d s)"}'


class ClientReadTimeout(NoMoreData, TimeoutError):
    """A client stayed silent longer than rest.body_read_timeout_s while sending its request.

    A ``NoMoreData`` for gunicorn (a client that went away: quiet close), a ``TimeoutError`` for everyone else
    (the app answers it with 408; gunicorn's body drain gives up on it).
    """

    def __init__(self, timeout: float):
        super().__init__(None)
        self.timeout = timeout

    def __str__(self) -> str:
        return f"client silent for more than rest.body_read_timeout_s ({self.timeout:g} s)"


class _Timed:
    """Shared by the plain and the TLS socket classes. ``read_timeout`` is set on a subclass per service."""

    read_timeout: float = 10.0
    timed_out = False
    answered = False
    request: Any = None

    def setblocking(self, flag: bool) -> None:
        if flag:
            self.settimeout(self.read_timeout)  # type: ignore[attr-defined]
        else:
            super().setblocking(False)  # type: ignore[misc]

    def begin(self, request: Any = None) -> None:
        """A new request starts on this connection (a thread took it over)."""
        self.timed_out = False
        self.answered = False
        self.request = request

    def _timeout(self) -> ClientReadTimeout:
        self.timed_out = True
        if self.request is not None:
            self.request.force_close()  # the app's 408 then says Connection: close
        return ClientReadTimeout(self.read_timeout)

    def recv(self, *args: Any) -> bytes:
        try:
            return super().recv(*args)  # type: ignore[misc,no-any-return]
        except TimeoutError:
            raise self._timeout() from None

    def recv_into(self, *args: Any) -> int:
        try:
            return super().recv_into(*args)  # type: ignore[misc,no-any-return]
        except TimeoutError:
            raise self._timeout() from None

    def send(self, *args: Any) -> int:
        self.answered = True
        return super().send(*args)  # type: ignore[misc,no-any-return]

    def sendall(self, *args: Any) -> None:
        self.answered = True
        super().sendall(*args)  # type: ignore[misc]


class TimedSocket(_Timed, socket.socket):
    @classmethod
    def adopt(cls, sock: socket.socket) -> TimedSocket:
        """The same connection (file descriptor, blocking state) as this class; ``sock`` is detached."""
        timeout = sock.gettimeout()
        timed = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        socket.socket.settimeout(timed, timeout)
        return timed


class TimedSSLSocket(_Timed, ssl.SSLSocket):
    handshaken = False

    def do_handshake(self, *args: Any) -> None:
        try:
            super().do_handshake(*args)
        except TimeoutError:
            raise self._timeout() from None
        self.handshaken = True


class MLPackerThreadWorker(ThreadWorker):
    """gthread with per-read timeouts and a thread for every connection (see the module's docstring)."""

    socket_class: type[TimedSocket] = TimedSocket

    def get_thread_pool(self) -> Any:
        return futures.ThreadPoolExecutor(max_workers=max(self.cfg.threads, self.cfg.worker_connections))

    def enqueue_req(self, conn: Any) -> None:
        # A new connection's socket becomes a timed one before any read (the TLS handshake included).
        sock = conn.sock
        if isinstance(sock, socket.socket) and not isinstance(sock, (_Timed, ssl.SSLSocket)):
            conn.sock = self.socket_class.adopt(conn.sock)
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        sock = conn.sock
        if isinstance(sock, _Timed):
            sock.begin()
        result = super().handle(conn)
        sock = conn.sock  # the TLS socket, once wrapped
        if isinstance(sock, _Timed) and sock.timed_out and not sock.answered:
            self._answer_timeout(sock)
        if result is False:
            _linger(sock)
        return result

    def handle_request(self, req: Any, conn: Any) -> Any:
        sock = conn.sock
        if isinstance(sock, _Timed):
            sock.begin(req)
        return super().handle_request(req, conn)

    def _answer_timeout(self, sock: _Timed) -> None:
        """408 to a client that stalled before it had an answer (not during a TLS handshake: no HTTP yet)."""
        if isinstance(sock, ssl.SSLSocket) and not getattr(sock, "handshaken", False):
            return
        body = TIMEOUT_BODY % int(sock.read_timeout)
        head = (
            "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        try:
            sock.sendall(head + body)
        except OSError:
            pass  # gone meanwhile
        self.log.info("closed a connection from a client silent for %g s", sock.read_timeout)


def _linger(sock: Any, timeout: float = LINGER_S, max_drain: int = 65536) -> None:
    """gunicorn's graceful close (RFC 9112 9.6: FIN, then read what the client still sends until it closes),
    done here in the connection's thread with the same bounds.

    gunicorn >= 23 lingers in the worker's main loop (up to 2 s a connection), which also accepts connections
    and hands them to threads: a client that never closes its end stalled it for every other client (16
    stalled clients cut at once kept health probes waiting 16 s). Read-shut afterwards, the socket gives the
    main loop's own linger an immediate end of file.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
    except (OSError, ValueError):
        return  # gone, or closed already
    deadline = time.monotonic() + timeout
    drained = 0
    while drained < max_drain:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            socket.socket.settimeout(sock, remaining)
            data = sock.recv(4096)
        except (OSError, ValueError):  # the client's silence (a timeout) included
            break
        if not data:
            break
        drained += len(data)
    try:
        sock.shutdown(socket.SHUT_RD)
    except (OSError, ValueError):
        pass


def configure(read_timeout: float) -> type[TimedSSLSocket]:
    """Set the service's rest.body_read_timeout_s (in the master: the workers it forks inherit it) and return
    the TLS socket class for the server's context (``SSLContext.sslsocket_class``).

    Module state rather than a class per service: gunicorn < 27 takes ``worker_class`` only as a string.
    """
    TimedSocket.read_timeout = TimedSSLSocket.read_timeout = float(read_timeout)
    return TimedSSLSocket
