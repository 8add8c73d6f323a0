"""HTTP/1.1 over real sockets: persistence, pipelining, chunked bodies in both
directions, Expect: 100-continue, Date/Server, upgrades, HEAD, and malformed
or smuggling-prone requests. Every behaviour that both interfaces share is
checked against an ASGI and a WSGI app answering the same routes
(apps/http_apps.py)."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from email.utils import parsedate_to_datetime

import pytest
from conftest import Client, connect, request

APPS = {"asgi": "http_apps:asgi", "wsgi": "http_apps:wsgi"}


@pytest.fixture(params=["asgi", "wsgi"])
def app(request) -> str:
    return APPS[request.param]


def get(path: str, *extra: str, version: str = "1.1") -> bytes:
    lines = [f"GET {path} HTTP/{version}", "Host: test", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + "".join(f"{e}\r\n" for e in extra).encode() + b"\r\n" + body


def still_open(c: Client, wait: float = 0.3) -> bool:
    """The server neither closed the connection nor sent anything unasked."""
    c.sock.settimeout(wait)
    try:
        data = c.sock.recv(1)
    except TimeoutError:
        return True
    finally:
        c.sock.settimeout(5)
    assert data == b"", f"unexpected bytes from the server: {data!r}"
    return False


def assert_serves(server) -> None:
    """The server is still up and answers a fresh connection."""
    status, _, body = request(server, get("/p/alive"))
    assert (status, body) == (200, b"GET /p/alive")


# ---------------------------------------------------------------- keep-alive


def test_http11_keeps_the_connection_by_default(serve, app):
    server = serve(app)
    with connect(server) as c:
        for i in range(40):
            c.send(get(f"/p/{i}?q={i}"))
            status, headers, body = c.response()
            assert status == 200
            assert body == f"GET /p/{i}?q={i}".encode()
            assert "close" not in headers.get("connection", "")
        assert still_open(c)
    # one connection, forty requests: the access log shows them all
    server.wait_log("/p/39")


def test_http10_closes_by_default(serve, app):
    server = serve(app)
    with connect(server) as c:
        c.send(get("/p/old", version="1.0"))
        status, headers, body = c.response()
        assert (status, body) == (200, b"GET /p/old")
        assert headers.get("connection") == "close"
        assert c.closed(2)


def test_http10_keep_alive_persists(serve, app):
    server = serve(app)
    with connect(server) as c:
        for i in range(5):
            c.send(get(f"/p/{i}", "Connection: keep-alive", version="1.0"))
            status, headers, body = c.response()
            assert (status, body) == (200, f"GET /p/{i}".encode())
            assert headers["connection"].lower() == "keep-alive"
            assert "content-length" in headers
        assert still_open(c)
        # without the option again, HTTP/1.0 ends the connection
        c.send(get("/p/last", version="1.0"))
        status, headers, body = c.response()
        assert (status, body) == (200, b"GET /p/last")
        assert headers.get("connection") == "close"
        assert c.closed(2)


def test_http10_keep_alive_with_unsized_body_closes(serve, app):
    """HTTP/1.0 has no chunked coding: a body of unknown length ends with the close."""
    server = serve(app)
    with connect(server) as c:
        c.send(get("/unsized?n=3001", "Connection: keep-alive", version="1.0"))
        status, headers, body = c.response()
        assert status == 200
        assert "transfer-encoding" not in headers
        assert headers.get("connection") == "close"
        assert body == b"x" * 3001
        assert c.closed(2)


@pytest.mark.parametrize("value", ["close", "Close", "keep-alive, close"])
def test_client_connection_close(serve, app, value):
    server = serve(app)
    with connect(server) as c:
        # a request pipelined after the close must not be answered
        c.send(get("/p/first", f"Connection: {value}") + get("/p/after"))
        status, headers, body = c.response()
        assert (status, body) == (200, b"GET /p/first")
        assert headers.get("connection") == "close"
        assert c.read_to_eof() == b""


@pytest.mark.parametrize("path", ["/p/x", "/p/x?sleep=100"])
def test_half_closed_client_still_gets_the_response(serve, app, path):
    """A client that shuts down its sending side after a complete request (nc,
    HTTP/1.0 tools) still reads: it gets the app's answer, however long the
    app takes, and never a 500 in its place."""
    server = serve(app)
    with connect(server) as c:
        c.send(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        c.sock.shutdown(socket.SHUT_WR)
        status, _, body = c.response()
        assert (status, body) == (200, f"GET {path}".encode())


CUT_BODIES = {
    # gunicorn's rfc9112_chunked_missing_final_crlf_01: the trailer section
    # never ends
    "chunked-after-last-chunk": b"Transfer-Encoding: chunked\r\n\r\n0\r\n",
    "chunked-mid-chunk": b"Transfer-Encoding: chunked\r\n\r\n5\r\nhel",
    "content-length": b"Content-Length: 10\r\n\r\nabc",
}


@pytest.mark.parametrize("name", list(CUT_BODIES))
def test_body_cut_by_a_half_close_is_answered_400(serve, app, name):
    """A client that closes its side before the body ends sent a message that
    can never be complete: it gets 400 and the connection closes, instead of
    a silent close (or whatever the app makes of the disconnect)."""
    server = serve(app)
    with connect(server) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: test\r\n" + CUT_BODIES[name])
        c.sock.shutdown(socket.SHUT_WR)
        status, headers, _ = c.response()
        assert status == 400
        assert headers.get("connection") == "close"
        assert c.read_to_eof() == b""
    assert_serves(server)


def test_max_keep_alive_requests(serve, app):
    server = serve(app, "--max-keep-alive-requests", "3")
    with connect(server) as c:
        c.send(get("/p/1") + get("/p/2") + get("/p/3") + get("/p/4"))
        for i in (1, 2):
            status, headers, body = c.response()
            assert (status, body) == (200, f"GET /p/{i}".encode())
            assert "close" not in headers.get("connection", "")
        status, headers, body = c.response()
        assert (status, body) == (200, b"GET /p/3")
        assert headers.get("connection") == "close"
        assert c.read_to_eof() == b""


def test_small_unread_body_is_skipped(serve, app):
    """An unread body within 64 KiB is discarded and the connection kept."""
    server = serve(app)
    with connect(server) as c:
        c.send(post("/noread", b"u" * 60_000) + get("/p/next"))
        status, headers, body = c.response()
        assert (status, body) == (200, b"not read")
        assert "close" not in headers.get("connection", "")
        assert c.response()[2] == b"GET /p/next"
        # the same with a chunked body
        c.send(
            b"POST /noread HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"1000\r\n"
            + b"c" * 4096
            + b"\r\n0\r\n\r\n"
            + get("/p/again")
        )
        assert c.response()[2] == b"not read"
        assert c.response()[2] == b"GET /p/again"


def test_large_unread_body_closes_but_the_response_arrives(serve, app):
    """Over 64 KiB unread: the connection is closed, but gracefully (lingering
    close): the client, still uploading, is not reset and reads the response."""
    server = serve(app)
    with connect(server) as c:
        c.send(b"POST /noread HTTP/1.1\r\nHost: test\r\nContent-Length: 4000000\r\n\r\n")
        try:
            for _ in range(40):
                c.send(b"L" * 100_000)
        except OSError as e:
            raise AssertionError(
                f"the server reset the connection under the upload: {e!r}"
            ) from None
        c.send(get("/p/never"))
        status, _, body = c.response()
        assert (status, body) == (200, b"not read")
        assert b"never" not in c.read_to_eof()
    assert_serves(server)


# ---------------------------------------------------------------- pipelining


def test_pipelined_requests_answered_in_order(serve, app):
    server = serve(app)
    raws, expected = [], []
    for i in range(16):
        if i % 5 == 3:
            body = f"body-{i}-".encode() * 50
            raws.append(post(f"/echo?i={i}", body))
            expected.append(body)
        else:
            # early requests sleep longest: a server answering in completion
            # order rather than request order would reorder them
            q = f"sleep={(16 - i) * 8}" if i % 2 == 0 else "fast=1"
            raws.append(get(f"/p/{i}?{q}"))
            expected.append(f"GET /p/{i}?{q}".encode())
    with connect(server) as c:
        c.send(b"".join(raws))
        for i, want in enumerate(expected):
            status, _, body = c.response()
            assert status == 200, i
            assert body == want, i
        assert still_open(c)
        c.send(get("/p/again"))
        assert c.response()[2] == b"GET /p/again"


def test_pipeline_split_at_every_byte(serve, app):
    """The pipeline arrives in small, odd pieces that cut heads and bodies apart."""
    server = serve(app)
    data = get("/p/a") + post("/echo", b"0123456789" * 30) + get("/p/b?sleep=20") + get("/p/c")
    with connect(server) as c:
        for i in range(0, len(data), 7):
            c.send(data[i : i + 7])
            if i % 70 == 0:
                time.sleep(0.002)
        assert c.response()[2] == b"GET /p/a"
        assert c.response()[2] == b"0123456789" * 30
        assert c.response()[2] == b"GET /p/b?sleep=20"
        assert c.response()[2] == b"GET /p/c"


def test_request_arriving_during_a_slow_response_is_served(serve, app):
    """The next request comes in while the previous one is still being answered
    (the view takes a few ms): it is answered, every time, right away."""
    server = serve(app, "--timeout-keep-alive", "10")
    for i in range(60):
        with connect(server, timeout=2) as c:
            c.send(get(f"/p/{i}?sleep=4"))
            time.sleep(0.001)
            c.send(get(f"/p/{i}b"))
            assert c.response()[2] == f"GET /p/{i}?sleep=4".encode()
            try:
                second = c.response()[2]
            except (TimeoutError, ConnectionError):
                second = None
            assert second == f"GET /p/{i}b".encode(), f"attempt {i}: the second request was lost"


def test_malformed_request_in_a_pipeline(serve, app):
    server = serve(app)
    good = [get(f"/p/{i}?sleep=30") for i in range(4)]
    bad = b"GET /p/bad HTTP/1.1\r\nHost: test\r\nNo colon here\r\n\r\n"
    later = [get(f"/p/later{i}") for i in range(3)]
    with connect(server) as c:
        c.send(b"".join(good) + bad + b"".join(later))
        for i in range(4):
            status, headers, body = c.response()
            assert (status, body) == (200, f"GET /p/{i}?sleep=30".encode())
            assert "close" not in headers.get("connection", "")
        status, headers, _ = c.response()
        assert status == 400
        assert headers.get("connection") == "close"
        rest = c.read_to_eof()
        assert rest == b"", f"requests after the bad one were answered: {rest[:200]!r}"
    assert_serves(server)


# ---------------------------------------------------------------- chunked bodies

PAYLOAD = bytes(range(256)) * 8  # 2048 bytes, every byte value


def chunked(pieces: list[bytes], ext: str = "", upper: bool = False, zeros: int = 0) -> bytes:
    out = b""
    for p in pieces:
        size = f"{len(p):x}".upper() if upper else f"{len(p):x}"
        out += ("0" * zeros + size + ext).encode() + b"\r\n" + p + b"\r\n"
    return out


CHUNKINGS = {
    "one-chunk": chunked([PAYLOAD]) + b"0\r\n\r\n",
    "one-byte-chunks": chunked([PAYLOAD[i : i + 1] for i in range(300)]) + b"0\r\n\r\n",
    "uneven": chunked([PAYLOAD[:1], PAYLOAD[1:1000], PAYLOAD[1000:1001], PAYLOAD[1001:]])
    + b"0\r\n\r\n",
    "extensions": chunked([PAYLOAD[:100], PAYLOAD[100:]], ext=';name=value;flag;q="a;b\\"c"')
    + b'0;last="yes"\r\n\r\n',
    "trailers": chunked([PAYLOAD]) + b"0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n",
    "upper-hex-leading-zeros": chunked([PAYLOAD[:255], PAYLOAD[255:]], upper=True, zeros=3)
    + b"000\r\n\r\n",
    "big-chunk": chunked([PAYLOAD * 100]) + b"0\r\n\r\n",
    "many-chunks": chunked([PAYLOAD[:7]] * 2000) + b"0\r\n\r\n",
}
EXPECTED = {
    "one-byte-chunks": PAYLOAD[:300],
    "big-chunk": PAYLOAD * 100,
    "many-chunks": PAYLOAD[:7] * 2000,
}


@pytest.mark.parametrize("name", list(CHUNKINGS))
def test_chunked_request_body_reaches_the_app(serve, app, name):
    server = serve(app, "--timeout-request-body", "2")
    head = b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
    with connect(server) as c:
        c.send(head + CHUNKINGS[name] + get("/p/next"))
        status, headers, body = c.response()
        assert status == 200
        want = EXPECTED.get(name, PAYLOAD)
        assert headers["x-body-len"] == str(len(want))
        assert body == want
        # the body was consumed exactly: the pipelined request is next
        assert c.response()[2] == b"GET /p/next"


def test_chunked_request_body_trickled(serve, app):
    """Chunk-size lines, data and CRLFs arrive cut at awkward places."""
    server = serve(app)
    data = (
        b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked([PAYLOAD[:10], PAYLOAD[10:500]], ext=";e=1")
        + b"0\r\nX-T: 1\r\n\r\n"
    )
    cuts = [60, 61, 62, 63, 64, 70, 75, 80, 81, 82, 300, 500, len(data) - 5, len(data) - 1]
    with connect(server) as c:
        prev = 0
        for cut in [*cuts, len(data)]:
            c.send(data[prev:cut])
            prev = cut
            time.sleep(0.01)
        status, _, body = c.response()
        assert (status, body) == (200, PAYLOAD[:500])


def read_strict_chunked(c: Client) -> list[bytes]:
    """Chunks of a chunked body, asserting the exact wire syntax."""
    chunks = []
    while True:
        line = c._line()
        assert re.fullmatch(rb"[0-9a-fA-F]+", line), f"bad chunk-size line {line!r}"
        size = int(line, 16)
        if size == 0:
            assert c._line() == b"", "the last chunk must be followed by CRLF"
            return chunks
        c._need(size + 2)
        assert c.buf[size : size + 2] == b"\r\n", "chunk data must end with CRLF"
        chunks.append(c.buf[:size])
        c.buf = c.buf[size + 2 :]


def test_chunked_response_is_well_formed(serve, app):
    server = serve(app)
    with connect(server) as c:
        c.send(get("/chunked") + get("/p/next"))
        status, headers, _ = c.head()
        assert status == 200
        assert headers["transfer-encoding"] == "chunked"
        assert "content-length" not in headers
        chunks = read_strict_chunked(c)
        assert b"".join(chunks) == b"hello world" + b"world" * 999 + b"!"
        assert all(chunks), "an empty body piece must not end the chunked body early"
        # framing was exact: the next response follows directly
        status, _, body = c.response()
        assert (status, body) == (200, b"GET /p/next")


# ---------------------------------------------------------------- Expect: 100-continue


def expect_head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode()


def test_100_continue_sent_when_the_app_reads(serve, app):
    server = serve(app)
    with connect(server) as c:
        c.send(expect_head("/echo?delay=0.6", 11))
        # the app sleeps before reading: nothing may arrive meanwhile
        c.sock.settimeout(0.35)
        with pytest.raises(TimeoutError):
            early = c.sock.recv(100)
            pytest.fail(f"sent before the app read the body: {early!r}")
        c.sock.settimeout(5)
        start = time.monotonic()
        status, _, raw = c.head()
        assert status == 100
        assert raw == b"HTTP/1.1 100 Continue"
        assert time.monotonic() - start < 3
        c.send(b"hello world")
        status, headers, body = c.response()
        assert (status, body) == (200, b"hello world")
        assert "close" not in headers.get("connection", "")
        c.send(get("/p/next"))
        assert c.response()[2] == b"GET /p/next"


def test_100_continue_chunked_body(serve, app):
    server = serve(app)
    head = (
        b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    with connect(server) as c:
        c.send(head)
        assert c.head()[0] == 100
        c.send(b"5\r\nhello\r\n0\r\n\r\n")
        status, _, body = c.response()
        assert (status, body) == (200, b"hello")


def test_no_100_continue_when_the_app_does_not_read(serve, app):
    server = serve(app)
    with connect(server) as c:
        c.send(expect_head("/noread", 100_000))
        status, headers, body = c.response()
        assert status == 200, "no 100 Continue: the app never asked for the body"
        assert body == b"not read"
        assert b"100 Continue" not in c.buf
        # the body is still owed and was never asked for: the connection is
        # not reusable, and the response says so (RFC 9110 10.1.1)
        assert headers.get("connection") == "close"
        assert c.closed(2)


def test_expect_with_body_sent_anyway(serve, app):
    """Clients stop waiting for 100 and send the body; it is read normally."""
    server = serve(app)
    with connect(server) as c:
        c.send(expect_head("/echo", 5) + b"hello")
        status, _, body = c.response()
        if status == 100:
            status, _, body = c.response()
        assert (status, body) == (200, b"hello")
        c.send(get("/p/next"))
        assert c.response()[2] == b"GET /p/next"


def test_expect_ignored_for_http10(serve, app):
    """HTTP/1.0 clients do not understand 100 (RFC 9110 10.1.1)."""
    server = serve(app)
    with connect(server) as c:
        c.send(
            b"POST /echo?delay=0.2 HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc"
        )
        status, _, body = c.response()
        assert (status, body) == (200, b"abc")


# ---------------------------------------------------------------- Date and Server

IMF_FIXDATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)


def assert_fresh_date(value: str) -> None:
    assert IMF_FIXDATE.fullmatch(value), value
    when = parsedate_to_datetime(value).timestamp()
    assert abs(when - time.time()) < 5, value


def test_date_and_server_headers(serve, app):
    server = serve(app)
    with connect(server) as c:
        c.send(get("/p/x"))
        status, headers, raw = c.head()
        assert status == 200
        assert_fresh_date(headers["date"])
        assert headers["server"] == "oneloop"
        assert raw.count(b"\r\nDate: ") == 1 and raw.count(b"\r\nServer: ") == 1


def test_date_and_server_on_error_responses(serve, app):
    server = serve(app)
    status, headers, _ = request(server, b"GET / HTTP/1.1\r\n\r\n")  # no Host
    assert status == 400
    assert_fresh_date(headers["date"])
    assert headers["server"] == "oneloop"


def test_date_header_advances(serve, app):
    server = serve(app)
    with connect(server) as c:
        c.send(get("/p/1"))
        first = parsedate_to_datetime(c.response()[1]["date"]).timestamp()
        time.sleep(1.2)
        c.send(get("/p/2"))
        second = parsedate_to_datetime(c.response()[1]["date"]).timestamp()
        assert second - first >= 1


def test_no_date_no_server_options(serve, app):
    server = serve(app, "--no-date-header", "--no-server-header")
    status, headers, body = request(server, get("/p/x"))
    assert (status, body) == (200, b"GET /p/x")
    assert "date" not in headers
    assert "server" not in headers


def test_no_date_no_server_options_apply_to_error_responses(serve, app):
    """The options are the server's, not the app's: its own 400/413/... follow them
    too (as uvicorn's default_headers do)."""
    server = serve(app, "--no-date-header", "--no-server-header")
    status, headers, _ = request(server, b"GET / HTTP/1.1\r\n\r\n")
    assert status == 400
    assert "server" not in headers
    assert "date" not in headers


def test_app_server_and_date_headers_win(serve, app):
    server = serve(app)
    with connect(server) as c:
        c.send(get("/server"))
        status, headers, raw = c.head()
        assert status == 200
        assert headers["server"] == "custom/1.0"
        assert headers["date"] == "Thu, 01 Jan 2015 00:00:00 GMT"
        assert raw.lower().count(b"\r\nserver:") == 1
        assert raw.lower().count(b"\r\ndate:") == 1


# ---------------------------------------------------------------- Upgrade


def test_websocket_upgrade_to_a_wsgi_app_is_plain_http(serve):
    """A WSGI app that does not take the connection over (flask-sock does)
    answers the upgrade as any request, and the connection carries on."""
    server = serve(APPS["wsgi"])
    with connect(server) as c:
        c.send(
            get(
                "/p/ws",
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 13",
            )
            + get("/p/after")
        )
        status, _, body = c.response()
        assert status == 200
        assert body == b"GET /p/ws"
        status, _, body = c.response()
        assert (status, body) == (200, b"GET /p/after")
    assert_serves(server)


def test_h2c_upgrade_is_ignored_with_http_1(serve, app):
    # (By default the upgrade is taken: tests/python/test_http2_edges.py.)
    server = serve(app, "--http", "1")
    with connect(server) as c:
        c.send(
            get("/p/h2c", "Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings", "HTTP2-Settings: ")
        )
        status, headers, body = c.response()
        assert (status, body) == (200, b"GET /p/h2c")
        assert "upgrade" not in headers
        c.send(get("/p/next"))
        assert c.response()[2] == b"GET /p/next"


# ---------------------------------------------------------------- HEAD


def test_head_has_get_headers_and_no_body(serve, app):
    server = serve(app)
    with connect(server) as c:
        c.send(get("/fixed?n=1234"))
        _, get_headers, body = c.response()
        assert len(body) == 1234
        for _ in range(3):
            c.send(b"HEAD /fixed?n=1234 HTTP/1.1\r\nHost: test\r\n\r\n")
            status, headers, _ = c.head()
            assert status == 200
            assert headers["content-length"] == "1234"
            assert headers["content-type"] == get_headers["content-type"]
            assert "transfer-encoding" not in headers
        # no body bytes followed any HEAD response: the next response is next
        c.send(get("/fixed?n=5"))
        status, headers, body = c.response()
        assert (status, body) == (200, b"xxxxx")
        assert c.buf == b""


def test_head_of_unsized_body_pipelined(serve, app):
    server = serve(app)
    with connect(server) as c:
        c.send(b"HEAD /unsized?n=5000 HTTP/1.1\r\nHost: test\r\n\r\n" + get("/p/next"))
        status, headers, _ = c.head()
        assert status == 200
        assert "close" not in headers.get("connection", "")
        status, _, body = c.response()
        assert (status, body) == (200, b"GET /p/next"), "HEAD response carried body bytes"


# ---------------------------------------------------------------- malformed requests

H = b"Host: test\r\n"
MALFORMED = {
    # request smuggling: two framings, or one the server could misread
    "cl-and-te": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te-and-cl": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\n\r\n0\r\n\r\n",
        400,
    ),
    "two-content-lengths": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
        400,
    ),
    "two-equal-content-lengths": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        400,
    ),
    "two-transfer-encodings": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "chunked-twice": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "content-length-list": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 3, 5\r\n\r\nabcde",
        400,
    ),
    "content-length-sign": (b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: +3\r\n\r\nabc", 400),
    "content-length-negative": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
        400,
    ),
    "content-length-hex": (b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 0x3\r\n\r\nabc", 400),
    "content-length-overflow": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n",
        400,
    ),
    "te-chunked-not-last": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te-identity": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te-gzip-chunked": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    "te-space-before-colon": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "space-before-colon": (b"GET /p/x HTTP/1.1\r\nHost : test\r\n\r\n", 400),
    "obs-fold": (b"GET /p/x HTTP/1.1\r\n" + H + b"X-A: 1\r\n  folded\r\n\r\n", 400),
    "bare-lf": (b"GET /p/x HTTP/1.1\nHost: test\n\n", 400),
    "bare-lf-in-field": (b"GET /p/x HTTP/1.1\r\nHost: test\nX-A: 1\r\n\r\n", 400),
    "bare-cr": (b"GET /p/x HTTP/1.1\r\nHost: test\rX-A: 1\r\n\r\n", 400),
    "nul-in-value": (b"GET /p/x HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400),
    "del-in-value": (b"GET /p/x HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n", 400),
    "vtab-in-te": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "nul-in-name": (b"GET /p/x HTTP/1.1\r\n" + H + b"X-\x00A: ab\r\n\r\n", 400),
    "no-colon": (b"GET /p/x HTTP/1.1\r\n" + H + b"NoColon\r\n\r\n", 400),
    "empty-name": (b"GET /p/x HTTP/1.1\r\n" + H + b": value\r\n\r\n", 400),
    "missing-host": (b"GET /p/x HTTP/1.1\r\n\r\n", 400),
    "two-hosts": (b"GET /p/x HTTP/1.1\r\n" + H + b"Host: other\r\n\r\n", 400),
    "bad-version": (b"GET /p/x HTTP/1.x\r\n" + H + b"\r\n", 400),
    "space-in-target": (b"GET /p/a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    "chunk-size-not-hex": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        400,
    ),
    "chunk-size-negative": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n-1\r\nab\r\n0\r\n\r\n",
        400,
    ),
    "chunk-size-overflow": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        b"10000000000000001\r\nab\r\n0\r\n\r\n",
        400,
    ),
    "chunk-size-0x": (
        b"POST /echo HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n",
        400,
    ),
    "chunk-data-too-long": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    "chunk-missing-crlf": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n2\r\nab0\r\n\r\n",
        400,
    ),
    # RFC 9112 3.2: the form of the target follows from the method
    "asterisk-with-get": (b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400),
    "authority-form-with-get": (b"GET example.com:443 HTTP/1.1\r\n" + H + b"\r\n", 400),
    "relative-target": (b"GET p/x HTTP/1.1\r\n" + H + b"\r\n", 400),
    "connect-origin-form": (b"CONNECT /p/x HTTP/1.1\r\n" + H + b"\r\n", 400),
    # field-vchar excludes every control but HTAB
    "bel-in-value": (b"GET /p/x HTTP/1.1\r\n" + H + b"X-A: plain\x07injected\r\n\r\n", 400),
    "esc-in-value": (b"GET /p/x HTTP/1.1\r\n" + H + b"X-A: \x1b[2J\r\n\r\n", 400),
    # RFC 9110 6.5.1: framing, routing and authentication fields cannot come
    # after the content; a trailer carrying one is refused
    "content-length-trailer": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nContent-Length: 50\r\n\r\n",
        400,
    ),
    "host-trailer": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nHost: evil.example\r\n\r\n",
        400,
    ),
    "transfer-encoding-trailer": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),
    "http-2.0": (b"GET /p/x HTTP/2.0\r\n" + H + b"\r\n", 505),
    "http-3.0": (b"GET /p/x HTTP/3.0\r\n" + H + b"\r\n", 505),
    "http-0.9": (b"GET /p/x\r\n\r\n", 505),
    "connect": (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_request_rejected(serve, app, name):
    raw, want = MALFORMED[name]
    server = serve(app)
    with connect(server) as c:
        # a request smuggled behind the bad one must never be answered
        c.send(raw + get("/p/smuggled"))
        status, headers, _ = c.response()
        assert status == want
        assert headers.get("connection") == "close"
        rest = c.read_to_eof()
        assert b"smuggled" not in rest and rest == b"", rest[:300]
    assert_serves(server)


TOLERATED = {
    # RFC 9112 2.2: empty lines before the request line are ignored
    "leading-empty-lines": (b"\r\n\r\nGET /p/x HTTP/1.1\r\n" + H + b"\r\n", b"GET /p/x"),
    # coding names are case-insensitive, and OWS around the value is not part of it
    "te-upper-case": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"abc",
    ),
    "te-surrounding-ows": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding:  chunked \t\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
        b"abc",
    ),
    # a trailer that neither frames, routes nor authenticates is fine
    "content-type-trailer": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nContent-Type: text/plain\r\n\r\n",
        b"abc",
    ),
    # RFC 9110 9.1: any token is a method; the app sees it
    "unknown-method": (b"BREW /p/x HTTP/1.1\r\n" + H + b"\r\n", b"BREW /p/x"),
    "method-leading-dash": (b"-BLARGH /p/x HTTP/1.1\r\n" + H + b"\r\n", b"-BLARGH /p/x"),
    "method-underscore": (b"FOO_BAR /p/x HTTP/1.1\r\n" + H + b"\r\n", b"FOO_BAR /p/x"),
    # RFC 9112 7.1.1: BWS around ';' and '=' in chunk extensions
    "chunk-ext-bws": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        b'5; some; parameters=stuff\r\nhello\r\n6 ;blah = "x"\r\n world\r\n0\r\n\r\n',
        b"hello world",
    ),
    # RFC 9110 2.5: a higher minor version is served as the highest we know
    "http-1.2": (b"GET /p/x HTTP/1.2\r\n" + H + b"\r\n", b"GET /p/x"),
    "zero-content-length": (b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n", b""),
    "content-length-leading-zeros": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 003\r\n\r\nabc",
        b"abc",
    ),
}


@pytest.mark.parametrize("name", list(TOLERATED))
def test_tolerated_request_forms(serve, app, name):
    raw, want = TOLERATED[name]
    server = serve(app)
    with connect(server) as c:
        c.send(raw + get("/p/next"))
        status, headers, body = c.response()
        assert (status, body) == (200, want)
        assert "close" not in headers.get("connection", "")
        assert c.response()[2] == b"GET /p/next"


def test_absolute_form_reaches_the_app(serve, app):
    """RFC 9112 3.2.2: any method may use absolute-form; the app sees the
    path (WSGI's RAW_URI keeps the target as sent)."""
    server = serve(app)
    with connect(server) as c:
        c.send(b"GET http://test/p/x HTTP/1.1\r\n" + H + b"\r\n" + get("/p/next"))
        status, _, body = c.response()
        assert status == 200 and body in (b"GET /p/x", b"GET http://test/p/x")
        assert c.response()[2] == b"GET /p/next"


def test_chunked_in_http10_is_not_kept(serve, app):
    """RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 request means faulty
    framing; the server must close the connection after it, whatever it
    answers."""
    server = serve(app)
    raw = (
        b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
    )
    with connect(server) as c:
        c.send(raw + get("/p/smuggled", version="1.0"))
        status, headers, _ = c.response()
        assert status in (200, 400)
        assert headers.get("connection") == "close"
        assert b"smuggled" not in c.read_to_eof()


def test_server_survives_a_barrage_of_garbage(serve, app):
    server = serve(app)
    garbage = [
        b"\x00" * 100,
        b"\xff\xfe" * 1000,
        b"GET / HTTP/1.1\r\n" + b"A" * 70000,
        b"\r\n" * 10 + b"GET",
        b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffff\r\n",
    ]
    for g in garbage:
        with socket.create_connection((server.host, server.port), timeout=2) as s:
            s.sendall(g)
            with contextlib.suppress(OSError):  # already closed by the server
                s.shutdown(socket.SHUT_WR)
            try:
                while s.recv(65536):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    assert server.proc.poll() is None
    assert_serves(server)
