"""Timeouts and flow control over real sockets: idle keep-alive connections,
heads that trickle or never come, bodies that stop halfway, clients that stop
reading a long response, and uploads to an app that does not read them.

The timer resolution is 0.1 s and the machine is shared, so the bounds are
generous; each asserts both that the event happens and that it does not
happen early."""

from __future__ import annotations

import contextlib
import hashlib
import select
import socket
import time

import pytest
from conftest import Client, connect, request

APPS = {"asgi": "http_apps:asgi", "wsgi": "http_apps:wsgi"}
CHUNK = 65536


@pytest.fixture(params=["asgi", "wsgi"])
def app(request) -> str:
    return APPS[request.param]


def get(path: str, *extra: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: test", *extra]) + "\r\n\r\n").encode()


def assert_serves(server) -> None:
    status, _, body = request(server, get("/p/alive"))
    assert (status, body) == (200, b"GET /p/alive")


def time_to_close(c: Client, limit: float) -> float | None:
    """Seconds until the server closes the connection (bytes received meanwhile
    go to c.buf), or None if it is still open after `limit`."""
    start = time.monotonic()
    return time.monotonic() - start if c.closed(limit) else None


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


# ---------------------------------------------------------------- keep-alive


def test_idle_keep_alive_connection_is_closed(serve, app):
    server = serve(app, "--timeout-keep-alive", "0.5")
    with connect(server) as c:
        c.send(get("/p/1"))
        assert c.response()[2] == b"GET /p/1"
        elapsed = time_to_close(c, 3)
        assert elapsed is not None, "idle keep-alive connection never closed"
        assert 0.3 <= elapsed <= 1.5, elapsed
        assert c.buf == b"", "an idle connection is closed without a response"


def test_keep_alive_timer_restarts_with_each_request(serve, app):
    server = serve(app, "--timeout-keep-alive", "0.6")
    with connect(server) as c:
        for i in range(6):  # 6 x 0.3 s: three times the timeout in all
            c.send(get(f"/p/{i}"))
            assert c.response()[2] == f"GET /p/{i}".encode()
            time.sleep(0.3)
        c.send(get("/p/last"))
        assert c.response()[2] == b"GET /p/last"


def test_keep_alive_timeout_does_not_cut_a_slow_app(serve, app):
    """The keep-alive timer is for idle connections, not for running requests."""
    server = serve(app, "--timeout-keep-alive", "0.3")
    with connect(server) as c:
        c.send(get("/p/slow?sleep=1000"))
        status, _, body = c.response()
        assert (status, body) == (200, b"GET /p/slow?sleep=1000")


# ---------------------------------------------------------------- request head


def trickle(c: Client, data: bytes, interval: float, limit: float) -> tuple[float, bytes]:
    """Send data one byte per interval while watching for the server's answer.
    Returns the seconds until the connection closed and what it sent."""
    start = time.monotonic()
    c.sock.setblocking(False)
    received, i = b"", 0
    try:
        while time.monotonic() - start < limit:
            if i < len(data):
                try:
                    c.sock.send(data[i : i + 1])
                    i += 1
                except (BrokenPipeError, ConnectionResetError):
                    pass
                except BlockingIOError:
                    pass
            ready, _, _ = select.select([c.sock], [], [], interval)
            if ready:
                try:
                    chunk = c.sock.recv(65536)
                except ConnectionResetError:
                    return time.monotonic() - start, received
                if not chunk:
                    return time.monotonic() - start, received
                received += chunk
    finally:
        c.sock.setblocking(True)
        c.sock.settimeout(5)
    raise AssertionError(f"still open after {limit} s; received {received!r}")


SLOW_HEAD = b"GET /p/slow HTTP/1.1\r\nHost: test\r\nX-Pad: " + b"a" * 200 + b"\r\n\r\n"


def test_trickled_head_cannot_outlast_the_head_timeout(serve, app):
    server = serve(app, "--timeout-request-head", "1", "--timeout-keep-alive", "5")
    with connect(server) as c:
        elapsed, received = trickle(c, SLOW_HEAD, 0.1, 4)
    assert 0.8 <= elapsed <= 2.2, elapsed
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert b"\r\nConnection: close\r\n" in received
    assert_serves(server)


def test_head_timeout_starts_at_the_first_byte_of_a_later_head(serve, app):
    """On a kept-alive connection the head deadline runs from the first byte of
    the next head, not from the end of the previous response."""
    server = serve(app, "--timeout-request-head", "1", "--timeout-keep-alive", "1")
    with connect(server) as c:
        c.send(get("/p/1"))
        assert c.response()[2] == b"GET /p/1"
        time.sleep(0.7)  # idle, within the keep-alive timeout
        elapsed, received = trickle(c, SLOW_HEAD, 0.1, 4)
    # closed by the head deadline (1 s after its first byte), with a 408,
    # not by the keep-alive deadline 0.3 s into the head
    assert 0.8 <= elapsed <= 2.2, elapsed
    assert received.startswith(b"HTTP/1.1 408 "), received


def test_partial_head_gets_408(serve, app):
    server = serve(app, "--timeout-request-head", "0.5")
    with connect(server) as c:
        c.send(b"GET /p/x HTTP/1.1\r\nHost: te")
        elapsed = time_to_close(c, 3)
        assert elapsed is not None
        assert 0.3 <= elapsed <= 1.5, elapsed
        assert c.buf.startswith(b"HTTP/1.1 408 "), c.buf
        assert b"\r\nConnection: close\r\n" in c.buf


def test_silent_new_connection_is_closed(serve, app):
    server = serve(app, "--timeout-request-head", "0.5", "--timeout-keep-alive", "5")
    with connect(server) as c:
        elapsed = time_to_close(c, 3)
        assert elapsed is not None, "a connection that sends nothing is kept forever"
        assert 0.3 <= elapsed <= 1.5, elapsed
        assert c.buf == b"", "nothing was asked: nothing is answered"
    assert_serves(server)


def test_many_silent_connections_do_not_block_others(serve, app):
    server = serve(app, "--timeout-request-head", "1")
    idle = [socket.create_connection((server.host, server.port)) for _ in range(50)]
    try:
        assert_serves(server)
    finally:
        for s in idle:
            s.close()


# ---------------------------------------------------------------- request body


def test_stalled_body_is_dropped(serve, app):
    server = serve(app, "--timeout-request-body", "0.5")
    with connect(server) as c:
        c.send(b"POST /watch HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n" + b"x" * 300)
        elapsed = time_to_close(c, 4)
        assert elapsed is not None, "the server waits forever for the rest of the body"
        assert 0.3 <= elapsed <= 2.0, elapsed
        # the server may say 408 before closing; it must not answer as if complete
        assert c.buf == b"" or c.buf.startswith(b"HTTP/1.1 408 "), c.buf
    if app.endswith("asgi"):
        server.wait_log("APP-SAW-DISCONNECT after 300")
    else:
        server.wait_log("APP-READ-ERROR")
    assert "APP-BODY-COMPLETE" not in server.log()
    assert_serves(server)


def test_stalled_chunked_body_is_dropped(serve, app):
    server = serve(app, "--timeout-request-body", "0.5")
    with connect(server) as c:
        c.send(
            b"POST /watch HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"a\r\n0123456789\r\n"
        )
        elapsed = time_to_close(c, 4)
        assert elapsed is not None
        assert 0.3 <= elapsed <= 2.0, elapsed
    if app.endswith("asgi"):
        server.wait_log("APP-SAW-DISCONNECT after 10")
    else:
        server.wait_log("APP-READ-ERROR")


def test_body_timeout_restarts_on_progress(serve, app):
    server = serve(app, "--timeout-request-body", "0.5")
    with connect(server) as c:
        c.send(b"POST /watch HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(5):  # 5 x 0.3 s: the whole upload takes three timeouts
            c.send(b"y" * 200)
            time.sleep(0.3)
        status, _, body = c.response()
        assert (status, body) == (200, b"1000")


def test_body_timeout_does_not_cut_a_slow_app(serve, app):
    """The body timer runs only while the server waits for the client."""
    server = serve(app, "--timeout-request-body", "0.3")
    with connect(server) as c:
        c.send(b"POST /echo?delay=1 HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello")
        status, _, body = c.response()
        assert (status, body) == (200, b"hello")


# ---------------------------------------------------------------- output backpressure


def read_stream_blocks(c: Client, first: int, count: int) -> int:
    """Read `count` 64 KiB blocks of /stream's chunked body, checking that
    block k is filled with byte k % 256. Returns the next block number."""
    parts, got = [], 0
    want = count * CHUNK
    try:
        while got < want:
            size = int(c._line(), 16)
            assert size > 0, "the stream ended early"
            c._need(size + 2)
            parts.append(c.buf[:size])
            got += size
            c.buf = c.buf[size + 2 :]
    except ConnectionError:
        raise AssertionError(
            f"the server closed the stream at block {first + got // CHUNK}"
        ) from None
    data = b"".join(parts)
    for k in range(count):
        block = data[k * CHUNK : (k + 1) * CHUNK]
        assert block == bytes([(first + k) % 256]) * CHUNK, f"block {first + k} is wrong"
    assert len(data) == want, "chunks do not line up with the app's 64 KiB sends"
    return first + count


def progress(server) -> int:
    status, _, body = request(server, get("/progress"))
    assert status == 200
    return int(body)


def test_stalled_reader_does_not_grow_memory(serve, app):
    server = serve(app, "--workers", "0")  # the pid measured is the one serving
    pid = server.proc.pid
    assert_serves(server)
    baseline = rss_kib(pid)
    with connect(server) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        c.send(get("/stream?chunks=16384"))  # 1 GiB
        status, headers, _ = c.head()
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        block = read_stream_blocks(c, 0, 4)
        # stop reading: socket buffers fill, then the app must be held back
        time.sleep(0.6)
        samples, counts = [], []
        for _ in range(8):
            samples.append(rss_kib(pid))
            counts.append(progress(server))
            time.sleep(0.2)
        growth_mib = (max(samples) - baseline) / 1024
        assert growth_mib < 30, f"RSS grew by {growth_mib:.0f} MiB while the client was stalled"
        assert counts[-1] == counts[0], f"the app kept producing: {counts}"
        assert counts[-1] < 1000, "1000 x 64 KiB handed over while nobody reads"
        # the client reads again: the stream resumes where it stopped
        block = read_stream_blocks(c, block, 300)
        assert progress(server) > counts[-1]
    assert_serves(server)


def test_slow_reader_is_not_cut_by_the_head_timeout(serve, app):
    """A long download to a client slower than the app is governed by
    --timeout-send (time without progress), not by the head deadline."""
    server = serve(app, "--timeout-request-head", "0.5", "--timeout-send", "10")
    with connect(server) as c:
        c.send(get("/stream?chunks=16384"))
        assert c.head()[0] == 200
        block = read_stream_blocks(c, 0, 2)
        time.sleep(1.2)  # stalled past the head timeout, well within the send timeout
        block = read_stream_blocks(c, block, 50)
        time.sleep(0.5)
        read_stream_blocks(c, block, 50)


def test_send_timeout_drops_a_client_that_stops_reading(serve, app):
    server = serve(app, "--timeout-send", "0.5")
    with connect(server) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        c.send(get("/stream?chunks=16384"))
        assert c.head()[0] == 200
        time.sleep(2.5)  # never read: the server gives up after ~0.5 s without progress
        c.sock.settimeout(2)
        received = 0
        closed = False
        with contextlib.suppress(ConnectionResetError):
            while received < 200 * 1024 * 1024:
                chunk = c.sock.recv(1 << 20)
                if not chunk:
                    closed = True
                    break
                received += len(chunk)
        if not closed:
            closed = received < 200 * 1024 * 1024
        assert closed, "the server still sends to a client that stopped reading"
        assert received < 64 * 1024 * 1024, received
    assert_serves(server)


# ---------------------------------------------------------------- input flow control


def send_until_blocked(sock: socket.socket, data: memoryview, stall: float) -> int:
    """Send until the peer has taken nothing for `stall` seconds; bytes sent."""
    sock.setblocking(False)
    sent = 0
    try:
        while sent < len(data):
            _, writable, _ = select.select([], [sock], [], stall)
            if not writable:
                break
            try:
                sent += sock.send(data[sent : sent + CHUNK])
            except BlockingIOError:
                continue
    finally:
        sock.setblocking(True)
        sock.settimeout(5)
    return sent


def test_unread_upload_is_flow_controlled(serve, app):
    server = serve(app, "--workers", "0")  # the pid measured is the one serving
    pid = server.proc.pid
    assert_serves(server)
    baseline = rss_kib(pid)
    size = 48 * 1024 * 1024
    payload = memoryview(bytes(range(256)) * (size // 256))
    with connect(server) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
        c.send(f"POST /gated HTTP/1.1\r\nHost: test\r\nContent-Length: {size}\r\n\r\n".encode())
        sent = send_until_blocked(c.sock, payload, 1.0)
        assert sent < size // 2, f"the server took {sent} bytes the app never asked for"
        growth_mib = (rss_kib(pid) - baseline) / 1024
        assert growth_mib < 30, f"RSS grew by {growth_mib:.0f} MiB buffering an unread body"
        # the app starts reading: the rest flows and all of it arrives intact
        assert request(server, get("/open"))[2] == b"open"
        c.sock.sendall(payload[sent:])
        status, _, body = c.response()
        assert status == 200
        assert body == f"{size} {hashlib.sha256(payload).hexdigest()}".encode()
