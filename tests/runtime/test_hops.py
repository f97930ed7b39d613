"""The next-hop HTTP client against real TCP servers answering in each framing HTTP/1.1 allows.

The gunicorn tests cover Content-Length answers, keep-alive reuse, timeouts and failover; these cover
what gunicorn does not send but a proxy in front of a replica may: chunked and close-delimited bodies,
interim 100 answers, and answers that are not HTTP at all.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from mlpacker_runtime.hops import HopError, NextHops

Answer = Callable[[bytes], bytes]


class RawServer:
    """A loopback TCP server that answers each request with bytes produced from it, then maybe closes."""

    def __init__(self, answer: Answer, close_after: bool = False):
        self.answer = answer
        self.close_after = close_after
        self.requests: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/predict"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
                head, sep, rest = buffer.partition(b"\r\n\r\n")
                if not sep:
                    continue
                length = int(
                    next(
                        line.split(b":", 1)[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    )
                )
                if len(rest) < length:
                    continue
                self.requests.append(head + sep + rest[:length])
                buffer = rest[length:]
                conn.sendall(self.answer(rest[:length]))
                if self.close_after:
                    return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def servers() -> Iterator[list[RawServer]]:
    started: list[RawServer] = []
    yield started
    for server in started:
        server.close()


def serve(servers: list[RawServer], answer: Answer, close_after: bool = False) -> RawServer:
    server = RawServer(answer, close_after)
    servers.append(server)
    return server


def test_content_length_answers_reuse_one_connection(servers: list[RawServer]) -> None:
    def echo(body: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
            len(body),
            body,
        )

    server = serve(servers, echo)
    hops = NextHops([server.url], timeout_s=5)
    for value in range(3):
        answer = hops.post({"instances": [[value]]})
        assert (answer.status, answer.body) == (200, {"instances": [[value]]})
    assert server.connections == 1
    head = server.requests[0].split(b"\r\n\r\n")[0].decode()
    assert head.startswith("POST /predict HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.url.split(':')[2].split('/')[0]}" in head
    hops.close()


def test_chunked_answer_with_interim_100(servers: list[RawServer]) -> None:
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'6;ext=1\r\n{"pred\r\nf\r\nictions":[1,2]}\r\n0\r\nX-Trailer: t\r\n\r\n'
    )
    server = serve(servers, lambda body: answer)
    hops = NextHops([server.url], timeout_s=5)
    for _ in range(2):  # the connection stays usable after a chunked body
        result = hops.post({"instances": [[1]]})
        assert (result.status, result.body) == (200, {"predictions": [1, 2]})
    assert server.connections == 1
    hops.close()


def test_close_delimited_answer_then_a_fresh_connection(servers: list[RawServer]) -> None:
    server = serve(servers, lambda body: b'HTTP/1.0 503 Busy\r\n\r\n{"error":"busy"}', close_after=True)
    hops = NextHops([server.url], timeout_s=5)
    for _ in range(2):
        result = hops.post({"instances": [[1]]})
        assert (result.status, result.body, result.raw) == (503, {"error": "busy"}, b'{"error":"busy"}')
    assert server.connections == 2


def test_an_answer_that_is_not_http_names_the_replica(servers: list[RawServer]) -> None:
    server = serve(servers, lambda body: b"SSH-2.0-OpenSSH_9.2\r\n\r\n", close_after=True)
    hops = NextHops([server.url], timeout_s=5)
    with pytest.raises(HopError, match=r"not an HTTP/1\.x status line: 'SSH-2\.0-OpenSSH_9\.2'") as caught:
        hops.post({"instances": [[1]]})
    assert server.url in str(caught.value)
