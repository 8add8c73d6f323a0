"""Request limits over real sockets: the request line (414), the number and
size of header fields (431), the body (413, declared or chunked). Values at
the limit pass; one byte over is refused with Connection: close, the
connection is closed, and the server goes on serving others."""

from __future__ import annotations

import contextlib
import socket

import pytest
from conftest import Client, connect, request

APPS = {"asgi": "http_apps:asgi", "wsgi": "http_apps:wsgi"}


@pytest.fixture(params=["asgi", "wsgi"])
def app(request) -> str:
    return APPS[request.param]


def assert_refused(c: Client, status: int) -> bytes:
    got, headers, body = c.response()
    assert got == status, body
    assert headers.get("connection") == "close"
    assert int(headers["content-length"]) == len(body)
    assert c.closed(3), "the connection stayed open after the refusal"
    return body


def assert_serves(server) -> None:
    status, _, body = request(server, b"GET /p/alive HTTP/1.1\r\nHost: test\r\n\r\n")
    assert (status, body) == (200, b"GET /p/alive")


def request_line(length: int) -> bytes:
    """A request line of exactly `length` bytes (CRLF not counted)."""
    fixed = len("GET /p/ HTTP/1.1")
    return b"GET /p/" + b"a" * (length - fixed) + b" HTTP/1.1"


# ---------------------------------------------------------------- request line


def test_request_line_at_the_limit_passes(serve, app):
    server = serve(app, "--limit-request-line", "200")
    line = request_line(200)
    assert len(line) == 200
    status, _, body = request(server, line + b"\r\nHost: test\r\n\r\n")
    assert status == 200
    assert body == b"GET " + line[4:-9]


def test_request_line_over_the_limit_is_414(serve, app):
    server = serve(app, "--limit-request-line", "200")
    with connect(server) as c:
        c.send(request_line(201) + b"\r\nHost: test\r\n\r\n")
        assert_refused(c, 414)
    assert_serves(server)


def test_request_line_over_the_limit_without_crlf(serve, app):
    """The server does not wait for the end of a line that is already too long."""
    server = serve(app, "--limit-request-line", "200")
    with connect(server) as c:
        c.send(request_line(400))  # no CRLF, and nothing more comes
        assert_refused(c, 414)


def test_default_request_line_limit(serve, app):
    server = serve(app)
    with connect(server) as c:
        c.send(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: test\r\n\r\n")
        assert_refused(c, 414)
    status, _, _ = request(server, b"GET /p/" + b"a" * 8000 + b" HTTP/1.1\r\nHost: test\r\n\r\n")
    assert status == 200


def test_414_after_pipelined_requests(serve, app):
    server = serve(app, "--limit-request-line", "100")
    with connect(server) as c:
        c.send(b"GET /p/1 HTTP/1.1\r\nHost: test\r\n\r\n" + request_line(150) + b"\r\n\r\n")
        assert c.response()[2] == b"GET /p/1"
        assert_refused(c, 414)


# ---------------------------------------------------------------- header fields


def fields(n: int) -> bytes:
    """n field lines, Host included."""
    return b"Host: test\r\n" + b"".join(b"X-F%d: v\r\n" % i for i in range(n - 1))


def test_field_count_at_the_limit_passes(serve, app):
    server = serve(app, "--limit-request-fields", "10")
    status, _, body = request(server, b"GET /p/n HTTP/1.1\r\n" + fields(10) + b"\r\n")
    assert (status, body) == (200, b"GET /p/n")


def test_too_many_fields_is_431(serve, app):
    server = serve(app, "--limit-request-fields", "10")
    with connect(server) as c:
        c.send(b"GET /p/n HTTP/1.1\r\n" + fields(11) + b"\r\n")
        assert_refused(c, 431)
    assert_serves(server)


def field_line(length: int) -> bytes:
    """One field line of exactly `length` bytes, CRLF not counted."""
    return b"X-Long: " + b"v" * (length - len("X-Long: "))


def test_field_at_the_size_limit_passes(serve, app):
    server = serve(app, "--limit-request-field-size", "100")
    line = field_line(100)
    assert len(line) == 100
    status, _, body = request(server, b"GET /p/f HTTP/1.1\r\nHost: test\r\n" + line + b"\r\n\r\n")
    assert (status, body) == (200, b"GET /p/f")


def test_field_over_the_size_limit_is_431(serve, app):
    server = serve(app, "--limit-request-field-size", "100")
    with connect(server) as c:
        c.send(b"GET /p/f HTTP/1.1\r\nHost: test\r\n" + field_line(101) + b"\r\n\r\n")
        assert_refused(c, 431)
    assert_serves(server)


def test_field_over_the_size_limit_without_crlf(serve, app):
    server = serve(app, "--limit-request-field-size", "100")
    with connect(server) as c:
        c.send(b"GET /p/f HTTP/1.1\r\nHost: test\r\n" + field_line(300))
        assert_refused(c, 431)


def test_huge_head_is_refused_not_buffered(serve, app):
    """Within the per-field limits, the whole head is still capped (64 KiB by default)."""
    server = serve(app, "--limit-request-fields", "1000")
    with connect(server) as c:
        big = b"".join(b"X-B%d: %s\r\n" % (i, b"v" * 8000) for i in range(200))
        # refused, perhaps before all of it was written
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            c.send(b"GET /p/h HTTP/1.1\r\nHost: test\r\n" + big + b"\r\n")
        status, headers, _ = c.response()
        assert status == 431
        assert headers.get("connection") == "close"
    assert_serves(server)


def test_head_cap_is_64_kib_by_default(serve, app):
    """Fields that each pass --limit-request-field-size still may not add up to
    more than 64 KiB: 7 fields of 8000 bytes pass, 9 do not."""
    server = serve(app)
    for count, want in ((7, 200), (9, 431)):
        fields = b"".join(b"X-B%d: %s\r\n" % (i, b"v" * 8000) for i in range(count))
        with connect(server) as c:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                c.send(b"GET /p/h HTTP/1.1\r\nHost: test\r\n" + fields + b"\r\n")
            status, _, _ = c.response()
            assert status == want, count


# ---------------------------------------------------------------- body


def post_head(length: int, path: str = "/echo") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\n\r\n".encode()


def chunked_head(path: str = "/echo") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".encode()


def test_body_at_the_limit_passes(serve, app):
    server = serve(app, "--limit-request-body", "1000")
    with connect(server) as c:
        c.send(post_head(1000) + b"b" * 1000)
        status, _, body = c.response()
        assert (status, body) == (200, b"b" * 1000)
        c.send(
            chunked_head()
            + b"1f4\r\n"
            + b"c" * 500
            + b"\r\n1f4\r\n"
            + b"d" * 500
            + b"\r\n0\r\n\r\n"
        )
        status, _, body = c.response()
        assert (status, body) == (200, b"c" * 500 + b"d" * 500)


def test_declared_body_over_the_limit_is_413_at_once(serve, app):
    """Refused from the head alone: the client need not send the body."""
    server = serve(app, "--limit-request-body", "1000")
    with connect(server) as c:
        c.send(post_head(1001))
        body = assert_refused(c, 413)
        assert b"too large" in body
    assert_serves(server)


def test_declared_body_over_the_limit_sent_in_full(serve, app):
    """A client that sends the body anyway (most do, then read) is not reset:
    the server drains its input for a moment after the 413 (lingering close),
    so the upload completes and the client reads the answer."""
    server = serve(app, "--limit-request-body", "1000")
    with connect(server) as c:
        c.send(post_head(4_000_000))
        try:
            for _ in range(40):
                c.send(b"z" * 100_000)
        except OSError as e:
            raise AssertionError(
                f"the server reset the connection under the upload: {e!r}"
            ) from None
        status, headers, _ = c.response()
        assert status == 413
        assert headers.get("connection") == "close"
        assert c.closed(3)


def test_chunked_body_over_the_limit_is_413_mid_stream(serve, app):
    server = serve(app, "--limit-request-body", "1000")
    with connect(server) as c:
        c.send(chunked_head() + b"258\r\n" + b"a" * 600 + b"\r\n")
        c.send(b"258\r\n" + b"b" * 600 + b"\r\n")  # 1200 in all: over by 200
        # the upload is not over; the server refuses without waiting for the end
        assert_refused(c, 413)
    assert_serves(server)


def test_chunked_body_one_byte_over_the_limit(serve, app):
    server = serve(app, "--limit-request-body", "1000")
    with connect(server) as c:
        c.send(chunked_head() + b"3e9\r\n" + b"a" * 1001 + b"\r\n0\r\n\r\n")
        assert_refused(c, 413)


def test_body_limit_applies_to_each_request(serve, app):
    """The limit is per request, not per connection."""
    server = serve(app, "--limit-request-body", "1000")
    with connect(server) as c:
        for i in range(5):
            c.send(post_head(800) + bytes([65 + i]) * 800)
            status, _, body = c.response()
            assert (status, body) == (200, bytes([65 + i]) * 800)


def test_limits_do_not_leak_between_connections(serve, app):
    """After refusals on some connections, others are served normally."""
    server = serve(app, "--limit-request-line", "100", "--limit-request-body", "10")
    socks = []
    for _ in range(5):
        s = socket.create_connection((server.host, server.port), timeout=5)
        s.sendall(request_line(300) + b"\r\n\r\n")
        socks.append(s)
    status, _, body = request(server, post_head(10) + b"0123456789")
    assert (status, body) == (200, b"0123456789")
    for s in socks:
        assert s.recv(100).startswith(b"HTTP/1.1 414 ")
        s.close()


# -- --limit-concurrency ------------------------------------------------------------


@pytest.mark.parametrize("app_name", ["process_model.apps:app", "process_model.apps:wsgi"])
def test_limit_concurrency_answers_503_without_calling_the_app(serve, tmp_path, app_name):
    """Four slow requests in the app; the fifth is answered 503 with
    Retry-After by the core, and the app never sees it; once they are done,
    requests are served again."""
    import threading
    import time

    started = tmp_path / "started"
    server = serve(
        app_name,
        "--limit-concurrency",
        "4",
        "--threads",
        "8",
        env={"PROCESS_APPS_STARTED": str(started)},
    )
    answers: list[int] = []

    def slow() -> None:
        with connect(server) as c:
            c.send(b"GET /slow?t=1.5 HTTP/1.1\r\nHost: x\r\n\r\n")
            answers.append(c.response()[0])

    threads = [threading.Thread(target=slow) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while not started.exists() or len(started.read_text().split()) < 4:
        assert time.monotonic() < deadline, "the slow requests did not reach the app"
        time.sleep(0.01)
    with connect(server) as c:
        c.send(b"GET /slow?t=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = c.response()
    assert (status, headers.get("retry-after")) == (503, "1")
    for t in threads:
        t.join(10)
    assert answers == [200] * 4
    assert len(started.read_text().split()) == 4  # request 5 never reached the app
    with connect(server) as c:
        c.send(b"GET /slow?t=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response()[0] == 200
