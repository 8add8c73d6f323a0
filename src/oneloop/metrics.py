"""Prometheus metrics of every worker, served by the supervisor.

Each worker's C core counts into a block of memory the supervisor mapped
before forking it (the page after its heartbeat, oneloop.heartbeat): no
lock, no message, no multiprocess directory. On a scrape of
--metrics-bind the supervisor reads every live worker's block (one atomic
load per word, _core.metrics_snapshot), adds the counters of workers that
have exited (kept when each exits, so a total never goes back after a
crash or a reload) and its own counts of worker starts and exits, and
answers in the Prometheus text format (version 0.0.4).

The block's layout is the C core's (_core.metrics_layout(): a family,
labels and a kind per word), so nothing here repeats it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import stat
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import _core
from .binding import parse_address
from .config import ConfigError

LAYOUT: list[tuple[str, str, str]] = _core.metrics_layout()
BLOCK_SIZE = len(LAYOUT) * 8
# Words summed over workers past and present; gauges are summed over the
# live ones; the loop lag is the worst worker's.
COUNTED = {"counter", "bucket", "sum_us", "count"}
LAG_OFFSET = 8 * next(
    i for i, (family, _, _) in enumerate(LAYOUT) if family.endswith("lag_seconds")
)

HELP = {
    "oneloop_requests_total": "Responses, by request method and status class (499: the client "
    "left first). Requests the core refused by itself are in oneloop_rejections_total.",
    "oneloop_request_duration_seconds": "From a request's head received to its response complete.",
    "oneloop_received_bytes_total": "Bytes read from client sockets (TLS records included).",
    "oneloop_sent_bytes_total": "Bytes written to client sockets (TLS records included).",
    "oneloop_connections_accepted_total": "Client connections accepted.",
    "oneloop_connections": "Open client connections, by what they are doing: reading a request, "
    "in the app, writing after it, idle between requests, or a WebSocket.",
    "oneloop_requests_in_flight": "Requests and WebSocket sessions the app holds.",
    "oneloop_wsgi_threads": "WSGI pool threads running.",
    "oneloop_wsgi_threads_busy": "WSGI pool threads serving a connection now.",
    "oneloop_bridge_call_duration_seconds": "Async calls of WSGI code run on the worker's "
    "event loop, from the call to its result.",
    "oneloop_rejections_total": "Requests the core answered by itself: bad input and limits "
    "(400, 408, 413, 414, 431, 501, 503, 505).",
    "oneloop_websocket_messages_received_total": "WebSocket messages from clients.",
    "oneloop_websocket_messages_sent_total": "WebSocket messages to clients.",
    "oneloop_health_checks_total": "Requests of --health-path answered by the core.",
    "oneloop_loop_lag_seconds": "How late the worker's heartbeat ran on its event loop, last "
    "time (the worst worker).",
    "oneloop_workers": "Worker processes, by state.",
    "oneloop_worker_starts_total": "Worker processes started.",
    "oneloop_worker_exits_total": "Worker processes that exited, by reason.",
    "oneloop_worker_heartbeat_age_seconds": "Time since the last heartbeat of the most "
    "behind serving worker.",
    "oneloop_reloads_total": "Reloads (SIGHUP, --reload).",
}

EXIT_REASONS = (
    "crash",  # exited unexpectedly
    "boot_failure",  # could not import the app or start
    "timeout",  # its loop was blocked past --timeout
    "max_requests",  # --max-requests
    "lifetime",  # --workers-lifetime
    "max_rss",  # --workers-max-rss
    "reload",  # replaced by a reload
    "scale_down",  # SIGTTOU
    "shutdown",  # the server stopped
)


def block_pages() -> int:
    """Pages a worker's metrics block takes."""
    return -(-BLOCK_SIZE // os.sysconf("SC_PAGE_SIZE"))


class Supervision:
    """What the supervisor itself counts of its workers."""

    def __init__(self) -> None:
        self.starts = 0
        self.reloads = 0
        self.exits: collections.Counter[str] = collections.Counter()
        self.retired = [0] * len(LAYOUT)  # counted words of workers gone

    def retire(self, words: Sequence[int]) -> None:
        for i, (_, _, kind) in enumerate(LAYOUT):
            if kind in COUNTED:
                self.retired[i] += words[i]


def render(
    live: Sequence[Sequence[int]],
    supervision: Supervision,
    workers: dict[str, int],
    heartbeat_age: float,
) -> str:
    """The text exposition of the live workers' blocks and the supervisor's counts."""
    totals = list(supervision.retired)
    lag = 0
    for words in live:
        for i, (_, _, kind) in enumerate(LAYOUT):
            if kind == "gauge_us":
                lag = max(lag, words[i])
            elif kind != "unused":
                totals[i] += words[i]
    out: list[str] = []
    families: dict[str, list[tuple[str, str, int]]] = {}
    for (family, labels, kind), value in zip(LAYOUT, totals, strict=True):
        if kind == "gauge_us":
            value = lag
        families.setdefault(family, []).append((labels, kind, value))
    for family, words in families.items():
        kinds = {kind for _, kind, _ in words}
        if "bucket" in kinds:
            _histogram(out, family, words)
        elif kinds == {"gauge_us"}:
            _family(out, family, "gauge", [("", words[0][2] / 1e6)])
        else:
            kind = "counter" if "counter" in kinds else "gauge"
            _family(out, family, kind, [(labels, v) for labels, k, v in words if k != "unused"])
    _family(out, "oneloop_workers", "gauge", [(f'state="{s}"', n) for s, n in workers.items()])
    _family(out, "oneloop_worker_starts_total", "counter", [("", supervision.starts)])
    _family(
        out,
        "oneloop_worker_exits_total",
        "counter",
        [(f'reason="{r}"', supervision.exits[r]) for r in EXIT_REASONS],
    )
    _family(out, "oneloop_worker_heartbeat_age_seconds", "gauge", [("", heartbeat_age)])
    _family(out, "oneloop_reloads_total", "counter", [("", supervision.reloads)])
    return "".join(out)


def _family(out: list[str], name: str, kind: str, samples: list[tuple[str, Any]]) -> None:
    out.append(f"# HELP {name} {HELP[name]}\n# TYPE {name} {kind}\n")
    for labels, value in samples:
        out.append(
            f"{name}{{{labels}}} {_number(value)}\n" if labels else f"{name} {_number(value)}\n"
        )


def _histogram(out: list[str], name: str, words: list[tuple[str, str, int]]) -> None:
    out.append(f"# HELP {name} {HELP[name]}\n# TYPE {name} histogram\n")
    running = 0
    for labels, kind, value in words:
        if kind == "bucket":
            running += value
            out.append(f"{name}_bucket{{{labels}}} {running}\n")
        elif kind == "sum_us":
            out.append(f"{name}_sum {_number(value / 1e6)}\n")
        elif kind == "count":
            out.append(f"{name}_count {value}\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(round(value, 6))


# -- the endpoint -----------------------------------------------------------

MAX_CLIENTS = 32
CLIENT_TIMEOUT = 10.0
MAX_HEAD = 8192


class _Client:
    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.inbuf = b""
        self.out = b""
        self.deadline = now + CLIENT_TIMEOUT


class Endpoint:
    """A small HTTP/1.1 server on the supervisor's select() loop: GET (or
    HEAD) /metrics, one request per connection. Never blocks the loop: the
    sockets are non-blocking, a scrape is answered from memory, and a client
    that does not finish its request in CLIENT_TIMEOUT is dropped."""

    def __init__(self, spec: str, body: Callable[[], str], umask: int | None = None) -> None:
        kind, address = parse_address(spec)
        if kind == "fd":
            raise ConfigError(f"--metrics-bind {spec!r}: give HOST:PORT or unix:PATH")
        self.body = body
        self.path: str | None = None
        if kind == "unix":
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.stat(address).st_mode):
                    os.unlink(address)
            self.path = address
        else:
            host, port = address
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, socktype, proto, _, address = infos[0]
            self.sock = socket.socket(family, socktype, proto)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind(address)
            if self.path:
                os.chmod(self.path, 0o666 & ~(umask or 0))
            self.sock.listen(64)
        except OSError as exc:
            self.sock.close()
            raise OSError(exc.errno, f"--metrics-bind {spec}: {exc.strerror}") from None
        self.sock.setblocking(False)
        self.clients: dict[int, _Client] = {}
        self.url = f"unix:{self.path}" if self.path else _url(self.sock.getsockname())

    def readers(self) -> list[int]:
        fds = [c.sock.fileno() for c in self.clients.values() if not c.out]
        if len(self.clients) < MAX_CLIENTS:
            fds.append(self.sock.fileno())
        return fds

    def writers(self) -> list[int]:
        return [c.sock.fileno() for c in self.clients.values() if c.out]

    def handle(self, readable: Sequence[int], writable: Sequence[int], now: float) -> None:
        if self.sock.fileno() in readable:
            self._accept(now)
        for fd, client in list(self.clients.items()):
            if fd in readable:
                self._read(client)
            elif fd in writable:
                self._write(client)
            elif now >= client.deadline:
                self._drop(client)

    def _accept(self, now: float) -> None:
        while len(self.clients) < MAX_CLIENTS:
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # out of descriptors, a client gone: the next scrape comes
            sock.setblocking(False)
            self.clients[sock.fileno()] = _Client(sock, now)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.inbuf += data
        head, sep, _ = client.inbuf.partition(b"\r\n\r\n")
        if not sep:
            if len(client.inbuf) > MAX_HEAD:
                client.out = _response(431, "request head too large\n")
                self._write(client)
            return
        client.out = self._answer(head)
        self._write(client)

    def _answer(self, head: bytes) -> bytes:
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _response(400, "bad request\n")
        method, target, _ = parts
        if target.split("?", 1)[0] != "/metrics":
            return _response(404, "metrics are at /metrics\n")
        if method not in ("GET", "HEAD"):
            return _response(405, "GET or HEAD\n", "Allow: GET, HEAD\r\n")
        return _response(
            200,
            self.body(),
            content_type="text/plain; version=0.0.4; charset=utf-8",
            head_only=method == "HEAD",
        )

    def _write(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        client.out = client.out[sent:]
        if not client.out:
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        self.clients.pop(client.sock.fileno(), None)
        client.sock.close()

    def close(self, remove_file: bool = True) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        self.sock.close()
        if self.path and remove_file:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def _response(
    status: int,
    text: str,
    extra: str = "",
    content_type: str = "text/plain; charset=utf-8",
    head_only: bool = False,
) -> bytes:
    reasons = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
    body = text.encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {reasons.get(status, 'Request Header Fields Too Large')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}\r\n"
        f"Connection: close\r\n{extra}\r\n"
    )
    return head.encode("latin-1") + (b"" if head_only else body)


def _url(address: Any) -> str:
    host, port = address[0], address[1]
    return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"
