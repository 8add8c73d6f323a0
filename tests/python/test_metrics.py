"""--metrics-bind and --health-path, over real processes and sockets.

The supervisor serves Prometheus text for all its workers, which count in
their C core into memory the supervisor shares. The scrapes are parsed by
prometheus_client's own parser (what the format must satisfy), and the
numbers are checked against what the test's clients did, exactly: requests
by method and status, bytes each way (the clients count what they sent and
read), connections by state, rejections, worker starts and exits.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import Counter

import httpx
import pytest
from conftest import listening_socket
from prometheus_client.parser import text_string_to_metric_families
from test_process_model import supervise

__all__ = ["supervise"]  # the fixture, used by name

APP = "metrics_apps:app"
WSGI = "metrics_apps:wsgi"


def free_port() -> int:
    with listening_socket() as s:
        return s.getsockname()[1]


def metered(supervise, app: str, workers: int, *options: str):
    """`app` under a supervisor of `workers` workers serving metrics on a
    port of their own: (the supervisor, that port)."""
    port = free_port()
    options = ("--workers", str(workers), "--metrics-bind", f"127.0.0.1:{port}", *options)
    return supervise(app, *options, ready=workers), port


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def requests_by(samples: dict) -> Counter:
    """oneloop_requests_total as {(method, status class): n}, zeros left out."""
    out = Counter()
    for (name, labels), v in samples.items():
        if name == "oneloop_requests_total" and v:
            d = dict(labels)
            out[(d["method"], d["status"])] = int(v)
    return out


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


class Counting:
    """A keep-alive HTTP/1.1 client over a raw socket that counts every
    byte it sends and reads."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sent = self.read = 0
        self.buf = b""

    def request(self, method: str, path: str, body: bytes = b"") -> int:
        head = f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n"
        data = head.encode() + body
        self.sock.sendall(data)
        self.sent += len(data)
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head_bytes, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head_bytes.decode().split("\r\n")
        fields = {k.lower(): v for k, _, v in (x.partition(": ") for x in lines[1:])}
        length = 0 if method == "HEAD" else int(fields.get("content-length", 0))
        while len(self.buf) < length:
            self._more()
        self.buf = self.buf[length:]
        return int(lines[0].split()[1])

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, "connection closed"
        self.read += len(chunk)
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def test_a_load_run_is_counted_exactly_across_workers(supervise):
    """Eight clients on two workers: requests by method and status, the
    duration histogram's count, connections accepted and bytes each way
    equal what the clients did and saw."""
    sup, mport = metered(supervise, APP, 2)
    plan = [
        ("GET", "/", b""),
        ("GET", "/status/404", b""),
        ("POST", "/status/201", b"z" * 3000),
        ("DELETE", "/status/500", b""),
        ("HEAD", "/", b""),
        ("PATCH", "/status/302", b"p"),
    ]
    expected: Counter = Counter()
    clients: list[Counting] = []
    lock = threading.Lock()
    midway = threading.Barrier(9)  # the clients and the scraper
    resume = threading.Event()

    def run(n: int) -> None:
        c = Counting(sup.port)
        for i in range(60):
            if i == 30:
                midway.wait()
                resume.wait()
            method, path, body = plan[(i + n) % len(plan)]
            status = c.request(method, path, body)
            with lock:
                expected[(method, f"{status // 100}xx")] += 1
        with lock:
            clients.append(c)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    # Scraped in the middle of the run, with every client between two
    # requests: exactly what they have had answered so far.
    midway.wait()
    with lock:
        so_far = Counter(expected)
    assert requests_by(scrape(mport)) == so_far and sum(so_far.values()) == 240
    resume.set()
    seen = []  # and while it runs: totals only grow
    while any(t.is_alive() for t in threads):
        seen.append(sum(requests_by(scrape(mport)).values()))
    for t in threads:
        t.join()
    assert seen == sorted(seen) and all(240 <= n <= 480 for n in seen), seen
    samples = scrape(mport)
    assert requests_by(samples) == expected
    assert sum(expected.values()) == 480
    assert value(samples, "oneloop_request_duration_seconds_count") == 480
    assert value(samples, "oneloop_request_duration_seconds_bucket", le="+Inf") == 480
    assert value(samples, "oneloop_connections_accepted_total") == 8
    assert value(samples, "oneloop_received_bytes_total") == sum(c.sent for c in clients)
    assert value(samples, "oneloop_sent_bytes_total") == sum(c.read for c in clients)
    # Every client is now idle on its kept-alive connection.
    assert value(samples, "oneloop_connections", state="idle") == 8
    assert value(samples, "oneloop_requests_in_flight") == 0
    assert value(samples, "oneloop_workers", state="serving") == 2
    assert value(samples, "oneloop_worker_starts_total") == 2
    for c in clients:
        c.close()
    assert wait_for(lambda: value(scrape(mport), "oneloop_connections", state="idle") == 0)
    sup.stop()


def test_connections_by_state_and_requests_in_flight(supervise):
    sup, mport = metered(supervise, APP, 1)
    held = socket.create_connection(("127.0.0.1", sup.port))
    held.sendall(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n")
    partial = socket.create_connection(("127.0.0.1", sup.port))
    partial.sendall(b"GET / HTTP/1.1\r\nHost:")
    idle = Counting(sup.port)
    assert idle.request("GET", "/") == 200

    def states() -> dict:
        s = scrape(mport)
        return {
            st: value(s, "oneloop_connections", state=st)
            for st in ("reading", "app", "writing", "idle", "websocket")
        } | {"in_flight": value(s, "oneloop_requests_in_flight")}

    want = {"reading": 1, "app": 1, "writing": 0, "idle": 1, "websocket": 0, "in_flight": 1}
    assert wait_for(lambda: states() == want), states()
    assert Counting(sup.port).request("GET", "/release") == 200
    held.settimeout(5)
    assert held.recv(100).startswith(b"HTTP/1.1 200")
    for s in (held, partial):
        s.close()
    idle.close()
    want = {"reading": 0, "app": 0, "writing": 0, "idle": 0, "websocket": 0, "in_flight": 0}
    assert wait_for(lambda: states() == want), states()
    sup.stop()


def test_rejections_are_counted_by_status(supervise):
    sup, mport = metered(
        supervise,
        APP,
        1,
        "--limit-request-line",
        "100",
        "--limit-request-body",
        "10",
        "--timeout-request-head",
        "0.5",
    )
    bad = [
        (b"GET / HTTP/1.1\r\nHost: t\r\n", b"408"),  # the rest of the head never comes
        (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n", b"400"),
        (b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: t\r\n\r\n", b"414"),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n", b"413"),
        (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", b"505"),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"v" * 9000 + b"\r\n\r\n", b"431"),
    ]
    for raw, status in bad:
        with socket.create_connection(("127.0.0.1", sup.port), timeout=5) as s:
            s.sendall(raw)
            assert s.recv(100).split(b" ")[1] == status
    samples = scrape(mport)
    got = {
        dict(k[1])["status"]: v
        for k, v in samples.items()
        if k[0] == "oneloop_rejections_total" and v
    }
    assert got == {"408": 1, "400": 1, "414": 1, "413": 1, "505": 1, "431": 1}
    assert requests_by(samples) == Counter()  # none reached the app
    sup.stop()


def test_limit_concurrency_rejections(supervise):
    sup, mport = metered(
        supervise, APP, 1, "--limit-concurrency", "1", "--timeout-graceful-shutdown", "1"
    )
    held = socket.create_connection(("127.0.0.1", sup.port))
    held.sendall(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n")
    assert wait_for(lambda: value(scrape(mport), "oneloop_requests_in_flight") == 1)
    for _ in range(3):
        assert httpx.get(f"{sup.url}/").status_code == 503
    assert value(scrape(mport), "oneloop_rejections_total", status="503") == 3
    held.close()
    sup.stop()


def test_totals_survive_a_worker_crash_and_exits_are_counted_by_reason(supervise):
    """A worker killed by SIGKILL and one that dies by itself: what they
    counted stays in the totals, and each exit is counted with its reason."""
    sup, mport = metered(supervise, APP, 1, "--max-requests", "25")
    c = Counting(sup.port)
    for _ in range(10):
        assert c.request("GET", "/status/204") == 204
    c.close()
    (pid,) = sup.serving()
    os.kill(pid, signal.SIGKILL)
    sup.wait_serving(1, exclude={pid})
    samples = scrape(mport)
    assert requests_by(samples) == Counter({("GET", "2xx"): 10})
    assert value(samples, "oneloop_worker_exits_total", reason="crash") == 1
    assert value(samples, "oneloop_worker_starts_total") == 2
    # 25 more through --max-requests: that worker leaves, counted as such.
    before = sup.serving()
    for _ in range(25):
        with httpx.Client() as client:
            assert client.get(f"{sup.url}/").status_code == 200
    sup.wait_serving(1, exclude=before)
    assert wait_for(
        lambda: value(scrape(mport), "oneloop_worker_exits_total", reason="max_requests") == 1
    )
    samples = scrape(mport)
    assert requests_by(samples) == Counter({("GET", "2xx"): 35})
    assert value(samples, "oneloop_connections_accepted_total") == 26
    # A HUP replaces the worker: a reload exit and a reload, nothing lost.
    before = sup.serving()
    sup.send(signal.SIGHUP)
    sup.wait_serving(1, exclude=before)
    assert wait_for(
        lambda: value(scrape(mport), "oneloop_worker_exits_total", reason="reload") == 1
    )
    samples = scrape(mport)
    assert value(samples, "oneloop_reloads_total") == 1
    assert requests_by(samples) == Counter({("GET", "2xx"): 35})
    sup.stop()


def test_recycled_workers_are_counted_by_reason(supervise):
    """--workers-lifetime and --workers-max-rss replace workers; each exit
    is counted with its reason, and nothing they counted is lost."""
    sup, mport = metered(supervise, APP, 1, "--workers-lifetime", "1")
    first = sup.serving()
    assert httpx.get(f"{sup.url}/").status_code == 200
    sup.wait_serving(1, exclude=first)
    sup.wait_gone(first)
    samples = scrape(mport)
    assert value(samples, "oneloop_worker_exits_total", reason="lifetime") >= 1
    assert requests_by(samples)[("GET", "2xx")] == 1
    sup.stop()
    sup, mport = metered(supervise, APP, 1, "--workers-max-rss", "1")  # every worker is above
    first = sup.serving()
    sup.wait_serving(1, exclude=first, timeout=15)
    sup.wait_gone(first)
    assert value(scrape(mport), "oneloop_worker_exits_total", reason="max_rss") >= 1
    sup.stop()


def test_wsgi_threads_and_bridge_calls(supervise):
    sup, mport = metered(supervise, WSGI, 2, "--threads", "3")
    # Each worker's start-up self-test makes a call of its own.
    before = value(scrape(mport), "oneloop_bridge_call_duration_seconds_count")
    for _ in range(5):
        assert httpx.get(f"{sup.url}/bridge").status_code == 200
    assert httpx.get(f"{sup.url}/status/418").status_code == 418
    samples = scrape(mport)
    assert value(samples, "oneloop_wsgi_threads") == 6
    assert value(samples, "oneloop_wsgi_threads_busy") == 0
    assert value(samples, "oneloop_bridge_call_duration_seconds_count") - before == 10
    # Half the calls slept 20 ms: they are above the 10 ms bucket.
    assert value(samples, "oneloop_bridge_call_duration_seconds_bucket", le="0.01") - before <= 5
    assert value(samples, "oneloop_bridge_call_duration_seconds_sum") >= 5 * 0.02
    assert requests_by(samples) == Counter({("GET", "2xx"): 5, ("GET", "4xx"): 1})
    sup.stop()


def test_websocket_sessions_and_messages(supervise):
    from websockets.sync.client import connect as ws_connect

    sup, mport = metered(supervise, "ws_echo:app", 1)
    with ws_connect(f"ws://127.0.0.1:{sup.port}/") as ws:
        for text in ("a", "b", "c"):
            ws.send(text)
            assert ws.recv() == text
        samples = scrape(mport)
        assert value(samples, "oneloop_connections", state="websocket") == 1
        assert value(samples, "oneloop_requests_in_flight") == 1
        assert value(samples, "oneloop_websocket_messages_received_total") == 3
        assert value(samples, "oneloop_websocket_messages_sent_total") == 3
    samples = wait_for(
        lambda: (
            (s := scrape(mport))
            and value(s, "oneloop_connections", state="websocket") == 0
            and requests_by(s)
            and s
        )
    )
    # The session is one response, 101; its length is not a request latency.
    assert requests_by(samples) == Counter({("GET", "1xx"): 1})
    assert value(samples, "oneloop_request_duration_seconds_count") == 0
    sup.stop()


def test_metrics_endpoint_answers_only_metrics_and_over_a_unix_socket(supervise, tmp_path):
    path = tmp_path / "metrics.sock"
    sup = supervise(APP, "--workers", "1", "--metrics-bind", f"unix:{path}")
    transport = httpx.HTTPTransport(uds=str(path))
    with httpx.Client(transport=transport, base_url="http://m") as client:
        assert client.get("/metrics").status_code == 200
        assert client.head("/metrics").content == b""
        assert client.get("/other").status_code == 404
        r = client.post("/metrics")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    # A client that never finishes its request does not stop the supervisor
    # from supervising or from answering the next scrape.
    stuck = socket.socket(socket.AF_UNIX)
    stuck.connect(str(path))
    stuck.sendall(b"GET /metr")
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), base_url="http://m") as c:
        assert c.get("/metrics").status_code == 200
    assert httpx.get(f"{sup.url}/").status_code == 200
    stuck.close()
    sup.stop()
    assert not path.exists()


def test_metrics_bind_errors_are_named(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "oneloop",
            "--workers",
            "0",
            "--metrics-bind",
            "127.0.0.1:1",
            "x:app",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0
    assert "--metrics-bind needs the supervisor" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "oneloop", "--health-path", "healthz", "x:app"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0 and "--health-path" in r.stderr and "starting with '/'" in r.stderr


# -- --health-path ------------------------------------------------------------------------


@pytest.mark.parametrize("app", [APP, WSGI])
def test_health_path_is_answered_without_the_app(supervise, app):
    sup, mport = metered(supervise, app, 1, "--health-path", "/healthz")
    c = Counting(sup.port)
    for method in ("GET", "HEAD", "GET"):
        assert c.request(method, "/healthz?probe=1") == 200
    assert c.request("GET", "/") == 200  # the same connection goes on
    r = httpx.get(f"{sup.url}/healthz")
    assert (r.status_code, r.text, r.headers["cache-control"]) == (200, "OK\n", "no-store")
    # Other methods and paths are the app's.
    assert httpx.post(f"{sup.url}/healthz").status_code == 200
    assert httpx.get(f"{sup.url}/healthz/deeper").status_code == 200
    samples = scrape(mport)
    assert value(samples, "oneloop_health_checks_total") == 4
    assert requests_by(samples) == Counter({("GET", "2xx"): 2, ("POST", "2xx"): 1})
    c.close()
    sup.stop()


def test_health_path_says_503_while_draining(serve):
    """A worker that is stopping answers its kept-alive health checker 503,
    with the connection closed, while a request still runs."""
    server = serve(
        APP, "--health-path", "/healthz", "--workers", "0", "--timeout-graceful-shutdown", "2"
    )
    held = socket.create_connection((server.host, server.port))
    held.sendall(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n")
    checker = Counting(server.port)
    assert checker.request("GET", "/healthz") == 200
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the worker drains: /hold holds it
    checker.sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    reply = checker.sock.recv(1000)
    assert reply.startswith(b"HTTP/1.1 503 "), reply
    assert b"Connection: close" in reply and reply.endswith(b"draining\n")
    assert checker.sock.recv(10) == b""
    held.close()
    assert server.proc.wait(10) == 0


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
