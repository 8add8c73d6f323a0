"""HTTP/2 test support: a raw frame client (frames built by hand with struct, header
blocks with `hpack`), the servers the HTTP/2 tests run against, and small helpers.

The servers are oneloop by default. ONELOOP_H2_REFERENCE=nghttpd (raw conformance
table only) or =hypercorn (ASGI behaviour) runs the same tests against a reference
server instead, to check the tests themselves; tests of oneloop's own options are
skipped then.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import hpack
import pytest
from conftest import APPS, Server, listening_socket, stop_process, wait_ready

REFERENCE = os.environ.get("ONELOOP_H2_REFERENCE", "")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE = 0, 1, 2, 3, 4, 5
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 6, 7, 8, 9
FRAME_NAMES = {
    0: "DATA",
    1: "HEADERS",
    2: "PRIORITY",
    3: "RST_STREAM",
    4: "SETTINGS",
    5: "PUSH_PROMISE",
    6: "PING",
    7: "GOAWAY",
    8: "WINDOW_UPDATE",
    9: "CONTINUATION",
}
# Flags.
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
# Settings.
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 1, 2, 3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 4, 5, 6
# Error codes (RFC 9113 section 7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM = 0x4, 0x5, 0x6, 0x7
CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM = 0x8, 0x9, 0xA, 0xB
ERROR_NAMES = {
    0: "NO_ERROR",
    1: "PROTOCOL_ERROR",
    2: "INTERNAL_ERROR",
    3: "FLOW_CONTROL_ERROR",
    4: "SETTINGS_TIMEOUT",
    5: "STREAM_CLOSED",
    6: "FRAME_SIZE_ERROR",
    7: "REFUSED_STREAM",
    8: "CANCEL",
    9: "COMPRESSION_ERROR",
    10: "CONNECT_ERROR",
    11: "ENHANCE_YOUR_CALM",
    12: "INADEQUATE_SECURITY",
    13: "HTTP_1_1_REQUIRED",
}


# -- frames ----------------------------------------------------------------------------


def frame(ftype: int, flags: int, stream: int, payload: bytes = b"", length: int | None = None):
    """One frame: the 9-byte header and the payload. `length` overrides the length
    field (for frames that lie about their size)."""
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + struct.pack(">BBI", ftype, flags, stream) + payload


def settings(*pairs: tuple[int, int], ack: bool = False, stream: int = 0) -> bytes:
    payload = b"".join(struct.pack(">HI", k, v) for k, v in pairs)
    return frame(SETTINGS, ACK if ack else 0, stream, payload)


def ping(data: bytes = b"12345678", ack: bool = False, stream: int = 0) -> bytes:
    return frame(PING, ACK if ack else 0, stream, data)


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", increment))


def rst_stream(stream: int, code: int = CANCEL) -> bytes:
    return frame(RST_STREAM, 0, stream, struct.pack(">I", code))


def goaway(last: int = 0, code: int = NO_ERROR, stream: int = 0) -> bytes:
    return frame(GOAWAY, 0, stream, struct.pack(">II", last, code))


def priority(stream: int, depends: int = 0, weight: int = 15, exclusive: bool = False) -> bytes:
    dep = depends | (0x80000000 if exclusive else 0)
    return frame(PRIORITY, 0, stream, struct.pack(">IB", dep, weight))


def data(stream: int, body: bytes = b"", end: bool = True, pad: int | None = None) -> bytes:
    flags = END_STREAM if end else 0
    if pad is not None:
        return frame(DATA, flags | PADDED, stream, bytes([pad]) + body + b"\0" * pad)
    return frame(DATA, flags, stream, body)


def headers_frame(
    stream: int,
    block: bytes,
    end_stream: bool = True,
    end_headers: bool = True,
    pad: int | None = None,
    depends: int | None = None,
    weight: int = 15,
) -> bytes:
    flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    payload = block
    if depends is not None:
        flags |= PRIORITY_FLAG
        payload = struct.pack(">IB", depends, weight) + payload
    if pad is not None:
        flags |= PADDED
        payload = bytes([pad]) + payload + b"\0" * pad
    return frame(HEADERS, flags, stream, payload)


def continuation(stream: int, block: bytes, end_headers: bool = True) -> bytes:
    return frame(CONTINUATION, END_HEADERS if end_headers else 0, stream, block)


def request_headers(
    path: str = "/", method: str = "GET", authority: str = "localhost", scheme: str = "http"
) -> list[tuple[str, str]]:
    return [(":method", method), (":scheme", scheme), (":path", path), (":authority", authority)]


@dataclass
class Frame:
    type: int
    flags: int
    stream: int
    payload: bytes
    headers: list[tuple[str, str]] | None = None  # decoded, for HEADERS (+ CONTINUATION)

    @property
    def error_code(self) -> int:
        if self.type == RST_STREAM:
            return struct.unpack(">I", self.payload[:4])[0]
        if self.type == GOAWAY:
            return struct.unpack(">I", self.payload[4:8])[0]
        raise ValueError("no error code")

    @property
    def last_stream(self) -> int:
        return struct.unpack(">I", self.payload[:4])[0] & 0x7FFFFFFF

    def __repr__(self) -> str:
        name = FRAME_NAMES.get(self.type, f"type{self.type}")
        extra = ""
        if self.type in (RST_STREAM, GOAWAY):
            extra = f" {ERROR_NAMES.get(self.error_code, self.error_code)}"
            if self.type == GOAWAY:
                extra += f" last={self.last_stream} {self.payload[8:60]!r}"
        elif self.headers is not None:
            extra = f" {self.headers}"
        elif self.type == DATA:
            extra = f" {len(self.payload)}B"
        elif self.type in (SETTINGS, WINDOW_UPDATE, PING):
            extra = f" {self.payload.hex()}"
        return f"<{name} flags={self.flags:#x} stream={self.stream}{extra}>"


class Closed(Exception):
    """The server closed the connection."""


@dataclass
class H2Conn:
    """A raw HTTP/2 client connection: sends bytes as given, reads and records every
    frame the server sends, decodes header blocks in order."""

    sock: socket.socket
    encoder: hpack.Encoder = field(default_factory=hpack.Encoder)
    decoder: hpack.Decoder = field(default_factory=hpack.Decoder)
    frames: list[Frame] = field(default_factory=list)
    buf: bytes = b""
    closed: bool = False
    server_settings: dict[int, int] = field(default_factory=dict)
    auto_ping_ack: bool = True
    _pending: Frame | None = None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.sock.sendall(chunk)

    def block(self, headers: list[tuple[str, str]], huffman: bool = False) -> bytes:
        return self.encoder.encode(headers, huffman=huffman)

    def handshake(self, *pairs: tuple[int, int], ack_server: bool = True) -> None:
        """Preface and our SETTINGS; waits for the server's SETTINGS and acks them."""
        self.send(PREFACE + settings(*pairs))
        first = self.wait(lambda f: f.type == SETTINGS and not f.flags & ACK, 5)
        assert first is not None, f"no server SETTINGS: {self.frames}"
        for i in range(0, len(first.payload), 6):
            k, v = struct.unpack(">HI", first.payload[i : i + 6])
            self.server_settings[k] = v
        if ack_server:
            self.send(settings(ack=True))

    def request(
        self,
        stream: int,
        path: str = "/",
        method: str = "GET",
        extra: list[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> None:
        block = self.block([*request_headers(path, method), *extra])
        self.send(headers_frame(stream, block, end_stream=body is None))
        if body is not None:
            self.send(data(stream, body))

    def _read_frame(self, timeout: float) -> Frame | None:
        """The next frame, or None when none comes in time; Closed at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + n:
                    ftype, flags, sid = struct.unpack(">BBI", self.buf[3:9])
                    payload, self.buf = self.buf[9 : 9 + n], self.buf[9 + n :]
                    return Frame(ftype, flags, sid & 0x7FFFFFFF, payload)
            if self.closed:
                raise Closed
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                return None
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self.closed = True
            self.buf += chunk

    def _decode(self, f: Frame) -> Frame:
        """Gathers HEADERS + CONTINUATION into one frame with decoded headers."""
        if f.type == HEADERS:
            payload = f.payload
            if f.flags & PADDED:
                pad = payload[0]
                payload = payload[1 : len(payload) - pad]
            if f.flags & PRIORITY_FLAG:
                payload = payload[5:]
            f = Frame(f.type, f.flags, f.stream, payload)
            if not f.flags & END_HEADERS:
                self._pending = f
                return None
        elif f.type == CONTINUATION and self._pending is not None:
            p = self._pending
            f = Frame(HEADERS, p.flags | (f.flags & END_HEADERS), p.stream, p.payload + f.payload)
            if not f.flags & END_HEADERS:
                self._pending = f
                return None
            self._pending = None
        else:
            return f
        f.headers = [(k, v) for k, v in self.decoder.decode(f.payload)]
        return f

    def next(self, timeout: float = 5.0) -> Frame | None:
        deadline = time.monotonic() + timeout
        while True:
            f = self._read_frame(max(0.0, deadline - time.monotonic()))
            if f is None:
                return None
            f = self._decode(f)
            if f is not None:
                if f.type == PING and not f.flags & ACK and self.auto_ping_ack:
                    with contextlib.suppress(OSError):  # as a real client does
                        self.send(ping(f.payload, ack=True))
                self.frames.append(f)
                return f

    def wait(self, pred, timeout: float = 5.0) -> Frame | None:
        """The first frame (already read or next) that matches, or None (timeout or
        close)."""
        for f in self.frames:
            if pred(f):
                return f
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                f = self.next(deadline - time.monotonic())
            except Closed:
                return None
            if f is not None and pred(f):
                return f
        return None

    def response(self, stream: int, timeout: float = 5.0) -> tuple[dict, bytes]:
        """The response on `stream`: its headers and its whole body (acking DATA with
        WINDOW_UPDATEs so large bodies flow). Fails on a reset of the stream, a GOAWAY
        that leaves it out, or a close before it ends."""
        deadline = time.monotonic() + timeout
        head, body, i = None, b"", 0
        while True:
            while i < len(self.frames):
                f = self.frames[i]
                i += 1
                if f.type == GOAWAY and f.last_stream < stream:
                    raise AssertionError(f"stream {stream} left out by {f}: {self.frames[-8:]}")
                if f.stream != stream:
                    continue
                assert f.type != RST_STREAM, f"stream {stream} reset: {f}"
                if f.type == HEADERS and head is None:
                    head = f
                elif f.type == DATA:
                    body += f.payload
                    if f.payload:
                        self.send(window_update(0, len(f.payload)))
                        self.send(window_update(stream, len(f.payload)))
                if f.type in (HEADERS, DATA) and f.flags & END_STREAM:
                    assert head is not None, f"no response head on {stream}: {self.frames}"
                    return dict(head.headers), body
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"stream {stream} unfinished: {self.frames[-8:]}")
            try:
                self.next(left)
            except Closed:
                raise AssertionError(
                    f"closed before stream {stream} ended: {self.frames[-8:]}"
                ) from None

    def goaway(self, timeout: float = 5.0) -> Frame | None:
        return self.wait(lambda f: f.type == GOAWAY, timeout)

    def closes(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection in time (frames read meanwhile
        are recorded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.next(deadline - time.monotonic())
            except Closed:
                return True
        return False


def h2_connect(host: str, port: int, tls: bool = False, timeout: float = 5.0) -> H2Conn:
    sock = socket.create_connection((host, port), timeout=timeout)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        sock = ctx.wrap_socket(sock, server_hostname=host)
        assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return H2Conn(sock)


# -- servers ---------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def worker_pid(server: Server) -> int:
    """The process that serves: the lone process, or the supervisor's one worker."""
    pid = server.proc.pid
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
    return pid


def start_oneloop(tmp: Path, app: str, *options: str, env: dict | None = None) -> Server:
    sock = listening_socket()
    port = sock.getsockname()[1]
    log, out = tmp / "server.err", tmp / "server.out"
    cmd = [sys.executable, "-m", "oneloop", "--app-dir", str(APPS), "--fd", str(sock.fileno())]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log, "wb") as err, open(out, "wb") as o:
        proc = subprocess.Popen(
            [*cmd, *options, app], stdout=o, stderr=err, pass_fds=[sock.fileno()], env=full_env
        )
    sock.close()
    server = Server(proc, "127.0.0.1", port, log, out)
    try:
        wait_ready("127.0.0.1", port, proc, log)
    except BaseException:
        with contextlib.suppress(Exception):
            stop_process(proc, signal.SIGKILL, 5)
        raise
    return server


def _wait_port(server: Server, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"reference server exited:\n{server.log()}\n{server.out()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", server.port), 1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"reference server not listening:\n{server.log()}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_reference(tmp: Path, app: str, *, certfile=None, keyfile=None) -> Server:
    """The reference server named by ONELOOP_H2_REFERENCE, serving `app` (hypercorn)
    or a document root with the same answers for GET / (nghttpd)."""
    port = _free_port()
    log, out = tmp / "ref.err", tmp / "ref.out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if REFERENCE == "nghttpd":
        root = tmp / "docroot"
        root.mkdir(exist_ok=True)
        (root / "index.html").write_bytes(b"hello")
        (root / "download").write_bytes(b"d" * 1_000_000)
        cmd = [shutil.which("nghttpd") or "nghttpd", "-d", str(root), "-a", "127.0.0.1"]
        cmd += [str(port), str(keyfile), str(certfile)] if certfile else ["--no-tls", str(port)]
    elif REFERENCE == "hypercorn":
        env["PYTHONPATH"] = str(APPS)
        cmd = [sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}"]
        if certfile:
            cmd += ["--certfile", str(certfile), "--keyfile", str(keyfile)]
        cmd.append(app)
    else:
        raise AssertionError(f"unknown ONELOOP_H2_REFERENCE={REFERENCE!r}")
    with open(log, "wb") as err, open(out, "wb") as o:
        proc = subprocess.Popen(cmd, stdout=o, stderr=err, env=env)
    server = Server(proc, "127.0.0.1", port, log, out)
    _wait_port(server)
    return server


@contextlib.contextmanager
def h2_server(tmp: Path, app: str, *options: str, certs=None, env=None) -> Iterator[Server]:
    """oneloop serving `app` with `options` (or the reference server, without
    oneloop's options)."""
    certfile = keyfile = None
    if certs is not None:
        certfile, keyfile = certs
        options = (*options, "--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile))
    if REFERENCE:
        server = start_reference(tmp, app, certfile=certfile, keyfile=keyfile)
    else:
        server = start_oneloop(tmp, app, *options, env=env)
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            stop_process(server.proc, signal.SIGKILL if server.proc.poll() is None else 15, 5)


oneloop_only = pytest.mark.skipif(
    bool(REFERENCE), reason="oneloop's own options and behaviour, not the reference's"
)
