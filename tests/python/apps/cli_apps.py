"""Apps for the CLI, binding, TLS and proxy tests: every shape of app object
the loader must recognise, each answering with what it saw as JSON."""

import asyncio
import hashlib
import json
import os
import threading
import time
import types


def _jsonable(value):
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


async def _read_body(receive):
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return body
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


def _scope_info(scope, kind, body=b""):
    return {
        "kind": kind,
        "type": scope["type"],
        "asgi": scope.get("asgi"),
        "scheme": scope.get("scheme"),
        "client": _jsonable(scope.get("client")),
        "server": _jsonable(scope.get("server")),
        "root_path": scope.get("root_path"),
        "path": scope.get("path"),
        "method": scope.get("method"),
        "headers": _jsonable(scope.get("headers", [])),
        "body_len": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "pid": os.getpid(),
    }


async def _answer(send, data, status=200):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(data).encode()})


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# -- ASGI 3: a coroutine function ---------------------------------------------


async def asgi_fn(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    body = await _read_body(receive)
    if scope["path"].startswith("/big"):
        # /big/N answers N bytes of a repeating pattern
        n = int(scope["path"].rsplit("/", 1)[1])
        pattern = bytes(range(256)) * (n // 256 + 1)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        await send({"type": "http.response.body", "body": pattern[:n]})
        return
    if scope["path"].startswith("/sleep/"):
        await asyncio.sleep(int(scope["path"].rsplit("/", 1)[1]) / 1000)
    if scope["path"] == "/missing":
        await _answer(send, {"error": "not here"}, status=404)
        return
    await _answer(send, _scope_info(scope, "asgi3-function", body))


# -- ASGI 3: an instance whose __call__ is a coroutine function --------------


class AsgiCallable:
    def __init__(self):
        self.count = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        self.count += 1
        body = await _read_body(receive)
        info = _scope_info(scope, "asgi3-instance", body)
        info["count"] = self.count
        await _answer(send, info)


asgi_instance = AsgiCallable()


# -- ASGI 2: a class instantiated with the scope, then awaited with (receive, send)


class Asgi2App:
    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        if self.scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        body = await _read_body(receive)
        await _answer(send, _scope_info(self.scope, "asgi2-class", body))


# ASGI 2 written as a plain function of the scope returning the coroutine function
def asgi2_fn(scope):
    async def instance(receive, send):
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        body = await _read_body(receive)
        await _answer(send, _scope_info(scope, "asgi2-function", body))

    return instance


# -- WSGI ----------------------------------------------------------------------

_ENVIRON_KEYS = (
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "HTTP_HOST",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "wsgi.url_scheme",
    "wsgi.multithread",
    "wsgi.multiprocess",
)


def wsgi_fn(environ, start_response):
    body = environ["wsgi.input"].read()
    if environ["PATH_INFO"].startswith("/big/"):
        n = int(environ["PATH_INFO"].rsplit("/", 1)[1])
        pattern = bytes(range(256)) * (n // 256 + 1)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [pattern[:n]]
    info = {k: environ.get(k) for k in _ENVIRON_KEYS}
    info["kind"] = "wsgi-function"
    info["body_len"] = len(body)
    info["body_sha256"] = hashlib.sha256(body).hexdigest()
    info["thread"] = threading.current_thread().name
    info["wsgi_threads"] = sorted(
        t.name for t in threading.enumerate() if t.name.startswith("oneloop-wsgi-")
    )
    info["pid"] = os.getpid()
    data = json.dumps(info).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [data]


# -- factories and nested attributes -------------------------------------------

FACTORY_CALLS = []


def create_app():
    """A factory: --factory cli_apps:create_app, or cli_apps:create_app()."""
    FACTORY_CALLS.append(1)

    async def made(scope, receive, send):
        if scope["type"] != "http":
            return
        await _read_body(receive)
        await _answer(send, {"kind": "factory-made", "factory_calls": len(FACTORY_CALLS)})

    return made


def create_wsgi():
    def made(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"wsgi from a factory"]

    return made


def failing_factory():
    raise RuntimeError("factory exploded")


holder = types.SimpleNamespace(inner=types.SimpleNamespace(app=asgi_fn), wsgi=wsgi_fn)


# -- interface forcing ---------------------------------------------------------


def dual(*args):
    """Serves either interface: auto-detection cannot tell, --interface decides."""
    if len(args) == 2:
        _environ, start_response = args
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"served as wsgi"]
    scope, receive, send = args

    async def run():
        if scope["type"] != "http":
            return
        await _read_body(receive)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"served as asgi3"})

    return run()


# -- things that are not apps -------------------------------------------------

not_callable = 42


# -- apps that fail ------------------------------------------------------------


async def asgi_raises(scope, receive, send):
    if scope["type"] != "http":
        return
    raise RuntimeError("asgi app failed before responding")


def wsgi_raises(environ, start_response):
    raise RuntimeError("wsgi app failed before responding")


# -- lifespan that leaves a trace ------------------------------------------------


async def lifespan_marker(scope, receive, send):
    """Appends 'startup' / 'shutdown' to $LIFESPAN_MARKER as the events arrive."""
    if scope["type"] == "lifespan":
        marker = os.environ["LIFESPAN_MARKER"]
        while True:
            message = await receive()
            event = message["type"].rsplit(".", 1)[1]
            with open(marker, "a") as f:
                f.write(event + "\n")
            await send({"type": f"lifespan.{event}.complete"})
            if event == "shutdown":
                return
    await _read_body(receive)
    await _answer(send, {"kind": "lifespan-marker"})


async def asgi_stream(scope, receive, send):
    """/stream: an endless event stream (ends when the client goes);
    /wait: a view that never answers (cancelled when the client goes)."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["path"] == "/wait":
        await asyncio.sleep(3600)
    head = {"type": "http.response.start", "status": 200, "headers": []}
    await send(head)
    while True:
        await send({"type": "http.response.body", "body": b"data: tick\n\n", "more_body": True})
        await asyncio.sleep(0.01)


def wsgi_stream(environ, start_response):
    """/stream: a generator that never ends (closed when the client goes)."""
    start_response("200 OK", [("Content-Type", "text/event-stream")])

    def ticks():
        while True:
            yield b"data: tick\n\n"
            time.sleep(0.01)

    return ticks()
