"""HTTP/2 end to end: real clients (curl, nghttp, h2load, httpx) over real sockets, h2c
with prior knowledge and h2 over TLS by ALPN, the ASGI scope over h2, many streams
on one connection, large bodies, per-stream resets, the floods and stalls a server
must survive (each mounted as an attack), graceful shutdown with GOAWAY, --http 1|2,
and frameworks served over h2. Apps: tests/python/apps/h2_apps.py. The raw frame
client and the servers: tests/python/h2_support.py."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import hpack
import httpx
import pytest
import trustme
from conftest import APPS
from h2_support import (
    CANCEL,
    COMPRESSION_ERROR,
    DATA,
    ENHANCE_YOUR_CALM,
    ERROR_NAMES,
    GOAWAY,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
    NO_ERROR,
    PING,
    PREFACE,
    PROTOCOL_ERROR,
    REFERENCE,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    H2Conn,
    continuation,
    data,
    h2_connect,
    h2_server,
    headers_frame,
    oneloop_only,
    ping,
    request_headers,
    rss_kib,
    rst_stream,
    settings,
    window_update,
    worker_pid,
)

sys.path.insert(0, str(APPS))
from h2_apps import pattern

BIG_WINDOW = ((INITIAL_WINDOW_SIZE, 2**31 - 1),)
FLOOD_CODES = (PROTOCOL_ERROR, ENHANCE_YOUR_CALM, COMPRESSION_ERROR)
RSS_LIMIT_KIB = 16 * 1024


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("h2certs")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    (d / "cert.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    return d


@pytest.fixture(scope="module")
def h2c(tmp_path_factory):
    """oneloop serving h2_apps:app in cleartext, --http auto."""
    with h2_server(tmp_path_factory.mktemp("h2c"), "h2_apps:app") as server:
        yield server


@pytest.fixture(scope="module")
def h2tls(tmp_path_factory, certs):
    """oneloop serving h2_apps:app over TLS, --http auto (ALPN h2, http/1.1)."""
    pair = (certs / "cert.pem", certs / "key.pem")
    with h2_server(tmp_path_factory.mktemp("h2tls"), "h2_apps:app", certs=pair) as server:
        yield server


@pytest.fixture
def fresh(tmp_path):
    """Starts a server of the test's own (options, signals); stopped after it."""
    with contextlib.ExitStack() as stack:

        def start(app: str = "h2_apps:app", *options: str, certs=None):
            return stack.enter_context(h2_server(tmp_path, app, *options, certs=certs))

        yield start


def https(server) -> str:
    return f"https://{server.host}:{server.port}"


def tls_context(certs: Path, alpn=("h2", "http/1.1")) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    ctx.set_alpn_protocols(list(alpn))
    return ctx


def alpn_of(server, certs: Path, alpn) -> str | None:
    with (
        socket.create_connection((server.host, server.port), timeout=5) as raw,
        tls_context(certs, alpn).wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        return s.selected_alpn_protocol()


def run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed (scripts/install-deps.sh installs it)")
    return path


def scope_headers(info: dict) -> list[tuple[str, str]]:
    return [(k, v) for k, v in info["headers"]]


# -- real clients --------------------------------------------------------------------------


def test_curl_prior_knowledge(h2c):
    curl = need("curl")
    r = run(curl, "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version}", h2c.url + "/scope")
    assert r.returncode == 0, r.stderr
    body, _, version = r.stdout.rpartition("\n")
    assert version == "2"
    info = json.loads(body)
    assert (info["http_version"], info["scheme"]) == ("2", "http")
    if not REFERENCE:
        h2c.wait_log('"GET /scope HTTP/2" 200')


def test_curl_http2_over_tls(h2tls):
    curl = need("curl")
    r = run(curl, "-sSk", "--http2", "-w", "\n%{http_version}", https(h2tls) + "/scope?x=1")
    assert r.returncode == 0, r.stderr
    body, _, version = r.stdout.rpartition("\n")
    assert version == "2"
    info = json.loads(body)
    assert (info["http_version"], info["scheme"], info["query_string"]) == ("2", "https", "x=1")


def test_curl_http1_still_served_with_http_auto(h2c, h2tls):
    curl = need("curl")
    r = run(curl, "-sS", "--http1.1", "-w", "\n%{http_version}", h2c.url + "/scope")
    assert r.stdout.rpartition("\n")[2] == "1.1"
    assert json.loads(r.stdout.rpartition("\n")[0])["http_version"] == "1.1"
    r = run(curl, "-sSk", "--http1.1", "-w", "\n%{http_version}", https(h2tls) + "/")
    assert r.stdout == "hello\n1.1"


def test_nghttp_cleartext_and_tls(h2c, h2tls):
    nghttp = need("nghttp")
    r = run(nghttp, "-v", h2c.url + "/")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.endswith("hello") or "hello" in r.stdout
    assert ":status: 200" in r.stdout
    # Several URIs on one connection, with a request body.
    r = run(nghttp, "-s", h2c.url + "/scope", h2c.url + "/", h2c.url + "/scope?two")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count('"http_version": "2"') == 2
    r = run(nghttp, "-v", https(h2tls) + "/scope")
    assert r.returncode == 0, r.stdout + r.stderr
    assert '"scheme": "https"' in r.stdout
    assert "The negotiated protocol: h2" in r.stdout, r.stdout[:2000]


def h2load_counts(out: str) -> dict:
    line = next(x for x in out.splitlines() if x.startswith("requests:"))
    parts = dict(reversed(p.strip().split(" ", 1)) for p in line[len("requests:") :].split(","))
    status = next(x for x in out.splitlines() if x.startswith("status codes:"))
    parts["2xx"] = status.split(":", 1)[1].split(",")[0].split()[0]
    return {k: int(v) for k, v in parts.items()}


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "h2-tls"])
def test_h2load(h2c, h2tls, tls):
    h2load = need("h2load")
    url = https(h2tls) + "/" if tls else h2c.url + "/"
    r = run(h2load, "-n", "3000", "-c", "4", "-m", "16", url, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    counts = h2load_counts(r.stdout)
    assert counts["total"] == counts["succeeded"] == counts["done"] == 3000, r.stdout
    assert counts["failed"] == counts["errored"] == counts["timeout"] == 0, r.stdout
    assert counts["2xx"] == 3000, r.stdout
    assert "Application protocol: h2" in r.stdout, r.stdout


def test_httpx_prior_knowledge(h2c):
    with httpx.Client(http1=False, http2=True, base_url=h2c.url) as client:
        for i in range(20):
            r = client.get("/scope", params={"i": i})
            assert r.http_version == "HTTP/2"
            assert r.json()["query_string"] == f"i={i}"
        r = client.post("/sha256", content=b"abc" * 1000)
        assert r.json() == {"size": 3000, "sha256": hashlib.sha256(b"abc" * 1000).hexdigest()}


def test_httpx_over_tls(h2tls, certs):
    with httpx.Client(http2=True, verify=tls_context(certs), base_url=https(h2tls)) as client:
        r = client.get("/scope")
        assert r.http_version == "HTTP/2"
        info = r.json()
        assert (info["http_version"], info["scheme"]) == ("2", "https")


# -- the ASGI scope over h2 ----------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "h2-tls"])
def test_scope_over_h2(h2c, h2tls, tls):
    server = h2tls if tls else h2c
    c = h2_connect(server.host, server.port, tls=tls)
    try:
        c.handshake()
        fields = [
            (":method", "POST"),
            (":scheme", "https" if tls else "http"),
            (":path", "/scope?a=1&b=%C3%A9"),
            (":authority", "example.test:8443"),
            ("x-one", "1"),
            ("host", "example.test:8443"),  # the same (RFC 9113, 8.3.1)
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("content-type", "text/plain"),
        ]
        c.send(headers_frame(1, c.block(fields), end_stream=False), data(1, b"body!"))
        head, body = c.response(1)
    finally:
        c.close()
    assert head[":status"] == "200"
    info = json.loads(body)
    assert info["http_version"] == "2"
    assert info["scheme"] == ("https" if tls else "http")
    assert (info["method"], info["path"], info["query_string"]) == (
        "POST",
        "/scope",
        "a=1&b=%C3%A9",
    )
    assert info["body_size"] == 5
    headers = scope_headers(info)
    assert headers[0] == ("host", "example.test:8443"), headers
    assert [v for k, v in headers if k == "host"] == ["example.test:8443"], headers
    assert all(not k.startswith(":") for k, _ in headers), headers
    assert all(k == k.lower() for k, _ in headers), headers
    assert ("x-one", "1") in headers
    assert ("content-type", "text/plain") in headers
    cookies = [v for k, v in headers if k == "cookie"]
    assert cookies in (["a=1", "b=2"], ["a=1; b=2"]), cookies


# -- many streams, large bodies, resets ----------------------------------------------------


def test_many_concurrent_streams_on_one_connection(h2c):
    c = h2_connect(h2c.host, h2c.port)
    try:
        c.handshake(*BIG_WINDOW)
        c.send(window_update(0, 2**30))
        ids = [1 + 2 * i for i in range(90)]
        for sid in ids:
            path = f"/stream?chunks=4&size=100&delay=0.05&n={sid}" if sid % 3 else "/slow?delay=0.3"
            c.request(sid, path)
        started = time.monotonic()
        for sid in ids:
            head, body = c.response(sid, timeout=20)
            assert head[":status"] == "200"
            if sid % 3:
                assert body == b"".join((b"%d:" % i).ljust(100, b".") for i in range(4))
            else:
                assert body == b"slow done"
        # The streams ran together, not one after the other (30 sleeps of 0.3 s).
        assert time.monotonic() - started < 8
        assert not [f for f in c.frames if f.type in (GOAWAY, RST_STREAM)]
    finally:
        c.close()


def test_httpx_concurrent_requests_share_one_connection(h2c):
    async def main():
        async with httpx.AsyncClient(http1=False, http2=True, base_url=h2c.url) as client:
            rs = await asyncio.gather(
                *[client.get("/slow", params={"delay": "0.5", "i": i}) for i in range(50)]
            )
            return rs

    started = time.monotonic()
    rs = asyncio.run(main())
    assert [r.status_code for r in rs] == [200] * 50
    assert all(r.text == "slow done" and r.http_version == "HTTP/2" for r in rs)
    assert time.monotonic() - started < 10  # 50 half-second answers, concurrently


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "h2-tls"])
def test_large_upload_and_download(h2c, h2tls, certs, tls):
    server = h2tls if tls else h2c
    kw = {"verify": tls_context(certs)} if tls else {"http1": False}
    base = https(server) if tls else server.url
    upload = os.urandom(1 << 20) * 8  # 8 MiB: 32 stream windows
    with httpx.Client(http2=True, base_url=base, timeout=60, **kw) as client:
        r = client.post("/sha256", content=upload)
        assert r.http_version == "HTTP/2"
        assert r.json() == {"size": len(upload), "sha256": hashlib.sha256(upload).hexdigest()}
        size = 8 * (1 << 20) + 12345
        r = client.get("/download", params={"size": size})
        assert r.status_code == 200
        assert r.content == pattern(size)
        echo = os.urandom(2 << 20)

        def chunks():
            for i in range(0, len(echo), 100_000):
                yield echo[i : i + 100_000]

        r = client.post("/echo", content=chunks())
        assert r.content == echo


def test_rst_stream_mid_response_other_streams_go_on(h2c):
    c = h2_connect(h2c.host, h2c.port)
    try:
        c.handshake(*BIG_WINDOW)
        c.send(window_update(0, 2**30))
        c.request(1, "/until-disconnect", extra=[("x-tag", "first")])
        c.request(3, "/stream?chunks=30&size=1000&delay=0.03")
        c.request(5, "/until-disconnect", extra=[("x-tag", "second")])
        assert c.wait(lambda f: f.type == DATA and f.stream == 1, 5), c.frames
        c.send(rst_stream(1, CANCEL))
        h2c.wait_log("disconnected first", timeout=5)
        # Stream 3 finishes whole, stream 5 keeps streaming, new streams are served.
        _, body = c.response(3, timeout=10)
        assert body == b"".join((b"%d:" % i).ljust(1000, b".") for i in range(30))
        n = len(c.frames)
        assert c.wait(
            lambda f: f.type == DATA and f.stream == 5 and any(g is f for g in c.frames[n:]), 5
        )
        assert "disconnected second" not in h2c.out()
        c.request(7, "/")
        assert c.response(7)[1] == b"hello"
        c.send(rst_stream(5, CANCEL))
        h2c.wait_log("disconnected second", timeout=5)
        assert not [f for f in c.frames if f.type == GOAWAY]
    finally:
        c.close()


# -- settings ------------------------------------------------------------------------------


@oneloop_only
def test_settings_advertised_defaults(h2c):
    c = h2_connect(h2c.host, h2c.port)
    try:
        c.handshake()
    finally:
        c.close()
    s = c.server_settings
    assert s.get(MAX_CONCURRENT_STREAMS) == 100
    assert s.get(INITIAL_WINDOW_SIZE) == 262144
    assert s.get(MAX_FRAME_SIZE, 16384) == 16384
    assert s.get(MAX_HEADER_LIST_SIZE) == 65536


@oneloop_only
def test_settings_options(fresh):
    server = fresh(
        "h2_apps:app",
        "--h2-max-concurrent-streams",
        "4",
        "--h2-initial-window-size",
        "100000",
        "--h2-max-frame-size",
        "32768",
        "--h2-max-header-list-size",
        "8192",
    )
    c = h2_connect(server.host, server.port)
    try:
        c.handshake(*BIG_WINDOW, (MAX_FRAME_SIZE, 16384))
        s = c.server_settings
        assert (s[MAX_CONCURRENT_STREAMS], s[INITIAL_WINDOW_SIZE]) == (4, 100000)
        assert (s[MAX_FRAME_SIZE], s[MAX_HEADER_LIST_SIZE]) == (32768, 8192)
        # A DATA frame larger than 16384, within the 32768 advertised, is accepted.
        body = b"q" * 30000
        c.send(headers_frame(1, c.block(request_headers("/sha256", "POST")), end_stream=False))
        c.send(data(1, body))
        info = json.loads(c.response(1)[1])
        assert info == {"size": 30000, "sha256": hashlib.sha256(body).hexdigest()}
        # A header list over 8192 bytes: 431, and the connection goes on.
        big = c.block([*request_headers("/"), ("x-big", "b" * 12000)])
        c.send(headers_frame(3, big))
        head, _ = c.response(3)
        assert head[":status"] == "431"
        c.request(5, "/")
        assert c.response(5)[1] == b"hello"
    finally:
        c.close()


@oneloop_only
def test_streams_beyond_max_concurrent_are_refused(fresh):
    """Before the client acknowledged the limit, a stream beyond it is refused
    alone (RST_STREAM REFUSED_STREAM: safe to retry) and the others are served.
    Once it has acknowledged it, a client that exceeds it breaks the protocol:
    nghttp2 ends the connection with GOAWAY PROTOCOL_ERROR (RFC 9113, 5.1.2
    asks for a stream error; h2spec accepts the connection error too)."""
    server = fresh("h2_apps:app", "--h2-max-concurrent-streams", "4")
    c = h2_connect(server.host, server.port)
    try:
        # Five streams held open by a zero window: the fifth is refused, alone.
        c.handshake((INITIAL_WINDOW_SIZE, 0), ack_server=False)
        for sid in (1, 3, 5, 7, 9):
            c.request(sid, "/")
        got = c.wait(lambda f: f.type == GOAWAY or (f.type == RST_STREAM and f.stream == 9), 5)
        assert got is not None, c.frames
        assert (got.type, got.error_code) == (RST_STREAM, REFUSED_STREAM), got
        c.send(settings(ack=True))
        c.send(settings((INITIAL_WINDOW_SIZE, 65535)))
        for sid in (1, 3, 5, 7):
            assert c.response(sid)[1] == b"hello"
    finally:
        c.close()
    c = h2_connect(server.host, server.port)
    try:
        c.handshake((INITIAL_WINDOW_SIZE, 0))
        c.wait(lambda f: f.type == SETTINGS and f.flags & 1)  # our SETTINGS acked
        for sid in (1, 3, 5, 7, 9):
            c.request(sid, "/")
        got = c.goaway(5)
        assert got is not None and got.error_code == PROTOCOL_ERROR, c.frames
        assert c.closes(5)
    finally:
        c.close()


@oneloop_only
def test_idle_connection_closed_after_keep_alive_timeout(fresh):
    server = fresh("h2_apps:app", "--timeout-keep-alive", "1")
    c = h2_connect(server.host, server.port)
    try:
        c.handshake()
        c.request(1, "/")
        assert c.response(1)[1] == b"hello"
        started = time.monotonic()
        got = c.goaway(6)
        assert got is not None and got.error_code == NO_ERROR, c.frames[-3:]
        assert c.closes(5)
        assert 0.8 <= time.monotonic() - started < 6
    finally:
        c.close()


@oneloop_only
def test_limit_request_body_per_stream(fresh):
    server = fresh("h2_apps:app", "--limit-request-body", "1000")
    c = h2_connect(server.host, server.port)
    try:
        c.handshake()
        fields = [*request_headers("/sha256", "POST"), ("content-length", "5000")]
        c.send(headers_frame(1, c.block(fields), end_stream=False), data(1, b"x" * 5000))
        got = c.wait(lambda f: f.stream == 1 and f.type in (HEADERS, RST_STREAM), 5)
        assert got is not None, c.frames
        assert got.type == RST_STREAM or dict(got.headers)[":status"] == "413", got
        # Without a content-length: 413 or reset once the body passes the limit.
        c.send(headers_frame(3, c.block(request_headers("/sha256", "POST")), end_stream=False))
        c.send(data(3, b"y" * 800, end=False), data(3, b"y" * 800))
        got = c.wait(lambda f: f.stream == 3 and f.type in (HEADERS, RST_STREAM), 5)
        assert got is not None, c.frames
        assert got.type == RST_STREAM or dict(got.headers)[":status"] == "413", got
        c.request(5, "/sha256", "POST", body=b"z" * 999)
        assert json.loads(c.response(5)[1])["size"] == 999
    finally:
        c.close()


@oneloop_only
def test_header_list_over_default_limit_is_431_and_connection_survives(h2c):
    c = h2_connect(h2c.host, h2c.port)
    try:
        c.handshake()
        fields = [*request_headers("/"), *[(f"x-h{i}", "v" * 8000) for i in range(9)]]
        block = c.block(fields)  # ~72 KB of literals: HEADERS + CONTINUATIONs
        c.send(headers_frame(1, block[:16384], end_headers=False))
        rest = [block[i : i + 16384] for i in range(16384, len(block), 16384)]
        for chunk in rest[:-1]:
            c.send(continuation(1, chunk, end_headers=False))
        c.send(continuation(1, rest[-1]))
        head, _ = c.response(1)
        assert head[":status"] == "431"
        c.request(3, "/")
        assert c.response(3)[1] == b"hello"
    finally:
        c.close()


# -- defences, each mounted as an attack ---------------------------------------------------


def send_until_closed(c: H2Conn, chunks, seconds: float = 15.0) -> bool:
    """Sends chunk after chunk (reading nothing); True when the server broke the
    connection while we sent."""
    deadline = time.monotonic() + seconds
    c.sock.settimeout(2)
    try:
        for chunk in chunks:
            if time.monotonic() > deadline:
                return False
            c.sock.sendall(chunk)
    except (BrokenPipeError, ConnectionResetError):
        return True
    except TimeoutError:  # the server stopped reading
        return False
    return False


@oneloop_only
def test_rapid_reset_budget_then_goaway(h2c):
    pid = worker_pid(h2c)
    c = h2_connect(h2c.host, h2c.port)
    try:
        c.handshake()
        sid = 1

        def pairs(n: int) -> bytes:
            nonlocal sid
            out = b""
            for _ in range(n):
                out += headers_frame(sid, c.block(request_headers("/slow?delay=5")))
                out += rst_stream(sid, CANCEL)
                sid += 2
            return out

        # Under the burst: served as usual.
        c.send(pairs(300))
        c.send(ping(b"underbud"))
        assert c.wait(lambda f: f.type == PING and f.payload == b"underbud", 5), c.frames[-5:]
        assert not [f for f in c.frames if f.type == GOAWAY]
        # Far past it: GOAWAY ENHANCE_YOUR_CALM, then the close.
        batches = (pairs(200) for _ in range(30))
        send_until_closed(c, batches, 20)
        got = c.goaway(10)
        assert got is not None, c.frames[-5:]
        print(f"rapid reset: {got!r} ({sid // 2} streams sent)")
        assert got.error_code == ENHANCE_YOUR_CALM, got
        assert c.closes(10)
    finally:
        c.close()
    # The server is fine for others.
    with httpx.Client(http1=False, http2=True) as client:
        assert client.get(h2c.url + "/").text == "hello"
    assert rss_kib(pid) > 0


def hint(n: int) -> bytes:
    """An HPACK string length (7-bit prefix, no Huffman)."""
    return bytes(hpack.hpack.encode_integer(n, 7))


def flood_check(server, make_chunks, seconds: float = 20.0) -> tuple[H2Conn, int]:
    """Mounts a flood on a fresh connection; returns it (closed or not) and the
    worker's RSS growth in KiB."""
    pid = worker_pid(server)
    before = rss_kib(pid)
    c = h2_connect(server.host, server.port)
    c.handshake()
    send_until_closed(c, make_chunks(c), seconds)
    grown = rss_kib(pid) - before
    return c, grown


@oneloop_only
def test_continuation_flood_many_small_frames(h2c):
    def chunks(c):
        yield headers_frame(1, c.block(request_headers("/")), end_headers=False)
        for i in range(300):  # 65 frames past the limit, 12 KB of header list in all
            yield continuation(1, b"\x00\x06" + b"x-f%03d" % i + b"\x01a", False)

    c, grown = flood_check(h2c, chunks)
    try:
        got = c.goaway(10)
        print(f"continuation flood: {got!r}; RSS +{grown} KiB")
        assert got is not None and got.error_code in FLOOD_CODES, c.frames[-5:]
        assert c.closes(10)
    finally:
        c.close()
    assert grown < RSS_LIMIT_KIB, grown


@oneloop_only
def test_continuation_flood_past_header_list_limit(h2c):
    def chunks(c):
        yield headers_frame(1, c.block(request_headers("/")), end_headers=False)
        field = b"\x00\x07x-flood" + hint(16000) + b"z" * 16000  # one 16 KB literal a frame
        for _ in range(2000):  # 32 MB of header list
            yield continuation(1, field, False)

    c, grown = flood_check(h2c, chunks)
    try:
        got = c.goaway(10)
        print(f"continuation flood: {got!r}; RSS +{grown} KiB")
        assert got is not None and got.error_code in FLOOD_CODES, c.frames[-5:]
        assert c.closes(10)
    finally:
        c.close()
    assert grown < RSS_LIMIT_KIB, grown


@oneloop_only
@pytest.mark.parametrize("refs", [100, 2000], ids=["400KB", "8MB"])
def test_hpack_bomb(h2c, refs):
    """A 4000-byte value put in the dynamic table (index 62), then referenced by a
    one-byte index `refs` times a request: a few KB on the wire, 400 KB or 8 MB
    decoded. Each bombed stream is answered 431 or reset and the connection goes on,
    or the connection is GOAWAY'd for the client's abuse (ENHANCE_YOUR_CALM, or
    PROTOCOL_ERROR / COMPRESSION_ERROR; not INTERNAL_ERROR, a server fault); memory
    stays bounded."""
    pid = worker_pid(h2c)
    before = rss_kib(pid)
    c = h2_connect(h2c.host, h2c.port)
    outcomes = []
    try:
        c.handshake()
        value = b"b" * 4000
        insert = b"\x40\x06x-bomb" + hint(len(value)) + value
        for sid in range(1, 40, 2):
            first = insert if sid == 1 else b""
            block = b"\x82\x86\x84\x01\x09localhost" + first + b"\xbe" * refs
            c.send(headers_frame(sid, block))
            got = c.wait(
                lambda f, s=sid: (
                    f.type == GOAWAY or (f.stream == s and f.type in (HEADERS, RST_STREAM))
                ),
                5,
            )
            assert got is not None, c.frames[-5:]
            if got.type == GOAWAY:
                outcomes.append(f"goaway {ERROR_NAMES.get(got.error_code, got.error_code)}")
                break
            outcomes.append(dict(got.headers)[":status"] if got.type == HEADERS else "rst")
        grown = rss_kib(pid) - before
        if not outcomes[-1].startswith("goaway"):
            c.request(101, "/")
            assert c.response(101)[1] == b"hello"
    finally:
        c.close()
    print(f"hpack bomb ({refs} refs): {outcomes} {c.frames[-1:]}; RSS +{grown} KiB")
    allowed = {"431", "rst", *(f"goaway {ERROR_NAMES[code]}" for code in FLOOD_CODES)}
    assert set(outcomes) <= allowed, f"{outcomes}: {c.frames[-3:]}"
    assert grown < RSS_LIMIT_KIB, grown


@oneloop_only
@pytest.mark.parametrize("kind", ["settings", "ping"])
def test_flood_by_a_client_that_never_reads(h2c, kind):
    pid = worker_pid(h2c)
    before = rss_kib(pid)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect((h2c.host, h2c.port))
    c = H2Conn(sock)
    try:
        c.send(PREFACE + settings())
        one = settings() if kind == "settings" else ping(b"floodme!")
        batch = one * 5000
        broke = send_until_closed(c, (batch for _ in range(2000)), 20)
        grown = rss_kib(pid) - before
        # Whether or not our sends broke, the server has closed the connection.
        closed = broke or c.closes(15)
        print(f"{kind} flood: broke={broke} closed={closed} RSS +{grown} KiB {c.frames[-1:]}")
        assert closed
    finally:
        c.close()
    assert grown < RSS_LIMIT_KIB, grown
    with httpx.Client(http1=False, http2=True) as client:
        assert client.get(h2c.url + "/").text == "hello"


@oneloop_only
def test_zero_window_stall_times_out_with_memory_bounded(fresh):
    server = fresh("h2_apps:app", "--timeout-send", "2")
    pid = worker_pid(server)
    before = rss_kib(pid)
    c = h2_connect(server.host, server.port)
    try:
        c.handshake((INITIAL_WINDOW_SIZE, 0))
        started = time.monotonic()
        c.request(1, "/stream?chunks=1024&size=65536")  # 64 MiB the client never takes
        assert c.wait(lambda f: f.type == HEADERS and f.stream == 1, 5)
        time.sleep(1.5)
        grown = rss_kib(pid) - before
        ended = c.wait(
            lambda f: f.type == GOAWAY or (f.type == RST_STREAM and f.stream == 1), 15
        ) or (c.closed and "closed")
        elapsed = time.monotonic() - started
        print(f"zero window: {ended!r} after {elapsed:.1f} s; RSS +{grown} KiB")
        assert ended, c.frames[-5:]
        assert 1.8 <= elapsed < 12, elapsed  # --timeout-send 2
    finally:
        c.close()
    assert grown < RSS_LIMIT_KIB, grown
    assert rss_kib(pid) - before < RSS_LIMIT_KIB


@oneloop_only
@pytest.mark.parametrize("order", ["reused", "decreasing"])
def test_stream_id_reuse_or_decrease_is_a_connection_error(h2c, order):
    """A lower id than one already opened: PROTOCOL_ERROR (RFC 9113, 5.1.1);
    the id of a stream that has closed: STREAM_CLOSED, which 5.1 allows for a
    frame on a closed stream (nghttp2's choice), or PROTOCOL_ERROR."""
    c = h2_connect(h2c.host, h2c.port)
    try:
        c.handshake()
        c.request(5, "/")
        c.response(5)
        c.request(5 if order == "reused" else 3, "/")
        got = c.goaway(5)
        assert got is not None, f"no GOAWAY; frames: {c.frames}"
        allowed = (PROTOCOL_ERROR, STREAM_CLOSED) if order == "reused" else (PROTOCOL_ERROR,)
        assert got.error_code in allowed, got
        assert c.closes(5)
    finally:
        c.close()


# -- graceful shutdown ---------------------------------------------------------------------


def in_flight_then_signal(server, sig: int) -> H2Conn:
    c = h2_connect(server.host, server.port)
    c.handshake()
    c.request(1, "/slow?delay=1.5")
    c.request(3, "/slow?delay=1.5")
    time.sleep(0.5)  # both streams are with the app
    os.kill(server.proc.pid, sig)
    return c


@pytest.mark.xfail(
    REFERENCE == "hypercorn", reason="hypercorn closes the connection on SIGTERM", strict=True
)
def test_graceful_shutdown_goaway_lets_streams_finish(fresh):
    server = fresh("h2_apps:app")
    c = in_flight_then_signal(server, signal.SIGTERM)
    try:
        final = c.wait(lambda f: f.type == GOAWAY and f.last_stream < 2**31 - 1, 5)
        assert final is not None, c.frames
        assert (final.last_stream, final.error_code) == (3, NO_ERROR), final
        assert c.response(1, timeout=10)[1] == b"slow done"
        assert c.response(3, timeout=10)[1] == b"slow done"
        assert c.closes(10)
    finally:
        c.close()
    assert server.proc.wait(15) == 0


@oneloop_only
def test_hup_goaway_lets_streams_finish(fresh):
    server = fresh("h2_apps:app", "--workers", "1")
    c = in_flight_then_signal(server, signal.SIGHUP)
    try:
        final = c.wait(lambda f: f.type == GOAWAY and f.last_stream < 2**31 - 1, 10)
        assert final is not None, c.frames
        assert final.last_stream == 3, final
        assert c.response(1, timeout=10)[1] == b"slow done"
        assert c.response(3, timeout=10)[1] == b"slow done"
        assert c.closes(10)
    finally:
        c.close()
    # The new worker serves h2.
    deadline = time.monotonic() + 15
    while True:
        try:
            with httpx.Client(http1=False, http2=True) as client:
                assert client.get(server.url + "/").text == "hello"
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert server.proc.poll() is None


# -- --http 1 | 2 --------------------------------------------------------------------------


def raw_exchange(server, payload: bytes, timeout: float = 5) -> tuple[bytes, bool]:
    """What the server sends back to `payload`, and whether it then closed."""
    with socket.create_connection((server.host, server.port), timeout=timeout) as s:
        s.sendall(payload)
        out, closed = b"", False
        try:
            while chunk := s.recv(65536):
                out += chunk
            closed = True
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            pass
        return out, closed


def answered_as_http1(reply: bytes) -> None:
    assert reply.startswith((b"HTTP/1.1 505", b"HTTP/1.1 400", b"HTTP/1.0 505", b"HTTP/1.0 400"))


@oneloop_only
def test_http_1_only(fresh, certs):
    server = fresh("h2_apps:app", "--http", "1", certs=(certs / "cert.pem", certs / "key.pem"))
    assert alpn_of(server, certs, ("h2", "http/1.1")) == "http/1.1"
    r = run(need("curl"), "-sk", "--http2", "-w", "\n%{http_version}", https(server) + "/")
    assert r.stdout == "hello\n1.1"
    clear = fresh("h2_apps:app", "--http", "1")
    answered_as_http1(raw_exchange(clear, PREFACE + settings())[0])
    r = run(need("curl"), "-s", "--http2-prior-knowledge", clear.url + "/")
    assert r.returncode != 0 or r.stdout != "hello"
    assert httpx.get(clear.url + "/").text == "hello"


@oneloop_only
def test_http_2_only(fresh, certs):
    server = fresh("h2_apps:app", "--http", "2", certs=(certs / "cert.pem", certs / "key.pem"))
    assert alpn_of(server, certs, ("h2", "http/1.1")) == "h2"
    try:
        chosen = alpn_of(server, certs, ("http/1.1",))
    except ssl.SSLError:
        chosen = None  # no_application_protocol alert
    assert chosen != "http/1.1"
    clear = fresh("h2_apps:app", "--http", "2")
    reply, closed = raw_exchange(clear, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not reply.startswith(b"HTTP/"), reply[:100]
    assert closed
    # The first frame of the reply: a SETTINGS (maybe), then a GOAWAY PROTOCOL_ERROR.
    frames, rest = [], reply
    while len(rest) >= 9:
        n = int.from_bytes(rest[:3], "big")
        frames.append((rest[3], rest[9 : 9 + n]))
        rest = rest[9 + n :]
    goaways = [p for t, p in frames if t == GOAWAY]
    assert goaways and int.from_bytes(goaways[0][4:8], "big") == PROTOCOL_ERROR, frames
    with httpx.Client(http1=False, http2=True) as client:
        assert client.get(clear.url + "/").text == "hello"


@oneloop_only
def test_wsgi_app_over_h2(fresh, certs):
    tls = fresh("h2_apps:wsgi_app", certs=(certs / "cert.pem", certs / "key.pem"))
    assert alpn_of(tls, certs, ("h2", "http/1.1")) == "h2"
    clear = fresh("h2_apps:wsgi_app")
    for server, kw in ((clear, {"http1": False}), (tls, {"verify": tls_context(certs)})):
        base = https(server) if server is tls else server.url
        with httpx.Client(http2=True, base_url=base, timeout=30, **kw) as client:
            r = client.get("/")
            assert (r.http_version, r.text) == ("HTTP/2", "wsgi HTTP/2")
            info = client.get("/environ").json()
            assert info["SERVER_PROTOCOL"] == "HTTP/2"
            assert info["HTTP_HOST"] == f"127.0.0.1:{server.port}"
            assert info["wsgi.url_scheme"] == ("https" if server is tls else "http")
            upload = os.urandom(1 << 20) * 8

            def pieces(body: bytes):
                for i in range(0, len(body), 50_000):
                    yield body[i : i + 50_000]

            r = client.post("/sha256", content=pieces(upload))
            assert r.json() == {"size": len(upload), "sha256": hashlib.sha256(upload).hexdigest()}
            # (Not from threads: httpx's threads can send HEADERS out of
            # stream-id order, which RFC 9113 makes a connection error.)
            assert [client.get("/").text for _ in range(40)] == ["wsgi HTTP/2"] * 40


# -- frameworks over h2 --------------------------------------------------------------------


@pytest.fixture(scope="module")
def starlette_h2(tmp_path_factory):
    with h2_server(tmp_path_factory.mktemp("st"), "framework_apps.starlette_app:app") as s:
        yield s


@pytest.fixture(scope="module")
def fastapi_h2(tmp_path_factory):
    with h2_server(tmp_path_factory.mktemp("fa"), "framework_apps.fastapi_app:app") as s:
        yield s


def test_starlette_over_h2(starlette_h2):
    with httpx.Client(http1=False, http2=True, base_url=starlette_h2.url) as client:
        r = client.get("/")
        assert (r.http_version, r.status_code, r.text) == ("HTTP/2", 200, "Hello from Starlette")
        info = client.get("/json?q=z").json()
        assert info["framework"] == "starlette" and info["query"] == {"q": "z"}
        if not REFERENCE:
            assert info["state_started"] == "yes" and info["same_loop"] is True
        r = client.post("/json-echo", json={"a": [1, {"b": None}]})
        assert (r.status_code, r.json()) == (201, {"received": {"a": [1, {"b": None}]}})
        assert client.post("/size", content=b"z" * 3_000_000).json() == {"size": 3_000_000}
        assert client.get("/stream").text == "".join(f"chunk {i}\n" for i in range(5))
        assert client.get("/items/0").status_code == 404
        assert client.get("/boom").status_code == 500
        assert [client.get("/").text for _ in range(64)] == ["Hello from Starlette"] * 64


def test_fastapi_over_h2(fastapi_h2):
    with httpx.Client(http1=False, http2=True, base_url=fastapi_h2.url) as client:
        r = client.get("/")
        assert (r.http_version, r.json()) == ("HTTP/2", {"hello": "fastapi"})
        first = client.get("/items/5?q=hat").json()
        assert first["item_id"] == 5 and first["q"] == "hat"
        r = client.post(
            "/items",
            json={"name": "pen", "price": 1.5, "tags": ["x"]},
            headers={"User-Agent": "ua-test"},
        )
        assert r.status_code == 201
        assert client.post("/items", json={"name": "pen"}).status_code == 422
        r = client.get("/sync", params={"delay": "0.2"})
        assert r.status_code == 200
    h2load = shutil.which("h2load")
    if h2load:
        r = run(h2load, "-n", "500", "-c", "2", "-m", "10", fastapi_h2.url + "/", timeout=120)
        counts = h2load_counts(r.stdout)
        assert counts["succeeded"] == 500 and counts["errored"] == 0, r.stdout
