"""Reloads and drains lose no request: HUP, --max-requests recycling and TERM
under keep-alive load, straight and through nginx.

Unlike the process-model tests, nothing is retried here. Each client keeps
one connection alive and behaves as a careful HTTP client does: it never
reuses a connection the server has already closed (it looks before it
sends, as urllib3 does), and it reconnects after a `Connection: close`.
A request sent without a complete response coming back is lost, whatever
the reason; so is any status but 200. After TERM a refused connection is
the expected end (nothing was sent); before it, it is a failure too.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import APPS, listening_socket, wait_ready
from test_process_model import APP, NoResponse, _closed_by_peer, exchange, report, supervise

__all__ = ["supervise"]  # the fixture, used by name

CLIENTS = 16


@dataclass
class Client:
    """One keep-alive client sending back-to-back requests."""

    address: tuple | str  # (host, port), or a UNIX socket's path
    method: str
    stop: threading.Event
    terminated: threading.Event
    ok: int = 0
    lost: list[str] = field(default_factory=list)
    refused_after_term: int = 0
    conns: int = 0

    def run(self) -> None:
        sock = None
        while not self.stop.is_set():
            if sock is not None and _closed_by_peer(sock):
                sock.close()
                sock = None
            if sock is None:
                sock = self._connect()
                if sock is None:
                    if self.terminated.is_set():
                        return  # the server is gone: the expected end
                    continue
            try:
                status, body, close = exchange(sock, "/", self.method)
            except (NoResponse, OSError, ValueError) as exc:
                self.lost.append(f"{time.monotonic():.3f} {exc!r}")
                sock.close()
                sock = None
                continue
            if status != 200:
                self.lost.append(f"status {status}: {body}")
            else:
                self.ok += 1
            if close:
                sock.close()
                sock = None
        if sock is not None:
            sock.close()

    def _connect(self) -> socket.socket | None:
        try:
            if isinstance(self.address, str):
                sock = socket.socket(socket.AF_UNIX)
                sock.settimeout(10)
                sock.connect(self.address)
            else:
                sock = socket.create_connection(self.address, timeout=10)
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            if self.terminated.is_set():
                self.refused_after_term += 1
            else:
                self.lost.append(f"connect: {exc!r}")
                time.sleep(0.01)
            return None
        except OSError as exc:
            self.lost.append(f"connect: {exc!r}")
            time.sleep(0.01)
            return None
        self.conns += 1
        return sock


class Clients:
    def __init__(self, port: int | str, n: int = CLIENTS, method: str = "GET") -> None:
        self.stop_event, self.terminated = threading.Event(), threading.Event()
        address = port if isinstance(port, str) else ("127.0.0.1", port)
        self.clients = [Client(address, method, self.stop_event, self.terminated) for _ in range(n)]
        self.threads = [threading.Thread(target=c.run, daemon=True) for c in self.clients]

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(20)
            assert not t.is_alive(), "a client is stuck"

    def wait_done(self, timeout: float) -> None:
        """After TERM: until every client has met the closed listener."""
        for t in self.threads:
            t.join(timeout)
            assert not t.is_alive(), "a client still gets answers after TERM"

    @property
    def ok(self) -> int:
        return sum(c.ok for c in self.clients)

    @property
    def lost(self) -> list[str]:
        return [x for c in self.clients for x in c.lost]

    @property
    def conns(self) -> int:
        return sum(c.conns for c in self.clients)

    def wait_ok(self, n: int, timeout: float = 20.0) -> None:
        deadline, start = time.monotonic() + timeout, self.ok
        while self.ok - start < n:
            assert time.monotonic() < deadline, f"load stalled: {self.lost[:5]}"
            time.sleep(0.01)


def _reload_under_load(sup, clients: Clients, times: int, ok_each: int, check=None) -> None:
    """HUP `times` times; each time wait until the new workers serve and the
    old ones are gone, run `check`, and let `ok_each` more requests through."""
    generation = sup.serving()
    for i in range(times):
        sup.send(signal.SIGHUP)
        sup.wait_log(r"Reload complete", count=i + 1, timeout=20)
        sup.wait_gone(generation, timeout=20)
        generation = sup.wait_serving(2, exclude=generation)
        if check is not None:
            check()
        clients.wait_ok(ok_each)


def _terminate(sup, clients: Clients) -> None:
    clients.terminated.set()
    sup.send(signal.SIGTERM)
    assert sup.proc.wait(20) == 0, sup.log()
    clients.wait_done(10)


@pytest.mark.parametrize("app", ["app", "wsgi"])
def test_20_hups_then_term_lose_no_request(supervise, app):
    sup = supervise(f"{APP}:{app}", "-w", "2", ready=2, fd=False)
    with Clients(sup.port) as clients:
        clients.wait_ok(500)
        _reload_under_load(sup, clients, 20, 200)
        _terminate(sup, clients)
    report(
        f"20 HUPs + TERM ({app})", requests=clients.ok, conns=clients.conns, lost=len(clients.lost)
    )
    assert clients.lost == [], clients.lost[:5] + clients.lost[-5:]


@pytest.mark.parametrize("app", ["app", "wsgi"])
def test_20_max_requests_recycles_then_term_lose_no_request(supervise, app):
    sup = supervise(f"{APP}:{app}", "-w", "2", "--max-requests", "300", ready=2, fd=False)
    with Clients(sup.port) as clients:
        deadline = time.monotonic() + 60
        while len(re.findall(r"served \d+ requests", sup.log())) < 20:
            assert time.monotonic() < deadline, sup.log()
            assert sup.proc.poll() is None, sup.log()
            time.sleep(0.05)
        clients.wait_ok(200)
        _terminate(sup, clients)
    recycled = len(re.findall(r"served \d+ requests", sup.log()))
    report(
        f"{recycled} max-requests recycles + TERM ({app})",
        requests=clients.ok,
        conns=clients.conns,
        lost=len(clients.lost),
    )
    assert clients.lost == [], clients.lost[:5] + clients.lost[-5:]


# -- behind nginx ----------------------------------------------------------------------

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream oneloop {{
        server 127.0.0.1:{upstream};
        keepalive 16;
        keepalive_timeout 4s;  # below oneloop's --timeout-keep-alive (docs/deployment.md)
    }}
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 100000;
        location / {{
            proxy_pass http://oneloop;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # A failed upstream request is an error at the client, never
            # retried on another connection behind its back.
            proxy_next_upstream off;
        }}
    }}
}}
"""


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(binary).exists(), "nginx is installed by scripts/install-deps.sh"
    procs = []

    def start(upstream: int) -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        conf = tmp_path / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=tmp_path, upstream=upstream, port=port))
        proc = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(tmp_path)],
            stderr=open(tmp_path / "nginx.stderr", "wb"),  # noqa: SIM115 (owned by the child)
        )
        procs.append(proc)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return port
            assert proc.poll() is None, (tmp_path / "nginx.stderr").read_text()
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("app", ["app", "wsgi"])
def test_hups_and_recycles_behind_nginx_lose_no_request(supervise, nginx, tmp_path, app):
    """POSTs (which nginx never retries) through nginx's kept-alive upstream
    connections, across 10 HUPs and --max-requests recycling: every answer
    nginx gives is oneloop's 200."""
    sup = supervise(f"{APP}:{app}", "-w", "2", "--max-requests", "400", ready=2)
    port = nginx(sup.port)
    with Clients(port, method="POST") as clients:
        clients.wait_ok(500)
        _reload_under_load(sup, clients, 10, 300)
    recycled = len(re.findall(r"served \d+ requests", sup.log()))
    errors = (tmp_path / "error.log").read_text()
    report(
        f"nginx: 10 HUPs, {recycled} recycles ({app})",
        requests=clients.ok,
        lost=len(clients.lost),
    )
    assert recycled >= 5, sup.log()
    assert clients.lost == [], errors[-3000:]


@pytest.mark.parametrize("app", ["app", "wsgi"])
def test_term_of_a_lone_worker_loses_no_request(supervise, app):
    """--workers 0: the worker is the whole server and refuses new
    connections itself before it drains."""
    sup = supervise(f"{APP}:{app}", "--workers", "0", ready=None, fd=False)
    sup.wait_log(r"Serving")
    with Clients(sup.port) as clients:
        clients.wait_ok(2000)
        _terminate(sup, clients)
    report(f"lone worker TERM ({app})", requests=clients.ok, lost=len(clients.lost))
    assert clients.lost == [], clients.lost[:5]


def test_hups_keep_the_unix_socket_and_term_loses_no_request(supervise, tmp_path):
    """Over a UNIX socket the supervisor made: workers leaving on HUP must
    not remove its file (the new workers serve on it); on TERM it is removed
    first, so that no client is left queued to be reset."""
    path = str(tmp_path / "oneloop.sock")
    sup = supervise(f"{APP}:app", "-w", "2", "-b", f"unix:{path}", ready=2, fd=False)
    with Clients(path) as clients:
        clients.wait_ok(500)

        def socket_file_kept() -> None:
            assert Path(path).exists(), "a worker that left removed the socket file"

        _reload_under_load(sup, clients, 5, 200, socket_file_kept)
        _terminate(sup, clients)
    report("UNIX socket: 5 HUPs + TERM", requests=clients.ok, lost=len(clients.lost))
    assert clients.lost == [], clients.lost[:5]
    assert not Path(path).exists()


def test_term_leaves_a_given_socket_to_whoever_holds_it(tmp_path):
    """--fd: the socket is its giver's, who may start another server on it
    (as systemd does); connections arriving after TERM wait in its queue
    rather than being refused."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    err = tmp_path / "err"
    cmd = [sys.executable, "-m", "oneloop", "--app-dir", str(APPS), "--workers", "0"]
    with open(err, "wb") as errf:
        proc = subprocess.Popen(
            [*cmd, "--fd", str(sock.fileno()), f"{APP}:app"],
            stderr=errf,
            stdout=subprocess.DEVNULL,
            pass_fds=[sock.fileno()],
        )
    try:
        wait_ready("127.0.0.1", port, proc, err)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, err.read_text()
        late = socket.create_connection(("127.0.0.1", port), timeout=3)
        late.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(3)
        conn, _ = sock.accept()  # queued for the holder, request and all
        assert conn.recv(100).startswith(b"GET / HTTP/1.1")
        conn.close()
        late.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_term_refuses_new_clients_within_a_second_while_requests_finish(supervise, tmp_path):
    """A whole-server stop with a 5 s request in flight: a new client is
    refused (its SYN retried once, then reset), not left waiting for the
    drain; the request in flight gets its 200."""
    started = tmp_path / "started"
    sup = supervise(
        f"{APP}:app", "-w", "2", ready=2, fd=False, env={"PROCESS_APPS_STARTED": str(started)}
    )
    result: dict = {}

    def slow() -> None:
        with socket.create_connection(("127.0.0.1", sup.port), timeout=20) as s:
            result["slow"] = exchange(s, "/slow?t=5")[0]

    thread = threading.Thread(target=slow)
    thread.start()
    deadline = time.monotonic() + 10
    while not (started.exists() and started.read_text()):
        assert time.monotonic() < deadline, sup.log()
        time.sleep(0.01)
    sup.send(signal.SIGTERM)
    time.sleep(0.3)
    t0 = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", sup.port), timeout=4).close()
    refused_after = time.monotonic() - t0
    thread.join(20)
    report("TERM: new client refused", seconds=f"{refused_after:.2f}")
    assert refused_after < 2.0
    assert result == {"slow": 200}
    assert sup.proc.wait(20) == 0


# -- recycling: --workers-lifetime, --workers-max-rss ------------------------------------


def test_workers_lifetime_replaces_workers_under_load_losing_nothing(supervise):
    sup = supervise(f"{APP}:app", "-w", "2", "--workers-lifetime", "1.5", ready=2, fd=False)
    with Clients(sup.port) as clients:
        deadline = time.monotonic() + 30
        while len(re.findall(r"reached --workers-lifetime", sup.log())) < 6:
            assert time.monotonic() < deadline, sup.log()
            time.sleep(0.05)
        clients.wait_ok(200)
        _terminate(sup, clients)
    replaced = re.findall(r"Worker pid (\d+) reached --workers-lifetime \(1\.5s\)", sup.log())
    report("--workers-lifetime 1.5", replaced=len(replaced), requests=clients.ok)
    assert len(set(replaced)) == len(replaced) >= 6
    assert clients.lost == [], clients.lost[:5]


def test_workers_max_rss_replaces_a_leaking_worker(supervise):
    sup = supervise(f"{APP}:app", "-w", "1", "--workers-max-rss", "150", ready=1)
    (first,) = sup.serving()
    with Clients(sup.port, n=4) as clients:
        with socket.create_connection(("127.0.0.1", sup.port)) as s:
            assert exchange(s, "/leak?mb=200")[0] == 200
        # Above the limit for 3 s, then replaced; the replacement serves first.
        log = sup.wait_log(rf"Worker pid {first} uses \d+ MiB, above --workers-max-rss 150 MiB")
        sup.wait_gone({first})
        clients.wait_ok(100)
    assert sup.serving() and first not in sup.serving()
    rss = int(re.search(rf"Worker pid {first} uses (\d+) MiB", log).group(1))
    assert rss >= 200
    assert clients.lost == [], clients.lost[:5]
