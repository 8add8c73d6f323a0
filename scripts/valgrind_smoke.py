"""The binding layer under valgrind: real servers, real traffic.

    python scripts/valgrind_smoke.py

Starts oneloop under valgrind's memcheck (PYTHONMALLOC=malloc, so every
Python allocation is checked too) for an ASGI app, a WSGI app and a Flask
app with async views (the bridge, on uvloop and on the gated asyncio loop,
whose WSGI threads run first steps themselves), sends each a mix of requests -- keep-alive,
pipelined, chunked and Content-Length bodies, a malformed request, a client
that hangs up mid-body; over HTTP/2 with prior knowledge and by Upgrade: h2c, and a
stream reset -- and, to an ASGI app with WebSocket routes (on
both loops), WebSocket sessions: text and binary echo, fragments, pings
both ways, permessage-deflate, protocol errors, closes from either side,
clients that vanish before the accept, mid-frame or while the app waits in
send() -- then stops it with SIGTERM. Fails if the server
does not answer or exit cleanly, or if valgrind reports an error with
oneloop's extension in its stack. (CPython 3.11 itself draws a few reports,
from int.from_bytes, that are not ours: they are counted and shown apart.) The
ASan/UBSan run of the whole suite (scripts/test-py-asan.sh) is broader;
this catches what ASan cannot, such as reads of uninitialised memory.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WS = ["--ws-ping-interval", "1", "--ws-ping-timeout", "20"]  # a server ping within the run
APPS = [  # app, --app-dir, path, method, more options, WebSocket traffic too
    ("echo_apps:echo", ROOT / "tests/python/apps", "/echo", "POST", [], False),
    ("wsgi_apps:body_app", ROOT / "tests/python/apps", "/body", "POST", [], False),
    ("flask_async:app", ROOT / "examples", "/", "GET", ["--loop", "uvloop"], False),
    ("flask_async:app", ROOT / "examples", "/", "GET", ["--loop", "asyncio"], False),
    ("ws_apps:app", ROOT / "tests/python/apps", "/", "GET", ["--loop", "uvloop", *WS], True),
    ("ws_apps:app", ROOT / "tests/python/apps", "/", "GET", ["--loop", "asyncio", *WS], True),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(app: str, app_dir: Path, options: list[str], port: int, log: Path) -> subprocess.Popen:
    cmd = [
        "valgrind", "--track-origins=yes", "--leak-check=no", "--num-callers=40",
        "--log-file=" + str(log),
        sys.executable, "-m", "oneloop", "--app-dir", str(app_dir), "--port", str(port),
        "--threads", "4", "--no-access-log", *options, app,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONMALLOC": "malloc"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180  # CPython under valgrind starts slowly
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"valgrind smoke: {app} exited at start:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    sys.exit(f"valgrind smoke: {app} did not start")


def exchange(port: int, data: bytes, timeout: float = 60) -> bytes:
    """Send raw bytes (ending in a malformed request, which the server
    answers and then closes), read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def traffic(port: int, path: str, method: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for i in range(20):  # keep-alive, both body framings
        if method == "GET":
            conn.request("GET", path)
        elif i % 2:
            conn.request("POST", path, body=b"x" * (i * 1000))
        else:
            conn.request("POST", path, body=iter([b"a" * 100, b"b" * 5000]))
        response = conn.getresponse()
        response.read()
        assert response.status == 200, (path, response.status)
    conn.close()
    get = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    answers = exchange(port, get * 8 + b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: z\r\n\r\n")
    assert answers.count(b"HTTP/1.1 200") == 8 and b"HTTP/1.1 400" in answers, answers[-300:]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # hang up mid-body
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".encode())
        s.sendall(b"y" * 1000)
    time.sleep(1)


def http2_traffic(port: int, path: str, method: str) -> None:
    """HTTP/2 with prior knowledge (many streams, bodies both ways), the
    same by Upgrade: h2c, and a client that resets a stream and vanishes."""
    url = f"http://127.0.0.1:{port}{path}"
    data = ["-d", "/etc/services"] if method == "POST" else []
    out = subprocess.run(
        ["h2load", "-n", "60", "-c", "2", "-m", "8", *data, url],
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    assert "60 succeeded" in out, out
    curl = ["curl", "-sf", "--http2", "-o", "/dev/null", url]
    subprocess.run([*curl, "-d", ""] if method == "POST" else curl, check=True, timeout=120)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        headers = b"\x82\x86\x84\x41\x01x"  # GET, http, /, :authority x (HPACK)
        s.sendall(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # SETTINGS
            + len(headers).to_bytes(3, "big")
            + b"\x01\x05\x00\x00\x00\x01"
            + headers
            + b"\x00\x00\x04\x03\x00\x00\x00\x00\x01\x00\x00\x00\x08"  # RST_STREAM CANCEL
        )
    time.sleep(1)


# -- WebSocket traffic (a raw client: frames no library sends) ------------------------

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def ws_frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv1: bool = False) -> bytes:
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    key = os.urandom(4)
    stream = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
    return head + key + (masked if n else b"")


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class WSClient:
    """One WebSocket session on a plain socket, frame by frame."""

    def __init__(self, port: int, path: str, *headers: str, rcvbuf: int = 0) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(60)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        digest = hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        self.accept = base64.b64encode(digest).decode().lower()
        lines = [f"GET {path} HTTP/1.1", "Host: x", "Connection: Upgrade", "Upgrade: websocket"]
        lines += ["Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {key}", *headers]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        self.headers = ""

    def opened(self) -> WSClient:
        """Read the 101 (and check its accept key)."""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        self.headers = head.decode("latin-1").lower()
        assert f"sec-websocket-accept: {self.accept}\r\n" in self.headers, head
        return self

    def __enter__(self) -> WSClient:
        return self.opened()

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("EOF")
        return chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += self._recv()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send(self, opcode: int, payload: bytes = b"", **kw) -> None:
        self.sock.sendall(ws_frame(opcode, payload, **kw))

    def recv(self) -> tuple[int, bool, bytes]:
        """The next frame: opcode, RSV1, payload (server frames are whole)."""
        b0, b1 = self._take(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8))[0]
        assert b0 & 0x80 and not b1 & 0x80, (b0, b1)
        return b0 & 0x0F, bool(b0 & 0x40), self._take(n)

    def recv_data(self) -> tuple[int, bool, bytes]:
        """The next frame that is not a ping (answered) or a pong."""
        while True:
            opcode, rsv1, payload = self.recv()
            if opcode == PING:
                self.send(PONG, payload)
            elif opcode != PONG:
                return opcode, rsv1, payload

    def closed_with(self, code: int | None) -> None:
        """A close frame with `code` (None: without one) comes (answered),
        then the server's EOF."""
        opcode, _, payload = self.recv_data()
        got = struct.unpack("!H", payload[:2])[0] if payload else None
        assert opcode == CLOSE and got == code, (opcode, payload)
        with contextlib.suppress(OSError):  # a failed connection is not waited for
            self.send(CLOSE, payload[:2])
        with contextlib.suppress(ConnectionResetError):
            while self.sock.recv(1 << 16):
                pass

    def reset(self) -> None:
        """Close with a TCP reset."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def deflated(data: bytes, compressor) -> bytes:
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]


def ws_traffic(port: int) -> None:
    # Echo: text and binary with 7-, 16- and 64-bit lengths, a ping, a
    # fragmented message with a ping between its fragments; the client closes.
    with WSClient(port, "/echo") as ws:
        for opcode, data in (
            (TEXT, b"hello"),
            (BINARY, bytes(range(256)) * 4),
            (TEXT, "d\u00e9j\u00e0 vu ".encode() * 8000),
        ):
            ws.send(opcode, data)
            assert ws.recv_data() == (opcode, False, data)
        ws.send(PING, b"are you there")
        assert ws.recv() == (PONG, False, b"are you there")
        ws.send(TEXT, b"frag", fin=False)
        ws.send(PING, b"mid")
        ws.send(CONT, b"mented \xe2\x82", fin=False)  # a UTF-8 character across fragments
        ws.send(CONT, b"\xac", fin=True)
        assert ws.recv() == (PONG, False, b"mid")
        assert ws.recv_data() == (TEXT, False, "fragmented \u20ac".encode())
        ws.send(CLOSE, close_payload(1000, b"done"))
        ws.closed_with(1000)
    # permessage-deflate both ways, context taken over from message to
    # message, a compressed message in fragments, a short one left plain.
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
    with WSClient(port, "/echo", offer) as ws:
        assert "permessage-deflate" in ws.headers, ws.headers
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        inflater = zlib.decompressobj(-15)
        for i in range(3):
            text = f"compress me, round {i} ".encode() * 2000
            ws.send(TEXT, deflated(text, compressor), rsv1=True)
            opcode, rsv1, payload = ws.recv_data()
            assert opcode == TEXT and rsv1, (opcode, rsv1)
            assert inflater.decompress(payload + b"\x00\x00\xff\xff") == text
        squares = " ".join(str(i * i) for i in range(3000)).encode()  # 10 KB compressed
        piece = deflated(squares, compressor)
        ws.send(BINARY, piece[:3000], fin=False, rsv1=True)
        ws.send(CONT, piece[3000:6000], fin=False)
        ws.send(CONT, piece[6000:], fin=True)
        opcode, rsv1, payload = ws.recv_data()
        assert opcode == BINARY and rsv1, (opcode, rsv1)
        assert inflater.decompress(payload + b"\x00\x00\xff\xff") == squares
        ws.send(TEXT, deflated(b"short", compressor), rsv1=True)
        assert ws.recv_data() == (TEXT, False, b"short")
        ws.send(CLOSE, close_payload(1001))
        ws.closed_with(1001)
    # A keepalive ping from the server (--ws-ping-interval 1), answered.
    with WSClient(port, "/echo") as ws:
        assert ws.recv()[0] == PING
        ws.send(PONG, b"")  # a pong that does not echo the ping's payload: ignored
        time.sleep(0.1)
        ws.send(TEXT, b"after the ping")
        assert ws.recv_data() == (TEXT, False, b"after the ping")
        ws.send(CLOSE)  # no code: answered with none
        ws.closed_with(None)
    # The app closes (4001 with a reason), or raises after the accept (1011).
    with WSClient(port, "/end?how=close&code=4001&reason=bye") as ws:
        ws.send(TEXT, b"go")
        ws.closed_with(4001)
    with WSClient(port, "/end?how=raise") as ws:
        ws.send(TEXT, b"go")
        ws.closed_with(1011)
    # Protocol errors: an unmasked frame (1002), invalid UTF-8 (1007),
    # RSV1 without the extension (1002), a bad close code (1002).
    for bad, code in (
        (b"\x81\x02hi", 1002),
        (ws_frame(TEXT, b"ok \xff\xfe"), 1007),
        (ws_frame(TEXT, b"x", rsv1=True), 1002),
        (ws_frame(CLOSE, close_payload(999)), 1002),
    ):
        with WSClient(port, "/echo") as ws:
            ws.sock.sendall(bad)
            ws.closed_with(code)
    # Clients that vanish: before the accept (the app holds), inside a
    # frame's header, inside a payload, inside a compressed fragmented
    # message, after a close frame, with a reset while the app's send()
    # waits for it to read.
    ws = WSClient(port, "/edge?hold=accept&hold_s=0.5")
    ws.sock.close()
    with WSClient(port, "/echo") as ws:
        ws.sock.sendall(ws_frame(BINARY, b"x" * 1000)[:3])
    with WSClient(port, "/echo") as ws:
        ws.sock.sendall(ws_frame(BINARY, os.urandom(100_000))[:50_000])
    with WSClient(port, "/echo", offer) as ws:
        squares = " ".join(str(i * i) for i in range(3000)).encode()
        piece = deflated(squares, zlib.compressobj(6, zlib.DEFLATED, -15))
        ws.send(TEXT, piece[:3000], fin=False, rsv1=True)
        ws.send(CONT, piece[3000:6000], fin=False)
    with WSClient(port, "/echo") as ws:
        ws.send(CLOSE, close_payload(1000))
    ws = WSClient(port, "/flood?size=65536&count=1000", rcvbuf=4096).opened()
    time.sleep(2)
    ws.reset()
    time.sleep(1)
    with WSClient(port, "/echo") as ws:  # still serving
        ws.send(TEXT, b"still here")
        assert ws.recv_data() == (TEXT, False, b"still here")


def errors(report: str) -> tuple[list[str], list[str]]:
    """valgrind's error reports, split into those with our extension (or
    the wire layer linked into it) in their stack, and the others."""
    blocks = re.split(r"\n==\d+== \n", report)
    found = [
        b
        for b in blocks
        if re.search(
            r"^==\d+== (Invalid|Conditional|Use of|Syscall|Mismatched|Source and destination)",
            b,
            re.M,
        )
    ]
    ours = [b for b in found if "_core.cpython" in b or "src/core/" in b or "src/wire/" in b]
    return ours, [b for b in found if b not in ours]


def main() -> None:
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for app, app_dir, path, method, options, websockets in APPS:
            log = Path(tmp) / "valgrind.log"
            port = free_port()
            proc = start(app, app_dir, options, port, log)
            try:
                traffic(port, path, method)
                http2_traffic(port, path, method)
                if websockets:
                    ws_traffic(port)
            finally:
                proc.send_signal(signal.SIGTERM)
                status = proc.wait(120)
            ours, others = errors(log.read_text())
            name = " ".join([app, *options])
            print(f"{name}: exit {status}; {len(ours)} errors in oneloop, {len(others)} elsewhere")
            if status != 0 or ours:
                failed.append(name)
                print("\n\n".join(ours[:10]))
    if failed:
        sys.exit(f"valgrind smoke: errors in {', '.join(failed)}")


if __name__ == "__main__":
    main()
