"""WebSockets of WSGI apps: flask-sock and simple-websocket (and so
Flask-SocketIO in threading mode) take the connection over, as under
gunicorn's gthread worker, through environ["gunicorn.socket"].

Real servers, real clients: the `websockets` library's sync and asyncio
clients, wsproto over a raw socket where a client must misbehave, and
python-socketio's SimpleClient. Apps are in apps/websocket_wsgi_apps.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import re
import signal
import socket
import time

import httpx
import pytest
from conftest import APPS, connect
from test_cli import launch  # noqa: F401 (a fixture)
from test_tls import certs, client_context, tls_options  # noqa: F401 (certs: a fixture)
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus
from websockets.sync.client import connect as wsconnect
from websockets.sync.client import unix_connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

APP = "websocket_wsgi_apps:app"
ERROR_SIGNS = ("[ERROR]", "Traceback", "Exception in", "Exception on")


def ws_url(server, path: str) -> str:
    return f"ws://{server.host}:{server.port}{path}"


def sessions(server) -> dict:
    return httpx.get(server.url + "/sessions", timeout=5).json()


def wait_until(predicate, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached in {timeout}s")


def upgrade(target: str, *extra: str) -> bytes:
    lines = [
        f"GET {target} HTTP/1.1",
        "Host: 127.0.0.1",
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def finish(server) -> str:
    """Stop gracefully: exit 0, nothing logged as an error."""
    assert server.stop() == 0, server.log()
    log = server.log() + server.out()
    for sign in ERROR_SIGNS:
        assert sign not in log, log
    return log


# ---------------------------------------------------------------- echo


def test_echo_text_and_bytes(serve):
    server = serve(APP)
    with wsconnect(ws_url(server, "/echo")) as ws:
        for message in ["hello", "", "été ☃ 𝄞", b"\x00\x01\xff", b""]:
            ws.send(message)
            assert ws.recv() == message
    finish(server)


def test_many_messages(serve):
    server = serve(APP)
    with wsconnect(ws_url(server, "/echo")) as ws:
        for batch in range(20):
            sent = [
                f"message {batch}.{i}" if i % 2 else f"{batch}.{i}".encode() for i in range(100)
            ]
            for m in sent:  # a hundred in flight at once
                ws.send(m)
            assert [ws.recv() for _ in sent] == sent
    finish(server)


@pytest.mark.parametrize("size", [65536, 1 << 20, 8 << 20])
def test_large_messages(serve, size):
    server = serve(APP)
    data = bytes(range(256)) * (size // 256)
    text = "é" * (size // 2)
    with wsconnect(ws_url(server, "/echo"), max_size=None, compression=None) as ws:
        ws.send(data)
        assert ws.recv() == data
        ws.send(text)
        assert ws.recv() == text
    finish(server)


@pytest.mark.parametrize("end", ["raise", "iter", "empty"])
def test_simple_websocket_without_flask(serve, end):
    """simple-websocket in a plain WSGI app, with its keepalive pings
    answered by the client, ending the session each way the server takes."""
    server = serve("websocket_wsgi_apps:simple", "--access-logformat", "%(r)s %(s)s")
    with wsconnect(ws_url(server, f"/?end={end}")) as ws:
        for i in range(5):
            ws.send(f"ping-pong {i}")
            assert ws.recv() == f"ping-pong {i}"
            time.sleep(0.1)  # a ping or two go by
        ws.close()
        assert ws.protocol.close_rcvd.code == 1000
    log = finish(server)
    assert f"GET /?end={end} HTTP/1.1 101" in log


def test_asyncio_clients(serve):
    server = serve(APP, "--threads", "8")

    async def one(n: int) -> None:
        async with aconnect(ws_url(server, "/echo")) as ws:
            for i in range(50):
                await ws.send(f"{n}:{i}")
                assert await ws.recv() == f"{n}:{i}"
            await ws.send(b"x" * 300_000)
            assert await ws.recv() == b"x" * 300_000

    async def main() -> None:
        await asyncio.gather(*(one(n) for n in range(5)))

    asyncio.run(main())
    finish(server)


# ---------------------------------------------------------------- closing


def test_client_closes(serve):
    """The client's close handshake: answered by the app, then the TCP
    connection closes at once (the client waits for the server to close
    first), the session logged as one 101 and its threads gone."""
    server = serve(APP, "--access-logformat", "%(r)s %(s)s %(L)s")
    before = sessions(server)["threads"]
    with wsconnect(ws_url(server, "/echo")) as ws:
        ws.send("hi")
        assert ws.recv() == "hi"
        time.sleep(0.3)
        started = time.monotonic()
        ws.close()
        assert time.monotonic() - started < 3.0  # not the client's 10 s close timeout
        assert ws.protocol.close_rcvd.code == 1000
    wait_until(lambda: sessions(server)["open"] == 0, what="session end")
    wait_until(lambda: sessions(server)["threads"] == before, what="simple-websocket thread end")
    log = finish(server)
    (line,) = re.findall(r"GET /echo HTTP/1.1 (\d+) ([\d.]+)", log)
    assert line[0] == "101"
    assert float(line[1]) >= 0.3  # the session's duration


def test_server_closes(serve):
    server = serve(APP)
    with wsconnect(ws_url(server, "/close?n=2&code=1001&reason=moving")) as ws:
        for m in ["a", "b"]:
            ws.send(m)
            assert ws.recv() == m
        started = time.monotonic()
        with pytest.raises(ConnectionClosedOK):
            ws.recv()
        assert time.monotonic() - started < 3.0
        assert (ws.close_code, ws.close_reason) == (1001, "moving")
    finish(server)


def test_server_closes_and_the_client_never_answers(serve):
    """The app closes and returns; the client neither answers the close
    frame nor closes. After --ws-ping-timeout (the time it has for its
    close frame) the socket is shut down: the client sees the end, and the
    app's reader thread, still blocked on its descriptor, returns too."""
    server = serve(APP, "--ws-ping-timeout", "1")
    before = sessions(server)["threads"]
    client = WSConnection(ConnectionType.CLIENT)
    with socket.create_connection((server.host, server.port), timeout=5) as s:

        def read_until(kind) -> list:
            events: list = []
            while not any(isinstance(e, kind) for e in events):
                chunk = s.recv(65536)
                assert chunk, f"closed before {kind.__name__}"
                client.receive_data(chunk)
                events += list(client.events())
            return events

        s.sendall(client.send(Request(host="127.0.0.1", target="/close?n=1&code=1000")))
        assert isinstance(read_until(AcceptConnection)[0], AcceptConnection)
        s.sendall(client.send(TextMessage(data="only")))
        events = read_until(CloseConnection)
        assert [e.data for e in events if isinstance(e, TextMessage)] == ["only"]
        data = b""
        started = time.monotonic()
        while chunk := s.recv(65536):
            data += chunk
        assert data == b""  # nothing after the close frame but the end
        assert 0.9 < time.monotonic() - started < 3.0
        assert sessions(server)["open"] == 0
        wait_until(lambda: sessions(server)["threads"] == before, 2, "reader thread end")
    finish(server)


# ---------------------------------------------------------------- concurrency


def test_concurrent_sockets_and_http_meanwhile(serve):
    """N sockets held open, each by a pool thread, with --threads > N:
    ordinary requests are answered meanwhile, and every socket still
    echoes afterwards."""
    n = 8
    server = serve(APP, "--threads", str(n + 4))
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(wsconnect(ws_url(server, "/echo"))) for _ in range(n)]
        for i, ws in enumerate(sockets):
            ws.send(f"first {i}")
            assert ws.recv() == f"first {i}"
        assert sessions(server)["open"] == n
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            statuses = list(
                pool.map(lambda _: httpx.get(server.url + "/plain").status_code, range(40))
            )
        assert statuses == [200] * 40
        with connect(server) as c:  # keep-alive and pipelining too
            c.send(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
            assert [c.response()[2] for _ in range(3)] == [b"plain\n"] * 3
        for i, ws in enumerate(sockets):
            ws.send(f"again {i}")
            assert ws.recv() == f"again {i}"
    wait_until(lambda: sessions(server)["open"] == 0, what="sessions end")
    finish(server)


# ---------------------------------------------------------------- no takeover


def test_refused_upgrade_is_plain_http_and_keeps_the_connection(serve):
    """A WebSocket route that turns the upgrade down answers as any request:
    its response goes out on the connection, which stays alive."""
    server = serve(APP)
    with connect(server) as c:
        c.send(upgrade("/refuse") + b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = c.response()
        assert (status, body) == (403, b"no WebSocket for you\n")
        assert "connection" not in headers
        assert c.response()[2] == b"plain\n"
    for path, status in [("/refuse", 403), ("/plain", 400), ("/missing", 404)]:
        # Flask answers 400 to an upgrade for a route that is not a WebSocket one.
        with pytest.raises(InvalidStatus) as info:
            wsconnect(ws_url(server, path)).__enter__()
        assert info.value.response.status_code == status
    finish(server)


def test_refusing_app_that_kept_the_socket_closes_the_connection(serve):
    """An app that answers but keeps the socket object may use it from a
    thread of its own: the socket is left to it, and the connection is not
    reused."""
    server = serve(APP)
    with connect(server) as c:
        c.send(upgrade("/keep-socket"))
        status, headers, body = c.response()
        assert (status, body) == (403, b"kept\n")
        assert headers["connection"] == "close"
        assert c.closed()
    finish(server)


def test_the_lent_socket(serve):
    """What the app gets: a blocking socket.socket of its own (a duplicate
    descriptor, not inherited by children), only for upgrade requests."""
    server = serve("websocket_wsgi_apps:lent")
    with connect(server) as c:
        c.send(upgrade("/"))
        info = json.loads(c.response()[2])
        assert info == {
            "lent": True,
            "blocking": True,
            "timeout": None,
            "family": "AF_INET",
            "type": "SOCK_STREAM",
            "inheritable": False,
        }
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # the connection goes on
        assert json.loads(c.response()[2]) == {"lent": False}
        # An upgrade with a body is no WebSocket handshake: no socket (the
        # app's body reads must stay ours).
        c.send(upgrade("/", "Content-Length: 5") + b"hello")
        assert json.loads(c.response()[2]) == {"lent": False}
        c.send(upgrade("/") + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert json.loads(c.response()[2])["lent"] is True
        assert json.loads(c.response()[2]) == {"lent": False}
    finish(server)


def test_unix_socket(launch, tmp_path):  # noqa: F811
    path = str(tmp_path / "ws.sock")
    server = launch("--app-dir", str(APPS), "--uds", path, "--access-logformat", "%(r)s %(s)s", APP)
    with unix_connect(path, "ws://localhost/echo") as ws:
        ws.send("over a UNIX socket")
        assert ws.recv() == "over a UNIX socket"
    assert server.stop() == 0
    assert "GET /echo HTTP/1.1 101" in server.err() + server.out()
    lent = launch("--app-dir", str(APPS), "--uds", path + "2", "websocket_wsgi_apps:lent")
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path + "2")
        s.settimeout(5)
        s.sendall(upgrade("/"))
        data = b""
        while b"}" not in data:
            data += s.recv(65536)
        info = json.loads(data.partition(b"\r\n\r\n")[2])
        assert (info["lent"], info["family"], info["blocking"]) == (True, "AF_UNIX", True)
    assert lent.stop() == 0


def test_ws_off_lends_no_socket(serve):
    server = serve(APP, "--ws", "off")
    with pytest.raises(InvalidStatus) as info:
        wsconnect(ws_url(server, "/echo")).__enter__()
    assert info.value.response.status_code == 500
    assert "Cannot obtain socket from WSGI environment" in server.log()
    lent = serve("websocket_wsgi_apps:lent", "--ws", "off")
    with connect(lent) as c:
        c.send(upgrade("/"))
        assert json.loads(c.response()[2]) == {"lent": False}


def test_tls_lends_no_socket(serve, certs):  # noqa: F811
    """oneloop's TLS runs over memory BIOs: the raw socket carries records,
    not WebSocket frames, so it is never lent. simple-websocket says so
    ("Cannot obtain socket"), the client gets a 500 at once, not a hang."""
    server = serve(APP, *tls_options(certs))
    url = f"wss://127.0.0.1:{server.port}/echo"
    started = time.monotonic()
    with pytest.raises(InvalidStatus) as info:
        wsconnect(url, ssl=client_context(certs), open_timeout=10).__enter__()
    assert info.value.response.status_code == 500
    assert time.monotonic() - started < 5
    assert "Cannot obtain socket from WSGI environment" in server.log()
    r = httpx.get(f"https://127.0.0.1:{server.port}/plain", verify=client_context(certs))
    assert r.status_code == 200
    lent = serve("websocket_wsgi_apps:lent", *tls_options(certs))
    raw = socket.create_connection((lent.host, lent.port), timeout=5)
    with client_context(certs).wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(upgrade("/"))
        data = b""
        while b"}" not in data:
            data += s.recv(65536)
        assert json.loads(data.partition(b"\r\n\r\n")[2]) == {"lent": False}


# ---------------------------------------------------------------- shutdown


def test_sigterm_with_open_sockets(serve):
    """SIGTERM: the sessions end at once (as if their clients had gone:
    their reads see end-of-file), a request in flight is still answered,
    and the worker exits well within the graceful timeout -- a thread
    blocked in a WebSocket holds nothing up."""
    server = serve(APP, "--threads", "8", "--graceful-timeout", "10")
    with contextlib.ExitStack() as stack:
        echoes = [stack.enter_context(wsconnect(ws_url(server, "/echo"))) for _ in range(3)]
        pusher = stack.enter_context(wsconnect(ws_url(server, "/push")))
        feed = stack.enter_context(wsconnect(ws_url(server, "/feed")))
        for ws in echoes:
            ws.send("x")
            assert ws.recv() == "x"
        assert pusher.recv().startswith("tick")
        wait_until(lambda: sessions(server)["open"] == 5, what="sessions open")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(httpx.get, server.url + "/slow?s=1.5", timeout=10)
            time.sleep(0.3)  # in flight
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            for ws in [*echoes, pusher, feed]:
                with pytest.raises(ConnectionClosed):
                    while True:
                        ws.recv(timeout=5)
            closed = time.monotonic() - started
            assert slow.result().text == "slow done\n"
        assert server.proc.wait(10) == 0
        exited = time.monotonic() - started
    assert closed < 3.0
    assert exited < 5.0, exited  # graceful timeout 10 s
    log = server.log() + server.out()
    for sign in ERROR_SIGNS:
        assert sign not in log, log


def test_stuck_session_is_cut_at_the_graceful_timeout(serve):
    """A session whose app ignores the end of its reads and does not write
    is cut at the graceful timeout, and the worker exits."""
    server = serve("websocket_wsgi_apps:stuck", "--graceful-timeout", "1")
    with connect(server) as c:
        c.send(upgrade("/"))
        status, _, _ = c.head()
        assert status == 101
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert c.closed(5)
        assert 0.9 < time.monotonic() - started < 4.0
        assert server.proc.wait(10) == 0
        assert time.monotonic() - started < 5.0


# ---------------------------------------------------------------- the one loop


def test_async_fanout_from_the_socket_thread(serve):
    """A socket's thread runs async calls on the worker loop (the one-loop
    bridge): three lookups at once, on the same loop every time."""
    server = serve(APP)
    loops = set()
    with wsconnect(ws_url(server, "/fanout")) as ws:
        for _ in range(3):
            ws.send("0.3")
            reply = json.loads(ws.recv())
            assert reply["took"] < 0.8  # concurrent, not 0.9
            loops.update(r.split(":")[1] for r in reply["results"])
    assert len(loops) == 1
    finish(server)


def test_broadcast_from_an_async_view(serve):
    """An async Flask view on the worker loop hands a message to every open
    /feed socket; each socket's thread writes its own."""
    server = serve(APP, "--threads", "8")
    with contextlib.ExitStack() as stack:
        feeds = [stack.enter_context(wsconnect(ws_url(server, "/feed"))) for _ in range(3)]
        wait_until(lambda: sessions(server)["open"] == 3, what="feeds open")
        loops = set()
        for text in ["one", "two"]:
            r = httpx.post(server.url + f"/publish?text={text}", timeout=5).json()
            assert r["sent"] == 3
            loops.add(r["loop"])
            for ws in feeds:
                assert ws.recv(timeout=5).startswith(f"{text}:{r['loop']}")
        assert len(loops) == 1
    finish(server)


# ---------------------------------------------------------------- Socket.IO


@pytest.mark.parametrize("transports", [["websocket"], ["polling", "websocket"]])
def test_socketio_threading_mode(serve, transports):
    """Flask-SocketIO with async_mode="threading": python-engineio runs its
    WebSocket on simple-websocket, so the same takeover serves it (straight
    away, or as the upgrade from long-polling)."""
    socketio = pytest.importorskip("socketio")
    server = serve("websocket_wsgi_apps:socketio_app", "--threads", "8")
    with socketio.SimpleClient() as client:
        client.connect(server.url, transports=transports, wait_timeout=10)
        for i in range(3):
            client.emit("echo", {"n": i, "text": "héllo"})
            assert client.receive(timeout=10) == ["echo", {"n": i, "text": "héllo"}]
        if "polling" in transports:
            # the long-polling session moved over to the WebSocket
            wait_until(lambda: client.client.eio.current_transport == "websocket", 10, "upgrade")
            client.emit("echo", "after upgrade")
            assert client.receive(timeout=10) == ["echo", "after upgrade"]
    log = finish(server)
    assert re.search(r'"GET /socket.io/\?[^"]*transport=websocket[^"]*" 101', log), log
