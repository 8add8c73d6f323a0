"""The connection core's event handling under adversarial timing.

1. In ASGI mode one wake-up of the loop handles a batch of epoll events whose
   data are raw connection pointers. Handling one event can free a connection
   whose event comes later in the same batch: the tick (timer event) expires a
   connection whose next bytes arrived meanwhile, or an app answers another
   connection's request and that connection turns out to be reset. The tests
   line those events up by blocking the loop (a route that sleeps in the app)
   while the clients act, so one wake-up sees all of them. The use of freed
   memory shows under scripts/test-py-asan.sh (the server dies with a report
   on stderr); the tests assert the server lives on, answers, and logged no
   sanitizer report.
2. A closing connection whose output is pending must not buffer whatever the
   client keeps sending. (WSGI is checked too, as a guard: its pool thread
   blocks on the write and reads nothing meanwhile.)
3. accept() failing for want of file descriptors must not make the server
   spin, and the client waiting in the backlog is served once an fd frees.

Servers run with --workers 0, so the process started is the one serving
(its pid is the one whose memory and CPU time are measured, and a crash is
not hidden by a supervisor starting a new worker).
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import socket
import struct
import subprocess
import time
from typing import NamedTuple

import pytest
from conftest import Client, connect, request, sanitizer_report

ASGI = "core_event_apps:app"
WSGI = "core_event_apps:wsgi"
ALONE = ("--workers", "0", "--no-access-log")


def get(path: str, *extra: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: test", *extra]) + "\r\n\r\n").encode()


def assert_alive(server) -> None:
    """The server process runs, answers a new request, and logged no
    sanitizer report."""
    try:
        answered = request(server, get("/ping"))
    except OSError as exc:
        answered = exc
        # a crash in progress: give its report time to reach the log
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(2)
    log = server.log()
    report = sanitizer_report(log)
    if report:
        pytest.fail(f"sanitizer report in the server log:\n{report}", pytrace=False)
    assert server.proc.poll() is None, f"server exited ({server.proc.returncode}):\n{log[-4000:]}"
    assert isinstance(answered, tuple), f"no answer from the server: {answered!r}"
    status, _, body = answered
    assert (status, body) == (200, b"pong")


@contextlib.contextmanager
def crash_reported(server):
    """A failure while the server died of a sanitizer report (a reset, a
    refused connection) is reported as that report."""
    try:
        yield
    except Exception:
        if server.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.proc.wait(1)
        report = sanitizer_report(server.log())
        if report:
            pytest.fail(f"sanitizer report in the server log:\n{report}", pytrace=False)
        raise


def wait_until(condition, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Stats(NamedTuple):
    waiting: int  # requests waiting in receive() for more body
    waited: int  # requests that ever did
    held: int  # held sends (/hold requests not answered yet)


def stats(server) -> Stats:
    status, _, body = request(server, get("/stats"))
    assert status == 200
    return Stats(*map(int, body.split()))


def wait_stats(server, what: str, **want: int) -> Stats:
    """Poll /stats until its fields have the values given."""

    def check():
        now = stats(server)
        return now if all(getattr(now, k) == v for k, v in want.items()) else None

    return wait_until(check, what=what)


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST, not a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Blocker:
    """A connection whose request blocks the server's loop for `seconds`.
    start() returns once the app has started blocking (it logs that)."""

    def __init__(self, server, seconds: float) -> None:
        self.server = server
        self.seconds = seconds
        self.client = connect(server, timeout=10 + seconds)
        self.count = 0
        self.t0 = 0.0

    def start(self) -> None:
        self.count += 1
        self.client.send(get(f"/block?s={self.seconds}"))
        self.server.wait_log(f"BLOCK-START {self.count}\n", timeout=10)
        self.t0 = time.monotonic()

    def at(self, offset: float) -> None:
        """Sleep until `offset` seconds into the block."""
        delay = self.t0 + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def finish(self) -> None:
        status, _, body = self.client.response()
        assert (status, body) == (200, b"blocked")

    def __enter__(self) -> Blocker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.sock.close()


def body_waiter(server, sent: bytes = b"ab", length: int = 10) -> Client:
    """A POST whose app waits in receive() for the rest of its body."""
    c = connect(server)
    c.send(f"POST /body HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\n\r\n".encode() + sent)
    return c


# ---------------------------------------------------------------- 1. stale events


# uvloop is a dependency on Linux/CPython (pyproject.toml): both loops always run.
LOOPS = ["asyncio", "uvloop"]


@pytest.mark.parametrize("loop", LOOPS)
def test_tick_frees_a_connection_whose_bytes_arrive_in_the_same_wake_up(serve, loop):
    """[timer, C readable] in one batch: the tick expires C (its body is
    late) and frees it; C's event must not be handled afterwards."""
    server = serve(ASGI, *ALONE, "--loop", loop, "--timeout-request-body", "0.5")
    with crash_reported(server), Blocker(server, 1.2) as blocker:
        for _ in range(2):  # a second round in case a tick slipped into the block's batch
            waited = stats(server).waited
            late = [body_waiter(server) for _ in range(4)]
            wait_stats(server, "the apps to wait for their bodies", waited=waited + 4)
            blocker.start()  # C's deadline passes while the loop sleeps
            blocker.at(1.0)
            for c in late:  # ... then its next bytes come: one wake-up sees both
                with contextlib.suppress(OSError):
                    c.send(b"cde")
            blocker.finish()
            for c in late:
                c.sock.close()
            assert_alive(server)
            wait_stats(server, "the body apps to end", waiting=0)


@pytest.mark.parametrize("loop", LOOPS)
def test_app_frees_another_connection_whose_event_is_later_in_the_batch(serve, loop):
    """[A readable, B reset] in one batch: A's app answers B's request through
    B's send(); the write fails, which closes and frees B; B's own event,
    later in the batch, must not be handled afterwards."""
    server = serve(ASGI, *ALONE, "--loop", loop)
    with crash_reported(server), Blocker(server, 1.2) as blocker:
        for round_ in range(2):
            holders, finishers = [], []
            for i in range(4):
                b = connect(server)
                b.send(get(f"/hold?id={round_}-{i}"))
                holders.append(b)
                a = connect(server)  # accepted before the block
                a.send(get("/ping"))
                assert a.response()[2] == b"pong"
                finishers.append(a)
            wait_stats(server, "the held requests", held=4)
            blocker.start()
            blocker.at(0.3)
            for i, a in enumerate(finishers):  # first in the batch: A's request ...
                a.send(get(f"/finish?id={round_}-{i}"))
            blocker.at(0.6)
            for b in holders:  # ... then B's reset
                reset(b.sock)
            blocker.finish()
            for a in finishers:
                with contextlib.suppress(OSError):
                    a.response()
                a.sock.close()
            assert_alive(server)
            wait_stats(server, "the held requests to end", held=0)


@pytest.mark.asan_stress
def test_stress_stale_events_in_one_wake_up(serve):
    """Round after round of short blocks of the loop, each ending in a
    wake-up that sees ticks expiring connections whose next body bytes are in
    the same batch, apps answering other connections' requests, and those
    connections reset before or after the request that answers them."""
    server = serve(ASGI, *ALONE, "--timeout-request-body", "0.4")
    rng = random.Random(20240607)
    block, n = 0.6, 10
    budget = time.monotonic() + 25
    rounds = connections = 0

    def during_block() -> float:
        return rng.uniform(0.05, block - 0.1)

    with crash_reported(server), Blocker(server, block) as blocker:
        while time.monotonic() < budget and rounds < 60:
            rounds += 1
            waited = wait_stats(server, "the previous round to end", waiting=0, held=0).waited
            holders, finishers, actions = [], [], []  # actions: (seconds into the block, ...)
            for i in range(n):
                b = connect(server)
                b.send(get(f"/hold?id={rounds}-{i}"))
                a = connect(server)  # accepted before the block
                a.send(get("/ping"))
                assert a.response()[2] == b"pong"
                finishers.append(a)
                actions.append((during_block(), "finish", a, get(f"/finish?id={rounds}-{i}")))
                reset_it = rng.random() < 0.8  # before or after its answer is sent
                holders.append((b, reset_it))
                if reset_it:
                    actions.append((during_block(), "reset", b, b""))
            late = [body_waiter(server) for _ in range(n)]  # their deadline passes in the block
            actions += [(during_block(), "send", c, b"cde") for c in late]
            connections += 3 * n
            # all waiting for more body (or, on a slow day, already expired), all held
            wait_stats(server, "the round's requests", waited=waited + n, held=n)
            blocker.start()
            for offset, what, c, data in sorted(actions, key=lambda x: x[0]):
                blocker.at(offset)
                with contextlib.suppress(OSError):
                    if what == "reset":
                        reset(c.sock)
                    else:
                        c.send(data)
            blocker.finish()
            for a in finishers:
                with contextlib.suppress(OSError):
                    a.response()
                a.sock.close()
            for i, (b, reset_it) in enumerate(holders):
                if not reset_it:  # it got the answer another request's app sent
                    status, _, body = b.response()
                    assert (status, body) == (200, f"finished by {rounds}-{i}".encode())
                b.sock.close()
            for c in late:
                c.sock.close()
            assert_alive(server)
    assert rounds >= 10, f"only {rounds} rounds ({connections} connections) in the time budget"


# ---------------------------------------------------------------- 2. input while closing


def vm_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field}")


def send_junk(sock: socket.socket, total: int, limit: float, stall: float = 1.0) -> int:
    """Send up to `total` bytes without blocking, until the peer stops taking
    them for `stall` seconds, closes, or `limit` seconds pass; bytes sent."""
    junk = memoryview(b"j" * (1 << 20))
    sock.setblocking(False)
    sent = 0
    end = time.monotonic() + limit
    try:
        while sent < total and time.monotonic() < end:
            _, writable, _ = select.select([], [sock], [], stall)
            if not writable:
                break  # the server stopped reading
            try:
                sent += sock.send(junk[: min(len(junk), total - sent)])
            except BlockingIOError:
                continue
            except OSError:
                break  # the server closed the connection
    finally:
        sock.setblocking(True)
    return sent


@pytest.mark.parametrize(
    ("app", "head"),
    [
        (ASGI, "GET /big?n={n} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
        (ASGI, "GET /big?n={n} HTTP/1.0\r\n\r\n"),
        (WSGI, "GET /big?n={n} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    ],
    ids=["asgi-close", "asgi-http10", "wsgi-close"],
)
def test_closing_connection_does_not_buffer_what_the_client_sends(serve, app, head):
    """A response that closes the connection, mostly pending because the
    client does not read; the client sends 256 MiB more meanwhile. The
    server must not keep it: it stops reading, drops it, or closes."""
    server = serve(app, *ALONE, "--timeout-send", "60")
    pid = server.proc.pid
    size = 16 << 20
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # most stays pending
    sock.settimeout(10)
    sock.connect((server.host, server.port))
    with Client(sock, 10) as c:
        c.send(head.format(n=size).encode())
        status, headers, _ = c.head()
        assert status == 200 and int(headers["content-length"]) == size
        # once the loop (or another thread) answers this, the response is
        # complete on the server's side; from now on nothing is read from c
        assert request(server, get("/ping"))[2] == b"pong"
        before = vm_kib(pid, "VmHWM")
        sent = send_junk(c.sock, 256 << 20, limit=10)
        growth = (vm_kib(pid, "VmHWM") - before) / 1024
        assert_alive(server)
    assert growth < 64, (
        f"the server's peak RSS grew by {growth:.0f} MiB while a closing connection "
        f"was sent {sent / (1 << 20):.0f} MiB it has no use for"
    )


# ---------------------------------------------------------------- 3. accept without fds


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.parametrize("app", [ASGI, WSGI], ids=["asgi", "wsgi"])
def test_accept_without_free_fds_does_not_spin(serve, app):
    """At the open-file limit accept() fails with EMFILE while the client
    waits in the backlog: the server must not retry in a busy loop, and must
    serve that client once a descriptor is free again."""
    limit = 64
    server = serve(app, *ALONE, env={"CORE_EVENTS_NOFILE": str(limit)})
    pid = server.proc.pid
    held: list[Client] = []
    try:
        while count_fds(pid) < limit:  # every fd the server may have, in use
            assert len(held) < limit, "the server's fd count does not grow with connections"
            c = connect(server)
            c.send(get("/ping"))
            assert c.response()[2] == b"pong"
            held.append(c)
        waiting = connect(server, timeout=10)  # completes in the kernel's backlog
        waiting.send(get("/ping"))
        cpu, start = cpu_seconds(pid), time.monotonic()
        time.sleep(1.0)
        load = (cpu_seconds(pid) - cpu) / (time.monotonic() - start)
        ready, _, _ = select.select([waiting.sock], [], [], 0)
        assert not ready, "answered with no fd free: the test's premise does not hold"
        for c in held[:3]:  # the server sees these close and frees their fds
            c.sock.close()
        status, _, body = waiting.response()
        assert (status, body) == (200, b"pong")
        waiting.sock.close()
        assert load < 0.15, (
            f"the server used {load:.2f} s of CPU per second while it could not accept"
        )
    finally:
        for c in held:
            c.sock.close()
