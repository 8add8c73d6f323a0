"""WSGI apps of test_websocket_wsgi.py: WebSockets that take the connection
over, as under gunicorn's gthread worker.

`app` is a Flask app with flask-sock routes (simple-websocket underneath)
and plain routes beside them; `socketio_app` is Flask-SocketIO in threading
mode (python-engineio on simple-websocket), built on first access so the
other tests do not import it.
"""

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import queue
import threading
import time

from flask import Flask, request
from flask_sock import Sock

import oneloop

app = Flask(__name__)
sock = Sock(app)

# Sessions that are open now (the handler runs), for the tests to wait on.
_open = 0
_open_lock = threading.Lock()


def _session(f):
    def wrapper(ws, *args, **kwargs):
        global _open
        with _open_lock:
            _open += 1
        try:
            return f(ws, *args, **kwargs)
        finally:
            with _open_lock:
                _open -= 1

    wrapper.__name__ = f.__name__
    return wrapper


@sock.route("/echo")
@_session
def echo(ws):
    """Each message back, text as text and bytes as bytes, until the client
    closes."""
    while True:
        ws.send(ws.receive())


@sock.route("/close")
@_session
def close_after(ws):
    """Echo `n` messages, then close from the server's side with `code` and
    `reason`."""
    n = int(request.args.get("n", "1"))
    for _ in range(n):
        ws.send(ws.receive())
    ws.close(reason=int(request.args.get("code", "1000")), message=request.args.get("reason", ""))


@sock.route("/info")
@_session
def info(ws):
    """What the handler's thread and socket look like, as one JSON message."""
    s = request.environ["gunicorn.socket"]
    ws.send(
        json.dumps(
            {
                "timeout": s.gettimeout(),
                "blocking": s.getblocking(),
                "thread": threading.current_thread().name,
                "fd_is_dup": s.fileno() > 2,
            }
        )
    )
    ws.receive()


@sock.route("/push")
@_session
def push(ws):
    """Sends a message every 50 ms and never reads: at shutdown it learns
    the session is over only when a send fails."""
    i = 0
    while True:
        ws.send(f"tick {i}")
        i += 1
        time.sleep(0.05)


async def lookup(name: str, delay: float) -> str:
    """Stands for an async client call (a database, a search, an API)."""
    await asyncio.sleep(delay)
    return f"{name}:{id(asyncio.get_running_loop())}"


async def lookup_all(delay: float) -> list:
    return await asyncio.gather(*(lookup(n, delay) for n in ("a", "b", "c")))


@sock.route("/fanout")
@_session
def fanout(ws):
    """Per message, three async lookups at once on the worker loop, from the
    socket's thread (the one-loop bridge)."""
    while True:
        delay = float(ws.receive())
        started = time.monotonic()
        results = oneloop.run_coroutine(lookup_all(delay))
        ws.send(json.dumps({"results": results, "took": time.monotonic() - started}))


# Broadcast: each /feed socket's thread is its only writer; an async view on
# the worker loop hands it messages through a queue, never blocking the loop.
_subscribers: set = set()


@sock.route("/feed")
@_session
def feed(ws):
    q: queue.SimpleQueue = queue.SimpleQueue()
    _subscribers.add(q)
    try:
        while ws.connected:
            with contextlib.suppress(queue.Empty):
                ws.send(q.get(timeout=0.2))
    finally:
        _subscribers.discard(q)


@app.post("/publish")
async def publish():
    news = await lookup(request.args.get("text", "news"), 0.01)
    for q in list(_subscribers):
        q.put_nowait(news)
    return {"sent": len(_subscribers), "loop": id(asyncio.get_running_loop())}


@app.route("/refuse", websocket=True)
def refuse():
    """A WebSocket route that turns the upgrade down (say, not logged in):
    answered as plain HTTP, the socket never touched."""
    return "no WebSocket for you\n", 403


@app.route("/plain")
def plain():
    return "plain\n"


@app.route("/slow")
def slow():
    time.sleep(float(request.args.get("s", "1")))
    return "slow done\n"


@app.route("/sessions")
def sessions():
    """Open sessions, the process's threads (simple-websocket runs one per
    socket), its RSS."""
    with open(f"/proc/{os.getpid()}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return {"open": _open, "threads": threading.active_count(), "rss_kib": rss}


@app.route("/keep-socket", websocket=True)
def keep_socket():
    """Keeps a reference to the lent socket and turns the upgrade down: the
    connection is not kept alive (a thread of the app's could use it)."""
    _kept.append(request.environ["gunicorn.socket"])
    return "kept\n", 403


_kept: list = []


def lent(environ, start_response):
    """A plain WSGI app: whether the request was lent the socket, and how."""
    s = environ.get("gunicorn.socket")
    info = {"lent": s is not None}
    if s is not None:
        info.update(
            blocking=s.getblocking(),
            timeout=s.gettimeout(),
            family=s.family.name,
            type=s.type.name,
            inheritable=s.get_inheritable(),
        )
    body = json.dumps(info).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


class _EndsAtIter:
    def __iter__(self):
        raise StopIteration


def simple(environ, start_response):
    """simple-websocket without Flask: an echo with keepalive pings every
    100 ms (its selector path). How the app tells the server the session is
    over comes from the query: StopIteration raised by the call (gunicorn's
    way), by iter() on its result, or an empty result without a response."""
    from urllib.parse import parse_qs

    import simple_websocket

    ws = simple_websocket.Server.accept(environ, ping_interval=0.1)
    try:
        while True:
            ws.send(ws.receive())
    except simple_websocket.ConnectionClosed:
        pass
    end = parse_qs(environ["QUERY_STRING"]).get("end", ["raise"])[0]
    if end == "raise":
        raise StopIteration
    return _EndsAtIter() if end == "iter" else []


def stuck(environ, start_response):
    """Takes the socket itself: answers the handshake by hand, then pushes a
    frame every 50 ms and never reads, so the end of its reads at shutdown
    goes unnoticed; only the cut at the graceful timeout ends it."""
    s = environ["gunicorn.socket"]
    key = environ["HTTP_SEC_WEBSOCKET_KEY"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
    s.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
    )
    try:
        while True:
            s.sendall(b"\x81\x01.")  # a one-byte text frame
            time.sleep(0.05)
    except OSError:
        pass
    raise StopIteration


def __getattr__(name):
    if name == "socketio_app":
        from flask_socketio import SocketIO, emit

        sio_flask = Flask("socketio_app")
        socketio = SocketIO(sio_flask, async_mode="threading")

        @socketio.on("echo")
        def on_echo(data):
            emit("echo", data)

        globals()["socketio_app"] = sio_flask
        return sio_flask
    raise AttributeError(name)
