"""HTTPS: certificates made with trustme, requests over TLS for ASGI and WSGI
apps, keep-alive and pipelining, large bodies, concurrent clients, client
certificates, and clients that do not speak TLS at all."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import test_cli
import trustme
from conftest import APPS, Client
from cryptography.hazmat.primitives import serialization
from test_cli import assert_cli_error, run_cli

launch = test_cli.launch  # the fixture that starts `python -m oneloop ARGS`


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path
    combined: Path
    encrypted_key: Path
    client: Path
    foreign_client: Path


PASSWORD = "s3cret-passw0rd"


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    d = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost", "::1")
    client = ca.issue_cert("client@example.org")
    foreign = trustme.CA().issue_cert("intruder@example.org")
    c = Certs(
        ca=d / "ca.pem",
        cert=d / "cert.pem",
        key=d / "key.pem",
        combined=d / "combined.pem",
        encrypted_key=d / "encrypted-key.pem",
        client=d / "client.pem",
        foreign_client=d / "foreign-client.pem",
    )
    ca.cert_pem.write_to_path(str(c.ca))
    c.cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(c.key))
    server.private_key_and_cert_chain_pem.write_to_path(str(c.combined))
    client.private_key_and_cert_chain_pem.write_to_path(str(c.client))
    foreign.private_key_and_cert_chain_pem.write_to_path(str(c.foreign_client))
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
    c.encrypted_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSWORD.encode()),
        )
    )
    return c


def tls_options(certs: Certs) -> list[str]:
    return ["--ssl-certfile", str(certs.cert), "--ssl-keyfile", str(certs.key)]


def client_context(certs: Certs, client_cert: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    if client_cert is not None:
        ctx.load_cert_chain(str(client_cert))
    return ctx


def https(server) -> str:
    return f"https://127.0.0.1:{server.port}"


def tls_socket(server, ctx: ssl.SSLContext, host: str = "127.0.0.1", timeout=10.0):
    raw = socket.create_connection((server.host, server.port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname=host)


def still_serves(server, certs: Certs) -> None:
    r = httpx.get(https(server) + "/alive", verify=client_context(certs), timeout=10)
    assert r.status_code == 200
    assert server.proc.poll() is None


# -- basics ----------------------------------------------------------------------


def test_https_asgi(serve, certs):
    server = serve("cli_apps:asgi_fn", *tls_options(certs))
    assert f"Serving ASGI3 app on https://127.0.0.1:{server.port}" in server.log()
    r = httpx.get(https(server) + "/secure?x=1", verify=client_context(certs))
    assert r.status_code == 200
    info = r.json()
    assert info["scheme"] == "https"
    assert info["path"] == "/secure"
    assert info["server"] == ["127.0.0.1", server.port]
    assert info["client"][0] == "127.0.0.1"


def test_https_wsgi(serve, certs):
    server = serve("cli_apps:wsgi_fn", *tls_options(certs))
    assert f"Serving WSGI app on https://127.0.0.1:{server.port}" in server.log()
    r = httpx.get(https(server) + "/secure", verify=client_context(certs))
    assert r.status_code == 200
    info = r.json()
    assert info["wsgi.url_scheme"] == "https"
    assert info["PATH_INFO"] == "/secure"
    assert info["SERVER_PORT"] == str(server.port)
    assert info["REMOTE_ADDR"] == "127.0.0.1"


def test_https_by_host_name(serve, certs):
    server = serve("cli_apps:asgi_fn", *tls_options(certs))
    r = httpx.get(f"https://localhost:{server.port}/", verify=client_context(certs))
    assert r.json()["scheme"] == "https"


def test_certificate_and_key_in_one_file(serve, certs):
    server = serve("cli_apps:asgi_fn", "--ssl-certfile", str(certs.combined))
    assert httpx.get(https(server), verify=client_context(certs)).json()["scheme"] == "https"


def test_encrypted_key_with_password(serve, certs):
    server = serve(
        "cli_apps:asgi_fn",
        "--ssl-certfile",
        str(certs.cert),
        "--ssl-keyfile",
        str(certs.encrypted_key),
        "--ssl-keyfile-password",
        PASSWORD,
    )
    assert httpx.get(https(server), verify=client_context(certs)).status_code == 200


def test_encrypted_key_with_wrong_password(certs):
    result = run_cli(
        "--app-dir",
        str(APPS),
        "--port",
        "0",
        "--ssl-certfile",
        str(certs.cert),
        "--ssl-keyfile",
        str(certs.encrypted_key),
        "--ssl-keyfile-password",
        "wrong",
        "cli_apps:wsgi_fn",
    )
    assert_cli_error(result, "TLS")


def test_encrypted_key_without_password_fails_without_prompting(certs):
    try:
        result = run_cli(
            "--app-dir",
            str(APPS),
            "--port",
            "0",
            "--ssl-certfile",
            str(certs.cert),
            "--ssl-keyfile",
            str(certs.encrypted_key),
            "cli_apps:wsgi_fn",
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the server hung asking for the key's password")
    assert_cli_error(result, "TLS")


def test_key_not_matching_certificate(certs, tmp_path):
    other = trustme.CA().issue_cert("127.0.0.1")
    wrong_key = tmp_path / "other-key.pem"
    other.private_key_pem.write_to_path(str(wrong_key))
    result = run_cli(
        "--app-dir",
        str(APPS),
        "--port",
        "0",
        "--ssl-certfile",
        str(certs.cert),
        "--ssl-keyfile",
        str(wrong_key),
        "cli_apps:wsgi_fn",
    )
    assert_cli_error(result, "TLS")


def test_bad_cipher_list_is_one_line(certs):
    result = run_cli(
        "--app-dir",
        str(APPS),
        "--port",
        "0",
        *tls_options(certs),
        "--ssl-ciphers",
        "NO-SUCH-CIPHER",
        "cli_apps:wsgi_fn",
    )
    assert_cli_error(result, "TLS")


def test_cipher_list_applies(serve, certs):
    server = serve("cli_apps:asgi_fn", *tls_options(certs), "--ssl-ciphers", "ECDHE+AESGCM")
    ctx = client_context(certs)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.3 suites are not set by cipher lists
    with tls_socket(server, ctx) as s:
        assert "GCM" in s.cipher()[0]
        with Client(s) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert c.response()[0] == 200


@pytest.mark.parametrize(
    ("app", "options", "chosen"),
    [
        ("cli_apps:asgi_fn", [], "h2"),
        ("cli_apps:asgi_fn", ["--http", "1"], "http/1.1"),
        ("cli_apps:wsgi_fn", [], "h2"),
        ("cli_apps:wsgi_fn", ["--http", "1"], "http/1.1"),
    ],
)
def test_alpn_offers_h2_unless_http_1(serve, certs, app, options, chosen):
    server = serve(app, *tls_options(certs), *options)
    ctx = client_context(certs)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with tls_socket(server, ctx) as s:
        assert s.selected_alpn_protocol() == chosen
        if chosen == "http/1.1":
            with Client(s) as c:
                c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert c.response()[0] == 200
        else:  # the server's SETTINGS frame comes first
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            assert s.recv(9)[3] == 0x04


def test_http2_only_answers_http11_with_goaway(serve, certs):
    server = serve("cli_apps:asgi_fn", *tls_options(certs), "--http", "2")
    ctx = client_context(certs)
    ctx.set_alpn_protocols(["http/1.1"])
    with tls_socket(server, ctx) as s:
        assert s.selected_alpn_protocol() is None  # no protocol in common
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    # The server's SETTINGS, then GOAWAY with PROTOCOL_ERROR (1), then the close.
    frames, i = [], 0
    while i + 9 <= len(data):
        length = int.from_bytes(data[i : i + 3], "big")
        frames.append((data[i + 3], data[i + 9 : i + 9 + length]))
        i += 9 + length
    goaway = [payload for kind, payload in frames if kind == 0x07]
    assert goaway and int.from_bytes(goaway[0][4:8], "big") == 1, frames


# -- keep-alive, pipelining, big bodies, concurrency --------------------------------


def test_many_keep_alive_requests_on_one_connection(serve, certs):
    server = serve("cli_apps:asgi_fn", *tls_options(certs))
    with tls_socket(server, client_context(certs)) as s, Client(s) as c:
        ports = set()
        for i in range(100):
            c.send(f"GET /k/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, _, body = c.response()
            assert status == 200
            info = json.loads(body)
            assert info["path"] == f"/k/{i}"
            assert info["scheme"] == "https"
            ports.add(info["client"][1])
        assert len(ports) == 1


def test_keep_alive_with_httpx(serve, certs):
    server = serve("cli_apps:wsgi_fn", *tls_options(certs))
    with httpx.Client(verify=client_context(certs)) as client:
        ports = {client.get(https(server) + f"/{i}").json()["REMOTE_PORT"] for i in range(50)}
    assert len(ports) == 1  # all over one TLS connection


@pytest.mark.parametrize("app", ["cli_apps:asgi_fn", "cli_apps:wsgi_fn"])
def test_pipelined_requests_over_tls(serve, certs, app):
    server = serve(app, *tls_options(certs))
    with tls_socket(server, client_context(certs)) as s, Client(s) as c:
        c.send(b"".join(f"GET /p{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(20)))
        for i in range(20):
            status, _, body = c.response()
            assert status == 200
            info = json.loads(body)
            assert info.get("path", info.get("PATH_INFO")) == f"/p{i}"


@pytest.mark.parametrize("app", ["cli_apps:asgi_fn", "cli_apps:wsgi_fn"])
def test_large_post_and_large_response_over_tls(serve, certs, app):
    server = serve(app, *tls_options(certs))
    body = bytes(range(256)) * (6 * 1024 * 1024 // 256) + b"tail"
    with httpx.Client(verify=client_context(certs), timeout=60) as client:
        r = client.post(https(server) + "/upload", content=body)
        assert r.status_code == 200
        info = r.json()
        assert info["body_len"] == len(body)
        assert info["body_sha256"] == hashlib.sha256(body).hexdigest()
        n = 8 * 1024 * 1024 + 17
        r = client.get(https(server) + f"/big/{n}")
        assert r.status_code == 200
        expected = (bytes(range(256)) * (n // 256 + 1))[:n]
        assert len(r.content) == n
        assert hashlib.sha256(r.content).digest() == hashlib.sha256(expected).digest()
        # and the connection is still good for another request
        assert client.get(https(server) + "/after").status_code == 200


def test_chunked_upload_over_tls(serve, certs):
    server = serve("cli_apps:asgi_fn", *tls_options(certs))

    def parts():
        for i in range(50):
            yield bytes([i % 256]) * 10_000

    expected = b"".join(parts())
    r = httpx.post(https(server) + "/chunked", content=parts(), verify=client_context(certs))
    assert r.json()["body_sha256"] == hashlib.sha256(expected).hexdigest()


def test_request_in_one_byte_tls_records(serve, certs):
    server = serve("cli_apps:asgi_fn", *tls_options(certs))
    raw = b"POST /tiny HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    with tls_socket(server, client_context(certs)) as s, Client(s) as c:
        for i in range(len(raw)):
            c.send(raw[i : i + 1])  # each send is its own TLS record
        status, _, body = c.response()
    assert status == 200
    info = json.loads(body)
    assert info["path"] == "/tiny"
    assert info["body_sha256"] == hashlib.sha256(b"hello").hexdigest()


@pytest.mark.parametrize("app", ["cli_apps:asgi_fn", "cli_apps:wsgi_fn"])
def test_concurrent_tls_clients(serve, certs, app):
    """8 clients at once, each over 4 successive keep-alive connections of 10
    requests; every request answered at once (a stall would time out)."""
    server = serve(app, *tls_options(certs))

    def worker(n: int) -> list:
        failures = []
        for conn in range(4):
            with httpx.Client(verify=client_context(certs), timeout=4) as client:
                for i in range(10):
                    body = f"{n}-{conn}-{i}".encode()
                    try:
                        r = client.post(https(server) + f"/c{n}/{conn}/{i}", content=body)
                        digest = r.json()["body_sha256"]
                    except httpx.TransportError as exc:
                        failures.append((n, conn, i, repr(exc)))
                        break
                    if r.status_code != 200 or digest != hashlib.sha256(body).hexdigest():
                        failures.append((n, conn, i, r.status_code))
        return failures

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        failures = [f for result in pool.map(worker, range(8)) for f in result]
    assert failures == []


def test_client_hangs_up_mid_response(serve, certs):
    server = serve("cli_apps:asgi_fn", *tls_options(certs))
    for _ in range(3):
        with tls_socket(server, client_context(certs)) as s:
            s.sendall(b"GET /big/20000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(1000).startswith(b"HTTP/1.1 200")
        # closed with megabytes unread
    still_serves(server, certs)


def test_https_over_unix_socket(launch, certs, tmp_path):
    path = tmp_path / "tls.sock"
    launch("--app-dir", str(APPS), "-b", f"unix:{path}", *tls_options(certs), "cli_apps:asgi_fn")
    transport = httpx.HTTPTransport(uds=str(path), verify=client_context(certs))
    with httpx.Client(transport=transport) as client:
        info = client.get("https://localhost/over-unix").json()
    assert info["scheme"] == "https"
    assert info["path"] == "/over-unix"


# -- client certificates ---------------------------------------------------------------


def mtls_server(serve, certs, reqs="required"):
    return serve(
        "cli_apps:asgi_fn",
        *tls_options(certs),
        "--ssl-ca-certs",
        str(certs.ca),
        "--ssl-cert-reqs",
        reqs,
    )


def test_client_certificate_required(serve, certs):
    server = mtls_server(serve, certs)
    with pytest.raises((httpx.TransportError, ssl.SSLError)):
        httpx.get(https(server) + "/", verify=client_context(certs), timeout=10)
    with pytest.raises((httpx.TransportError, ssl.SSLError)):
        ctx = client_context(certs, certs.foreign_client)
        httpx.get(https(server) + "/", verify=ctx, timeout=10)
    r = httpx.get(https(server) + "/", verify=client_context(certs, certs.client), timeout=10)
    assert r.status_code == 200
    assert r.json()["scheme"] == "https"
    assert server.proc.poll() is None


def test_client_certificate_required_raw_handshake(serve, certs):
    """Without a certificate no request gets through: TLS 1.3 reports it on the
    first read, TLS 1.2 during the handshake."""
    server = mtls_server(serve, certs)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_context(certs)
        ctx.minimum_version = ctx.maximum_version = version
        got = b""
        with pytest.raises((ssl.SSLError, ConnectionError)), tls_socket(server, ctx) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            got = s.recv(1000)
            if not got:
                raise ConnectionResetError("closed without an answer")
        assert b"HTTP/1.1 200" not in got


def test_client_certificate_optional(serve, certs):
    server = mtls_server(serve, certs, "optional")
    assert httpx.get(https(server) + "/", verify=client_context(certs)).status_code == 200
    r = httpx.get(https(server) + "/", verify=client_context(certs, certs.client))
    assert r.status_code == 200
    with pytest.raises((httpx.TransportError, ssl.SSLError)):
        httpx.get(https(server) + "/", verify=client_context(certs, certs.foreign_client))
    still_serves(server, certs)


# -- clients that do not speak TLS -----------------------------------------------------


def test_plain_http_to_tls_port(serve, certs):
    server = serve("cli_apps:asgi_fn", *tls_options(certs))
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            closed = False
            try:
                while chunk := s.recv(4096):
                    data += chunk
                closed = True
            except ConnectionResetError:
                closed = True
            except TimeoutError:
                closed = False
        assert closed, "the server kept a non-TLS connection open"
        assert b"200 OK" not in data
    still_serves(server, certs)
    assert "Traceback" not in server.log()


def test_garbage_and_truncated_handshakes(serve, certs):
    server = serve("cli_apps:wsgi_fn", *tls_options(certs))
    # a real ClientHello, cut short
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context(certs).wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    assert len(hello) > 100
    for payload in (b"", b"\x16\x03\x01", hello[:50], hello, b"\x00" * 1000, b"\xff" * 70000):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            if payload:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    s.sendall(payload)
    still_serves(server, certs)


def test_idle_connection_without_handshake_is_closed(serve, certs):
    server = serve("cli_apps:asgi_fn", *tls_options(certs), "--timeout-request-head", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=6) as s:
        started = time.monotonic()
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail("a connection that never sent a ClientHello was kept open")
        assert time.monotonic() - started < 5
    still_serves(server, certs)


def test_sigterm_with_idle_tls_connections(serve, certs):
    """Idle kept-alive TLS connections are not closed under their clients
    on TERM, and do not hold the stop beyond their keep-alive deadline (then
    the lingering close's wait for a client that never closes)."""
    server = serve("cli_apps:asgi_fn", "--timeout-keep-alive", "1", *tls_options(certs))
    conns = [tls_socket(server, client_context(certs)) for _ in range(3)]
    try:
        for s in conns:
            c = Client(s)  # not closed: the connection stays open, idle
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert c.response()[0] == 200
        started = time.monotonic()
        assert server.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 1 + 2 + 1.5
    finally:
        for s in conns:
            s.close()


# -- curl --------------------------------------------------------------------------------


def test_curl_with_cacert(serve, certs):
    server = serve("cli_apps:wsgi_fn", *tls_options(certs))
    curl = shutil.which("curl")
    url = f"https://127.0.0.1:{server.port}/curl?z=9"
    if curl:
        result = subprocess.run(
            [curl, "-sS", "--cacert", str(certs.ca), "-d", "posted", url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        result = subprocess.run(
            [curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode != 0  # curl without the CA must refuse the certificate
    else:  # no curl on this machine: the same request with Python's TLS client
        r = httpx.post(url, content=b"posted", verify=client_context(certs))
        info = r.json()
    assert info["wsgi.url_scheme"] == "https"
    assert info["QUERY_STRING"] == "z=9"
    assert info["REQUEST_METHOD"] == "POST"
    assert info["body_len"] == len("posted")


@pytest.mark.parametrize(
    ("cert", "key", "fragments"),
    [
        ("cert", None, ["--ssl-certfile", "cert.pem", "holds no private key", "--ssl-keyfile"]),
        ("cert", "client", ["private key in", "client.pem", "does not match", "cert.pem"]),
        ("garbage", "key", ["--ssl-certfile", "garbage.pem", "holds no PEM certificate"]),
        ("cert", "garbage", ["--ssl-keyfile", "garbage.pem", "holds no PEM private key"]),
    ],
)
def test_tls_file_mistakes_are_named(certs, tmp_path, cert, key, fragments):
    """OpenSSL says "[SSL] PEM lib" for all of these: the error names the
    file and what it lacks."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a PEM file\n")
    files = {"cert": certs.cert, "key": certs.key, "client": certs.client, "garbage": garbage}
    options = ["--ssl-certfile", str(files[cert])]
    if key:
        options += ["--ssl-keyfile", str(files[key])]
    result = run_cli("--app-dir", str(APPS), "--port", "0", *options, "cli_apps:wsgi_fn")
    assert_cli_error(result, "cannot set up TLS", *fragments)
    assert "PEM lib" not in result.stderr
