"""Pipelined HTTP/1.1: the responses to the requests of one read leave in one
write, for both interfaces, and nothing gathered waits on what may block:
a streamed body, a request body still to come, sendfile.

One write is counted from the client's side: on loopback every write of the
server's (TCP_NODELAY, under the MSS) arrives as one data segment, and the
client socket's TCP_INFO counts the data segments it received
(tcpi_data_segs_in, Linux 4.6+)."""

from __future__ import annotations

import socket
import struct

import pytest
from conftest import Client, connect, request

APPS = {"asgi": "http_apps:asgi", "wsgi": "http_apps:wsgi"}

# struct tcp_info (linux/tcp.h): tcpi_data_segs_in follows the 8 bytes of
# u8 fields, 24 u32 fields, 4 u64 fields and 4 more u32 fields.
DATA_SEGS_IN = 152


@pytest.fixture(params=["asgi", "wsgi"])
def app(request) -> str:
    return APPS[request.param]


def get(path: str, *extra: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: test", *extra]) + "\r\n\r\n").encode()


def data_segments_in(c: Client) -> int:
    info = c.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    if len(info) < DATA_SEGS_IN + 4:
        pytest.fail("TCP_INFO has no tcpi_data_segs_in: these tests need Linux 4.6 or later")
    return struct.unpack_from("I", info, DATA_SEGS_IN)[0]


def test_pipelined_responses_leave_in_one_write(serve, app):
    server = serve(app)
    with connect(server) as c:
        for batch in range(3):
            paths = [f"/p/{batch}-{i}" for i in range(12)]
            before = data_segments_in(c)
            c.send(b"".join(get(p) for p in paths))  # one segment: one read
            for p in paths:
                status, headers, body = c.response()
                assert (status, body) == (200, f"GET {p}".encode())
                assert "close" not in headers.get("connection", "")
            assert c.buf == b""
            assert data_segments_in(c) - before == 1, f"batch {batch}: not one write"


def test_batch_over_the_gathering_limit_keeps_its_order(serve, app):
    """Responses past 64 KiB of gathered output go out as the limit is
    reached, in order, and the batch still ends with every response."""
    server = serve(app)
    sizes = [3000, 70000, 10, 40000, 40000, 5, 66000, 1]
    with connect(server) as c:
        c.send(b"".join(get(f"/fixed?n={n}") for n in sizes))
        for n in sizes:
            status, _, body = c.response()
            assert (status, len(body)) == (200, n)
            assert body == b"x" * n
        c.send(get("/p/after"))
        assert c.response()[2] == b"GET /p/after"


def test_streamed_body_behind_pipelined_requests_is_not_held(serve, app):
    """A body of unknown length whose app waits between pieces: the earlier
    response and the first piece reach the client while the app waits."""
    server = serve(app)
    with connect(server, timeout=8) as c:
        c.send(get("/p/before") + get("/trickle") + get("/p/after"))
        assert c.response()[2] == b"GET /p/before"
        status, headers, _ = c.head()
        assert status == 200 and headers.get("transfer-encoding") == "chunked"
        while b"first" not in c.buf:  # times out if the piece is held
            c.buf += c.sock.recv(65536)
        assert request(server, get("/open"))[2] == b"open"
        body = c._chunked()
        assert body == b"firstsecond"
        assert c.response()[2] == b"GET /p/after"


def test_gathered_responses_leave_before_waiting_for_a_body(serve, app):
    """The last request of a read has only part of its body: the responses
    before it go out while the server waits for the rest (the client may
    wait for them before it sends more)."""
    server = serve(app)
    head = b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n"
    with connect(server, timeout=8) as c:
        c.send(get("/p/one") + get("/p/two") + head + b"01234")
        assert c.response()[2] == b"GET /p/one"
        assert c.response()[2] == b"GET /p/two"
        c.send(b"56789")
        status, _, body = c.response()
        assert (status, body) == (200, b"0123456789")


def test_gathered_responses_before_a_100_continue(serve, app):
    """Expect: 100-continue behind pipelined requests: the earlier responses
    and the 100 go out before the server waits for the body."""
    server = serve(app)
    head = b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    with connect(server, timeout=8) as c:
        c.send(get("/p/one") + head)
        assert c.response()[2] == b"GET /p/one"
        assert c.head()[0] == 100
        c.send(b"body")
        status, _, body = c.response()
        assert (status, body) == (200, b"body")


def test_sendfile_behind_pipelined_requests(serve, tmp_path):
    """sendfile() writes to the socket itself: what was gathered before it
    goes first."""
    data = bytes(range(256)) * 512
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    server = serve("core_defect_apps:wsgi")
    with connect(server) as c:
        c.send(get("/p/a") + get(f"/file?path={path}") + get("/p/b"))
        assert c.response()[2] == b"GET /p/a"
        status, _, body = c.response()
        assert status == 200 and body == data
        assert c.response()[2] == b"GET /p/b"


def test_close_and_error_mid_pipeline_after_gathered_responses(serve, app):
    """Gathered responses still precede a Connection: close answer and a
    400, and nothing after either is answered."""
    server = serve(app)
    with connect(server) as c:
        c.send(get("/p/1") + get("/p/2", "Connection: close") + get("/p/3"))
        assert c.response()[2] == b"GET /p/1"
        _, headers, body = c.response()
        assert body == b"GET /p/2" and headers.get("connection") == "close"
        assert c.read_to_eof() == b""
    with connect(server) as c:
        c.send(get("/p/1") + get("/p/2") + b"GET / HTTP/1.1\r\nHost: test\r\nbad\r\n\r\n")
        assert c.response()[2] == b"GET /p/1"
        assert c.response()[2] == b"GET /p/2"
        status, headers, _ = c.response()
        assert status == 400 and headers.get("connection") == "close"
        assert c.read_to_eof() == b""
