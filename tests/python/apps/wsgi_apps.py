"""WSGI apps used by test_wsgi.py.

Most apps are wrapped with wsgiref.validate.validator, so a PEP 3333
violation by the server (a non-str environ value, a missing key, an input
stream without readline, an iterable that is never closed, ...) raises in
the app or is written to stderr, which the tests check stays free of errors.
WSGIWarnings are turned into errors for the same reason.

The wrapper keeps a plain (environ, start_response) signature, so the
server's interface auto-detection sees a WSGI app.

Apps that must reach the server unwrapped (a list result, for the computed
Content-Length; a FileWrapper, for sendfile; deliberately broken apps) are
marked "unvalidated".

Flask and Django apps are built on first access (module __getattr__) so the
other tests do not pay for importing them.
"""

import functools
import hashlib
import io
import json
import sys
import threading
import time
import warnings
from urllib.parse import parse_qs
from wsgiref.validate import WSGIWarning, validator

warnings.simplefilter("error", WSGIWarning)

TEXT = [("Content-Type", "text/plain")]
JSON = [("Content-Type", "application/json")]


def validated(app):
    checked = validator(app)

    @functools.wraps(app)
    def wsgi(environ, start_response):
        # The validator replaces these with its wrappers; keep the server's.
        environ["test.input"] = environ.get("wsgi.input")
        environ["test.errors"] = environ.get("wsgi.errors")
        return checked(environ, start_response)

    return wsgi


def query(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def mark(environ, text):
    """Append a line to the marker file named by ?marker=PATH."""
    path = query(environ).get("marker")
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


# ---------------------------------------------------------------------------
# environ


@validated
def environ_app(environ, start_response):
    """The environ as JSON: str values as they are, the rest described."""
    data = {k: v for k, v in environ.items() if isinstance(v, str)}
    data["wsgi.version"] = list(environ["wsgi.version"])
    data["wsgi.version_type"] = type(environ["wsgi.version"]).__name__
    for key in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once", "wsgi.input_terminated"):
        data[key] = environ.get(key, "MISSING")
    errors, stream = environ["test.errors"], environ["test.input"]
    data["errors_methods"] = [
        m for m in ("write", "writelines", "flush") if callable(getattr(errors, m, None))
    ]
    data["input_methods"] = [
        m
        for m in ("read", "readline", "readlines", "__iter__")
        if callable(getattr(stream, m, None))
    ]
    wrapper = environ.get("wsgi.file_wrapper")
    data["file_wrapper"] = f"{wrapper.__module__}.{wrapper.__qualname__}" if wrapper else None
    data["non_str"] = sorted(
        k for k, v in environ.items() if "." not in k and not isinstance(v, str)
    )
    data["body"] = (
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)).decode("latin-1")
    )
    start_response("200 OK", JSON)
    return [json.dumps(data).encode()]


@validated
def errors_app(environ, start_response):
    """Writes to wsgi.errors: one line, a writelines() and an unterminated flush."""
    err = environ["wsgi.errors"]
    err.write("app-error-line-one\n")
    err.writelines(["app-error-", "line-two\n"])
    err.write("app-error-unterminated")
    err.flush()
    start_response("200 OK", TEXT)
    return [b"logged"]


# ---------------------------------------------------------------------------
# wsgi.input


def _summary(pieces, environ, start_response, extra=None):
    body = b"".join(pieces)
    data = {
        "len": len(body),
        "sha": hashlib.sha256(body).hexdigest(),
        "pieces": [len(p) for p in pieces],
        "head": body[:200].decode("latin-1"),
        "lines": [p.decode("latin-1") for p in pieces] if len(pieces) <= 50 else None,
        **(extra or {}),
    }
    start_response("200 OK", JSON)
    return [json.dumps(data).encode()]


@validated
def body_app(environ, start_response):
    """Read the body the way ?mode= says; report what was read and what read after the end gives."""
    q = query(environ)
    mode, n = q.get("mode", "read"), int(q.get("n", "8192"))
    stream = environ["wsgi.input"]
    raw = environ["test.input"]  # for read() without a size, which the validator refuses
    pieces = []
    if mode == "read":
        pieces.append(raw.read())
    elif mode == "read_none":
        pieces.append(raw.read(None))
    elif mode == "read_neg":
        pieces.append(raw.read(-1))
    elif mode == "read_n":
        while chunk := stream.read(n):
            assert len(chunk) <= n, (len(chunk), n)
            pieces.append(chunk)
    elif mode == "readline":
        while line := stream.readline():
            pieces.append(line)
    elif mode == "readline_n":
        while line := stream.readline(n):
            assert len(line) <= n, (len(line), n)
            pieces.append(line)
    elif mode == "readlines":
        pieces = stream.readlines()
    elif mode == "readlines_hint":
        pieces = stream.readlines(n)
        pieces.append(b"|")
        pieces.append(stream.read(1 << 30))
    elif mode == "iter":
        pieces = list(stream)
    elif mode == "mixed":  # readline, then read(n), then the rest
        pieces = [stream.readline(), stream.read(n), raw.read()]
    elif mode == "zero":
        pieces = [stream.read(0), stream.readline(0), stream.read(3)]
    else:
        raise ValueError(mode)
    after = {
        "after_read_n": repr(stream.read(10)),
        "after_read": repr(raw.read()),
        "after_readline": repr(stream.readline()),
        "after_readlines": repr(stream.readlines()),
    }
    return _summary(pieces, environ, start_response, after)


@validated
def ignore_body(environ, start_response):
    """Answers without reading the body."""
    start_response("200 OK", TEXT)
    return [b"ignored " + environ["PATH_INFO"].encode()]


@validated
def slow_body_reader(environ, start_response):
    """Reads the body only after a pause (?delay=), then echoes its length."""
    time.sleep(float(query(environ).get("delay", "0.3")))
    data = environ["test.input"].read()
    start_response("200 OK", TEXT)
    return [str(len(data)).encode()]


# ---------------------------------------------------------------------------
# start_response and write()


@validated
def exc_info_before_head(environ, start_response):
    """start_response 200, fail, then replace the response using exc_info."""
    start_response("200 OK", [*TEXT, ("X-First", "yes")])
    try:
        raise KeyError("boom")
    except KeyError:
        start_response("503 Service Unavailable", [*TEXT, ("X-Replaced", "yes")], sys.exc_info())
    return [b"replaced"]


@validated
def empty_chunk_then_exc_info(environ, start_response):
    """An empty first item sends no head, so exc_info may still replace the response."""
    start_response("200 OK", [*TEXT, ("X-First", "yes")])

    def gen():
        yield b""
        try:
            raise KeyError("late")
        except KeyError:
            start_response(
                "500 Internal Server Error", [*TEXT, ("X-Replaced", "yes")], sys.exc_info()
            )
        yield b"replaced after empty chunk"

    return gen()


@validated
def exc_info_after_head(environ, start_response):
    """After the head is out, start_response(exc_info) must re-raise that exception."""
    start_response("200 OK", TEXT)

    def gen():
        yield b"partial"
        try:
            raise ZeroDivisionError("after head")
        except ZeroDivisionError as exc:
            try:
                start_response("500 Internal Server Error", TEXT, sys.exc_info())
            except BaseException as raised:
                mark(environ, f"reraised {type(raised).__name__} same={raised is exc}")
                raise
            mark(environ, "returned")
        yield b"should not be sent"

    return gen()


@validated
def start_response_twice(environ, start_response):
    """A second start_response without exc_info is an error (PEP 3333)."""
    start_response("200 OK", [*TEXT, ("X-First", "yes")])
    try:
        start_response("201 Created", [*TEXT, ("X-Second", "yes")])
    except Exception as exc:
        return [f"second call raised {type(exc).__name__}".encode()]
    return [b"second call accepted"]


@validated
def write_only(environ, start_response):
    write = start_response("200 OK", TEXT)
    write(b"hello ")
    write(b"from ")
    write(b"write()")
    return []


@validated
def write_mixed(environ, start_response):
    write = start_response("200 OK", TEXT)
    write(b"written;")
    return iter([b"iter-1;", b"", b"iter-2"])


@validated
def write_with_length(environ, start_response):
    write = start_response("200 OK", [*TEXT, ("Content-Length", "11")])
    write(b"hello")
    write(b" world")
    return []


@validated
def status_app(environ, start_response):
    """Status line exactly as ?s= gives it."""
    start_response(query(environ).get("s", "404 NOT FOUND"), TEXT)
    return [b"status body"]


# ---------------------------------------------------------------------------
# The iterable's close()


class Closing:
    """An iterable that records close() in the marker file.

    ?n= items, ?delay= seconds between them, ?fail=K raises on item K.
    """

    def __init__(self, environ):
        self.environ = environ
        q = query(environ)
        self.n = int(q.get("n", "3"))
        self.delay = float(q.get("delay", "0"))
        self.fail = int(q.get("fail", "-1"))
        self.size = int(q.get("size", "5"))
        self.sent = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.sent == self.fail:
            raise RuntimeError(f"failing at item {self.sent}")
        if self.sent >= self.n:
            raise StopIteration
        if self.delay and self.sent:
            time.sleep(self.delay)
        self.sent += 1
        return b"x" * (self.size - 1) + b"\n"

    def close(self):
        mark(self.environ, f"closed after {self.sent}")


@validated
def closing(environ, start_response):
    start_response("200 OK", TEXT)
    return Closing(environ)


@validated
def closing_generator(environ, start_response):
    """A generator streaming slowly; its finally clause runs on close()."""
    start_response("200 OK", TEXT)

    def gen():
        sent = 0
        try:
            for _ in range(1000):
                yield b"y" * 1024
                sent += 1
                time.sleep(0.02)
        except GeneratorExit:
            mark(environ, f"generator closed after {sent}")
            raise
        finally:
            mark(environ, f"finally after {sent}")

    return gen()


class CloseRaises:
    def __init__(self, environ):
        self.environ = environ

    def __iter__(self):
        yield b"complete body"

    def close(self):
        mark(self.environ, "close raising")
        raise OSError("close-failed-detail")


@validated
def close_raises(environ, start_response):
    start_response("200 OK", [*TEXT, ("Content-Length", "13")])
    return CloseRaises(environ)


# ---------------------------------------------------------------------------
# wsgi.file_wrapper


class TracingFile(io.FileIO):
    """A real file that records read() calls, to tell sendfile from iteration."""

    marker = None

    def read(self, size=-1):
        if self.marker:
            with open(self.marker, "a") as f:
                f.write(f"read {size}\n")
        return super().read(size)

    def close(self):
        if self.marker and not self.closed:
            with open(self.marker, "a") as f:
                f.write("file closed\n")
        super().close()


def _open_for(environ):
    q = query(environ)
    f = TracingFile(q["path"], "r")
    f.marker = q.get("marker")
    if "offset" in q:
        f.seek(int(q["offset"]))
    return f, q


def file_plain(environ, start_response):
    """Unvalidated: a real file through wsgi.file_wrapper (sendfile)."""
    f, q = _open_for(environ)
    headers = [("Content-Type", "application/octet-stream")]
    if "length" in q:
        headers.append(("Content-Length", q["length"]))
    start_response("200 OK", headers)
    return environ["wsgi.file_wrapper"](f, 32768)


@validated
def file_validated(environ, start_response):
    """The same through the validator, which hides the FileWrapper: iteration."""
    f, _ = _open_for(environ)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](f, 32768)


class ClosingBytesIO(io.BytesIO):
    def __init__(self, data, marker):
        super().__init__(data)
        self.marker = marker

    def close(self):
        if self.marker:
            with open(self.marker, "a") as f:
                f.write("bytesio closed\n")
        super().close()


def _bytesio_app(environ, start_response):
    q = query(environ)
    data = bytes(range(256)) * int(q.get("k", "100"))
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](
        ClosingBytesIO(data, q.get("marker")), int(q.get("blk", "1000"))
    )


file_bytesio = validated(_bytesio_app)
file_bytesio_plain = _bytesio_app


# ---------------------------------------------------------------------------
# Framing


@validated
def framing(environ, start_response):
    """?cl= declared Content-Length (omitted if absent), ?body= the text, sent
    as ?parts= generator items; ?conn=close adds Connection: close;
    ?te=chunked adds Transfer-Encoding: chunked."""
    q = query(environ)
    text = q.get("body", "hello world").encode()
    headers = list(TEXT)
    if "cl" in q:
        headers.append(("Content-Length", q["cl"]))
    if q.get("conn"):
        headers.append(("Connection", q["conn"]))
    if q.get("te"):
        headers.append(("Transfer-Encoding", q["te"]))
    start_response(q.get("status", "200 OK"), headers)
    parts = int(q.get("parts", "2"))
    size = -(-len(text) // parts) if text else 1

    def gen():
        for i in range(0, len(text), size):
            yield text[i : i + size]

    return gen()


def list_plain(environ, start_response):
    """Unvalidated: a list (or ?tuple) result, so the server computes Content-Length."""
    q = query(environ)
    start_response(q.get("status", "200 OK"), TEXT)
    items = [b"abc", b"", b"defg", environ["PATH_INFO"].encode()]
    return tuple(items) if "tuple" in q else items


@validated
def no_body_status(environ, start_response):
    """204 or 304 with a body the server must not send."""
    start_response(query(environ).get("status", "204 No Content"), [("X-Check", "1")])
    return [b"must not be sent"]


def hop_by_hop(environ, start_response):
    """Unvalidated: hop-by-hop fields a WSGI app must not set (PEP 3333)."""
    start_response(
        "200 OK",
        [
            *TEXT,
            ("Keep-Alive", "timeout=99"),
            ("Upgrade", "h2c"),
            ("Proxy-Authenticate", "Basic"),
            ("TE", "trailers"),
            ("Connection", "Upgrade, Keep-Alive"),
            ("X-End-To-End", "kept"),
        ],
    )
    return [b"hop"]


@validated
def echo_path(environ, start_response):
    """PATH_INFO, method and body length, for keep-alive and pipelining tests."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    data = environ["wsgi.input"].read(length) if length else b""
    start_response("200 OK", TEXT)
    return [f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} {len(data)}".encode()]


@validated
def lazy_reader(environ, start_response):
    """Reads the body inside the response generator, after the head is out."""
    start_response("200 OK", TEXT)
    stream = environ["wsgi.input"]

    def gen():
        yield b"before;"
        total = 0
        while chunk := stream.read(1000):
            total += len(chunk)
        yield f"read {total};".encode()

    return gen()


@validated
def custom_headers(environ, start_response):
    """Repeated Set-Cookie, and the app's own Date and Server."""
    start_response(
        "200 OK",
        [
            *TEXT,
            ("Set-Cookie", "a=1; Path=/"),
            ("Set-Cookie", "b=2; Path=/"),
            ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("Server", "app-server"),
            ("X-Mixed-Case", "Value With Spaces"),
            *[
                (f"X-Many-{i}", f"{i}-" + "v" * 100)
                for i in range(int(query(environ).get("many", "0")))
            ],
        ],
    )
    return [b"headers"]


# ---------------------------------------------------------------------------
# Concurrency

_active = 0
_active_lock = threading.Lock()
_peak = 0


@validated
def sleepy(environ, start_response):
    """/slow sleeps ?s= seconds, anything else answers at once; both report
    the number of views running at the same time."""
    global _active, _peak
    q = query(environ)
    with _active_lock:
        _active += 1
        _peak = max(_peak, _active)
    try:
        if environ["PATH_INFO"] == "/slow":
            mark(environ, "slow started")
            time.sleep(float(q.get("s", "1")))
        with _active_lock:
            now, peak = _active, _peak
    finally:
        with _active_lock:
            _active -= 1
    start_response("200 OK", TEXT)
    return [
        f"{environ['PATH_INFO']} active={now} peak={peak} thread={threading.get_ident()}".encode()
    ]


# ---------------------------------------------------------------------------
# App errors


@validated
def raise_before_start(environ, start_response):
    """/boom raises before start_response; anything else is answered."""
    if environ["PATH_INFO"] == "/boom":
        raise ZeroDivisionError("secret-detail-before-start")
    start_response("200 OK", TEXT)
    return [b"still serving"]


@validated
def raise_after_start(environ, start_response):
    start_response("200 OK", TEXT)
    raise LookupError("secret-detail-after-start")


@validated
def raise_in_first_item(environ, start_response):
    start_response("200 OK", [*TEXT, ("X-First", "yes")])

    def gen():
        raise ValueError("secret-detail-first-item")
        yield b""

    return gen()


@validated
def raise_after_head(environ, start_response):
    start_response("200 OK", TEXT)

    def gen():
        yield b"first part;"
        raise ValueError("secret-detail-after-head")

    return gen()


@validated
def raise_after_head_length(environ, start_response):
    start_response("200 OK", [*TEXT, ("Content-Length", "100")])

    def gen():
        yield b"first part;"
        raise ValueError("secret-detail-after-head-length")

    return gen()


def returns_str_items(environ, start_response):
    """Unvalidated: a str body item is an app error."""
    start_response("200 OK", TEXT)
    return ["not bytes"]


def no_start_response(environ, start_response):
    """Unvalidated: returns a body without calling start_response."""
    return [b"orphan body"]


def bad_header_value(environ, start_response):
    """Unvalidated: a header value with CR LF (response splitting)."""
    start_response("200 OK", [*TEXT, ("X-Bad", "a\r\nX-Injected: 1")])
    return [b"body"]


def bad_status(environ, start_response):
    """Unvalidated: a status without a code."""
    start_response("OK", TEXT)
    return [b"body"]


# ---------------------------------------------------------------------------
# Frameworks, built on first use


def _flask_app():
    from flask import Flask, Response, request, stream_with_context, url_for

    app = Flask("wsgi_apps_flask")

    @app.get("/")
    def index():
        return "flask index"

    @app.post("/json")
    def echo_json():
        data = request.get_json()
        return {"got": data, "type": type(data).__name__, "url": url_for("echo_json")}

    @app.get("/stream")
    def stream():
        count = int(request.args.get("n", "5"))

        def gen():
            for i in range(count):
                # request is only usable here thanks to stream_with_context
                yield f"{request.args.get('tag', 'x')}-{i};"
                time.sleep(0.01)

        return Response(stream_with_context(gen()), mimetype="text/plain")

    @app.get("/where")
    def where():
        return {"script_name": request.script_root, "path": request.path, "url": request.url}

    @app.get("/fail")
    def fail():
        raise RuntimeError("flask view failed")

    return app


def _django_settings():
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="test-only-not-secret",
            ROOT_URLCONF=__name__,
            ALLOWED_HOSTS=["*"],
            MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
            INSTALLED_APPS=[],
            DATABASES={},
            USE_TZ=True,
            LOGGING_CONFIG=None,
        )
        import django

        django.setup()


def _django_urlpatterns():
    from django.http import HttpResponse, JsonResponse
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    def index(request):
        return HttpResponse("django index", content_type="text/plain")

    def item(request, n):
        return JsonResponse({"item": n, "method": request.method, "q": request.GET.get("q")})

    @csrf_exempt
    def upload(request):
        if request.method != "POST":
            return HttpResponse(status=405)
        return JsonResponse(
            {
                "len": len(request.body),
                "sha": hashlib.sha256(request.body).hexdigest(),
                "ctype": request.content_type,
                "script_name": request.META.get("SCRIPT_NAME"),
                "path_info": request.path_info,
            }
        )

    return [path("", index), path("items/<int:n>/", item), path("upload/", upload)]


def _django_app():
    _django_settings()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


_lazy = {"flask_app": _flask_app, "django_app": _django_app, "urlpatterns": _django_urlpatterns}


def __getattr__(name):
    if name in _lazy:
        value = _lazy[name]()
        globals()[name] = value
        return value
    raise AttributeError(name)
