"""How the REST worker routes a readable connection (mlpacker_runtime/rest/worker.py, ``route``).

Only a POST that has fully arrived may take one of the rest.threads predict threads: anything that may still
need a read from the client goes to the connection pool, where a stalled client holds only its own thread.
The pools themselves are exercised against a real gunicorn in test_rest_slow_clients.py.
"""

from __future__ import annotations

import socket

import pytest
from mlpacker_runtime.rest.worker import Pool, TimedSocket, route

BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
HEAD = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def post(body: bytes = BODY, headers: bytes = b"Content-Length: %d\r\n" % len(BODY)) -> bytes:
    return HEAD + headers + b"\r\n" + body


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (post(), Pool.PREDICT),
        (post() + b"GET /health/live HTTP/1.1\r\n", Pool.PREDICT),  # pipelined: the first request decides
        (post(headers=b"content-length: %d\r\n" % len(BODY)), Pool.PREDICT),  # header names are case-blind
        (b"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", Pool.PREDICT),
        (post(body=BODY[:-1]), Pool.CONNECTION),  # the body's last byte is still on its way
        (HEAD + b"Content-Length: 37\r\n", Pool.CONNECTION),  # the head is not complete
        (post(headers=b"Transfer-Encoding: chunked\r\n", body=b"5\r\nhello\r\n0\r\n\r\n"), Pool.CONNECTION),
        (post(headers=b"Content-Length: 37\r\nExpect: 100-continue\r\n", body=b""), Pool.CONNECTION),
        (post(headers=b"Content-Length: 37\r\nContent-Length: 37\r\n"), Pool.CONNECTION),  # gunicorn refuses
        (post(headers=b"Content-Length: -1\r\n"), Pool.CONNECTION),
        (post(headers=b"Content-Length : 37\r\n"), Pool.CONNECTION),  # whitespace before the colon
        (post(headers=b"X-No-Colon\r\n"), Pool.CONNECTION),
        (HEAD + b"\r\n", Pool.CONNECTION),  # a POST without a length: the parser answers it
        (b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n", Pool.CONNECTION),  # probes never wait for predicts
        (b"GET /metrics HTTP/1.1\r\n\r\n", Pool.CONNECTION),
        (b"\x16\x03\x01\x02\x00\x01", Pool.CONNECTION),  # a TLS ClientHello on the plain port
    ],
    ids=lambda value: value.name if isinstance(value, Pool) else None,
)
def test_only_a_post_that_has_fully_arrived_takes_a_predict_thread(data: bytes, expected: Pool) -> None:
    assert route(data) is expected


@pytest.mark.parametrize(
    ("new_connection", "tls", "readable", "expected"),
    [
        (True, False, True, Pool.WAIT),  # accepted, nothing sent yet: the poller waits, no thread
        (True, False, False, Pool.CONNECTION),  # closed at once: the reader sees the end of file
        (True, True, True, Pool.CONNECTION),  # a TLS handshake takes round trips: its own thread
        (False, False, False, Pool.CONNECTION),  # a kept-alive connection the client closed
        (False, True, True, Pool.CONNECTION),
    ],
)
def test_a_connection_with_nothing_to_read(
    new_connection: bool, tls: bool, readable: bool, expected: Pool
) -> None:
    assert route(b"", new_connection=new_connection, tls=tls, readable=readable) is expected


def test_bytes_read_ahead_are_handed_out_first_then_the_socket_is_read() -> None:
    left, right = socket.socketpair()
    with left, right:
        timed = TimedSocket.adopt(left)
        with timed:
            right.sendall(b"0123456789")
            assert timed.read_ahead(limit=4)
            assert timed.read_ahead_bytes == b"0123"
            assert timed.read_ahead()  # nothing more to wait for: returns at once
            assert timed.read_ahead_bytes == b"0123456789"
            assert timed.recv(3) == b"012"
            buffer = bytearray(16)
            assert timed.recv_into(buffer, 4) == 4 and bytes(buffer[:4]) == b"3456"
            right.sendall(b"abc")
            assert timed.recv(100) == b"789"  # what was read ahead first, never mixed with a new read
            timed.setblocking(True)  # as gunicorn does before it parses: the read timeout applies again
            assert timed.gettimeout() == TimedSocket.read_timeout
            assert timed.recv(100) == b"abc"
            right.close()
            assert not timed.read_ahead()  # closed by the client
