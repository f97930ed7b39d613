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
* Only a request that has fully arrived takes one of the ``threads`` that run stages. The worker's main loop
  reads what a readable connection has sent without waiting (:meth:`_Timed.read_ahead`) and routes it
  (:func:`route`): a ``POST`` whose head and whole ``Content-Length`` body are there goes to the predict pool
  (``rest.threads`` threads, as stock gthread: no more threads competing for the GIL than can do useful work);
  anything else (a request still arriving, a new TLS connection's handshake, a health probe, ``/metrics``)
  goes to the connection pool, which has a thread for every connection the worker accepts
  (``rest.max_connections``), so it never waits for a thread another connection holds: a stalled client
  blocks only its own thread there, and a health probe is answered whatever the predicts and the other
  connections do. A new connection that has sent nothing yet waits in the main loop's poller, not in a
  thread. ``rest.threads`` still bounds the requests that run their stages at once (a semaphore in the app:
  a request that arrived in pieces runs its stages from the connection pool). Why threads and not a separate
  health listener: probes (the deploy's health gate, the container's HEALTHCHECK, load balancers) use the
  service's own port, and a separate listener would miss the very failure a probe is for (the service's
  port not answering). A thread blocked in a read costs no CPU and little memory; connections beyond
  ``max_connections`` wait in the kernel's backlog.
* A closing connection's linger (gunicorn's graceful close) runs in its own thread, not in the worker's
  main loop (see :func:`_linger`).

What it does not do: a client that keeps sending a byte just often enough stays connected (the timeout is
per read, as nginx's client_body_timeout), holding one connection slot, not a predict slot; limiting
connections per client address is a firewall's or a proxy's job.
"""

from __future__ import annotations

import enum
import selectors
import socket
import ssl
import time
from concurrent import futures
from functools import partial
from typing import Any

from gunicorn.http.errors import NoMoreData
from gunicorn.workers.gthread import ThreadWorker

LINGER_S = 2.0  # as gunicorn's close_graceful
READ_AHEAD_BYTES = 65536  # what the main loop reads of a request before routing it (a 1,000-row body fits)
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
    read_ahead_bytes = b""  # read by the main loop (read_ahead), handed out first by recv

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

    def read_ahead(self, limit: int = READ_AHEAD_BYTES) -> bool:
        """Read what the client has sent, without waiting, up to ``limit`` bytes; recv hands it out first.

        False when the connection is closed or failed (recv then tells its reader how). The socket is left
        non-blocking: whoever reads next sets it blocking (with the read timeout) first, as gunicorn does.
        """
        if self.gettimeout() != 0.0:  # type: ignore[attr-defined]  # (from the poller it is non-blocking)
            socket.socket.setblocking(self, False)  # type: ignore[arg-type]
        plain = not isinstance(self, ssl.SSLSocket)
        while len(self.read_ahead_bytes) < limit:
            wanted = limit - len(self.read_ahead_bytes)
            try:
                data = super().recv(wanted)  # type: ignore[misc]
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return True  # all there is, for now
            except OSError:
                return False  # reset, TLS alert...: the reader gets it again, or an end of file
            if not data:
                return False
            self.read_ahead_bytes += data
            if plain and len(data) < wanted:
                # A plain socket's short read took all the kernel held: asking again would only fail
                # (a syscall and an exception per request). A TLS read stops at a record's end instead.
                return True
        return True

    def recv(self, bufsize: int, *args: Any) -> bytes:
        if self.read_ahead_bytes:
            data, self.read_ahead_bytes = self.read_ahead_bytes[:bufsize], self.read_ahead_bytes[bufsize:]
            return data
        try:
            return super().recv(bufsize, *args)  # type: ignore[misc,no-any-return]
        except TimeoutError:
            raise self._timeout() from None

    def recv_into(self, buffer: Any, nbytes: int = 0, *args: Any) -> int:
        if self.read_ahead_bytes:
            size = min(nbytes or len(buffer), len(self.read_ahead_bytes))
            memoryview(buffer)[:size] = self.read_ahead_bytes[:size]
            self.read_ahead_bytes = self.read_ahead_bytes[size:]
            return size
        try:
            return super().recv_into(buffer, nbytes, *args)  # type: ignore[misc,no-any-return]
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


class Pool(enum.Enum):
    """Where the worker's main loop sends a readable connection (see :func:`route`)."""

    PREDICT = "a whole POST request: a predict thread (rest.threads)"
    CONNECTION = "anything else: the connection's own thread (rest.max_connections)"
    WAIT = "nothing sent yet: the poller, until it sends something"


def route(data: bytes, *, new_connection: bool = False, tls: bool = False, readable: bool = True) -> Pool:
    """Which pool a connection goes to, given the bytes of its next request held so far (``data``).

    PREDICT only for what certainly needs no more reads: a ``POST`` request whose head is complete and whose
    body, of a plain ``Content-Length``, has fully arrived. Anything unusual (chunked, ``Expect``, a repeated
    or odd length, a header gunicorn may refuse) goes to the connection pool, where gunicorn's parser answers
    it as always. ``readable`` False: the connection was closed or failed while read ahead.
    """
    if not data:
        if new_connection and not tls and readable:
            return Pool.WAIT
        return Pool.CONNECTION  # a TLS handshake (no HTTP yet), or the reader sees the close
    end = data.find(b"\r\n\r\n")
    if end < 0 or not data.startswith(b"POST /"):
        return Pool.CONNECTION
    length = None
    for line in data[:end].split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if not colon or name != name.strip():
            return Pool.CONNECTION
        name = name.lower()
        if name == b"content-length":
            value = value.strip()
            if length is not None or not value.isdigit():
                return Pool.CONNECTION
            length = int(value)
        elif name in (b"transfer-encoding", b"expect"):
            return Pool.CONNECTION
    if length is None or len(data) - (end + 4) < length:
        return Pool.CONNECTION
    return Pool.PREDICT


class MLPackerThreadWorker(ThreadWorker):
    """gthread with per-read timeouts, a predict pool for requests that have arrived and a connection pool
    with a thread for every connection (see the module's docstring)."""

    socket_class: type[TimedSocket] = TimedSocket
    connection_pool: futures.ThreadPoolExecutor

    def init_process(self) -> None:
        self.connection_pool = futures.ThreadPoolExecutor(
            max_workers=max(self.cfg.threads, self.cfg.worker_connections)
        )
        super().init_process()

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.connection_pool.shutdown(wait=False)

    def handle_quit(self, sig: Any, frame: Any) -> None:
        self.connection_pool.shutdown(wait=False)
        super().handle_quit(sig, frame)

    def enqueue_req(self, conn: Any) -> None:
        """Route a readable connection (in the main loop: accepted, readable again, or pipelined)."""
        sock = conn.sock
        # A new connection's socket becomes a timed one before any read (the TLS handshake included).
        if isinstance(sock, socket.socket) and not isinstance(sock, (_Timed, ssl.SSLSocket)):
            sock = conn.sock = self.socket_class.adopt(sock)
        pool = Pool.CONNECTION
        if isinstance(sock, _Timed):
            tls = isinstance(sock, ssl.SSLSocket) or (self.cfg.is_ssl and not conn.initialized)
            readable = True
            if not tls or conn.initialized:  # no reading before a TLS handshake
                readable = sock.read_ahead()
            pipelined = conn.parser.unreader.buf.getvalue() if conn.parser is not None else b""
            data = pipelined + sock.read_ahead_bytes
            pool = route(data, new_connection=not conn.initialized, tls=tls, readable=readable)
            if data:
                conn.data_ready = True  # gunicorn's handle must not wait for the socket: the bytes are here
        if pool is Pool.WAIT:
            # As gunicorn's own deferral: the poller hands it back when it sends; closed after keepalive.
            conn.timeout = time.monotonic() + self.cfg.keepalive
            self.pending_conns.append(conn)
            readable_again = partial(self.on_pending_socket_readable, conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, readable_again)
            return
        executor = self.tpool if pool is Pool.PREDICT else self.connection_pool
        done = executor.submit(self.handle, conn)
        done.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

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
