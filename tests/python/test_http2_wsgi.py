"""WSGI over HTTP/2: the streams of one connection run side by side.

Each stream's app runs on a pool thread of its own (pool.c, Jobs), as requests
on separate connections do, so a view that blocks holds up its own stream only:
the others are answered meanwhile, their bodies flow both ways, and a drain
reaches the connection while a view runs. The clients are real HTTP/2 clients
over real sockets: the raw frame client of h2_support and the `h2` library,
which keeps both directions' flow-control windows.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from conftest import APPS
from h2_support import (
    ACK,
    DATA,
    END_STREAM,
    GOAWAY,
    SETTINGS,
    h2_connect,
    h2_server,
    headers_frame,
    oneloop_only,
    request_headers,
)

sys.path.insert(0, str(APPS))
from h2_apps import pattern

pytestmark = oneloop_only
APP = "h2_apps:wsgi_app"


@pytest.fixture
def server(tmp_path):
    def start(*options: str):
        return h2_server(tmp_path, APP, *options)

    return start


def test_a_blocked_view_holds_up_only_its_own_stream(server):
    """Stream 1's view blocks until stream 5 releases it; stream 3 is answered
    while it blocks. Run one after the other, stream 3 would wait behind stream 1
    and stream 5 would never run."""
    with server() as s:
        c = h2_connect(s.host, s.port)
        try:
            c.handshake()
            c.request(1, "/hold?name=side-by-side")
            c.request(3, "/")
            head, body = c.response(3, timeout=3)
            assert (head[":status"], body) == ("200", b"wsgi HTTP/2")
            assert not [f for f in c.frames if f.stream == 1], c.frames
            c.request(5, "/release?name=side-by-side")
            assert c.response(5, timeout=3)[1] == b"ok"
            assert c.response(1, timeout=3)[1] == b"released side-by-side"
        finally:
            c.close()


def test_a_body_of_announced_length_ends_its_stream_with_its_last_bytes(server):
    """A WSGI response with Content-Length ends the stream on the DATA frame that
    carries its last bytes, not with an empty DATA frame written after it."""
    with server() as s:
        c = h2_connect(s.host, s.port)
        try:
            c.handshake()
            c.request(1, "/")
            assert c.response(1, timeout=3)[1] == b"wsgi HTTP/2"
            frames = [f for f in c.frames if f.stream == 1 and f.type == DATA]
            assert [(f.payload, f.flags & END_STREAM) for f in frames] == [
                (b"wsgi HTTP/2", END_STREAM)
            ]
        finally:
            c.close()


# struct tcp_info (linux/tcp.h): tcpi_data_segs_in (see test_pipelined_writes.py).
DATA_SEGS_IN = 152


def data_segments_in(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    if len(info) < DATA_SEGS_IN + 4:
        pytest.fail("TCP_INFO has no tcpi_data_segs_in: this test needs Linux 4.6 or later")
    return struct.unpack_from("I", info, DATA_SEGS_IN)[0]


def test_responses_of_streams_that_came_together_leave_together(server):
    """Twelve requests in one read: their views run one after the other on one
    thread, and their twelve responses leave together (counted as the data
    segments the client receives), not in a write each. Together is one write;
    up to three are allowed because a view that the pool sees running past 1 ms
    (a thread preempted on a loaded machine) sends what was gathered before it,
    by design (the next test)."""
    with server() as s:
        c = h2_connect(s.host, s.port)
        try:
            c.handshake()
            assert c.wait(lambda f: f.type == SETTINGS and f.flags & ACK, 3) is not None
            for batch in range(3):
                ids = [1 + 2 * (12 * batch + i) for i in range(12)]
                before = data_segments_in(c.sock)
                c.send(b"".join(headers_frame(i, c.block(request_headers("/"))) for i in ids))
                for i in ids:
                    assert c.response(i, timeout=3)[1] == b"wsgi HTTP/2"
                writes = data_segments_in(c.sock) - before
                assert writes <= 3, f"batch {batch}: {writes} writes for 12 responses"
        finally:
            c.close()


def test_responses_gathered_before_a_blocked_view_are_not_held_by_it(server):
    """Stream 1 is fast, stream 3's view blocks; both came in one read. Stream 1's
    response, gathered to leave with stream 3's, goes as soon as stream 3's view
    is seen to block (the pool hands polling on after 1 ms); a later stream is
    answered meanwhile."""
    with server() as s:
        c = h2_connect(s.host, s.port)
        try:
            c.handshake()
            paths = {1: "/", 3: "/hold?name=gathered&timeout=10"}
            c.send(
                b"".join(headers_frame(i, c.block(request_headers(p))) for i, p in paths.items())
            )
            assert c.response(1, timeout=1)[1] == b"wsgi HTTP/2"
            c.request(5, "/")
            assert c.response(5, timeout=1)[1] == b"wsgi HTTP/2"
            assert not [f for f in c.frames if f.stream == 3], c.frames
            c.request(7, "/release?name=gathered")
            assert c.response(7, timeout=3)[1] == b"ok"
            assert c.response(3, timeout=3)[1] == b"released gathered"
        finally:
            c.close()


class Streams:
    """Requests on one HTTP/2 connection at once, with the `h2` library: request
    bodies are sent as the server's windows allow, interleaved across streams,
    and response bodies acknowledged as they come."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.bodies: dict[int, bytes] = {}
        self.to_send: dict[int, memoryview] = {}
        self.heads: dict[int, dict] = {}
        self.received: dict[int, bytearray] = {}
        self.ended: set[int] = set()

    def request(self, method: str, path: str, body: bytes | None = None) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":path", path), (":scheme", "http")]
        headers.append((":authority", "oneloop.test"))
        self.conn.send_headers(sid, headers, end_stream=body is None)
        if body is not None:
            self.to_send[sid] = memoryview(body)
        self.received[sid] = bytearray()
        return sid

    def _send_bodies(self) -> None:
        for sid, rest in list(self.to_send.items()):
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            n = min(room, len(rest), 16384)
            if n > 0 or not rest:
                self.conn.send_data(sid, rest[:n].tobytes(), end_stream=n == len(rest))
                self.to_send[sid] = rest[n:]
                if n == len(rest):
                    del self.to_send[sid]

    def run(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.ended) < len(self.received):
            self._send_bodies()
            self.sock.sendall(self.conn.data_to_send())
            assert time.monotonic() < deadline, f"unfinished: {set(self.received) - self.ended}"
            self.sock.settimeout(0.05 if self.to_send else max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            assert data, "the server closed the connection"
            for event in self.conn.receive_data(data):
                self._on(event)
            self.sock.sendall(self.conn.data_to_send())

    def _on(self, event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self.heads[event.stream_id] = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h2.events.DataReceived):
            self.received[event.stream_id] += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.ended.add(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            raise AssertionError(f"stream {event.stream_id} reset: {event}")
        elif isinstance(event, h2.events.ConnectionTerminated):
            raise AssertionError(f"connection terminated: {event}")

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("threads", ["1", "3"])
def test_streams_upload_and_download_side_by_side(server, threads):
    """Uploads larger than a stream's window and downloads larger than the
    client's, all on one connection at once: each view waits for its own client
    (its body, or its window) while the others go on -- with fewer threads than
    streams too, and with a single thread."""
    uploads = [os.urandom(150_000 + 7_000 * i) for i in range(6)]
    sizes = [300_000 + 11 * i for i in range(4)]
    with server("--threads", threads) as s:
        c = Streams(s.host, s.port)
        try:
            up = [c.request("POST", "/sha256", body) for body in uploads]
            down = [c.request("GET", f"/download?size={n}") for n in sizes]
            c.run()
            for sid, body in zip(up, uploads, strict=True):
                assert c.heads[sid][":status"] == "200"
                want = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
                assert json.loads(bytes(c.received[sid])) == want
            for sid, n in zip(down, sizes, strict=True):
                assert c.heads[sid][":status"] == "200"
                assert bytes(c.received[sid]) == pattern(n)
        finally:
            c.close()


def test_a_drain_reaches_a_connection_while_its_view_runs(server):
    """SIGTERM while a stream's view runs: the connection is told at once
    (GOAWAY), and the running stream is still answered. A connection whose
    thread sat in the view was skipped by the drain and never told."""
    with server() as s:
        c = h2_connect(s.host, s.port)
        try:
            c.handshake()
            c.request(1, "/hold?name=drain&timeout=2")
            time.sleep(0.3)  # the view is running
            os.kill(s.proc.pid, signal.SIGTERM)
            notice = c.wait(lambda f: f.type == GOAWAY, timeout=1.5)
            assert notice is not None, c.frames
            assert not [f for f in c.frames if f.stream == 1], "answered before the notice"
            assert c.response(1, timeout=5)[1] == b"timed out drain"
        finally:
            c.close()
