"""WebSockets over real sockets: the ASGI websocket scope (spec 2.4) as
clients see it -- the opening handshake, the scope, accepting and refusing,
messages both ways, the closing handshake from either side, protocol
errors, permessage-deflate, keepalive pings, backpressure both ways,
graceful shutdown, the access log and --ws off.

Clients: websockets (asyncio and sync), aiohttp, and a raw socket where a
test needs frames no library sends (fragments, malformed frames, a
deflate bomb, a peer that never reads or never answers a ping). The apps
are in apps/ws_apps.py; what they cannot tell the client they append to the
file named in the X-Record header. The core protocol tests run on both
event loops.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import websockets.sync.client
from conftest import APPS, Client, Server, listening_socket, stop_process
from test_asgi_protocol import records, wait_records
from test_tls import certs, tls_options  # noqa: F401 (certs is a fixture)
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.timeout(30)

APP = "ws_apps:app"
LOOPS = ["asyncio", "uvloop"]
MAX_SIZE = 1 << 20  # --ws-max-size of the shared servers
MAX_QUEUE = 4  # --ws-max-queue of the shared servers
MiB = 1 << 20

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = base64.b64encode(b"oneloop-ws-tests").decode()

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


# -- the server under test ----------------------------------------------------------


def server_command(app: str, fd: int, options: list[str]) -> tuple[list[str], str]:
    """The command serving `app` on the inherited listening socket `fd`, and
    the log text that says it is ready: the one place that names the server,
    so the same tests can be pointed at another ASGI server to compare."""
    cmd = [sys.executable, "-m", "oneloop", "--app-dir", str(APPS), "--fd", str(fd)]
    return [*cmd, *options, app], "Serving "


def start(directory: Path, app: str, *options: str, name: str = "server") -> Server:
    sock = listening_socket()
    port = sock.getsockname()[1]
    cmd, ready = server_command(app, sock.fileno(), list(options))
    log_path, out_path = directory / f"{name}.err", directory / f"{name}.out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as err, open(out_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, pass_fds=[sock.fileno()], env=env)
    sock.close()
    server = Server(proc, "127.0.0.1", port, log_path, out_path)
    deadline = time.monotonic() + 15
    while ready not in server.log() + server.out():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc, signal.SIGKILL)
            raise RuntimeError(f"server not ready ({proc.returncode}):\n{server.log()}")
        time.sleep(0.02)
    return server


@pytest.fixture
def launch(tmp_path):
    """start() for one test: a server with options of its own."""
    servers: list[Server] = []

    def run(app: str, *options: str) -> Server:
        servers.append(start(tmp_path, app, *options, name=f"server{len(servers)}"))
        return servers[-1]

    yield run
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop(signal.SIGKILL if server.proc.poll() is None else signal.SIGTERM, 5)


@pytest.fixture(scope="module", params=LOOPS)
def server(request, tmp_path_factory) -> Server:
    """One server per event loop, shared by the module's tests."""
    server = start(
        tmp_path_factory.mktemp("ws"),
        APP,
        "--loop",
        request.param,
        "--ws-max-size",
        str(MAX_SIZE),
        "--ws-max-queue",
        str(MAX_QUEUE),
    )
    yield server
    stop_process(server.proc, signal.SIGKILL)


def url(server: Server, path: str, scheme: str = "ws") -> str:
    return f"{scheme}://{server.host}:{server.port}{path}"


def run(coro, timeout: float = 20.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# -- the raw client -----------------------------------------------------------------


def accept_value(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def upgrade(path: str, *headers: str, key: str | None = KEY, version: str = "13") -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: t",
        "Connection: Upgrade",
        "Upgrade: websocket",
        f"Sec-WebSocket-Version: {version}",
        *([f"Sec-WebSocket-Key: {key}"] if key is not None else []),
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n or key == b"\0\0\0\0":
        return payload
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    key: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """A client frame; rsv is the three RSV bits (4 = RSV1); length overrides
    the declared payload length."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4) if key is None else key
    return head + key + mask(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


@dataclass
class Frame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes

    @property
    def close(self) -> tuple[int | None, str]:
        assert self.opcode == CLOSE, self
        if not self.payload:
            return None, ""
        return struct.unpack("!H", self.payload[:2])[0], self.payload[2:].decode()


class RawWS:
    """A WebSocket client on a plain socket, frame by frame."""

    def __init__(self, sock: socket.socket, buf: bytes, headers: dict[str, str]) -> None:
        self.sock, self.buf, self.pos, self.headers = sock, bytearray(buf), 0, headers

    @classmethod
    def open(cls, server: Server, path: str = "/echo", *headers: str, timeout: float = 5.0):
        c = Client(server.connect(timeout), timeout)
        c.send(upgrade(path, *headers))
        status, response_headers, head = c.head()
        assert status == 101, head
        return cls(c.sock, c.buf, response_headers)

    def __enter__(self) -> RawWS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, opcode: int, payload: bytes = b"", **kw) -> None:
        self.sock.sendall(frame(opcode, payload, **kw))

    def _need(self, n: int) -> None:
        while len(self.buf) - self.pos < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError(f"EOF; unread: {bytes(self.buf[self.pos :])[:64]!r}")
            self.buf += chunk

    def _take(self, n: int) -> bytes:
        self._need(n)
        data = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        if self.pos > 1 << 20:
            del self.buf[: self.pos]
            self.pos = 0
        return data

    def recv(self) -> Frame:
        b0, b1 = self._take(2)
        assert not b1 & 0x80, "a server frame must not be masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8))[0]
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, self._take(n))

    def recv_data(self) -> Frame:
        """The next frame that is not a ping or a pong."""
        while True:
            f = self.recv()
            if f.opcode not in (PING, PONG):
                return f

    def eof(self, timeout: float = 3.0) -> bool:
        """True when the server closes the TCP connection (EOF or reset) in
        time; what it sent before is kept."""
        self.sock.settimeout(timeout)
        try:
            while chunk := self.sock.recv(1 << 20):
                self.buf += chunk
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def failed_with(self, code: int) -> None:
        """The server sends a close frame with `code` and closes TCP without
        waiting for our close frame (it failed the connection)."""
        f = self.recv_data()
        assert f.opcode == CLOSE, f
        assert f.close[0] == code, f.close
        assert self.eof(), "the server kept the connection open after failing it"


# -- helpers ------------------------------------------------------------------------


def recorded(path: Path, event: str, timeout: float = 5.0) -> dict:
    """The first record of `event`, once it is there."""
    recs = wait_records(path, lambda r: any(e["event"] == event for e in r), timeout)
    return next(e for e in recs if e["event"] == event)


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
    return pids


def memory(server: Server, field: str = "VmRSS") -> int:
    """`field` of /proc/PID/status (kB), summed over the server's processes."""
    total = 0
    for pid in process_tree(server.proc.pid):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    total += int(line.split()[1]) * 1024
    return total


def log_offset(server: Server) -> int:
    return len(server.log())


def assert_quiet_since(server: Server, offset: int) -> None:
    """Nothing above debug level logged since `offset`: a client's protocol
    error is the client's problem, not the server's."""
    log = server.log()[offset:]
    assert "Traceback" not in log and "ERROR" not in log, log


# -- handshake ----------------------------------------------------------------------


def test_handshake_101_with_accept_key(server):
    # RFC 6455 1.3's example
    assert accept_value("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    with Client(server.connect()) as c:
        c.send(upgrade("/echo", key="dGhlIHNhbXBsZSBub25jZQ=="))
        status, headers, head = c.head()
        assert status == 101, head
        assert head.startswith(b"HTTP/1.1 101 ")
        assert headers["upgrade"].lower() == "websocket"
        assert "upgrade" in headers["connection"].lower()
        assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert "sec-websocket-protocol" not in headers
        assert "sec-websocket-extensions" not in headers  # none offered
        ws = RawWS(c.sock, c.buf, headers)
        ws.send(TEXT, b"hello")
        assert ws.recv() == Frame(True, 0, TEXT, b"hello")
        ws.send(CLOSE, close_payload(1000, "done"))
        assert ws.recv_data().close[0] == 1000
        assert ws.eof(), "the server closes TCP after the closing handshake"
    with RawWS.open(server, "/echo") as ws:
        assert ws.headers["sec-websocket-accept"] == accept_value(KEY)


@pytest.mark.parametrize(
    ("connection", "upgrade_to"),
    [("keep-alive, Upgrade", "websocket"), ("UPGRADE", "WebSocket")],
    ids=["token-list", "any-case"],
)
def test_handshake_header_forms(server, connection, upgrade_to):
    """Connection is a token list (Firefox sends 'keep-alive, Upgrade');
    tokens are case-insensitive."""
    head = upgrade("/echo").replace(b"Connection: Upgrade", f"Connection: {connection}".encode())
    head = head.replace(b"Upgrade: websocket", f"Upgrade: {upgrade_to}".encode())
    with Client(server.connect()) as c:
        c.send(head)
        status, headers, _ = c.head()
        assert status == 101
        ws = RawWS(c.sock, c.buf, headers)
        ws.send(TEXT, b"ok")
        assert ws.recv().payload == b"ok"


@pytest.mark.parametrize(
    "key",
    [
        "not base64 at all!",
        base64.b64encode(b"fifteen bytes!!").decode(),
        base64.b64encode(b"seventeen bytes!!").decode(),
        "",
        None,
    ],
    ids=["garbage", "15-bytes", "17-bytes", "empty", "missing"],
)
def test_handshake_invalid_key_is_400(server, key):
    with Client(server.connect()) as c:
        c.send(upgrade("/echo", key=key))
        status, _, _ = c.response()
    assert status == 400


@pytest.mark.parametrize("version", ["8", "12", "14"])
def test_handshake_other_version_is_426(server, version):
    # RFC 6455 4.4. (uvicorn 0.55 answers 400, without the header.)
    with Client(server.connect()) as c:
        c.send(upgrade("/echo", version=version))
        status, headers, _ = c.response()
    assert status == 426
    assert headers["sec-websocket-version"] == "13"


# -- scope --------------------------------------------------------------------------


def test_scope(server):
    target = "/scope/a%20b/%E2%82%AC?x=1&y=%20"

    async def main():
        async with ws_connect(
            url(server, target),
            additional_headers={"X-Test": "Ab", "x-dup": "1"},
            subprotocols=["chat", "superchat"],
            proxy=None,
        ) as ws:
            return json.loads(await ws.recv())

    s = run(main())
    assert s["type"] == "websocket"
    assert s["asgi"]["version"] == "3.0"
    assert tuple(map(int, s["asgi"]["spec_version"].split("."))) >= (2, 3), s["asgi"]
    assert s["http_version"] == "1.1"
    assert s["scheme"] == "ws"
    assert s["path"] == "/scope/a b/\u20ac"
    assert s["raw_path"] == "/scope/a%20b/%E2%82%AC"
    assert s["query_string"] == "x=1&y=%20"
    assert s["root_path"] == ""
    assert s["bytes_types"] == ["bytes"]  # header names and values, raw_path, query_string
    names = [h[0] for h in s["headers"]]
    assert names == [n.lower() for n in names]
    assert ["x-test", "Ab"] in s["headers"]
    assert ["x-dup", "1"] in s["headers"]
    assert ["sec-websocket-version", "13"] in s["headers"]
    assert "sec-websocket-key" in names
    assert s["client"][0] == "127.0.0.1" and isinstance(s["client"][1], int)
    assert s["server"] == ["127.0.0.1", server.port]
    assert s["subprotocols"] == ["chat", "superchat"]
    assert s["state"] == {"token": "from-lifespan"}
    assert "websocket.http.response" in s["extensions"]
    assert s["first"] == {"type": "websocket.connect"}


def test_scope_subprotocols_are_split_and_stripped(server):
    with RawWS.open(
        server,
        "/scope",
        "Sec-WebSocket-Protocol: chat ,  v2.chat",
        "Sec-WebSocket-Protocol: x",
    ) as ws:
        s = json.loads(ws.recv().payload)
    assert s["subprotocols"] == ["chat", "v2.chat", "x"]
    assert "sec-websocket-protocol" not in ws.headers  # the app chose none


def test_scope_without_subprotocols_is_an_empty_list(server):
    with RawWS.open(server, "/scope") as ws:
        assert json.loads(ws.recv().payload)["subprotocols"] == []


def test_idle_session_shares_what_sessions_have_in_common(server):
    """What an idle session holds for its whole life is kept small: a header
    field that a session open before it sent alike (Host, Connection,
    Upgrade, Sec-WebSocket-Version, ...) is the very same (name, value)
    tuple, the client's host the same str, the host tasks of both share one
    context, and receive and send are small objects (48 bytes each on a
    64-bit CPython, where a bound built-in method takes 72)."""
    with RawWS.open(server, "/held") as first:
        assert "shared_headers" not in json.loads(first.recv().payload)
        with RawWS.open(server, "/held") as second:
            report = json.loads(second.recv().payload)
    assert {"host", "connection", "upgrade", "sec-websocket-version"} <= set(
        report["shared_headers"]
    ), report
    assert report["shared_client_host"], report
    assert report["shared_task_context"], report
    assert sum(report["channels"]) <= 2 * 48, report


def http_scope(server: Server, target: str) -> dict:
    with Client(server.connect()) as c:
        c.send(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        status, _, body = c.response()
    assert status == 200
    return json.loads(body)


def test_scope_root_path_as_for_http(launch):
    """--root-path: root_path is set, and path and raw_path are what an
    HTTP request to the same target gets."""
    server = launch(APP, "--root-path", "/mnt")
    target = "/scope/x%2Fy?q=1"
    with RawWS.open(server, target) as ws:
        s = json.loads(ws.recv().payload)
    h = http_scope(server, target)
    assert s["root_path"] == h["root_path"] == "/mnt"
    assert (s["path"], s["raw_path"], s["query_string"]) == (
        h["path"],
        h["raw_path"],
        h["query_string"],
    )
    assert s["path"].startswith("/mnt/scope/x")


def test_wss_over_tls(launch, certs):  # noqa: F811
    server = launch(APP, *tls_options(certs))
    ctx = ssl.create_default_context(cafile=str(certs.ca))

    async def main():
        async with ws_connect(url(server, "/scope", "wss"), ssl=ctx, proxy=None) as ws:
            scope = json.loads(await ws.recv())
        async with ws_connect(url(server, "/echo", "wss"), ssl=ctx, proxy=None) as ws:
            big = os.urandom(300_000)
            await ws.send(big)
            await ws.send("über")
            return scope, await ws.recv(), await ws.recv()

    scope, big_back, text_back = run(main())
    assert scope["scheme"] == "wss"
    assert len(big_back) == 300_000 and text_back == "über"


# -- accept -------------------------------------------------------------------------


def test_accept_with_subprotocol_and_headers(server):
    target = "/accept?subprotocol=v2&header=x-custom:yes&header=set-cookie:k%3Dv"

    async def main():
        async with ws_connect(url(server, target), subprotocols=["v1", "v2"], proxy=None) as ws:
            return ws.subprotocol, ws.response.headers, await ws.recv()

    subprotocol, headers, first = run(main())
    assert subprotocol == "v2"
    assert headers["Sec-WebSocket-Protocol"] == "v2"
    assert headers["X-Custom"] == "yes"
    assert headers["Set-Cookie"] == "k=v"
    assert first == "accepted"


# -- refusing -----------------------------------------------------------------------


def test_close_before_accept_is_403(server):
    with Client(server.connect()) as c:
        c.send(upgrade("/reject?how=close"))
        status, headers, _ = c.response()
    assert status == 403
    assert "sec-websocket-accept" not in headers


@pytest.mark.parametrize("how", ["raise", "return"])
def test_app_failing_before_accept_is_500(server, how):
    with Client(server.connect()) as c:
        c.send(upgrade(f"/reject?how={how}"))
        status, headers, _ = c.response()
    assert status == 500
    assert "sec-websocket-accept" not in headers


def test_http_response_before_accept_reaches_client(server):
    """The websocket.http.response extension: status, headers and a body in
    two parts, as the app sent them."""
    with Client(server.connect()) as c:
        c.send(upgrade("/reject?how=http"))
        status, headers, body = c.response()
    assert status == 401
    assert headers["content-type"] == "text/plain"
    assert headers["x-why"] == "no token"
    assert body == b"denied: show a token"

    async def main():
        async with ws_connect(url(server, "/reject?how=http"), proxy=None):
            pass

    with pytest.raises(InvalidStatus) as info:
        run(main())
    assert info.value.response.status_code == 401
    assert info.value.response.body == b"denied: show a token"


# -- messages -----------------------------------------------------------------------

MESSAGES = [
    "hello",
    "",
    "Grüße, 世界 🎉",
    b"",
    b"\x00\x01\x02\xff",
    "x" * 70_000,  # 16-bit and 64-bit lengths
    os.urandom(300_000),
    b"\x5a" * MAX_SIZE,  # exactly --ws-max-size: allowed
]


async def websockets_async_echo(server: Server) -> list:
    async with ws_connect(url(server, "/echo"), max_size=None, proxy=None) as ws:
        out = []
        for m in MESSAGES:
            await ws.send(m)
            out.append(await ws.recv())
        return out


async def aiohttp_echo(server: Server) -> list:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url(server, "/echo"), max_msg_size=0) as ws,
    ):
        out = []
        for m in MESSAGES:
            await (ws.send_str(m) if isinstance(m, str) else ws.send_bytes(m))
            msg = await ws.receive()
            assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
            out.append(msg.data)
        return out


def websockets_sync_echo(server: Server) -> list:
    with websockets.sync.client.connect(url(server, "/echo"), max_size=None, proxy=None) as ws:
        out = []
        for m in MESSAGES:
            ws.send(m)
            out.append(ws.recv(timeout=5))
        return out


@pytest.mark.parametrize("client", ["websockets-asyncio", "websockets-sync", "aiohttp"])
def test_echo_text_and_bytes(server, client):
    if client == "websockets-asyncio":
        got = run(websockets_async_echo(server))
    elif client == "aiohttp":
        got = run(aiohttp_echo(server))
    else:
        got = websockets_sync_echo(server)
    assert [type(m) for m in got] == [type(m) for m in MESSAGES]
    assert got == MESSAGES


def test_receive_messages_are_text_or_bytes(server, tmp_path):
    rec = tmp_path / "rec"
    with RawWS.open(server, "/echo", f"X-Record: {rec}") as ws:
        ws.send(TEXT, "é".encode())
        ws.send(BINARY, b"\x01\x02")
        assert ws.recv().payload == "é".encode()
        assert ws.recv() == Frame(True, 0, BINARY, b"\x01\x02")
    text, binary = [e for e in wait_records(rec, lambda r: len(r) >= 2) if e["event"] == "message"]
    assert text["type"] == binary["type"] == "websocket.receive"
    assert text["text"] == "é" and "bytes" not in text
    assert binary["bytes"] == 2 and "text" not in binary


def test_fragmented_message_arrives_as_one(server, tmp_path):
    """Fragments, a ping between them and a UTF-8 character split across
    two fragments: the app receives one message, the ping gets its pong."""
    rec = tmp_path / "rec"
    with RawWS.open(server, "/echo", f"X-Record: {rec}") as ws:
        euro = "€".encode()
        ws.send(TEXT, b"hello " + euro[:1], fin=False)
        ws.send(PING, b"mid")
        ws.send(CONT, euro[1:] + b" w", fin=False)
        ws.send(CONT, b"", fin=False)
        ws.send(CONT, b"orld", fin=True)
        assert ws.recv() == Frame(True, 0, PONG, b"mid")
        assert ws.recv() == Frame(True, 0, TEXT, "hello € world".encode())
        ws.send(BINARY, b"ab", fin=False)
        ws.send(CONT, b"cd")
        assert ws.recv() == Frame(True, 0, BINARY, b"abcd")
    messages = [e for e in wait_records(rec, lambda r: len(r) >= 2) if e["event"] == "message"]
    assert messages[0]["text"] == "hello € world"
    assert messages[1]["bytes"] == 4
    assert len(messages) == 2


def test_frames_in_pieces(server):
    """Frames arriving in pieces: the header (16-bit length, mask key) a
    byte at a time, the payload in uneven parts, then a ping byte by byte."""
    with RawWS.open(server, "/echo") as ws:
        ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        payload = bytes(range(256)) * 2
        data = frame(BINARY, payload)
        pieces = [data[i : i + 1] for i in range(8)] + [data[8:9], data[9:300], data[300:]]
        pieces += [bytes([b]) for b in frame(PING, b"p")]
        for piece in pieces:
            ws.sock.sendall(piece)
            time.sleep(0.002)  # a segment each
        assert ws.recv() == Frame(True, 0, BINARY, payload)
        assert ws.recv() == Frame(True, 0, PONG, b"p")


def test_ping_is_answered_with_its_payload(server):
    with RawWS.open(server, "/echo") as ws:
        ws.send(PING, b"are you there")
        assert ws.recv() == Frame(True, 0, PONG, b"are you there")
        ws.send(PING)
        assert ws.recv() == Frame(True, 0, PONG, b"")
        ws.send(PONG, b"unsolicited")  # ignored
        ws.send(TEXT, b"still here")
        assert ws.recv().payload == b"still here"


# -- closing ------------------------------------------------------------------------


def test_app_closes_with_code_and_reason(server):
    async def main():
        async with ws_connect(
            url(server, "/end?how=close&code=4001&reason=bye%20now"), proxy=None
        ) as ws:
            await ws.send("go")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            return info.value

    closed = run(main())
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (4001, "bye now")


def test_app_close_on_the_wire(server, tmp_path):
    """The server's close frame, our answer, and the server then closes TCP;
    the app learns the code the client answered with."""
    rec = tmp_path / "rec"
    target = "/end?how=close&code=4001&reason=bye"
    with RawWS.open(server, target, f"X-Record: {rec}") as ws:
        ws.send(TEXT, b"go")
        assert ws.recv_data().close == (4001, "bye")
        ws.send(CLOSE, close_payload(4001, "bye"))
        assert ws.eof()
    assert recorded(rec, "disconnect")["code"] == 4001


@pytest.mark.parametrize(("how", "code"), [("raise", 1011), ("return", 1000)])
def test_app_ending_after_accept_closes(server, how, code):
    # (uvicorn 0.55 drops the TCP connection without a close frame.)
    async def main():
        async with ws_connect(url(server, f"/end?how={how}"), proxy=None) as ws:
            await ws.send("go")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            return info.value

    closed = run(main())
    assert closed.rcvd is not None, "no close frame from the server"
    assert closed.rcvd.code == code


def test_client_close_reaches_app_then_send_raises(server, tmp_path):
    rec = tmp_path / "rec"

    async def main():
        async with ws_connect(
            url(server, "/echo"), additional_headers={"X-Record": str(rec)}, proxy=None
        ) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            await ws.close(4002, "see you")
            return ws.close_code

    assert run(main()) == 4002  # the server answered with the code (RFC 6455 5.5.1)
    disconnect = recorded(rec, "disconnect")
    assert disconnect["code"] == 4002
    assert disconnect["reason"] == "see you"
    assert disconnect["keys"] == ["code", "reason", "type"]
    error = recorded(rec, "send_error")
    assert error["type"] == "ClientDisconnected" and error["oserror"], error
    assert error["client_disconnected"], error  # (uvicorn raises a ClientDisconnected of its own)


def test_client_close_without_code(server, tmp_path):
    """An empty close frame: the app sees 1005 (no code was given)."""
    rec = tmp_path / "rec"
    with RawWS.open(server, "/echo", f"X-Record: {rec}") as ws:
        ws.send(CLOSE)
        f = ws.recv_data()
        assert f.opcode == CLOSE
        assert f.close[0] in (None, 1000), f.close  # 1005 is never sent
        assert ws.eof()
    assert recorded(rec, "disconnect")["code"] == 1005


def test_client_drops_tcp_is_1006(server, tmp_path):
    rec = tmp_path / "rec"
    with RawWS.open(server, "/echo", f"X-Record: {rec}") as ws:
        ws.send(TEXT, b"x")
        assert ws.recv().payload == b"x"
    assert recorded(rec, "disconnect")["code"] == 1006  # (uvicorn 0.55 reports 1005)
    error = recorded(rec, "send_error")
    assert error["oserror"] and error["client_disconnected"], error


def test_access_log_line_per_session(server, tmp_path):
    # (uvicorn logs '"WebSocket /echo?..." [accepted]' instead.)
    tag = os.urandom(6).hex()
    rec = tmp_path / "rec"
    with RawWS.open(server, f"/echo?log={tag}", f"X-Record: {rec}") as ws:
        ws.send(TEXT, b"one")
        ws.recv()
        ws.send(TEXT, b"two")
        ws.recv()
        ws.send(CLOSE, close_payload(1000))
        assert ws.eof()
    recorded(rec, "disconnect")
    log = server.wait_log(f'"GET /echo?log={tag} HTTP/1.1" 101')
    # A second session, logged after the first: still one line for the first.
    with RawWS.open(server, f"/echo?log={tag}-2") as ws:
        ws.send(CLOSE, close_payload(1000))
        assert ws.eof()
    log = server.wait_log(f"/echo?log={tag}-2 ")
    assert len([line for line in log.splitlines() if f"?log={tag} " in line]) == 1


# -- errors -------------------------------------------------------------------------


PROTOCOL_ERRORS = {
    "reserved-opcode": [frame(0x3, b"x")],
    "reserved-control-opcode": [frame(0xB, b"x")],
    "unmasked": [frame(TEXT, b"hi", masked=False)],
    "rsv1-without-extension": [frame(TEXT, b"hi", rsv=4)],
    "rsv2": [frame(TEXT, b"hi", rsv=2)],
    "rsv3": [frame(BINARY, b"hi", rsv=1)],
    "fragmented-ping": [frame(PING, b"x", fin=False)],
    "fragmented-close": [frame(CLOSE, close_payload(1000), fin=False)],
    "ping-over-125": [frame(PING, b"p" * 126)],
    "continuation-without-start": [frame(CONT, b"x")],
    "new-message-inside-fragmented": [frame(TEXT, b"a", fin=False), frame(TEXT, b"b")],
}


@pytest.mark.parametrize("frames", PROTOCOL_ERRORS.values(), ids=PROTOCOL_ERRORS.keys())
def test_protocol_error_is_1002(server, tmp_path, frames):
    offset = log_offset(server)
    rec = tmp_path / "rec"
    with RawWS.open(server, "/echo", f"X-Record: {rec}") as ws:
        ws.sock.sendall(b"".join(frames))
        ws.failed_with(1002)
    recorded(rec, "send_error")  # the app has seen the end
    assert_quiet_since(server, offset)


@pytest.mark.parametrize(
    "frames",
    [
        [frame(TEXT, b"ok \xff\xfe")],
        [frame(TEXT, b"\xed\xa0\x80")],  # a UTF-16 surrogate
        [frame(TEXT, b"ab\xc3", fin=False), frame(CONT, b"(")],  # bad across fragments
        [frame(TEXT, "€".encode()[:2])],  # truncated at the end
        [frame(CLOSE, close_payload(1000) + b"\xff")],  # the close reason too
    ],
    ids=["invalid-bytes", "surrogate", "across-fragments", "truncated", "close-reason"],
)
def test_invalid_utf8_is_1007(server, tmp_path, frames):
    # (uvicorn 0.55 closes with 1007 too, but logs a traceback for a text message.)
    offset = log_offset(server)
    rec = tmp_path / "rec"
    with RawWS.open(server, "/echo", f"X-Record: {rec}") as ws:
        ws.sock.sendall(b"".join(frames))
        ws.failed_with(1007)
    recorded(rec, "send_error")
    assert_quiet_since(server, offset)


def send_ignoring_reset(sock: socket.socket, data: bytes) -> None:
    """The server may close before it has read all we send."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


@pytest.mark.parametrize("how", ["one-frame", "fragments"])
def test_message_over_max_size_is_1009(server, tmp_path, how):
    offset = log_offset(server)
    rec = tmp_path / "rec"
    with RawWS.open(server, "/echo", f"X-Record: {rec}") as ws:
        ws.send(BINARY, b"\x5a" * MAX_SIZE, key=b"\0\0\0\0")  # exactly the limit: fine
        assert ws.recv().payload == b"\x5a" * MAX_SIZE
        if how == "one-frame":
            data = frame(BINARY, b"\0" * (MAX_SIZE + 1), key=b"\0\0\0\0")
        else:
            piece = b"\0" * (MAX_SIZE // 4)
            data = frame(BINARY, piece, fin=False) + b"".join(
                frame(CONT, piece, fin=False) for _ in range(4)
            )
        sender = threading.Thread(target=send_ignoring_reset, args=(ws.sock, data))
        sender.start()
        ws.failed_with(1009)
        sender.join(5)
    recorded(rec, "send_error")
    assert_quiet_since(server, offset)


# -- permessage-deflate -------------------------------------------------------------


def compress(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def test_permessage_deflate_negotiated(server):
    """websockets offers permessage-deflate by default; compressed messages
    round-trip both ways, many of them (context takeover)."""
    messages = ["compress me " * 5000, b"\x00" * 100_000, "tiny", "compress me " * 5000]

    async def main():
        async with ws_connect(url(server, "/echo"), max_size=None, proxy=None) as ws:
            out = []
            for m in messages:
                await ws.send(m)
                out.append(await ws.recv())
            return ws.response.headers.get("Sec-WebSocket-Extensions"), out

    extensions, got = run(main())
    assert extensions is not None and "permessage-deflate" in extensions
    assert got == messages


def test_permessage_deflate_on_the_wire(server):
    """A raw client: the server compresses a large compressible message
    (RSV1), and decompresses ours."""
    text = ("the same words again and again " * 4000).encode()
    with RawWS.open(server, "/echo", "Sec-WebSocket-Extensions: permessage-deflate") as ws:
        params = [p.strip() for p in ws.headers["sec-websocket-extensions"].split(";")]
        assert params[0] == "permessage-deflate"
        bits = next((p for p in params if p.startswith("server_max_window_bits")), "")
        inflater = zlib.decompressobj(-int(bits.partition("=")[2] or 15))
        for opcode, data in ((TEXT, text), (BINARY, text), (TEXT, text)):
            ws.send(opcode, compress(data), rsv=4)
            f = ws.recv()
            assert (f.opcode, f.rsv) == (opcode, 4), "the server did not compress"
            assert len(f.payload) < len(data) // 10
            assert inflater.decompress(f.payload + b"\x00\x00\xff\xff") == data
        ws.send(TEXT, b"plain")  # an uncompressed message is fine too
        f = ws.recv()
        payload = inflater.decompress(f.payload + b"\x00\x00\xff\xff") if f.rsv else f.payload
        assert payload == b"plain"


def test_no_permessage_deflate(launch):
    server = launch(APP, "--no-ws-per-message-deflate")

    async def main():
        async with ws_connect(url(server, "/echo"), proxy=None) as ws:
            await ws.send("compress me " * 1000)
            return ws.response.headers.get("Sec-WebSocket-Extensions"), await ws.recv()

    extensions, echoed = run(main())
    assert extensions is None
    assert echoed == "compress me " * 1000
    with RawWS.open(server, "/echo", "Sec-WebSocket-Extensions: permessage-deflate") as ws:
        assert "sec-websocket-extensions" not in ws.headers
        ws.send(TEXT, compress(b"hello"), rsv=4)  # RSV1 without the extension
        ws.failed_with(1002)


BOMB = 256 * MiB


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """256 MiB of zeros deflated to about 256 KB (less than --ws-max-size):
    copies of one deflated MiB, each ending on a byte boundary."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    one = c.compress(bytes(MiB)) + c.flush(zlib.Z_SYNC_FLUSH)
    out = one * (BOMB // MiB)
    assert len(out) < MAX_SIZE // 2
    assert len(zlib.decompressobj(-15).decompress(out[: len(one) * 3])) == 3 * MiB
    return out[:-4]


def test_deflate_bomb_is_1009(server, tmp_path, bomb):
    rec = tmp_path / "rec"
    before = memory(server, "VmHWM")
    with RawWS.open(
        server, "/echo", "Sec-WebSocket-Extensions: permessage-deflate", f"X-Record: {rec}"
    ) as ws:
        ws.send(BINARY, bomb, rsv=4)
        ws.failed_with(1009)
    recorded(rec, "disconnect")
    grown = memory(server, "VmHWM") - before
    assert grown < 64 * MiB, f"peak RSS grew by {grown >> 20} MiB for a {BOMB >> 20} MiB bomb"


# -- keepalive ----------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_keepalive(launch, loop):
    """Pings every 0.2 s, 0.3 s for the pong: a peer that never answers is
    disconnected within about a second; one that answers (websockets does)
    is still there after 2 s."""
    server = launch(APP, "--loop", loop, "--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.3")
    silent = RawWS.open(server, "/echo")
    dropped = {}

    def watch() -> None:
        t0 = time.monotonic()
        dropped["eof"] = silent.eof(timeout=3.0)
        dropped["after"] = time.monotonic() - t0

    watcher = threading.Thread(target=watch)
    watcher.start()

    async def answering():
        async with ws_connect(url(server, "/echo"), ping_interval=None, proxy=None) as ws:
            await asyncio.sleep(2.0)
            await ws.send("still here")
            return await ws.recv()

    assert run(answering()) == "still here"
    watcher.join(5)
    with silent:
        frames = []
        with contextlib.suppress(ConnectionError):
            while True:
                frames.append(silent.recv())
    assert dropped["eof"], "a peer that never answers pings stayed connected"
    assert 0.3 < dropped["after"] < 1.5, dropped
    assert frames and frames[0].opcode == PING, frames


# -- backpressure -------------------------------------------------------------------


def test_app_not_receiving_pauses_reading(server, tmp_path):
    """The app does not receive: the server reads about --ws-max-queue
    messages and stops; the client's sends stall long before 100 MB, and
    the server's memory stays flat. Once the app receives, everything
    arrives."""
    rec, release = tmp_path / "rec", tmp_path / "release"
    size, count = 256 * 1024, 400  # 100 MiB
    total = size * count
    message = frame(BINARY, b"\x5a" * size, key=b"\0\0\0\0")
    stream = memoryview(message * count)
    before = memory(server)
    with RawWS.open(
        server, f"/stall?total={total}", f"X-Record: {rec}", f"X-Release: {release}"
    ) as ws:
        recorded(rec, "accepted")
        ws.sock.setblocking(False)
        sent = 0
        while sent < len(stream):
            if not select.select([], [ws.sock], [], 0.5)[1]:
                break  # nothing read for half a second: the server has paused
            sent += ws.sock.send(stream[sent : sent + MiB])
        grown = memory(server) - before
        assert sent < 32 * MiB, f"the server read {sent >> 20} MiB the app did not take"
        assert grown < 32 * MiB, f"RSS grew by {grown >> 20} MiB"
        release.touch()
        ws.sock.settimeout(20)
        ws.sock.sendall(stream[sent:])
        assert json.loads(ws.recv().payload) == {"bytes": total, "messages": count}


def app_stalls(rec: Path) -> int:
    """Messages the app has sent once its progress stops for half a second."""
    sent, still = 0, time.monotonic()
    while time.monotonic() - still < 0.5:
        time.sleep(0.05)
        now = max((e.get("n", 0) for e in records(rec)), default=0)
        if now != sent:
            sent, still = now, time.monotonic()
    return sent


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "permessage-deflate"])
def test_client_not_reading_makes_send_wait(server, tmp_path, deflate):
    """The app sends 100 MB (40 MB compressed: random bytes, which do not
    shrink) to a client that does not read: send() waits once the buffers
    are full, the server's memory stays flat; when the client reads, every
    message arrives."""
    rec = tmp_path / "rec"
    size, count = 256 * 1024, 160 if deflate else 400
    offer = ["Sec-WebSocket-Extensions: permessage-deflate"] if deflate else []
    before = memory(server)
    target = f"/flood?size={size}&count={count}&random=1"
    with RawWS.open(server, target, f"X-Record: {rec}", *offer) as ws:
        assert ("sec-websocket-extensions" in ws.headers) == deflate
        sent = app_stalls(rec)
        grown = memory(server) - before
        assert sent < count, "send() never waited for the client"
        assert sent * size < 32 * MiB, f"{sent * size >> 20} MiB taken from the app"
        assert grown < 32 * MiB, f"RSS grew by {grown >> 20} MiB"
        ws.sock.settimeout(20)
        inflater = zlib.decompressobj(-15)
        for _ in range(count):
            f = ws.recv()
            payload = inflater.decompress(f.payload + b"\x00\x00\xff\xff") if f.rsv else f.payload
            assert (f.opcode, len(payload)) == (BINARY, size)
        assert ws.recv().close[0] == 1000
    recorded(rec, "done")


def test_client_gone_while_send_waits(server, tmp_path):
    """The client goes while the app's send() waits for it to read: that
    send() raises ClientDisconnected at once."""
    rec = tmp_path / "rec"
    with RawWS.open(server, "/flood?size=262144&count=400", f"X-Record: {rec}"):
        sent = app_stalls(rec)
        assert sent < 400
    error = recorded(rec, "send_error", timeout=2.0)
    # (uvicorn raises a ClientDisconnected of its own.)
    assert error["oserror"] and error["client_disconnected"], error


# -- shutdown -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loop", "sig", "options"),
    [
        ("asyncio", signal.SIGTERM, []),
        ("uvloop", signal.SIGTERM, []),
        ("uvloop", signal.SIGHUP, ["--workers", "1"]),
    ],
    ids=["sigterm-asyncio", "sigterm-uvloop", "sighup-workers-1"],
)
def test_shutdown_closes_with_1012(launch, loop, sig, options):
    server = launch(APP, "--loop", loop, "--timeout-graceful-shutdown", "10", *options)

    async def main():
        async with ws_connect(url(server, "/echo"), proxy=None) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            t0 = time.monotonic()
            server.proc.send_signal(sig)
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            return info.value, time.monotonic() - t0

    # (uvicorn sends 1012 too, then exits with the signal, -15; with one
    # worker it runs no supervisor, and SIGHUP ends it.)
    closed, took = run(main())
    assert closed.rcvd is not None, "no close frame"
    assert closed.rcvd.code == 1012
    assert took < 3.0, took
    if sig == signal.SIGTERM:
        assert server.proc.wait(5) == 0
    else:
        # The new worker serves WebSockets.
        async def again():
            async with ws_connect(url(server, "/echo"), open_timeout=10, proxy=None) as ws:
                await ws.send("new worker")
                return await ws.recv()

        assert run(again()) == "new worker"


def test_shutdown_with_a_client_that_does_not_read(launch, tmp_path):
    """The 1012 is queued behind output the client never takes: the close
    timeout (--ws-ping-timeout), not the send timeout or the graceful one,
    bounds how long the session holds the worker."""
    server = launch(
        APP, "--ws-ping-timeout", "1", "--timeout-send", "60", "--timeout-graceful-shutdown", "30"
    )
    rec = tmp_path / "rec"
    with RawWS.open(server, "/flood?size=262144&count=400", f"X-Record: {rec}"):
        wait_records(rec, lambda r: len(r) >= 3)
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(15) == 0
        took = time.monotonic() - t0
    assert took < 5.0, took
    assert records(rec)[-1]["event"] == "send_error"


# -- --ws off -----------------------------------------------------------------------


def test_ws_off_serves_upgrade_as_http(launch):
    server = launch(APP, "--ws", "off")
    with Client(server.connect()) as c:
        c.send(upgrade("/scope"))
        status, headers, body = c.response()
    assert status == 200
    assert "sec-websocket-accept" not in headers
    assert json.loads(body)["type"] == "http"
