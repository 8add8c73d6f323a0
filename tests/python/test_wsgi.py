"""WSGI (PEP 3333) over real sockets against the real server process.

Apps are in apps/wsgi_apps.py; most run behind wsgiref.validate.validator,
so a PEP 3333 violation by the server shows up as a failed request or an
error in the server's log, which `finish()` checks after a clean shutdown.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from conftest import connect, request

ERROR_SIGNS = ("[ERROR]", "Traceback", "AssertionError", "WSGIWarning", "garbage collected")


def finish(server) -> str:
    """Stop the server gracefully; it must exit 0 with nothing logged as an error."""
    assert server.stop() == 0, server.log()
    log = server.log() + server.out()
    for sign in ERROR_SIGNS:
        assert sign not in log, log
    return log


def get(server, path: str, timeout: float = 10.0, **kw) -> httpx.Response:
    return httpx.get(server.url + path, timeout=timeout, **kw)


def raw_get(target: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", *headers]
    if version == "1.1" and not any(h.lower().startswith("host:") for h in headers):
        lines.insert(1, "Host: test")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def wait_for(path: Path, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    content = ""
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.02)
    raise AssertionError(f"{text!r} not in marker {path}: {content!r}")


def chunked(data: bytes, size: int) -> bytes:
    out = b""
    for i in range(0, len(data), size):
        piece = data[i : i + size]
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return out + b"0\r\n\r\n"


def body_request(target: str, body: bytes, *headers: str, te: bool = False, size: int = 7) -> bytes:
    framing = "Transfer-Encoding: chunked" if te else f"Content-Length: {len(body)}"
    return raw_get(target, framing, *headers, method="POST") + (chunked(body, size) if te else body)


# ---------------------------------------------------------------------------
# 1. environ


def test_environ_is_complete(serve):
    server = serve("wsgi_apps:environ_app")
    raw = raw_get(
        "/a%20b/caf%C3%A9/%E2%82%AC?x=1&y=%20&z=%C3%A9",
        "Host: example.com:8080",
        "X-Test: Ab",
        "User-Agent: oneloop-test",
    )
    with connect(server) as c:
        c.send(raw)
        status, _headers, body = c.response()
        client_port = c.sock.getsockname()[1]
    assert status == 200, body
    env = json.loads(body)
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    # PATH_INFO: percent-decoded bytes as a latin-1 native string (PEP 3333 "bytes-as-unicode")
    assert env["PATH_INFO"] == "/a b/caf\xc3\xa9/\xe2\x82\xac"
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/a b/café/€"
    assert env["QUERY_STRING"] == "x=1&y=%20&z=%C3%A9"  # not decoded
    assert env["RAW_URI"] == "/a%20b/caf%C3%A9/%E2%82%AC?x=1&y=%20&z=%C3%A9"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_NAME"] == "example.com"
    assert env["SERVER_PORT"] == "8080"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(client_port)
    assert env["HTTP_HOST"] == "example.com:8080"
    assert env["HTTP_X_TEST"] == "Ab"
    assert env["HTTP_USER_AGENT"] == "oneloop-test"
    assert env.get("CONTENT_LENGTH", "") == "" and env.get("CONTENT_TYPE", "") == ""
    assert "HTTP_CONTENT_LENGTH" not in env and "HTTP_CONTENT_TYPE" not in env
    assert env["wsgi.version"] == [1, 0] and env["wsgi.version_type"] == "tuple"
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["errors_methods"] == ["write", "writelines", "flush"]
    assert env["input_methods"] == ["read", "readline", "readlines", "__iter__"]
    assert env["file_wrapper"] == "oneloop._core.FileWrapper"
    assert env["non_str"] == []  # every CGI key is a native str
    finish(server)


def test_environ_content_type_and_length(serve):
    server = serve("wsgi_apps:environ_app")
    status, _, body = request(
        server,
        body_request("/post", b"hello", "Content-Type: text/x-test; charset=latin-1"),
    )
    assert status == 200, body
    env = json.loads(body)
    assert env["REQUEST_METHOD"] == "POST"
    assert env["CONTENT_TYPE"] == "text/x-test; charset=latin-1"
    assert env["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["body"] == "hello"
    finish(server)


def test_repeated_headers_are_joined(serve):
    server = serve("wsgi_apps:environ_app")
    status, _, body = request(
        server,
        raw_get(
            "/",
            "X-Dup: 1",
            "X-Other: o",
            "x-dup: 2",
            "X-DUP: 3",
            "Cookie: a=1",
            "Cookie: b=2",
            "Accept: text/html",
            "Accept: application/json",
        ),
    )
    assert status == 200
    env = json.loads(body)
    assert env["HTTP_X_DUP"] == "1, 2, 3"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_ACCEPT"] == "text/html, application/json"
    assert env["HTTP_X_OTHER"] == "o"
    finish(server)


def test_underscore_headers_are_dropped(serve):
    server = serve("wsgi_apps:environ_app")
    status, _, body = request(
        server,
        raw_get("/", "X_Auth_User: evil", "X-Auth-User: real", "Only_Underscore: dropped"),
    )
    assert status == 200
    env = json.loads(body)
    assert env["HTTP_X_AUTH_USER"] == "real"
    assert not any("ONLY" in key for key in env), sorted(env)
    # the same with the underscore version alone: no HTTP_X_AUTH_USER at all
    status, _, body = request(server, raw_get("/", "X_Auth_User: evil"))
    assert "HTTP_X_AUTH_USER" not in json.loads(body)
    finish(server)


def test_long_header_name_reaches_environ(serve):
    """A legal 300-byte field name (well under --limit-request-field-size) is not lost."""
    server = serve("wsgi_apps:environ_app")
    name = "X-" + "Long" * 75
    status, _, body = request(server, raw_get("/", f"{name}: present"))
    assert status == 200
    env = json.loads(body)
    key = "HTTP_" + name.upper().replace("-", "_")
    assert env.get(key) == "present", f"the {len(name)}-byte field name is missing from environ"
    finish(server)


def test_header_values(serve):
    server = serve("wsgi_apps:environ_app")
    raw = raw_get("/", "X-Pad:   padded value  ", "X-Latin: \xe9t\xe9", "X-Empty:", "X-Tab:\tt\t")
    status, _, body = request(server, raw)
    assert status == 200
    env = json.loads(body)
    assert env["HTTP_X_PAD"] == "padded value"  # surrounding whitespace is not part of it
    assert env["HTTP_X_LATIN"] == "\xe9t\xe9"  # obs-text as latin-1
    assert env["HTTP_X_EMPTY"] == ""
    assert env["HTTP_X_TAB"] == "t"
    finish(server)


def test_absolute_form_target_sets_server_name(serve):
    """RFC 9112 3.2.2: with an absolute-form target the server MUST ignore Host
    and use the target's authority."""
    server = serve("wsgi_apps:environ_app")
    status, _, body = request(server, raw_get("http://other.example:81/abs/p?k=v", "Host: test"))
    assert status == 200
    env = json.loads(body)
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/abs/p", "k=v")
    assert env["RAW_URI"] == "http://other.example:81/abs/p?k=v"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("other.example", "81")
    finish(server)


def test_path_info_decoding(serve):
    server = serve("wsgi_apps:environ_app")
    cases = {
        "/a%2Fb/%25/%zz/%4": "/a/b/%/%zz/%4",  # %2F decoded; bad escapes kept
        "/%FF%FEx": "/\xff\xfex",  # not UTF-8: bytes map 1:1 to latin-1
        "/plain/path/": "/plain/path/",
        "/caf%c3%a9": "/caf\xc3\xa9",  # lower-case hex
        "/q?": "/q",
    }
    for target, expected in cases.items():
        status, _, body = request(server, raw_get(target))
        assert status == 200, (target, body)
        env = json.loads(body)
        assert env["PATH_INFO"] == expected, target
        assert env["RAW_URI"] == target
    finish(server)


def test_script_name_with_root_path(serve):
    server = serve("wsgi_apps:environ_app", "--root-path", "/mnt")
    cases = {
        "/mnt/app/x?q=1": ("/mnt", "/app/x"),
        "/mnt": ("/mnt", ""),
        "/mnt/": ("/mnt", "/"),
        "/mntx/y": ("/mnt", "/mntx/y"),  # not under the mount point: kept whole
        "/other": ("/mnt", "/other"),
    }
    for target, (script_name, path_info) in cases.items():
        status, _, body = request(server, raw_get(target))
        assert status == 200, (target, body)
        env = json.loads(body)
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == (script_name, path_info), target
        assert env["RAW_URI"] == target
    finish(server)


def test_url_scheme_and_remote_addr_from_trusted_proxy(serve):
    server = serve("wsgi_apps:environ_app")  # 127.0.0.1 is trusted by default
    headers = ("X-Forwarded-Proto: https", "X-Forwarded-For: 203.0.113.7")
    env = json.loads(request(server, raw_get("/", *headers))[2])
    assert env["wsgi.url_scheme"] == "https"
    assert env["REMOTE_ADDR"] == "203.0.113.7"
    finish(server)
    server = serve("wsgi_apps:environ_app", "--no-proxy-headers")
    env = json.loads(request(server, raw_get("/", *headers))[2])
    assert env["wsgi.url_scheme"] == "http" and env["REMOTE_ADDR"] == "127.0.0.1"
    finish(server)


def test_http10_request_without_host(serve):
    server = serve("wsgi_apps:environ_app")
    status, _headers, body = request(server, raw_get("/old", version="1.0"))
    assert status == 200
    env = json.loads(body)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(server.port)
    assert "HTTP_HOST" not in env
    finish(server)


@pytest.mark.parametrize(
    ("host", "name", "port"),
    [("example.com", "example.com", "80"), ("[::1]:9000", "[::1]", "9000"), ("h:1", "h", "1")],
)
def test_server_name_from_host(serve, host, name, port):
    server = serve("wsgi_apps:environ_app")
    env = json.loads(request(server, raw_get("/", f"Host: {host}"))[2])
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == (name, port)
    finish(server)


def test_wsgi_errors_go_to_the_error_log(serve):
    server = serve("wsgi_apps:errors_app")
    r = get(server, "/")
    assert r.status_code == 200 and r.text == "logged"
    assert server.stop() == 0
    log = server.log()
    assert "app-error-line-one" in log
    assert "app-error-line-two" in log
    assert "app-error-unterminated" in log  # flush() writes a partial line
    assert "Traceback" not in log and "AssertionError" not in log


# ---------------------------------------------------------------------------
# 2. wsgi.input

LINES = b"first line\nsecond, longer line\n\n" + b"x" * 300 + b"\nno newline at the end"
SPLIT = [
    b"first line\n",
    b"second, longer line\n",
    b"\n",
    b"x" * 300 + b"\n",
    b"no newline at the end",
]


def read_mode(
    server, mode: str, body: bytes, te: bool = False, n: int | None = None, size: int = 7
):
    target = f"/?mode={mode}" + (f"&n={n}" if n is not None else "")
    status, _, data = request(server, body_request(target, body, te=te, size=size), timeout=30)
    assert status == 200, data
    return json.loads(data)


@pytest.mark.parametrize("te", [False, True], ids=["content-length", "chunked"])
def test_input_read_modes(serve, te):
    server = serve("wsgi_apps:body_app")
    sha = hashlib.sha256(LINES).hexdigest()
    for mode in ("read", "read_none", "read_neg"):
        got = read_mode(server, mode, LINES, te)
        assert (got["len"], got["sha"]) == (len(LINES), sha), mode
    got = read_mode(server, "read_n", LINES, te, n=10)
    assert got["sha"] == sha
    assert got["pieces"] == [10] * (len(LINES) // 10) + [len(LINES) % 10]
    for mode in ("readline", "readlines", "iter"):
        got = read_mode(server, mode, LINES, te)
        assert [line.encode("latin-1") for line in got["lines"]] == SPLIT, mode
    got = read_mode(server, "readline_n", LINES, te, n=12)
    expected = []
    for line in SPLIT:
        expected += [line[i : i + 12] for i in range(0, len(line), 12)]
    assert [line.encode("latin-1") for line in got["lines"]] == expected
    got = read_mode(server, "readlines_hint", LINES, te, n=15)
    # the hint stops readlines once 15 bytes are in; the rest is still readable
    lines = [line.encode("latin-1") for line in got["lines"]]
    assert lines[:3] == [SPLIT[0], SPLIT[1], b"|"]
    assert lines[3] == b"".join(SPLIT[2:])
    got = read_mode(server, "mixed", LINES, te, n=5)
    assert got["lines"] == [
        "first line\n",
        "secon",
        "d, longer line\n\n" + "x" * 300 + "\nno newline at the end",
    ]
    got = read_mode(server, "zero", b"abcdef", te)
    assert got["lines"] == ["", "", "abc"]
    finish(server)


@pytest.mark.parametrize("te", [False, True], ids=["content-length", "chunked"])
def test_input_reads_past_the_end_return_empty(serve, te):
    server = serve("wsgi_apps:body_app")
    for mode in ("read", "read_n", "readline", "iter"):
        got = read_mode(server, mode, b"a\nbc", te, n=3)
        assert got["len"] == 4, mode
        assert got["after_read_n"] == "b''"
        assert got["after_read"] == "b''"
        assert got["after_readline"] == "b''"
        assert got["after_readlines"] == "[]"
    got = read_mode(server, "read_n", b"", te, n=3)  # an empty body
    assert got["len"] == 0 and got["after_read"] == "b''"
    finish(server)


def test_input_no_body_on_get(serve):
    server = serve("wsgi_apps:body_app")
    status, _, data = request(server, raw_get("/?mode=read_n&n=100"))
    assert status == 200
    got = json.loads(data)
    assert got["len"] == 0 and got["after_readline"] == "b''"
    finish(server)


def test_large_body_content_length(serve):
    server = serve("wsgi_apps:body_app")
    data = os.urandom(5 * 1024 * 1024)
    r = httpx.post(f"{server.url}/?mode=read_n&n=65536", content=data, timeout=60)
    assert r.status_code == 200
    got = r.json()
    assert got["len"] == len(data)
    assert got["sha"] == hashlib.sha256(data).hexdigest()
    assert max(got["pieces"]) <= 65536
    r = httpx.post(f"{server.url}/?mode=read", content=data, timeout=60)
    assert r.json()["sha"] == hashlib.sha256(data).hexdigest()
    finish(server)


def test_large_body_chunked_upload(serve):
    server = serve("wsgi_apps:body_app")
    data = os.urandom(5 * 1024 * 1024)

    def pieces():
        for i in range(0, len(data), 100_003):
            yield data[i : i + 100_003]

    r = httpx.post(f"{server.url}/?mode=read_n&n=50000", content=pieces(), timeout=60)
    assert r.status_code == 200
    assert r.request.headers.get("transfer-encoding") == "chunked"
    got = r.json()
    assert got["len"] == len(data)
    assert got["sha"] == hashlib.sha256(data).hexdigest()
    assert max(got["pieces"]) <= 50000
    finish(server)


@pytest.mark.parametrize("te", [False, True], ids=["content-length", "chunked"])
def test_slow_client_sends_body_in_pieces(serve, te):
    server = serve("wsgi_apps:body_app")
    raw = body_request("/?mode=readline", LINES, te=te, size=40)
    head_end = raw.index(b"\r\n\r\n") + 4
    with connect(server, timeout=10) as c:
        c.send(raw[:head_end])
        rest = raw[head_end:]
        step = max(1, len(rest) // 12)  # cuts through lines and chunk-size lines
        for i in range(0, len(rest), step):
            time.sleep(0.03)
            c.send(rest[i : i + step])
        status, _, data = c.response()
    assert status == 200
    assert [line.encode("latin-1") for line in json.loads(data)["lines"]] == SPLIT
    finish(server)


def test_expect_100_continue_when_app_reads(serve):
    server = serve("wsgi_apps:body_app")
    with connect(server) as c:
        c.send(raw_get("/?mode=read", "Content-Length: 11", "Expect: 100-continue", method="POST"))
        status, _, _ = c.head()
        assert status == 100
        c.send(b"hello world")
        status, _, data = c.response()
        assert status == 200
        assert json.loads(data)["head"] == "hello world"
        # the connection goes on
        c.send(raw_get("/?mode=read", "Content-Length: 2", "Expect: 100-continue", method="POST"))
        assert c.head()[0] == 100
        c.send(b"ok")
        assert json.loads(c.response()[2])["head"] == "ok"
    finish(server)


def test_expect_100_continue_with_chunked_body(serve):
    server = serve("wsgi_apps:body_app")
    with connect(server) as c:
        c.send(
            raw_get(
                "/?mode=readline",
                "Transfer-Encoding: chunked",
                "Expect: 100-continue",
                method="POST",
            )
        )
        assert c.head()[0] == 100
        c.send(chunked(LINES, 9))
        status, _, data = c.response()
    assert status == 200
    assert [line.encode("latin-1") for line in json.loads(data)["lines"]] == SPLIT
    finish(server)


def test_expect_100_continue_not_sent_to_http10(serve):
    """RFC 9110 10.1.1: a server MUST NOT send 100 Continue to an HTTP/1.0 client."""
    server = serve("wsgi_apps:body_app")
    with connect(server) as c:
        c.send(
            raw_get(
                "/?mode=read",
                "Content-Length: 4",
                "Expect: 100-continue",
                method="POST",
                version="1.0",
            )
        )
        time.sleep(0.2)  # the app is already waiting in read()
        c.send(b"data")
        status, _, data = c.response()
        assert status == 200 and json.loads(data)["head"] == "data"
    finish(server)


def test_expect_100_continue_waits_for_the_app(serve):
    """100 Continue goes out when the app reads, not when the head arrives."""
    server = serve("wsgi_apps:slow_body_reader")
    with connect(server) as c:
        c.send(raw_get("/?delay=0.5", "Content-Length: 5", "Expect: 100-continue", method="POST"))
        c.sock.settimeout(0.25)
        with pytest.raises(TimeoutError):
            c.sock.recv(100)
        c.sock.settimeout(5)
        assert c.head()[0] == 100
        c.send(b"12345")
        status, _, data = c.response()
        assert (status, data) == (200, b"5")
    finish(server)


def test_expect_100_continue_not_sent_when_body_unread(serve):
    server = serve("wsgi_apps:ignore_body")
    with connect(server) as c:
        c.send(raw_get("/x", "Content-Length: 5", "Expect: 100-continue", method="POST"))
        status, _headers, data = c.response()
        assert status == 200, "an interim 100 was sent though the app never read"
        assert data == b"ignored /x"
        c.closed(1.0)
        assert b"100 Continue" not in c.buf
    finish(server)


def test_unread_small_body_is_skipped(serve):
    server = serve("wsgi_apps:ignore_body")
    with connect(server) as c:
        c.send(body_request("/one", b"z" * 1000))
        assert c.response()[2] == b"ignored /one"
        c.send(body_request("/two", b"z" * 1000, te=True, size=100))
        assert c.response()[2] == b"ignored /two"
        c.send(raw_get("/three"))
        assert c.response()[2] == b"ignored /three"
    finish(server)


def test_unread_large_body_response_still_delivered(serve):
    """The app answers without reading a 4 MB body: the client, still sending,
    gets the whole response (no reset), and the server survives."""
    server = serve("wsgi_apps:ignore_body")
    data = b"u" * (4 * 1024 * 1024)
    with connect(server, timeout=10) as c:
        c.send(raw_get("/big", f"Content-Length: {len(data)}", method="POST"))
        sender_error = []

        def send_body():
            try:
                c.sock.sendall(data)
            except OSError as exc:  # the server may stop reading: fine
                sender_error.append(exc)

        sender = threading.Thread(target=send_body)
        sender.start()
        status, _, body = c.response()
        assert (status, body) == (200, b"ignored /big")
        sender.join(10)
    assert request(server, raw_get("/after"))[2] == b"ignored /after"
    finish(server)


def test_body_read_after_the_head_is_sent(serve):
    server = serve("wsgi_apps:lazy_reader")
    with connect(server) as c:
        c.send(body_request("/1", b"k" * 5000) + body_request("/2", b"k" * 300, te=True, size=64))
        assert c.response()[2] == b"before;read 5000;"
        assert c.response()[2] == b"before;read 300;"
    finish(server)


def test_partly_read_body_then_next_request(serve):
    server = serve("wsgi_apps:body_app")
    with connect(server) as c:
        c.send(body_request("/?mode=zero", b"abcdef" * 500) + raw_get("/?mode=read"))
        assert json.loads(c.response()[2])["lines"] == ["", "", "abc"]
        assert json.loads(c.response()[2])["len"] == 0
        c.send(body_request("/?mode=zero", b"abcdef" * 500, te=True, size=1000))
        assert json.loads(c.response()[2])["lines"] == ["", "", "abc"]
        c.send(body_request("/?mode=read", b"next"))
        assert json.loads(c.response()[2])["head"] == "next"
    finish(server)


def test_limit_request_body_content_length(serve):
    server = serve("wsgi_apps:body_app", "--limit-request-body", "1000")
    status, _, data = request(server, body_request("/?mode=read", b"a" * 1000))
    assert status == 200 and json.loads(data)["len"] == 1000
    status, _headers, _ = request(server, body_request("/?mode=read", b"a" * 1001))
    assert status == 413
    # with Expect: the refusal comes instead of 100 Continue
    with connect(server) as c:
        c.send(
            raw_get("/?mode=read", "Content-Length: 5000", "Expect: 100-continue", method="POST")
        )
        assert c.head()[0] == 413


def test_limit_request_body_chunked(serve):
    server = serve("wsgi_apps:body_app", "--limit-request-body", "1000")
    status, _, data = request(server, body_request("/?mode=read", b"a" * 1000, te=True, size=300))
    assert status == 200 and json.loads(data)["len"] == 1000
    status, _, _ = request(
        server, body_request("/?mode=read_n&n=100", b"a" * 1001, te=True, size=300)
    )
    assert status == 413


def test_timeout_request_body(serve):
    server = serve("wsgi_apps:body_app", "--timeout-request-body", "1")
    with connect(server, timeout=10) as c:
        c.send(raw_get("/?mode=read", "Content-Length: 10", method="POST") + b"abc")
        started = time.monotonic()
        status, _, _ = c.response()
        assert status == 408
        assert 0.8 < time.monotonic() - started < 5
        assert c.closed(3)


# ---------------------------------------------------------------------------
# 3. start_response and write()


def test_exc_info_before_head_replaces_response(serve):
    server = serve("wsgi_apps:exc_info_before_head")
    r = get(server, "/")
    assert r.status_code == 503
    assert r.text == "replaced"
    assert r.headers.get("x-replaced") == "yes"
    assert "x-first" not in r.headers
    finish(server)


def test_empty_first_item_does_not_send_the_head(serve):
    server = serve("wsgi_apps:empty_chunk_then_exc_info")
    r = get(server, "/")
    assert r.status_code == 500
    assert r.text == "replaced after empty chunk"
    assert r.headers.get("x-replaced") == "yes" and "x-first" not in r.headers
    finish(server)


def test_exc_info_after_head_reraises(serve, tmp_path):
    server = serve("wsgi_apps:exc_info_after_head")
    marker = tmp_path / "marker"
    with connect(server) as c:
        c.send(raw_get("/?" + urlencode({"marker": marker})))
        status, headers, _ = c.head()
        assert status == 200
        assert headers.get("transfer-encoding") == "chunked"
        rest = c.read_to_eof()
    assert rest.startswith(b"7\r\npartial\r\n")
    assert b"should not be sent" not in rest
    assert not rest.endswith(b"0\r\n\r\n"), "an aborted response must not look complete"
    assert wait_for(marker, "reraised").strip() == "reraised ZeroDivisionError same=True"
    log = server.wait_log("ZeroDivisionError: after head")
    assert "Traceback" in log


def test_start_response_twice_without_exc_info_is_an_error(serve):
    server = serve("wsgi_apps:start_response_twice")
    r = get(server, "/")
    assert r.status_code == 200
    assert r.headers.get("x-first") == "yes" and "x-second" not in r.headers
    assert r.text.startswith("second call raised ")
    finish(server)


def test_write_callable(serve):
    server = serve("wsgi_apps:write_only")
    with connect(server) as c:
        c.send(raw_get("/"))
        status, headers, data = c.response()
        assert status == 200 and data == b"hello from write()"
        assert headers.get("transfer-encoding") == "chunked"
        c.send(raw_get("/", version="1.0"))
        status, headers, data = c.response()
        assert data == b"hello from write()" and "transfer-encoding" not in headers
        assert c.closed()
    finish(server)


def test_write_mixed_with_iterable(serve):
    server = serve("wsgi_apps:write_mixed")
    r = get(server, "/")
    assert r.status_code == 200 and r.text == "written;iter-1;iter-2"
    finish(server)


def test_write_with_content_length(serve):
    server = serve("wsgi_apps:write_with_length")
    with connect(server) as c:
        for _ in range(2):
            c.send(raw_get("/"))
            status, headers, data = c.response()
            assert (status, data) == (200, b"hello world")
            assert headers["content-length"] == "11" and "transfer-encoding" not in headers
    finish(server)


@pytest.mark.parametrize(
    "line", ["404 NOT FOUND", "200 Everything Fine Here", "418 I'm a teapot", "299 ", "500 Oops"]
)
def test_status_line_as_given(serve, line):
    server = serve("wsgi_apps:status_app")
    with connect(server) as c:
        c.send(raw_get("/?" + urlencode({"s": line})))
        status, _, head = c.head()
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 " + line.encode()
    assert status == int(line[:3])
    finish(server)


# ---------------------------------------------------------------------------
# 4. The iterable's close()


def test_close_called_after_normal_response(serve, tmp_path):
    server = serve("wsgi_apps:closing")
    marker = tmp_path / "m"
    r = get(server, "/?" + urlencode({"marker": marker, "n": 3}))
    assert r.status_code == 200 and r.text == "xxxx\n" * 3
    assert wait_for(marker, "closed").strip() == "closed after 3"
    r = httpx.head(server.url + "/?" + urlencode({"marker": marker, "n": 2}))
    assert r.status_code == 200 and r.content == b""
    assert wait_for(marker, "closed after 2")
    finish(server)


def test_close_called_when_iteration_fails_before_head(serve, tmp_path):
    server = serve("wsgi_apps:closing")
    marker = tmp_path / "m"
    r = get(server, "/?" + urlencode({"marker": marker, "fail": 0}))
    assert r.status_code == 500
    assert wait_for(marker, "closed").strip() == "closed after 0"
    server.wait_log("failing at item 0")


def test_close_called_when_iteration_fails_after_head(serve, tmp_path):
    server = serve("wsgi_apps:closing")
    marker = tmp_path / "m"
    with connect(server) as c:
        c.send(raw_get("/?" + urlencode({"marker": marker, "fail": 2, "n": 5})))
        assert c.head()[0] == 200
        rest = c.read_to_eof()
    assert rest == b"5\r\nxxxx\n\r\n" * 2  # then cut: no terminating chunk
    assert wait_for(marker, "closed").strip() == "closed after 2"
    server.wait_log("failing at item 2")


def test_close_called_when_client_disconnects(serve, tmp_path):
    server = serve("wsgi_apps:closing_generator")
    marker = tmp_path / "m"
    with connect(server) as c:
        c.send(raw_get("/?" + urlencode({"marker": marker})))
        assert c.head()[0] == 200
        while len(c.buf) < 3000:  # a few chunks have arrived
            c.buf += c.sock.recv(65536)
    started = time.monotonic()
    content = wait_for(marker, "finally", timeout=5)
    assert time.monotonic() - started < 3
    assert "generator closed after" in content  # close() threw GeneratorExit into it
    sent = int(re.search(r"finally after (\d+)", content).group(1))
    assert sent < 500, "the generator ran on long after the client left"
    # an aborted stream is not an app error
    assert "Traceback" not in server.log()


def test_close_called_on_client_disconnect_with_class_iterable(serve, tmp_path):
    server = serve("wsgi_apps:closing")
    marker = tmp_path / "m"
    query = urlencode({"marker": marker, "n": 2000, "delay": 0.01, "size": 1000})
    with connect(server) as c:
        c.send(raw_get("/?" + query))
        assert c.head()[0] == 200
    content = wait_for(marker, "closed", timeout=5)
    assert int(content.split()[-1]) < 1000


def test_close_exception_is_logged_response_kept(serve, tmp_path):
    server = serve("wsgi_apps:close_raises")
    marker = tmp_path / "m"
    with connect(server) as c:
        for _ in range(2):
            c.send(raw_get("/?" + urlencode({"marker": marker})))
            status, _, data = c.response()
            assert (status, data) == (200, b"complete body")
    server.wait_log("close-failed-detail")
    wait_for(marker, "close raising\nclose raising\n")  # once per request


def test_timeout_send_gives_up_on_a_client_that_does_not_read(serve, tmp_path):
    server = serve("wsgi_apps:closing", "--timeout-send", "1")
    marker = tmp_path / "m"
    query = urlencode({"marker": marker, "n": 4000, "size": 65536})
    with connect(server) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.send(raw_get("/?" + query))
        assert c.head()[0] == 200
        content = wait_for(marker, "closed", timeout=8)  # we never read on
    assert int(content.split()[-1]) < 1000


# ---------------------------------------------------------------------------
# 5. wsgi.file_wrapper


@pytest.fixture
def big_file(tmp_path) -> tuple[Path, bytes]:
    data = os.urandom(3 * 1024 * 1024 + 123)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    return path, data


def test_file_wrapper_sends_real_file_with_sendfile(serve, tmp_path, big_file):
    path, data = big_file
    marker = tmp_path / "m"
    server = serve("wsgi_apps:file_plain")
    with connect(server, timeout=30) as c:
        c.send(raw_get("/?" + urlencode({"path": path, "marker": marker})))
        status, headers, body = c.response()
        assert status == 200
        assert headers["content-length"] == str(len(data))
        assert "transfer-encoding" not in headers
        assert body == data
        # the connection is still in step: nothing beyond Content-Length was sent
        c.send(raw_get("/?" + urlencode({"path": path, "offset": 1000})))
        status, headers, body = c.response()
        assert headers["content-length"] == str(len(data) - 1000)
        assert body == data[1000:]
    content = wait_for(marker, "file closed")
    assert "read" not in content, f"the file was read through Python, not sendfile(): {content}"
    finish(server)


def test_file_wrapper_head_and_http10(serve, big_file):
    path, data = big_file
    server = serve("wsgi_apps:file_plain")
    query = "/?" + urlencode({"path": path})
    with connect(server, timeout=30) as c:
        c.send(raw_get(query, method="HEAD"))
        status, headers, body = c.response(head_request=True)
        assert status == 200 and headers["content-length"] == str(len(data))
        c.send(raw_get(query + "&length=100"))  # a shorter Content-Length from the app
        status, headers, body = c.response()
        assert headers["content-length"] == "100" and body == data[:100]
        c.send(raw_get(query + "&length=100"))
        assert c.response()[2] == data[:100]
    status, headers, body = request(server, raw_get(query, version="1.0"), timeout=30)
    assert headers["content-length"] == str(len(data)) and body == data
    finish(server)


def test_file_wrapper_through_validator_iterates(serve, tmp_path, big_file):
    path, data = big_file
    marker = tmp_path / "m"
    server = serve("wsgi_apps:file_validated")
    r = get(server, "/?" + urlencode({"path": path, "marker": marker}), timeout=30)
    assert r.status_code == 200 and r.content == data
    content = wait_for(marker, "file closed")
    assert "read 32768" in content  # blksize given to the wrapper is used
    finish(server)


@pytest.mark.parametrize("app", ["file_bytesio", "file_bytesio_plain"])
def test_file_wrapper_with_bytesio(serve, tmp_path, app):
    server = serve(f"wsgi_apps:{app}")
    marker = tmp_path / "m"
    expected = bytes(range(256)) * 1000
    r = get(server, "/?" + urlencode({"marker": marker, "k": 1000, "blk": 7000}))
    assert r.status_code == 200 and r.content == expected
    assert wait_for(marker, "bytesio closed")
    r = httpx.head(server.url + "/?k=3")
    assert r.status_code == 200 and r.content == b""
    finish(server)


def test_file_wrapper_type_is_usable_directly():
    from oneloop._core import FileWrapper

    w = FileWrapper(io.BytesIO(b"abcdefgh"), 3)
    assert list(w) == [b"abc", b"def", b"gh"]
    with pytest.raises(ValueError):
        FileWrapper(io.BytesIO(b""), 0)


# ---------------------------------------------------------------------------
# 6. Framing


def fq(**params) -> str:
    return "/?" + urlencode(params)


def test_app_content_length_is_honoured(serve):
    server = serve("wsgi_apps:framing")
    with connect(server) as c:
        c.send(raw_get(fq(cl=11, body="hello world", parts=3)))
        status, headers, data = c.response()
        assert (status, data) == (200, b"hello world")
        assert headers["content-length"] == "11" and "transfer-encoding" not in headers
        c.send(raw_get(fq(cl=2, body="ok", parts=1)))
        assert c.response()[2] == b"ok"
    finish(server)


def test_body_longer_than_content_length_is_cut(serve):
    server = serve("wsgi_apps:framing")
    with connect(server) as c:
        c.send(raw_get(fq(cl=5, body="hello world", parts=3)))
        status, headers, _ = c.head()
        assert status == 200 and headers["content-length"] == "5"
        rest = c.read_to_eof()
    assert rest == b"hello", "exactly Content-Length bytes, then the connection closes"
    server.wait_log("Response content longer than Content-Length")


def test_body_shorter_than_content_length_closes(serve):
    server = serve("wsgi_apps:framing")
    with connect(server) as c:
        c.send(raw_get(fq(cl=20, body="hello", parts=2)))
        status, headers, _ = c.head()
        assert status == 200 and headers["content-length"] == "20"
        started = time.monotonic()
        rest = c.read_to_eof()
        assert time.monotonic() - started < 3
    assert rest == b"hello"
    server.wait_log("Response content shorter than Content-Length")


def test_generator_is_chunked_on_http11(serve):
    server = serve("wsgi_apps:framing")
    with connect(server) as c:
        for i in range(3):
            c.send(raw_get(fq(body=f"part{i}-and-more", parts=4)))
            _status, headers, data = c.response()
            assert data == f"part{i}-and-more".encode()
            assert headers["transfer-encoding"] == "chunked"
            assert "content-length" not in headers
            assert headers.get("connection", "") != "close"
    finish(server)


def test_generator_on_http10_is_close_delimited(serve):
    server = serve("wsgi_apps:framing")
    for extra in ((), ("Connection: keep-alive",)):
        with connect(server) as c:
            c.send(raw_get(fq(body="old client", parts=3), *extra, version="1.0"))
            status, headers, _ = c.head()
            assert status == 200
            assert "transfer-encoding" not in headers and "content-length" not in headers
            assert headers.get("connection") == "close"
            assert c.read_to_eof() == b"old client"
    finish(server)


def test_list_result_gets_content_length(serve):
    server = serve("wsgi_apps:list_plain")
    for target in ("/p", "/p?tuple=1"):
        with connect(server) as c:
            c.send(raw_get(target))
            status, headers, data = c.response()
            assert (status, data) == (200, b"abcdefg/p")
            assert headers["content-length"] == "9" and "transfer-encoding" not in headers
    # HTTP/1.0 keep-alive works with a known length
    with connect(server) as c:
        c.send(raw_get("/a", "Connection: keep-alive", version="1.0"))
        _status, headers, data = c.response()
        assert data == b"abcdefg/a" and headers.get("connection", "").lower() == "keep-alive"
        c.send(raw_get("/b", "Connection: keep-alive", version="1.0"))
        assert c.response()[2] == b"abcdefg/b"
    finish(server)


def test_head_sends_headers_only(serve):
    server = serve("wsgi_apps:list_plain")
    with connect(server) as c:
        c.send(raw_get("/h"))
        _, get_headers, _ = c.response()
        c.send(raw_get("/h", method="HEAD") + raw_get("/after"))
        status, head_headers, _ = c.response(head_request=True)
        assert status == 200
        assert head_headers["content-length"] == get_headers["content-length"] == "9"
        assert head_headers["content-type"] == get_headers["content-type"]
        # a body sent for HEAD would be read here as the next response
        status, _, data = c.response()
        assert (status, data) == (200, b"abcdefg/after")
    finish(server)


def test_head_with_generator_and_declared_length(serve):
    server = serve("wsgi_apps:framing")
    with connect(server) as c:
        c.send(raw_get(fq(cl=11, body="hello world"), method="HEAD"))
        status, headers, _ = c.response(head_request=True)
        assert status == 200 and headers["content-length"] == "11"
        c.send(raw_get(fq(body="streamed"), method="HEAD"))
        status, headers, _ = c.response(head_request=True)
        assert status == 200 and "content-length" not in headers
        c.send(raw_get(fq(body="next")))
        assert c.response()[2] == b"next"
    finish(server)


@pytest.mark.parametrize("line", ["204 No Content", "304 Not Modified"])
def test_no_body_statuses(serve, line):
    server = serve("wsgi_apps:no_body_status")
    with connect(server) as c:
        c.send(raw_get(fq(status=line)))
        status, headers, _ = c.head()
        assert status == int(line[:3]) and headers["x-check"] == "1"
        assert "transfer-encoding" not in headers
        if status == 204:
            assert "content-length" not in headers
        c.send(raw_get(fq(status=line)))
        assert c.head()[0] == status, f"body bytes were sent after the {status} head: {c.buf!r}"
    finish(server)


def test_keep_alive_many_requests(serve):
    server = serve("wsgi_apps:echo_path", "--no-access-log")
    with connect(server) as c:
        for i in range(300):
            if i % 3 == 2:
                c.send(body_request(f"/r{i}", b"b" * i))
                assert c.response()[2] == f"POST /r{i} {i}".encode()
            else:
                c.send(raw_get(f"/r{i}"))
                assert c.response()[2] == f"GET /r{i} 0".encode()
    finish(server)


def test_pipelined_requests_answered_in_order(serve):
    server = serve("wsgi_apps:echo_path")
    batch = b""
    expected = []
    for i in range(20):
        if i % 4 == 1:
            batch += body_request(f"/p{i}", b"q" * 100 * i)
            expected.append(f"POST /p{i} {100 * i}")
        elif i % 4 == 3:
            batch += raw_get(f"/p{i}", method="HEAD")
            expected.append("")
        else:
            batch += raw_get(f"/p{i}")
            expected.append(f"GET /p{i} 0")
    with connect(server) as c:
        c.send(batch)
        got = [c.response(head_request=(e == ""))[2].decode() for e in expected]
    assert got == expected
    finish(server)


def test_connection_close_from_app(serve):
    server = serve("wsgi_apps:framing")
    with connect(server) as c:
        c.send(raw_get(fq(body="bye", conn="close")) + raw_get(fq(body="never")))
        _status, headers, data = c.response()
        assert data == b"bye" and headers.get("connection") == "close"
        assert c.closed()
        assert b"never" not in c.buf
    finish(server)


def test_transfer_encoding_chunked_from_app(serve):
    server = serve("wsgi_apps:framing")
    with connect(server) as c:
        c.send(raw_get(fq(body="chunk me", te="chunked", parts=1)))
        status, headers, head = c.head()
        assert status == 200 and head.lower().count(b"transfer-encoding") == 1
        assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
        assert c._chunked() == b"chunk me"
    with connect(server) as c:  # HTTP/1.0 cannot be chunked: close-delimited instead
        c.send(raw_get(fq(body="chunk me", te="chunked", parts=1), version="1.0"))
        _status, headers, _ = c.head()
        assert "transfer-encoding" not in headers
        assert c.read_to_eof() == b"chunk me"
    finish(server)


def test_hop_by_hop_headers_from_app_are_dropped(serve):
    server = serve("wsgi_apps:hop_by_hop")
    with connect(server) as c:
        c.send(raw_get("/"))
        status, headers, data = c.response()
        assert (status, data) == (200, b"hop")
        assert headers["x-end-to-end"] == "kept"
        # wsgiref.util.is_hop_by_hop's list (PEP 3333: apps must not send these)
        for name in ("keep-alive", "upgrade", "proxy-authenticate", "te"):
            assert name not in headers, f"hop-by-hop {name!r} passed through: {headers}"
        assert headers.get("connection", "") in ("", "keep-alive")
        c.send(raw_get("/"))  # still a usable keep-alive connection
        assert c.response()[2] == b"hop"


def test_response_headers_from_app(serve):
    server = serve("wsgi_apps:custom_headers")
    with connect(server) as c:
        c.send(raw_get("/"))
        status, _, head = c.head()
    lines = head.split(b"\r\n")
    assert status == 200
    assert lines.count(b"Set-Cookie: a=1; Path=/") == 1  # repeated fields stay separate
    assert lines.count(b"Set-Cookie: b=2; Path=/") == 1
    assert [x for x in lines if x.lower().startswith(b"date:")] == [
        b"Date: Mon, 01 Jan 2024 00:00:00 GMT"
    ]
    assert [x for x in lines if x.lower().startswith(b"server:")] == [b"Server: app-server"]
    assert b"X-Mixed-Case: Value With Spaces" in lines
    with connect(server) as c:  # a head far larger than any fixed buffer
        c.send(raw_get("/?many=300"))
        status, headers, data = c.response()
    assert (status, data) == (200, b"headers")
    assert all(headers[f"x-many-{i}"] == f"{i}-" + "v" * 100 for i in range(300))
    finish(server)


# ---------------------------------------------------------------------------
# 7. Concurrency


def slow_get(server, marker: Path, seconds: float, out: dict, key) -> None:
    r = httpx.get(f"{server.url}/slow", params={"s": seconds, "marker": str(marker)}, timeout=30)
    out[key] = (r.status_code, r.text, time.monotonic())


def test_slow_views_do_not_delay_fast_ones(serve, tmp_path):
    server = serve("wsgi_apps:sleepy", "--threads", "4", "--no-access-log")
    marker = tmp_path / "m"
    slow: dict = {}
    threads = [
        threading.Thread(target=slow_get, args=(server, marker, 2.0, slow, i)) for i in range(3)
    ]
    for t in threads:
        t.start()
    wait_for(marker, "slow started\n" * 3, timeout=10)
    started = time.monotonic()
    fast = []
    with httpx.Client(timeout=10) as client:  # keep-alive connection
        for i in range(5):
            fast.append(client.get(f"{server.url}/fast{i}"))
    for i in range(5):  # new connections
        fast.append(httpx.get(f"{server.url}/new{i}", timeout=10))
    elapsed = time.monotonic() - started
    still_running = [t.is_alive() for t in threads]
    for t in threads:
        t.join(15)
    assert all(r.status_code == 200 for r in fast)
    assert elapsed < 1.5, f"10 fast requests took {elapsed:.2f}s while slow views ran"
    assert all(still_running), "the fast requests should finish while the slow ones run"
    assert sorted(slow) == [0, 1, 2] and all(s[0] == 200 for s in slow.values())
    assert any("active=4" in r.text for r in fast)  # ran alongside the 3 slow views
    finish(server)


def test_keep_alive_after_blocking_views_never_stalls(serve):
    """Views that block a few ms (so another thread takes over polling) on one
    keep-alive connection: every next request must be answered at once."""
    server = serve("wsgi_apps:sleepy", "--no-access-log")
    started = time.monotonic()
    with connect(server, timeout=2) as c:
        for i in range(150):
            c.send(raw_get("/slow?s=0.003"))
            try:
                status, _, data = c.response()
            except TimeoutError:
                raise AssertionError(
                    f"request {i} on the keep-alive connection got no answer"
                ) from None
            assert status == 200 and data.startswith(b"/slow")
    assert time.monotonic() - started < 10
    finish(server)


def test_more_requests_than_threads_all_complete(serve, tmp_path):
    server = serve("wsgi_apps:sleepy", "--threads", "4", "--no-access-log")
    marker = tmp_path / "m"
    results: dict = {}
    started = time.monotonic()
    threads = [
        threading.Thread(target=slow_get, args=(server, marker, 1.0, results, f"slow{i}"))
        for i in range(4)
    ]
    for t in threads:
        t.start()
    wait_for(marker, "slow started\n" * 4, timeout=10)

    def fast(i):
        r = httpx.get(f"{server.url}/fast{i}", timeout=30)
        results[f"fast{i}"] = (r.status_code, r.text, time.monotonic())

    more = [threading.Thread(target=fast, args=(i,)) for i in range(6)]
    for t in more:
        t.start()
    for t in threads + more:
        t.join(30)
    elapsed = time.monotonic() - started
    assert len(results) == 10 and all(v[0] == 200 for v in results.values()), results
    peaks = [int(re.search(r"peak=(\d+)", v[1]).group(1)) for v in results.values()]
    assert max(peaks) == 4, f"--threads 4 but {max(peaks)} views ran at once"
    assert elapsed < 5, elapsed
    finish(server)


def test_threads_cap_concurrency(serve, tmp_path):
    """6 half-second views on 2 threads take about 1.5 s: no more than 2 run at once."""
    server = serve("wsgi_apps:sleepy", "--threads", "2", "--no-access-log")
    marker = tmp_path / "m"
    results: dict = {}
    started = time.monotonic()
    threads = [
        threading.Thread(target=slow_get, args=(server, marker, 0.5, results, i)) for i in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - started
    assert len(results) == 6 and all(v[0] == 200 for v in results.values())
    assert 1.4 < elapsed < 5, elapsed
    assert max(int(re.search(r"peak=(\d+)", v[1]).group(1)) for v in results.values()) == 2
    finish(server)


def test_slow_upload_does_not_block_others(serve):
    server = serve("wsgi_apps:body_app", "--threads", "2", "--no-access-log")
    with connect(server, timeout=10) as slow:
        slow.send(raw_get("/?mode=read", "Content-Length: 10", method="POST") + b"12345")
        time.sleep(0.1)  # the app is now blocked reading the rest
        started = time.monotonic()
        for i in range(5):
            status, _, data = request(server, body_request("/?mode=read", b"fast%d" % i))
            assert status == 200 and json.loads(data)["head"] == f"fast{i}"
        assert time.monotonic() - started < 1.5
        slow.send(b"67890")
        status, _, data = slow.response()
        assert status == 200 and json.loads(data)["head"] == "1234567890"
    finish(server)


# ---------------------------------------------------------------------------
# 8. App exceptions


def test_exception_before_start_response(serve):
    server = serve("wsgi_apps:raise_before_start")
    for _ in range(3):
        status, _headers, data = request(server, raw_get("/boom"))
        assert status == 500
        assert b"secret-detail" not in data, "the traceback must not reach the client"
    log = server.wait_log("ZeroDivisionError: secret-detail-before-start")
    assert "Traceback" in log
    with connect(server) as c:  # the server keeps serving
        for _ in range(3):
            c.send(raw_get("/fine"))
            status, _, data = c.response()
            assert (status, data) == (200, b"still serving")


@pytest.mark.parametrize(
    ("app", "detail"),
    [
        ("raise_after_start", "LookupError: secret-detail-after-start"),
        ("raise_in_first_item", "ValueError: secret-detail-first-item"),
        ("returns_str_items", "must be bytes"),
        ("no_start_response", "start_response"),
        ("bad_header_value", "X-Bad"),
        ("bad_status", "status"),
    ],
)
def test_app_error_before_head_is_500(serve, app, detail):
    server = serve(f"wsgi_apps:{app}")
    status, headers, data = request(server, raw_get("/"))
    assert status == 500
    assert "x-first" not in headers and "x-bad" not in headers and "x-injected" not in headers
    assert b"secret-detail" not in data
    server.wait_log(detail)
    assert "Traceback" in server.log() or "[ERROR]" in server.log()
    assert request(server, raw_get("/"))[0] == 500  # and again: the server is fine


def test_app_error_after_head_aborts_connection(serve):
    server = serve("wsgi_apps:raise_after_head")
    with connect(server) as c:
        c.send(raw_get("/") + raw_get("/"))
        status, headers, _ = c.head()
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        rest = c.read_to_eof()
    assert rest == b"b\r\nfirst part;\r\n", "cut after the first part: no final chunk"
    log = server.wait_log("ValueError: secret-detail-after-head")
    assert "Traceback" in log


def test_app_error_after_head_with_content_length(serve):
    server = serve("wsgi_apps:raise_after_head_length")
    with connect(server) as c:
        c.send(raw_get("/"))
        status, headers, _ = c.head()
        assert status == 200 and headers["content-length"] == "100"
        assert c.read_to_eof() == b"first part;"
    server.wait_log("ValueError: secret-detail-after-head-length")


# ---------------------------------------------------------------------------
# 9. Frameworks


def test_flask_app(serve):
    server = serve("wsgi_apps:flask_app")  # auto-detected as WSGI
    assert "Serving WSGI app" in server.log()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        r = client.get("/")
        assert (r.status_code, r.text) == (200, "flask index")
        payload = {"a": [1, 2, {"b": "é"}], "n": None}
        r = client.post("/json", json=payload)
        assert r.status_code == 200
        assert r.json() == {"got": payload, "type": "dict", "url": "/json"}
        r = client.post("/json", content=b"{broken", headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        r = client.get("/stream", params={"n": 6, "tag": "t"})
        assert r.status_code == 200
        assert r.headers["transfer-encoding"] == "chunked"
        assert r.text == "".join(f"t-{i};" for i in range(6))
        assert client.get("/missing").status_code == 404
        r = client.get("/fail")
        assert r.status_code == 500
    server.wait_log("flask view failed")


def test_flask_app_under_root_path(serve):
    server = serve("wsgi_apps:flask_app", "--root-path", "/mnt")
    r = get(server, "/mnt/where")
    assert r.status_code == 200
    assert r.json() == {"script_name": "/mnt", "path": "/where", "url": f"{server.url}/mnt/where"}
    r = httpx.post(f"{server.url}/mnt/json", json=[1], timeout=10)
    assert r.json()["url"] == "/mnt/json"
    finish(server)


def test_django_app(serve):
    server = serve("wsgi_apps:django_app")  # auto-detected as WSGI
    with httpx.Client(base_url=server.url, timeout=20) as client:
        r = client.get("/")
        assert (r.status_code, r.text) == (200, "django index")
        r = client.get("/items/42/", params={"q": "z"})
        assert r.json() == {"item": 42, "method": "GET", "q": "z"}
        data = os.urandom(1_000_000)
        r = client.post("/upload/", content=data, headers={"Content-Type": "application/x-test"})
        assert r.status_code == 200
        got = r.json()
        assert got["len"] == len(data) and got["sha"] == hashlib.sha256(data).hexdigest()
        assert got["ctype"] == "application/x-test"
        assert client.get("/nowhere/").status_code == 404
        assert client.get("/upload/").status_code == 405
    finish(server)


def test_django_app_under_root_path(serve):
    # Django reads CONTENT_LENGTH bytes only (it ignores wsgi.input_terminated),
    # so the upload has a length.
    server = serve("wsgi_apps:django_app", "--root-path", "/mnt")
    data = os.urandom(200_000)
    r = httpx.post(f"{server.url}/mnt/upload/", content=data, timeout=20)
    assert r.status_code == 200
    got = r.json()
    assert got["script_name"] == "/mnt" and got["path_info"] == "/upload/"
    assert got["len"] == len(data) and got["sha"] == hashlib.sha256(data).hexdigest()
    finish(server)
