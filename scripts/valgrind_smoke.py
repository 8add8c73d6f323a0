"""The binding layer under valgrind: real servers, real traffic.

    python scripts/valgrind_smoke.py

Starts oneloop under valgrind's memcheck (PYTHONMALLOC=malloc, so every
Python allocation is checked too) for an ASGI app, a WSGI app and a Flask
app with async views (the bridge, on uvloop and on the gated asyncio loop,
whose WSGI threads run first steps themselves), sends each a mix of requests -- keep-alive,
pipelined, chunked and Content-Length bodies, a malformed request, a client
that hangs up mid-body -- then stops it with SIGTERM. Fails if the server
does not answer or exit cleanly, or if valgrind reports an error with
oneloop's extension in its stack. (CPython 3.11 itself draws a few reports,
from int.from_bytes, that are not ours: they are counted and shown apart.) The
ASan/UBSan run of the whole suite (scripts/test-py-asan.sh) is broader;
this catches what ASan cannot, such as reads of uninitialised memory.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = [  # app, --app-dir, path, method, more options
    ("echo_apps:echo", ROOT / "tests/python/apps", "/echo", "POST", []),
    ("wsgi_apps:body_app", ROOT / "tests/python/apps", "/body", "POST", []),
    ("flask_async:app", ROOT / "examples", "/", "GET", ["--loop", "uvloop"]),
    ("flask_async:app", ROOT / "examples", "/", "GET", ["--loop", "asyncio"]),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(app: str, app_dir: Path, options: list[str], port: int, log: Path) -> subprocess.Popen:
    cmd = [
        "valgrind", "--track-origins=yes", "--leak-check=no", "--num-callers=40",
        "--log-file=" + str(log),
        sys.executable, "-m", "oneloop", "--app-dir", str(app_dir), "--port", str(port),
        "--threads", "4", "--no-access-log", *options, app,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONMALLOC": "malloc"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180  # CPython under valgrind starts slowly
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"valgrind smoke: {app} exited at start:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    sys.exit(f"valgrind smoke: {app} did not start")


def exchange(port: int, data: bytes, timeout: float = 60) -> bytes:
    """Send raw bytes (ending in a malformed request, which the server
    answers and then closes), read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def traffic(port: int, path: str, method: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for i in range(20):  # keep-alive, both body framings
        if method == "GET":
            conn.request("GET", path)
        elif i % 2:
            conn.request("POST", path, body=b"x" * (i * 1000))
        else:
            conn.request("POST", path, body=iter([b"a" * 100, b"b" * 5000]))
        response = conn.getresponse()
        response.read()
        assert response.status == 200, (path, response.status)
    conn.close()
    get = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    answers = exchange(port, get * 8 + b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: z\r\n\r\n")
    assert answers.count(b"HTTP/1.1 200") == 8 and b"HTTP/1.1 400" in answers, answers[-300:]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # hang up mid-body
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".encode())
        s.sendall(b"y" * 1000)
    time.sleep(1)


def errors(report: str) -> tuple[list[str], list[str]]:
    """valgrind's error reports, split into those with our extension (or
    the wire layer linked into it) in their stack, and the others."""
    blocks = re.split(r"\n==\d+== \n", report)
    found = [
        b
        for b in blocks
        if re.search(
            r"^==\d+== (Invalid|Conditional|Use of|Syscall|Mismatched|Source and destination)",
            b,
            re.M,
        )
    ]
    ours = [b for b in found if "_core.cpython" in b or "src/core/" in b or "src/wire/" in b]
    return ours, [b for b in found if b not in ours]


def main() -> None:
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for app, app_dir, path, method, options in APPS:
            log = Path(tmp) / "valgrind.log"
            port = free_port()
            proc = start(app, app_dir, options, port, log)
            try:
                traffic(port, path, method)
            finally:
                proc.send_signal(signal.SIGTERM)
                status = proc.wait(120)
            ours, others = errors(log.read_text())
            name = " ".join([app, *options])
            print(f"{name}: exit {status}; {len(ours)} errors in oneloop, {len(others)} elsewhere")
            if status != 0 or ours:
                failed.append(name)
                print("\n\n".join(ours[:10]))
    if failed:
        sys.exit(f"valgrind smoke: errors in {', '.join(failed)}")


if __name__ == "__main__":
    main()
