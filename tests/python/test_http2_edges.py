"""HTTP/2 at its edges: trailers, Upgrade: h2c, WSGI apps over HTTP/2, clients
that vanish with streams open, and mutated frame sequences thrown at the
server (a fuzz run with a fixed seed; `make test-py-asan-core` runs this
file against the ASan build).

The end-to-end and conformance suites are test_http2.py and
test_http2_conformance.py; apps are in apps/h2_edge_apps.py.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def client(server):
    s = socket.create_connection((server.host, server.port), timeout=10)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    return s, c


def request(c, stream_id: int, path: str, body: bytes | None = None) -> None:
    headers = [
        (":method", "POST" if body is not None else "GET"),
        (":path", path),
        (":scheme", "http"),
        (":authority", "test"),
    ]
    c.send_headers(stream_id, headers, end_stream=body is None)
    if body is not None:
        c.send_data(stream_id, body, end_stream=True)


def pump(s, c, until, timeout: float = 10.0) -> list:
    """Read events (acknowledging data) until until(events) holds."""
    events: list = []
    deadline = time.monotonic() + timeout
    while not until(events) and time.monotonic() < deadline:
        data = s.recv(65536)
        if not data:
            events.append("EOF")
            break
        for event in c.receive_data(data):
            events.append(event)
            if isinstance(event, h2.events.DataReceived):
                c.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        s.sendall(c.data_to_send())
    return events


def ended(events: list, ids) -> bool:
    done = {
        e.stream_id for e in events if isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset))
    }
    return set(ids) <= done


def body_of(events: list, stream_id: int) -> bytes:
    return b"".join(
        e.data for e in events if isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id
    )


def still_serves(server, expect: bytes = b"5:hello") -> None:
    s, c = client(server)
    request(c, 1, "/", b"hello")
    s.sendall(c.data_to_send())
    events = pump(s, c, lambda e: ended(e, [1]))
    s.close()
    assert body_of(events, 1) == expect, events
    assert server.proc.poll() is None


# -- trailers -------------------------------------------------------------------------


def test_trailers_end_the_stream_over_h2_and_are_not_offered_over_http11(serve):
    server = serve("h2_edge_apps:trailers_app")
    s, c = client(server)
    request(c, 1, "/")
    s.sendall(c.data_to_send())
    events = pump(s, c, lambda e: ended(e, [1]))
    trailers = [e for e in events if isinstance(e, h2.events.TrailersReceived)]
    assert body_of(events, 1) == b"offered=1!"
    # Two trailer messages (more_trailers), names lower-cased, in one HEADERS frame
    # that ends the stream.
    assert trailers[0].headers == [(b"grpc-status", b"0"), (b"grpc-message", b"ok")]
    assert trailers[0].stream_ended is not None
    out = subprocess.run(["curl", "-s", f"{server.url}/"], capture_output=True).stdout
    assert out == b"offered=0!"


# -- Upgrade: h2c ---------------------------------------------------------------------


def test_upgrade_h2c_serves_the_request_as_stream_1(serve):
    server = serve("h2_edge_apps:app")
    out = subprocess.run(
        ["curl", "-sv", "--http2", f"{server.url}/up", "-d", ""], capture_output=True, text=True
    )
    assert "HTTP/1.1 101 Switching Protocols" in out.stderr, out.stderr
    assert "< HTTP/2 200" in out.stderr and out.stdout == "0:"
    # A body: no upgrade (the RFC lets the server decline); served over HTTP/1.1.
    out = subprocess.run(
        ["curl", "-sv", "--http2", f"{server.url}/up", "-d", "abc"], capture_output=True, text=True
    )
    assert "101" not in out.stderr and "< HTTP/1.1 200" in out.stderr
    assert out.stdout == "3:abc"
    out = subprocess.run(["nghttp", "-u", f"{server.url}/nghttp"], capture_output=True, text=True)
    assert out.stdout == "0:", out


def test_upgrade_with_bad_http2_settings_is_served_as_http11(serve):
    server = serve("h2_edge_apps:app")
    for settings in (b"!!!", b"AAA", b"AASAAAAA", b"x" * 2000):
        with socket.create_connection((server.host, server.port), timeout=5) as s:
            s.sendall(
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\n"
            )
            assert s.recv(100).startswith(b"HTTP/1.1 200"), settings


# -- WSGI over HTTP/2 -------------------------------------------------------------------


def test_wsgi_app_over_h2_streams_bodies_both_ways(serve):
    server = serve("h2_edge_apps:wsgi_app", "--threads", "4")
    with open("/etc/services", "rb") as f:
        services = f.read()
    out = subprocess.run(
        ["h2load", "-n", "400", "-c", "4", "-m", "8", "-d", "/etc/services", f"{server.url}/"],
        capture_output=True,
        text=True,
    ).stdout
    assert "400 succeeded, 0 failed, 0 errored" in out, out
    big = subprocess.run(
        ["curl", "-s", "--http2-prior-knowledge", f"{server.url}/big"], capture_output=True
    ).stdout
    assert big == b"z" * (65536 * 64)
    up = subprocess.run(
        ["curl", "-s", "--http2-prior-knowledge", "--data-binary", "@/etc/services", server.url],
        capture_output=True,
    ).stdout
    assert up == b"HTTP/2 POST / %d" % len(services)


def test_wsgi_stream_reset_while_its_response_waits_for_the_window(serve):
    server = serve("h2_edge_apps:wsgi_app", "--threads", "2")
    s = socket.create_connection((server.host, server.port), timeout=10)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1024}
    )
    c.initiate_connection()
    request(c, 1, "/big")
    s.sendall(c.data_to_send())
    time.sleep(0.3)  # the app's thread now waits for the window
    c.reset_stream(1)
    s.sendall(c.data_to_send())
    time.sleep(0.3)
    s.close()
    still_serves(server, b"HTTP/2 POST / 5")


# -- clients that vanish ---------------------------------------------------------------


def test_client_gone_with_streams_open(serve):
    server = serve("h2_edge_apps:app")
    for _ in range(20):
        s, c = client(server)
        for stream_id in range(1, 20, 2):
            request(c, stream_id, "/stream" if stream_id % 4 == 1 else "/slow")
        s.sendall(c.data_to_send())
        time.sleep(0.02)
        s.close()
    time.sleep(1.2)  # the /slow apps finish after their clients left
    still_serves(server)


def test_resets_mid_response_leave_the_other_streams_whole(serve):
    server = serve("h2_edge_apps:app")
    s, c = client(server)
    ids = list(range(1, 40, 2))
    for stream_id in ids:
        request(c, stream_id, "/stream")
    s.sendall(c.data_to_send())
    time.sleep(0.1)
    for stream_id in ids[::2]:
        c.reset_stream(stream_id)
    s.sendall(c.data_to_send())
    events = pump(s, c, lambda e: ended(e, ids[1::2]))
    for stream_id in ids[1::2]:
        assert body_of(events, stream_id) == b"x" * 50_000
    s.close()


# -- mutated frames ----------------------------------------------------------------------


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream_id)
        + payload
    )


def valid_exchange(rng: random.Random) -> bytes:
    """A client's bytes for a few requests, some with bodies, pings, resets."""
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    for stream_id in range(1, 2 * rng.randint(1, 6), 2):
        body = rng.randbytes(rng.randint(0, 3000)) if rng.random() < 0.5 else None
        request(c, stream_id, rng.choice(["/", "/stream", "/big"]), body)
        if rng.random() < 0.2:
            c.reset_stream(stream_id)
    c.ping(rng.randbytes(8))
    return c.data_to_send()


def mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        what = rng.random()
        # Keep the preface intact most of the time, so the frames behind it are read.
        at = rng.randrange(0 if rng.random() < 0.1 else len(PREFACE), len(data) + 1)
        if what < 0.4 and at < len(data):
            data[at] ^= 1 << rng.randrange(8)
        elif what < 0.7:
            kind, flags = rng.randrange(12), rng.randrange(256)
            stream_id = rng.choice([0, 1, 2, 3, 5, 0x7FFFFFFF, rng.randrange(1 << 31)])
            payload = rng.randbytes(rng.choice([0, 1, 4, 5, 8, 9, 16, rng.randrange(64)]))
            data[at:at] = frame(kind, flags, stream_id, payload)
        elif what < 0.85:
            del data[at : at + rng.randrange(1, 32)]
        else:
            data[at:at] = rng.randbytes(rng.randrange(1, 32))
    return bytes(data)


def test_mutated_frame_sequences_never_break_the_server(serve):
    server = serve("h2_edge_apps:app", "--timeout-keep-alive", "2")
    # More cases, another seed: ONELOOP_H2_FUZZ_CASES=20000 ONELOOP_H2_FUZZ_SEED=7
    rng = random.Random(int(os.environ.get("ONELOOP_H2_FUZZ_SEED", "20261203")))
    for _ in range(int(os.environ.get("ONELOOP_H2_FUZZ_CASES", "600"))):
        data = mutate(rng, valid_exchange(rng))
        with socket.create_connection((server.host, server.port), timeout=5) as s:
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(0.5)
                while s.recv(65536):
                    pass
            except OSError:  # reset, or a timeout: the server's to decide
                pass
    still_serves(server)
    log = server.log() + server.out()
    assert "Traceback" not in log and "[ERROR]" not in log, log[-3000:]
