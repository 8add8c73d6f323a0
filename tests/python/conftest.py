"""Fixtures: oneloop started as a real process, talked to over loopback.

`serve("module:attr", *options)` starts `python -m oneloop` on a listening
socket the test binds (ephemeral port) and hands over with --fd, so there is
no race for a port. Apps live in tests/python/apps/.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

APPS = Path(__file__).parent / "apps"
SANITIZER_MARKS = ("AddressSanitizer", "runtime error", "LeakSanitizer")


@dataclass
class Server:
    proc: subprocess.Popen
    host: str
    port: int
    log_path: Path
    out_path: Path
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def connect(self, timeout: float = 5.0) -> socket.socket:
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        return s

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log() + self.out()
            if text in log:
                return log
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not logged; log:\n{self.log()}\n{self.out()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        return stop_process(self.proc, sig, timeout)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    """Signal a server and wait for its exit status; one that does not exit
    in time is killed (so no test leaves it behind) and the timeout raised."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(1024)
    return s


def wait_ready(
    host: str, port: int, proc: subprocess.Popen, log: Path, timeout: float = 15.0
) -> None:
    """Until the server answers HTTP (the socket accepts even before that)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        if "Serving " in log.read_text(errors="replace"):
            return
        time.sleep(0.02)
    raise RuntimeError(f"server not ready:\n{log.read_text()}")


def raise_nofile(want: int) -> tuple[int, int]:
    """Lift this process's soft RLIMIT_NOFILE towards `want` (the servers it
    starts inherit it); returns the limits to restore."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, hard


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    servers: list[Server] = []

    def start(
        app: str,
        *options: str,
        env: dict | None = None,
        ready: bool = True,
        host: str = "127.0.0.1",
    ) -> Server:
        sock = listening_socket(host)
        port = sock.getsockname()[1]
        n = len(servers)
        log_path, out_path = tmp_path / f"server{n}.err", tmp_path / f"server{n}.out"
        cmd = [
            sys.executable,
            "-m",
            "oneloop",
            "--app-dir",
            str(APPS),
            "--fd",
            str(sock.fileno()),
            *options,
            app,
        ]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(log_path, "wb") as err, open(out_path, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=err, pass_fds=[sock.fileno()], env=full_env
            )
        sock.close()
        server = Server(proc, host, port, log_path, out_path)
        servers.append(server)
        if ready:
            wait_ready(host, port, proc, log_path)
        return server

    yield start
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop(signal.SIGKILL if server.proc.poll() is None else signal.SIGTERM, timeout=5)


class Client:
    """A raw HTTP/1.1 client connection that keeps bytes read past a response."""

    def __init__(self, sock: socket.socket, timeout: float = 5.0) -> None:
        self.sock = sock
        self.buf = b""
        sock.settimeout(timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed; unparsed: {self.buf!r}")
        return chunk

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            self.buf += self._more()

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self.buf += self._more()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def head(self) -> tuple[int, dict[str, str], bytes]:
        """Status, lower-cased headers and the raw head of the next response."""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            key = k.strip().lower().decode()
            value = v.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return int(lines[0].split()[1]), headers, head

    def response(self, head_request: bool = False) -> tuple[int, dict[str, str], bytes]:
        """The next complete response: status, headers, body."""
        status, headers, _ = self.head()
        if head_request or status < 200 or status in (204, 304):
            return status, headers, b""
        if "content-length" in headers:
            n = int(headers["content-length"])
            self._need(n)
            body, self.buf = self.buf[:n], self.buf[n:]
        elif headers.get("transfer-encoding") == "chunked":
            body = self._chunked()
        else:
            body = self.read_to_eof()
        return status, headers, body

    def _chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self._line().split(b";")[0], 16)
            if size == 0:
                while self._line():  # trailers, then the empty line
                    pass
                return body
            self._need(size + 2)
            body += self.buf[:size]
            self.buf = self.buf[size + 2 :]

    def read_to_eof(self) -> bytes:
        data, self.buf = self.buf, b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return data

    def closed(self, timeout: float = 2.0) -> bool:
        """True when the server closes the connection (EOF or reset) in time."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False


def connect(server: Server, timeout: float = 5.0) -> Client:
    return Client(server.connect(timeout), timeout)


def request(server: Server, raw: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes on a new connection and read one response."""
    with connect(server, timeout) as c:
        c.send(raw)
        return c.response()


# -- services for the one-loop tests (apps/one_loop/services.py) -------------------


@pytest.fixture(scope="module")
def services() -> Iterator[dict]:
    """The stand-in Elasticsearch node and the three 200 ms upstreams."""
    sys.path.insert(0, str(APPS))
    from one_loop.services import stub_services

    with stub_services() as urls:
        yield urls


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free port, killed after the module."""
    sys.path.insert(0, str(APPS))
    from one_loop.services import redis_server

    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


def sanitizer_report(log: str) -> str:
    """The gist of a sanitizer report in a log: its first lines, the
    summary; empty if there is none."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if any(mark in line for mark in SANITIZER_MARKS):
            gist = [x for x in lines[i:] if x.strip() and not x.startswith("  0x")]
            # each stack to its innermost frames
            gist = [x for x in gist if not re.match(r"\s+#([6-9]|\d\d+) ", x)]
            end = next((k for k, x in enumerate(gist) if x.startswith("SUMMARY:")), 40)
            return "\n".join(gist[: min(end, 40)] + gist[end : end + 1])
    return ""
