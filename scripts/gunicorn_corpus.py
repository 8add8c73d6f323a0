"""Development-time tool: gunicorn's request corpus against a running oneloop.

gunicorn keeps a corpus of raw requests in tests/requests/{valid,invalid}/,
one NAME.http (the bytes, written with literal escapes) beside a NAME.py (what
gunicorn expects). This script sends each .http file to oneloop over a TCP
socket, half-closes, and reports what came back:

    refused   an error status (4xx/5xx) before any success
    accepted  a 2xx (the request reached the app)
    closed    the connection closed with no answer at all
    hang      no answer and no close within --timeout seconds

The corpus is gunicorn's (MIT) and is never copied into this repository:
pass the path of a gunicorn checkout.

    python scripts/gunicorn_corpus.py /path/to/gunicorn [--connect HOST:PORT] [--add-host] [-v]

Without --connect, oneloop is started on a free port with the echo app of
tests/python/apps (PYTHONPATH must find oneloop). Cases whose NAME.py sets a
gunicorn option (limits, PROXY protocol, header maps...) test that option,
not HTTP; they are reported apart and left out of the "usable" totals.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "tests" / "python" / "apps"


def load(path: Path) -> bytes:
    """The bytes of a gunicorn .http file, decoded as gunicorn's tests/treq.py
    does: newlines in the file are layout only; \\r\\n, \\0, \\n, \\t and \\xHH are
    escapes."""
    data = path.read_bytes().replace(b"\n", b"").replace(b"\\r\\n", b"\r\n")
    data = data.replace(b"\\0", b"\0").replace(b"\\n", b"\n").replace(b"\\t", b"\t")
    data = re.sub(rb"\\x([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), data)
    if b"\\" in data:
        raise ValueError(f"{path.name}: an escape this loader does not know")
    return data


def add_host(data: bytes) -> bytes:
    """Give each HTTP/1.1 request without Host one, to see what else oneloop
    makes of it (a missing Host alone is a refusal RFC 9112 3.2 asks for)."""
    out, rest = b"", data
    while rest:
        line, sep, rest = rest.partition(b"\r\n")
        out += line + sep
        if line.endswith(b" HTTP/1.1") and sep:
            head = rest.split(b"\r\n\r\n", 1)[0].lower()
            if not head.startswith(b"host:") and b"\r\nhost:" not in head:
                out += b"Host: corpus\r\n"
    return out


def uses_gunicorn_option(path: Path) -> bool:
    py = path.with_suffix(".py")
    return py.exists() and "cfg.set(" in py.read_text()


def exchange(host: str, port: int, data: bytes, timeout: float) -> tuple[str, bytes]:
    with socket.create_connection((host, port), timeout=timeout) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close before reading everything
        got = b""
        deadline = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                part = s.recv(65536)
            except TimeoutError:
                return ("hang" if not got else verdict(got)), got
            except ConnectionResetError:
                break
            if not part:
                break
            got += part
    return verdict(got), got


def verdict(got: bytes) -> str:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", got)
    if not m:
        return "closed"
    status = int(m.group(1))
    while status < 200:  # skip interim responses (100 Continue)
        rest = got[got.index(b"\r\n\r\n") + 4 :]
        m = re.match(rb"HTTP/1\.[01] (\d{3})", rest)
        if not m:
            return "closed"
        got, status = rest, int(m.group(1))
    return "accepted" if status < 400 else "refused"


def start_server() -> tuple[subprocess.Popen, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "oneloop", "--app-dir", str(APPS), "--fd", str(sock.fileno())]
    proc = subprocess.Popen(
        [*cmd, "--no-access-log", "echo_apps:echo"],
        pass_fds=[sock.fileno()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sock.close()
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, port


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gunicorn", type=Path, help="a gunicorn checkout")
    ap.add_argument("--connect", help="HOST:PORT of a running oneloop")
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument(
        "--add-host", action="store_true", help="add Host to HTTP/1.1 requests without one"
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="also list expected outcomes")
    args = ap.parse_args()

    proc = None
    if args.connect:
        host, _, port_s = args.connect.rpartition(":")
        port = int(port_s)
    else:
        proc, port = start_server()
        host = "127.0.0.1"
    try:
        for kind, good in (("invalid", "refused"), ("valid", "accepted")):
            files = sorted((args.gunicorn / "tests" / "requests" / kind).glob("*.http"))
            counts: dict[str, int] = {}
            usable = hits = 0
            for f in files:
                option = uses_gunicorn_option(f)
                data = add_host(load(f)) if args.add_host else load(f)
                result, got = exchange(host, port, data, args.timeout)
                if not option:
                    usable += 1
                    hits += result == good
                    counts[result] = counts.get(result, 0) + 1
                # the status line, and oneloop's reason (its error body)
                head, _, body = got.partition(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode("latin-1")
                if result == "refused":
                    line += " -- " + body.split(b"\n", 1)[0].decode("latin-1")
                mark = "option" if option else ("ok" if result == good else "MISS")
                if args.verbose or mark == "MISS":
                    print(f"{kind:8} {f.name:48} {result:9} {mark:6} {line}")
            summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            print(
                f"{kind}: {hits} of {usable} usable cases {good} ({summary}); "
                f"{len(files) - usable} set a gunicorn option"
            )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
