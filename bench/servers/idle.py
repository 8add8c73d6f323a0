"""Client for the idle keep-alive measurement.

    python idle.py PORT CONNECTIONS

Opens CONNECTIONS keep-alive connections and completes one request on each,
so the server holds them as idle keep-alive connections (not half-open ones
it has never read from). Prints "ready SERVED FAILED", then waits for a line
on stdin while the caller measures the server; then prints "open N", the
connections the server still held, and exits (closing them all).

Connections open in batches, each answered before the next starts, so the
listen backlog never overflows (a dropped SYN would stall for a second).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import sys
import time

BATCH = 200
DEADLINE = 10.0  # seconds for one batch to be answered


def request(port: int) -> bytes:
    return f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def connect(port: int, count: int) -> tuple[list[socket.socket], int]:
    """Opens `count` connections and sends a request on each."""
    opened, failed = [], 0
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(request(port))
            sock.setblocking(False)
            opened.append(sock)
        except OSError:
            failed += 1
    return opened, failed


def collect(batch: list[socket.socket]) -> list[socket.socket]:
    """Waits (at most DEADLINE seconds for the whole batch, so a server that
    stops answering costs seconds, not a timeout per connection) for each
    response head; returns the connections answered with 200, closes the rest."""
    pending = {sock: b"" for sock in batch}
    served = []
    with selectors.DefaultSelector() as sel:
        for sock in batch:
            sel.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + DEADLINE
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
                sock = key.fileobj
                try:
                    piece = sock.recv(4096)
                except OSError:
                    piece = b""
                data = pending[sock] + piece
                if piece and b"\r\n\r\n" not in data:
                    pending[sock] = data
                    continue
                sel.unregister(sock)
                del pending[sock]
                if data.startswith(b"HTTP/1.1 200"):
                    served.append(sock)
                else:
                    sock.close()
    for sock in pending:
        sock.close()
    return served


def open_batch(port: int, count: int) -> tuple[list[socket.socket], int]:
    opened, failed = connect(port, count)
    served = collect(opened)
    return served, failed + len(opened) - len(served)


def still_open(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True  # nothing to read and not closed: still open
    except OSError:
        return False


def main() -> None:
    port, total = int(sys.argv[1]), int(sys.argv[2])
    held: list[socket.socket] = []
    failed = 0
    while len(held) + failed < total:
        served, lost = open_batch(port, min(BATCH, total - len(held) - failed))
        held += served
        failed += lost
        if not served:
            failed = total - len(held)  # the server takes no more: stop here
            break
    print(f"ready {len(held)} {failed}", flush=True)
    sys.stdin.readline()
    print(f"open {sum(still_open(s) for s in held)}", flush=True)
    for sock in held:
        with contextlib.suppress(OSError):
            sock.close()


if __name__ == "__main__":
    main()
