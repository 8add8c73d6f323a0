"""Regression tests for defects of the connection core (src/core), each over
real sockets against a real server process (apps/core_defect_apps.py):

1. WSGI: the timer tick runs on the pool thread that polls; answering a timed
   out head with 408 there must not freeze every other connection when that
   client's socket takes no more bytes.
2. Timeouts of 0 mean "no limit" for the head, the body and sending, in ASGI
   and WSGI alike (sendfile included), and a huge timeout is a long one.
3. TLS connections get the lingering close too: a 413 sent to an upload in
   progress must reach the client instead of being destroyed by the reset
   that closing with unread input causes.
4. Writing to a connection the client reset never raises SIGPIPE, so a server
   whose SIGPIPE is not ignored is not killed (writev and sendfile included).
5. wsgi.file_wrapper over a file whose read() returns no sized object, and
   start_response(exc_info) with a value that is not an exception, fail with a
   clean TypeError for the app, not a SystemError or worse.
6. WSGI: an event a pool thread fetched (the pool lock dropped around the
   wait) never reaches a connection another thread closed and freed before
   the batch was taken over.
7. At shutdown, past the pool threads' join timeout: no descriptor a thread
   still uses (its connection's socket, the bridge's eventfd) is closed under
   it, so no write of that thread lands in a file that reused the number.
8. WSGI: a connection's events can reach another pool thread as soon as its
   socket is in the epoll set, so its handle must be known before it is
   added; else the thread that served it re-armed it with no handle and its
   next request went unanswered until the keep-alive timeout.

6, 7 and 8 widen a window of a few microseconds by preloading
apps/core_defect_delays.c into the server, which pauses one thread at the
point named (built with the system's C compiler); 6 shows its failure as a
sanitizer report under scripts/test-py-asan.sh.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    APPS,
    Client,
    Server,
    connect,
    listening_socket,
    request,
    sanitizer_report,
    wait_ready,
)

APP = "core_defect_apps"
# One process, no supervisor: the one started serves (and a worker outliving
# its join timeout is not killed by a supervisor first).
ALONE = ("--workers", "0")
CHUNK = 65536


def get(path: str, *extra: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: test", *extra]) + "\r\n\r\n").encode()


def assert_serves(server: Server, timeout: float = 5.0) -> None:
    status, _, body = request(server, get("/p/alive"), timeout=timeout)
    assert (status, body) == (200, b"GET /p/alive")
    assert server.proc.poll() is None


def small_rcvbuf_connect(server: Server, rcvbuf: int = 65536, timeout: float = 10.0) -> Client:
    """A connection whose receive buffer (set before connecting, so the
    window is clamped) keeps the server from pushing megabytes ahead."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect((server.host, server.port))
    return Client(s, timeout)


def read_exactly(c: Client, n: int) -> bytes:
    c._need(n)
    data, c.buf = c.buf[:n], c.buf[n:]
    return data


def stream_bytes(chunks: int) -> bytes:
    return b"".join(bytes([i % 256]) * CHUNK for i in range(chunks))


def dechunk(c: Client) -> bytes:
    return c._chunked()


# ---------------------------------------------------------------- 1. the WSGI tick


def test_wsgi_head_timeout_408_to_a_full_socket_does_not_freeze_the_pool(serve):
    """Client A's request is answered in full, but its socket's send buffer is
    left full (A never reads), and A has pipelined the start of a second head.
    When that head times out, the tick answers 408. The pool thread running
    the tick is the one that polls for everybody: if it waits for A to take
    the 408 (up to --timeout-send), no other client is served meanwhile.

    The app fills A's socket itself (/fill-socket), standing in for a
    response whose last write happens to leave the kernel buffers full. A
    client that merely never reads a big response does not show the defect:
    the thread writing it is marked busy, the monitor hands polling to
    another thread, and --timeout-send drops A while a request is on it."""
    server = serve(
        f"{APP}:wsgi",
        "--timeout-request-head",
        "1",
        "--timeout-send",
        "8",
        "--timeout-keep-alive",
        "30",
    )
    assert_serves(server)
    a = small_rcvbuf_connect(server)
    try:
        # the second head stays incomplete: its deadline starts when the
        # first response is done and the connection is handed back to epoll
        a.send(get("/fill-socket") + b"GET /p/second HTTP/1.1\r\nHost: te")
        server.wait_log("APP-SOCKET-FULL", timeout=10)
        full_at = time.monotonic()
        slow = []
        # the head deadline passes ~1 s after that: watch well past it
        while time.monotonic() - full_at < 3.0:
            started = time.monotonic()
            try:
                assert_serves(server, timeout=2.5)
            except (TimeoutError, ConnectionError) as exc:
                # a frozen pool answers late, or (its head deadline passed
                # meanwhile) closes the new connection unanswered
                pytest.fail(
                    f"{started - full_at:.1f} s after client A's socket filled up, "
                    f"a request got {exc!r} instead of an answer: the pool is frozen"
                )
            took = time.monotonic() - started
            if took > 1.0:
                slow.append((round(started - full_at, 1), round(took, 1)))
            time.sleep(0.05)
        assert not slow, f"requests answered late (at s, took s): {slow}"
    finally:
        a.sock.close()


# ---------------------------------------------------------------- 2. timeouts of 0


@pytest.fixture(params=["asgi", "wsgi"])
def app(request) -> str:
    return f"{APP}:{request.param}"


def dropped(what: str, exc: BaseException) -> str:
    return f"the server dropped the connection {what} ({type(exc).__name__}: {str(exc)[:80]})"


@pytest.mark.parametrize("value", ["0", "1e7"])
def test_body_timeout_0_or_huge_is_no_limit(serve, app, value):
    """--timeout-request-body 0 is "no limit" (ASGI took it as "expire now")."""
    server = serve(app, "--timeout-request-body", value)
    with connect(server) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n" + b"a" * 300)
        time.sleep(1.5)  # the client pauses in the middle of the body
        try:
            c.send(b"b" * 700)
            status, _, body = c.response()
        except OSError as exc:
            pytest.fail(dropped("while the body paused", exc))
    assert (status, body) == (200, b"a" * 300 + b"b" * 700)
    assert_serves(server)


def test_head_timeout_0_is_no_limit(serve, app):
    """--timeout-request-head 0 is "no limit" (both interfaces took it as
    "expire now" and answered 408 at the next tick)."""
    server = serve(app, "--timeout-request-head", "0")
    with connect(server) as c:
        c.send(b"GET /p/slow-head HTTP/1.1\r\nHost: te")
        time.sleep(1.5)  # the client pauses in the middle of the head
        try:
            c.send(b"st\r\n\r\n")
            status, _, body = c.response()
        except OSError as exc:
            pytest.fail(dropped("while the head paused", exc))
    assert (status, body) == (200, b"GET /p/slow-head"), body
    assert_serves(server)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> tuple[Path, bytes]:
    import random

    data = random.Random(1).randbytes(16 * 1024 * 1024)
    path = tmp_path_factory.mktemp("files") / "big.bin"
    path.write_bytes(data)
    return path, data


SLOW_READERS = {
    "asgi-stream": ("asgi", "/stream?chunks=256"),
    "wsgi-stream": ("wsgi", "/stream?chunks=256"),
    "wsgi-sendfile": ("wsgi", "/file?path={path}"),
}


@pytest.mark.parametrize("value", ["0", "1e7"])
@pytest.mark.parametrize("kind", list(SLOW_READERS))
def test_send_timeout_0_or_huge_is_no_limit(serve, big_file, kind, value):
    """A client that does not read for a while gets the whole 16 MiB response
    when --timeout-send is 0 ("no limit"; ASGI took it as "expire now", the
    WSGI sendfile path as "poll for 0 ms", giving up at the first EAGAIN) or
    huge (1e7 s: (int)(1e7 * 1000) overflows an int in the sendfile path)."""
    interface, target = SLOW_READERS[kind]
    path, data = big_file
    server = serve(f"{APP}:{interface}", "--timeout-send", value)
    with small_rcvbuf_connect(server) as c:
        c.send(get(target.format(path=path)))
        time.sleep(1.5)  # not reading: the server's writes back up meanwhile
        try:
            status, headers, _ = c.head()
            assert status == 200
            if kind == "wsgi-sendfile":
                assert headers["content-length"] == str(len(data))
                body = read_exactly(c, len(data))
                expected = data
            else:
                body = dechunk(c)
                expected = stream_bytes(256)
        except OSError as exc:
            pytest.fail(dropped("before the whole response was read", exc))
    assert len(body) == len(expected)
    assert hashlib.sha256(body).digest() == hashlib.sha256(expected).digest()
    assert_serves(server)


# ---------------------------------------------------------------- 3. TLS and 413


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:
    """A CA and a certificate for 127.0.0.1 it signed (as in test_tls.py)."""
    import trustme

    d = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"ca": d / "ca.pem", "cert": d / "cert.pem", "key": d / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    paths["cert"].write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(paths["key"]))
    return paths


def upload_then_read_answer(
    server: Server, ctx: ssl.SSLContext, rcvbuf: int | None = None
) -> tuple[bytes, str]:
    """Start a 50 MB upload over TLS, keep sending for a while (bounded, the
    way a client does before it looks at its input), then read the answer.
    Returns what was read and how sending ended."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(10)
    raw.connect((server.host, server.port))
    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        s.sendall(
            b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 50000000\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
        s.setblocking(False)
        block = b"u" * 16384
        sent, ended = 0, "sent for 0.5 s"
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and sent < 16 * 1024 * 1024:
            try:
                sent += s.send(block)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                select.select([], [s], [], 0.05)
            except OSError as exc:
                ended = f"sending failed after {sent} bytes: {exc!r}"
                break
        s.settimeout(5)
        c = Client(s, 5)
        try:
            status, _, body = c.response()
        except OSError as exc:
            return c.buf, f"{ended}; reading failed: {exc!r}"
        return b"%d %s" % (status, body), ended
    finally:
        s.close()


@pytest.mark.parametrize("rcvbuf", [None, 1], ids=["default-rcvbuf", "small-rcvbuf"])
@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_tls_413_reaches_a_client_still_uploading(serve, certs, interface, rcvbuf):
    """The server refuses the upload at once (Content-Length over the limit)
    while the client is still sending. Closing with the client's bytes unread
    makes the kernel send a reset, which destroys the 413 unless the client
    has it already: Linux keeps data that arrived before the reset, so the
    413 is lost when it could not be sent yet -- here the client's receive
    window is small and full of the TLS 1.3 session tickets it has not read
    (some systems drop even data already received when a reset arrives). Plain TCP gets a lingering
    close (shut the write side, drain the input a while) for this; TLS must
    too, and then the 413 waits in the server's socket until the client
    reads."""
    server = serve(
        f"{APP}:{interface}",
        "--ssl-certfile",
        str(certs["cert"]),
        "--ssl-keyfile",
        str(certs["key"]),
        "--limit-request-body",
        "1000",
    )
    ctx = ssl.create_default_context(cafile=str(certs["ca"]))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3  # session tickets after the handshake
    failures = []
    for attempt in range(5):
        answer, how = upload_then_read_answer(server, ctx, rcvbuf)
        if not answer.startswith(b"413 "):
            failures.append(f"attempt {attempt}: read {answer[:60]!r} ({how})")
    assert not failures, "the 413 did not reach the client:\n" + "\n".join(failures)
    assert server.proc.poll() is None


# ---------------------------------------------------------------- 4. SIGPIPE

# `python -m oneloop` with SIGPIPE back to its default action (Python ignores
# it at startup; an embedding program, or an app that restores it, does not).
SIGPIPE_LAUNCHER = (
    "import runpy, signal, sys; "
    "signal.signal(signal.SIGPIPE, signal.SIG_DFL); "
    "sys.argv[0] = 'oneloop'; "
    "runpy.run_module('oneloop', run_name='__main__', alter_sys=True)"
)


@pytest.fixture
def serve_sigpipe_default(tmp_path: Path) -> Iterator:
    """Like conftest's `serve`, for one server (--workers 0: the process that
    serves is the one started) whose SIGPIPE is not ignored."""
    started: list[Server] = []

    def start(app: str, *options: str) -> Server:
        sock = listening_socket()
        port = sock.getsockname()[1]
        log_path, out_path = tmp_path / "sigpipe.err", tmp_path / "sigpipe.out"
        cmd = [
            sys.executable,
            "-c",
            SIGPIPE_LAUNCHER,
            "--app-dir",
            str(APPS),
            "--fd",
            str(sock.fileno()),
            "--workers",
            "0",
            *options,
            app,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(log_path, "wb") as err, open(out_path, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, pass_fds=[sock.fileno()], env=env)
        sock.close()
        server = Server(proc, "127.0.0.1", port, log_path, out_path)
        started.append(server)
        wait_ready(server.host, port, proc, log_path)
        return server

    yield start
    for server in started:
        with contextlib.suppress(Exception):
            server.stop(signal.SIGKILL if server.proc.poll() is None else signal.SIGTERM, timeout=5)


def connection_inode(server: Server, client_port: int) -> str:
    """The inode of the server's socket for our connection (while established)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if (
            int(local.split(":")[1], 16) == server.port
            and int(remote.split(":")[1], 16) == client_port
        ):
            return fields[9]
    raise AssertionError(f"no server socket connected to port {client_port}")


def holds_socket(pid: int, inode: str) -> bool:
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                return True
    return False


def reset_mid_response(server: Server, target: str, after: int = 256 * 1024) -> str:
    """Ask for a long response, half-close (the request is all there is), read
    part of the response, then close with a reset (SO_LINGER 0). Having got
    our FIN, the server's socket is in CLOSE_WAIT, where the reset makes the
    next write fail with EPIPE -- and raise SIGPIPE unless told not to.
    Returns the inode of the server's socket."""
    c = small_rcvbuf_connect(server)
    try:
        c.send(get(target))
        c.sock.shutdown(socket.SHUT_WR)
        status, _, _ = c.head()
        assert status == 200
        inode = connection_inode(server, c.sock.getsockname()[1])
        got = len(c.buf)
        while got < after:
            got += len(c._more())
    finally:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.sock.close()
    return inode


def assert_survived(server: Server, inode: str, what: str) -> None:
    """Until the server has closed its socket (it wrote, failed, gave up) or died."""
    deadline = time.monotonic() + 5
    while server.proc.poll() is None and holds_socket(server.proc.pid, inode):
        assert time.monotonic() < deadline, "the server kept a reset connection open"
        time.sleep(0.02)
    code = server.proc.poll()
    if code is not None:
        cause = " (SIGPIPE)" if code == -signal.SIGPIPE else ""
        pytest.fail(f"the server died with status {code}{cause} {what}")
    assert_serves(server)


SIGPIPE_CASES = {
    # ASGI: send() after send(); the blocking pause keeps the loop from
    # noticing the reset before the next write
    "asgi-stream": ("asgi", "/stream?chunks=4000&pause=0.002"),
    "wsgi-stream": ("wsgi", "/stream?chunks=4000&pause=0.002"),
    "wsgi-sendfile": ("wsgi", "/file?path={path}"),
}


@pytest.mark.parametrize("kind", list(SIGPIPE_CASES))
def test_reset_mid_response_does_not_raise_sigpipe(serve_sigpipe_default, big_file, kind):
    interface, target = SIGPIPE_CASES[kind]
    server = serve_sigpipe_default(f"{APP}:{interface}")
    for _ in range(3):
        inode = reset_mid_response(server, target.format(path=big_file[0]))
        assert_survived(server, inode, "when a client reset its connection mid-response")


# ---------------------------------------------------------------- 5. WSGI misuse


def test_file_wrapper_read_returning_an_int_is_a_type_error(serve):
    """FileWrapper's __next__ must not return a value with an exception set
    when read() gives something without a length. Iterated by the server,
    whose bytes check replaces the pending error, the outcome is a clean 500
    with a TypeError either way: this one guards that outcome."""
    server = serve(f"{APP}:wsgi")
    mark = len(server.log())
    status, _, _ = request(server, get("/wrapper-int"))
    assert status == 500
    log = server.wait_log("Exception in WSGI application")[mark:]
    assert "TypeError" in log, log
    assert "SystemError" not in log, log
    assert_serves(server)


def test_file_wrapper_joined_by_the_app_is_a_type_error(serve):
    """The same wrapper consumed by the app itself (b"".join, as a buffering
    middleware does): the first next() must raise the TypeError; returning 42
    with the error pending makes the second read() call end in SystemError."""
    server = serve(f"{APP}:wsgi")
    mark = len(server.log())
    status, _, _ = request(server, get("/wrapper-int-joined"))
    assert status == 500
    log = server.wait_log("Exception in WSGI application")[mark:]
    assert "SystemError" not in log, log
    assert "TypeError" in log, log
    assert_serves(server)


@pytest.mark.parametrize("tb", ["str", "int"])
def test_start_response_exc_info_without_an_exception_is_a_type_error(serve, tb):
    """start_response(status, headers, exc_info) after the head was sent
    re-raises exc_info; a value that is not an exception must give the app a
    TypeError, not a SystemError -- and, with a real traceback, must not be
    handed to PyException_SetTraceback, which stores the traceback where an
    exception keeps it, whatever the object: in the small int 5 that is the
    type of the small int 6 (and a segfault with PYTHONMALLOC=malloc)."""
    server = serve(f"{APP}:wsgi")
    mark = len(server.log())
    with connect(server) as c:
        c.send(get(f"/exc-info?tb={tb}"))
        status, _, _ = c.head()
        assert status == 200
        body = c.read_to_eof()
    # chunked, cut after what was sent: no last chunk
    assert b"partial" in body and not body.endswith(b"0\r\n\r\n"), body
    log = server.wait_log("APP-START-RESPONSE-")[mark:]
    # the process is sound afterwards (the worst outcomes first)
    for _ in range(20):
        assert_serves(server)
    status, _, body = request(server, get("/ints"))
    assert (status, body) == (200, b"ok")
    assert "APP-START-RESPONSE-RAISED TypeError" in log, log
    log = server.wait_log("Exception in WSGI application")[mark:]
    assert "SystemError" not in log, log


# ---------------------------------------------------------------- 6. stale events (WSGI)


@pytest.fixture(scope="module")
def delays_lib(tmp_path_factory) -> Path:
    """apps/core_defect_delays.c built as a preloadable library."""
    out = tmp_path_factory.mktemp("delays") / "core_defect_delays.so"
    cc = os.environ.get("CC", "cc")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # no sanitizer in cc
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(APPS / "core_defect_delays.c"), "-ldl"],
        check=True,
        env=env,
    )
    return out


@pytest.fixture
def delays(delays_lib, tmp_path) -> tuple[Path, dict[str, str]]:
    """The trigger file core_defect_delays.c reads (absent: no delay) and
    the environment of a server with the library preloaded, after the
    sanitizer runtimes when scripts/test-py-asan.sh preloads them."""
    trigger = tmp_path / "delay"
    preload = " ".join(filter(None, [os.environ.get("LD_PRELOAD", ""), str(delays_lib)]))
    return trigger, {"LD_PRELOAD": preload, "ONELOOP_TEST_DELAY": str(trigger)}


def assert_clean_exit(server: Server, timeout: float = 20.0) -> str:
    """The server exits by itself with status 0 and logged no sanitizer
    report; returns its log."""
    try:
        code = server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        code = None
    log = server.log()
    report = sanitizer_report(log)
    if report:
        pytest.fail(f"sanitizer report in the server log:\n{report}", pytrace=False)
    assert code == 0, f"server exit status {code}:\n{log[-3000:]}"
    return log


def test_wsgi_pool_poll_window_sees_no_connection_freed_meanwhile(serve, delays):
    """A pool thread waits in epoll_wait without the pool lock. Events it
    has fetched name connections that another thread may close and free
    before the thread takes its lock again: then the batch held pointers to
    freed memory, read in run() (scrubbing the batch, as closing did, misses
    a batch not copied in yet). Here the polling thread is made to pause
    right after its wait returns (core_defect_delays.c) with kept-alive
    connections' next requests in the batch, and the loop's thread shuts the
    server down meanwhile (it closed idle connections then), while a request
    in flight on the other thread keeps the pool running past the pause. An
    event must never reach a connection closed after it was fetched (the
    reactor's handles: reactor.h), and the requests that arrived are
    answered. Under scripts/test-py-asan.sh the read of a freed connection
    is a report."""
    trigger, env = delays
    server = serve(
        f"{APP}:wsgi", *ALONE, "--threads", "2", "--timeout-graceful-shutdown", "10", env=env
    )
    clients = [connect(server, timeout=15) for _ in range(16)]
    sleeper = connect(server, timeout=15)
    try:
        for i, c in enumerate(clients):
            c.send(get(f"/p/first-{i}"))
            assert c.response()[2] == f"GET /p/first-{i}".encode()
        sleeper.send(get("/sleep?s=4"))  # the other thread polls meanwhile
        server.wait_log("APP-SLEEPING")
        time.sleep(0.1)
        trigger.write_text("poll 1500")  # from now on the poller pauses after each wait
        for i, c in enumerate(clients):  # kept alive and idle, they ask again ...
            c.send(get(f"/p/second-{i}"))
        time.sleep(0.3)  # ... the poller has their events, and pauses
        server.proc.send_signal(signal.SIGTERM)  # the loop's thread shuts down now
        time.sleep(0.5)
        trigger.unlink()  # the pause in progress ends in 0.7 s
        answers = []
        for c in [*clients, sleeper]:
            try:
                answers.append(c.response()[2])
            except OSError as exc:
                answers.append(exc)
        log = assert_clean_exit(server)
        assert "core_defect_delays: a pool thread's poll" in log, "the poll never paused"
        assert answers == [*(f"GET /p/second-{i}".encode() for i in range(16)), b"slept"], answers
    finally:
        for c in [*clients, sleeper]:
            c.sock.close()


def test_wsgi_connection_served_while_being_admitted_keeps_its_events(serve, delays):
    """Another pool thread may serve a connection the moment its socket is
    in the epoll set, while the accepting thread has not yet stored the
    connection's reactor handle. It re-arms the socket when done, and it
    used to re-arm it with the handle still unset (0): the next request's
    event resolved to nothing and was dropped, and the request waited for
    the keep-alive timeout, which closed the connection under it -- a lost
    request (seen under reloads: test_zero_loss). The accepting thread is
    made to pause right after the socket enters the set
    (core_defect_delays.c); the monitor passes polling to the other thread,
    which serves the first request; the second must be answered at once."""
    trigger, env = delays
    server = serve(f"{APP}:wsgi", *ALONE, "--threads", "2", "--timeout-keep-alive", "30", env=env)
    assert_serves(server)
    trigger.write_text("add 500")
    c = connect(server, timeout=10)
    try:
        c.send(get("/p/first"))
        assert c.response()[2] == b"GET /p/first"
        server.wait_log("core_defect_delays: a connection's entry into the set")
        c.send(get("/p/second"))
        c.sock.settimeout(3)
        try:
            status, _, body = c.response()
        except (TimeoutError, OSError) as exc:
            pytest.fail(f"the second request on the connection was not answered: {exc!r}")
        assert (status, body) == (200, b"GET /p/second")
    finally:
        c.sock.close()


# ---------------------------------------------------------------- 7. fds at shutdown


def reused_fds_server(serve, tmp_path: Path, env: dict[str, str], *options: str) -> Server:
    """A WSGI server whose shutdown hook takes the descriptor numbers the
    core frees at close (apps/core_defect_apps.py: CORE_DEFECT_FD_DIR); a
    graceful shutdown of 0.5 s, so a thread still in a view at 2 s (the
    join's timeout, graceful + 1 s) is left behind when the core closes."""
    fd_dir = tmp_path / "fds"
    fd_dir.mkdir()
    env = {**env, "CORE_DEFECT_FD_DIR": str(fd_dir), "CORE_DEFECT_FD_WAIT": "3"}
    return serve(
        f"{APP}:wsgi",
        *ALONE,
        "--threads",
        "1",
        "--timeout-graceful-shutdown",
        "0.5",
        *options,
        env=env,
    )


def fds_verdict(server: Server) -> str:
    log = server.wait_log("APP-FDS ", timeout=20)
    return log.split("APP-FDS ", 1)[1].splitlines()[0]


def test_shutdown_does_not_close_the_socket_a_pool_thread_writes_to(serve, tmp_path, delays):
    """A view is writing its response when the join of the pool threads
    times out (the thread has the socket's descriptor in hand, made to
    pause there by core_defect_delays.c): closing the socket under that
    thread frees its number, which the process may reuse at once (here: the
    shutdown hook's files), and the thread's write then lands in someone
    else's file. The socket must be shut down instead (the write fails) and
    closed by the thread when it lets go."""
    _, env = delays
    server = reused_fds_server(serve, tmp_path, env)
    with connect(server, timeout=15) as c:
        c.send(get("/write-at?ms=3000"))
        server.wait_log("APP-WRITING")
        server.proc.send_signal(signal.SIGTERM)
        verdict = fds_verdict(server)
    log = assert_clean_exit(server)
    assert "core_defect_delays: a socket write" in log, "the write never paused"
    assert verdict == "untouched", verdict


def test_shutdown_does_not_let_a_bridge_wake_up_land_in_a_reused_fd(serve, tmp_path, delays):
    """A view that calls a coroutine on the worker's loop wakes the loop by
    writing 8 bytes to the bridge's eventfd, with the GIL released: if the
    core closes that eventfd meanwhile (the join timed out while the thread
    was about to write) and the number is reused, the 8 bytes land in
    someone else's file. The write and the close are serialized (under the
    bridge lock). The thread is made to pause before its write
    (core_defect_delays.c) for longer than the shutdown takes to close the
    core and the hook to take the numbers. (uvloop: a gated asyncio loop
    lets the thread start the call itself, without the wake-up.)"""
    _, env = delays
    server = reused_fds_server(serve, tmp_path, env, "--loop", "uvloop")
    with connect(server, timeout=15) as c:
        c.send(get("/bridge-call?ms=3000"))
        server.wait_log("APP-CALLING")
        server.proc.send_signal(signal.SIGTERM)
        verdict = fds_verdict(server)
    log = assert_clean_exit(server)
    assert "core_defect_delays: an eventfd write" in log, "the wake-up never paused"
    assert verdict == "untouched", verdict


# ---------------------------------------------------------------- 8. stress (WSGI)


def assert_serves_clean(server: Server) -> None:
    """Serves, and logged no sanitizer report (a crash is reported as one)."""
    try:
        assert_serves(server)
    except (OSError, AssertionError):
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(2)  # a crash in progress: its report reaches the log
        if not sanitizer_report(server.log()):
            raise
    report = sanitizer_report(server.log())
    if report:
        pytest.fail(f"sanitizer report in the server log:\n{report}", pytrace=False)


@pytest.mark.asan_stress
def test_stress_wsgi_connections_expire_as_their_bytes_arrive(serve):
    """Round after round, a few hundred kept-alive connections go idle
    together, are closed gracefully together at their keep-alive deadline
    (lingering: the write side shut, input dropped), and are freed together
    by one tick when the lingering ends (2 s later) -- while each client
    sends more bytes at a moment spread around that tick. So the tick's
    frees meet those connections' readable events in the batch it came in,
    and in the batch of another pool thread that polls while the tick is
    busy (the monitor hands it the token). Under scripts/test-py-asan.sh an
    event delivered to a freed connection is a report. (WSGI has no
    counterpart of an ASGI app answering another connection's request:
    a connection's response is written by the one thread that holds it.)"""
    server = serve(
        f"{APP}:wsgi", *ALONE, "--threads", "4", "--timeout-keep-alive", "0.2", "--no-access-log"
    )
    rng = random.Random(20261203)
    n, linger = 250, 2.0
    budget = time.monotonic() + 40
    rounds = freed = 0
    while time.monotonic() < budget and rounds < 12:
        rounds += 1
        clients = [connect(server, timeout=10) for _ in range(n)]
        try:
            for i, c in enumerate(clients):
                c.send(get(f"/p/{rounds}-{i}"))
            for i, c in enumerate(clients):
                assert c.response()[2] == f"GET /p/{rounds}-{i}".encode()
            # the keep-alive deadline passes: each is closed gracefully (EOF)
            ready, _, _ = select.select([clients[0].sock], [], [], 5)
            assert ready and clients[0].sock.recv(1) == b"", "no graceful close"
            lingering_since = time.monotonic()
            # in bursts (so one wake-up has several), around the tick that
            # ends the lingering
            bursts = [clients[i : i + 25] for i in range(0, n, 25)]
            offsets = sorted(linger + rng.uniform(-0.25, 0.1) for _ in bursts)
            for offset, burst in zip(offsets, bursts, strict=True):
                delay = lingering_since + offset - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                for c in burst:
                    with contextlib.suppress(OSError):
                        c.sock.send(b"x" * 512)
            freed += n
        finally:
            for c in clients:
                c.sock.close()
        assert_serves_clean(server)
    assert rounds >= 6, f"only {rounds} rounds ({freed} connections) in the time budget"
