"""What an open flask-sock WebSocket costs a WSGI worker in memory: RSS per
socket under oneloop and, with --gunicorn, under gunicorn's gthread worker.

    python bench/experiments/ws_rss.py [--sockets 200] [--gunicorn]

The app is tests/python/apps/websocket_wsgi_apps.py (flask-sock's echo
route). The worker gets --threads sockets+8; one socket is opened, used and
closed first (imports, first-use allocations), then the worker's RSS is
read from /proc, N sockets are opened and each echoes one message, and the
RSS is read again. Each open socket holds one thread of the pool (the WSGI
call) and one thread of simple-websocket's (its reader), so the figure is
mostly two threads' touched stacks and the Python objects of a session.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "tests" / "python" / "apps"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    return out


def worker_pid(proc: subprocess.Popen, forked: bool) -> int:
    if not forked:
        return proc.pid
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    return int(children[0])


def wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("server did not start")


def measure(name: str, cmd: list[str], port: int, n: int, forked: bool) -> None:
    env = {**os.environ, "PYTHONPATH": f"{APPS}:{ROOT / 'src'}"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        time.sleep(0.5)
        url = f"ws://127.0.0.1:{port}/echo"
        with connect(url) as ws:  # warm-up
            ws.send("warm")
            ws.recv()
        time.sleep(0.5)
        pid = worker_pid(proc, forked)
        before = status(pid)
        with contextlib.ExitStack() as stack:
            for i in range(n):
                ws = stack.enter_context(connect(url))
                ws.send(f"hello {i}")
                assert ws.recv() == f"hello {i}"
            time.sleep(0.5)
            after = status(pid)
        per = (after["VmRSS"] - before["VmRSS"]) / n
        print(
            f"| {name} | {n} | {before['VmRSS'] / 1024:.1f} MiB | {after['VmRSS'] / 1024:.1f} MiB "
            f"| {after['Threads'] - before['Threads']} | **{per:.0f} KiB** |"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--gunicorn", action="store_true", help="measure gunicorn gthread too")
    args = parser.parse_args()
    n, threads = args.sockets, str(args.sockets + 8)
    print("| server | sockets | RSS before | RSS with them open | threads added | RSS per socket |")
    print("|---|--:|--:|--:|--:|--:|")
    port = free_port()
    oneloop = [sys.executable, "-m", "oneloop", "--workers", "0", "--threads", threads]
    oneloop += ["--port", str(port), "--no-access-log", "websocket_wsgi_apps:app"]
    measure("oneloop", oneloop, port, n, forked=False)
    if args.gunicorn:
        port = free_port()
        gunicorn = [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", threads]
        gunicorn += ["-b", f"127.0.0.1:{port}", "websocket_wsgi_apps:app"]
        measure("gunicorn gthread", gunicorn, port, n, forked=True)


if __name__ == "__main__":
    main()
