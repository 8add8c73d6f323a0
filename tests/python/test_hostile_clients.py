"""Hostile clients at scale: a thousand and ten thousand slowloris
connections (request heads that trickle a line at a time and never end)
against one worker, while a normal client measures its latency.

The slowloris connections come from bench/slowloris.py in a process of its
own, so that their traffic never competes with the latency measurement for
this process's GIL. What must hold: the server closes every slowloris
connection at its head deadline (not before, not never), answers the
normal client meanwhile as fast as it did before the attack, and keeps its
memory bounded. (Single trickling connections, stalled bodies and
non-readers are in test_timeouts.py; running out of file descriptors in
test_core_events.py; ten thousand idle WebSockets in
test_websocket_edges.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import connect, raise_nofile
from test_timeouts import rss_kib

SLOWLORIS = Path(__file__).resolve().parents[2] / "bench" / "slowloris.py"
APPS = {"asgi": "http_apps:asgi", "wsgi": "http_apps:wsgi"}
HEAD_TIMEOUT = 4.0
GET = b"GET /p/normal HTTP/1.1\r\nHost: test\r\n\r\n"


def latencies_ms(server, count: int = 400, pause: float = 0.003) -> list[float]:
    """Sequential requests on one kept-alive connection, as a normal client
    makes them; the time each took, sorted."""
    took = []
    with connect(server) as c:
        for _ in range(count):
            start = time.perf_counter()
            c.send(GET)
            status, _, body = c.response()
            took.append((time.perf_counter() - start) * 1000)
            assert (status, body) == (200, b"GET /p/normal")
            time.sleep(pause)
    return sorted(took)


def p99(sorted_ms: list[float]) -> float:
    return sorted_ms[int(len(sorted_ms) * 0.99) - 1]


def slowloris(server, connections: int, duration: float) -> subprocess.Popen:
    """Starts the attack; returns once every connection is open and its
    first bytes are sent."""
    argv = [sys.executable, str(SLOWLORIS), server.host, str(server.port), str(connections)]
    proc = subprocess.Popen(
        [*argv, "--interval", "1", "--duration", str(duration)],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("connected "), f"slowloris: {line!r}"
    return proc


def settled_fds(pid: int) -> int:
    """The server's descriptor count once the normal client's last
    connection has closed on its side too."""
    count = -1
    while True:
        time.sleep(0.1)
        now = len(os.listdir(f"/proc/{pid}/fd"))
        if now == count:
            return count
        count = now


def wait_accepted(pid: int, fds: int, timeout: float = 20) -> None:
    """Until the server holds `fds` descriptors: the client's connect()
    completes in the kernel's backlog, before the server has accepted."""
    deadline = time.monotonic() + timeout
    while len(os.listdir(f"/proc/{pid}/fd")) < fds:
        assert time.monotonic() < deadline, (
            f"the server holds {len(os.listdir(f'/proc/{pid}/fd'))} fds, not {fds}"
        )
        time.sleep(0.05)


def finish(proc: subprocess.Popen, timeout: float) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return json.loads(out.strip().splitlines()[-1])


def attack(serve, app: str, connections: int) -> None:
    raise_nofile(2 * connections + 512)
    server = serve(
        APPS[app],
        "--workers",
        "0",  # the pid measured is the one serving
        "--timeout-request-head",
        str(HEAD_TIMEOUT),
        "--backlog",
        "4096",
    )
    latencies_ms(server, 100)  # warm up
    before = latencies_ms(server)
    rss_before = rss_kib(server.proc.pid)
    fds_before = settled_fds(server.proc.pid)
    proc = slowloris(server, connections, duration=HEAD_TIMEOUT + 8)
    try:
        wait_accepted(server.proc.pid, fds_before + connections)
        during = latencies_ms(server)
        rss_during = rss_kib(server.proc.pid)
        result = finish(proc, timeout=HEAD_TIMEOUT + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    after = latencies_ms(server, 100)
    print(
        f"[{app} x{connections}] p99 before {p99(before):.2f} ms, during {p99(during):.2f} ms,"
        f" after {p99(after):.2f} ms; RSS {rss_before} -> {rss_during} KiB; slowloris {result}"
    )
    assert result["opened"] == connections, result
    # Every one closed at the head deadline (the timer ticks every 0.1 s;
    # a loaded machine adds a little), none kept past it.
    assert result["still_open"] == 0, result
    first, _, last = result["closed_after"]
    assert first >= HEAD_TIMEOUT - 0.2, f"closed before the head deadline: {result}"
    assert last <= HEAD_TIMEOUT + 2.5, f"kept past the head deadline: {result}"
    # The normal client does not notice: its p99 during the attack stays
    # within a few times its p99 without it (before and after: a shared
    # machine's own noise shows there too), or under 5 ms. A server that
    # did work per open connection on each event would be far above.
    quiet = max(p99(before), p99(after))
    assert p99(during) <= max(5.0, 3 * quiet), (p99(before), p99(during), p99(after))
    # A slowloris connection costs its connection and a buffer the size of
    # what it sent: under 4 KiB of RSS each (a 16 KiB read buffer apiece
    # made it 21 KiB).
    grown = rss_during - rss_before
    assert grown <= connections * 4, f"{grown / connections:.1f} KiB per connection"


@pytest.mark.parametrize("app", ["asgi", "wsgi"])
def test_a_thousand_slowloris_connections_are_cut_and_cost_others_nothing(serve, app):
    attack(serve, app, 1000)


@pytest.mark.parametrize("app", ["asgi", "wsgi"])
def test_ten_thousand_slowloris_connections(serve, app):
    attack(serve, app, 10_000)
