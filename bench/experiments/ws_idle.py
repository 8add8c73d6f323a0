"""User-space memory per idle ASGI WebSocket, measured as the benchmark's
"Idle WebSockets" row measures it (docs/benchmarks.md), outside the harness.

    python bench/experiments/ws_idle.py [--runs 3] [--sockets 10000] [--census]

Each run starts the echo app of the benchmarks on a free port

    python -m oneloop --app-dir bench/servers/apps --interface asgi \\
        --host 127.0.0.1 --port PORT --no-access-log --log-level warning \\
        --timeout-keep-alive 600 ws_apps:echo

warms it with one second of 16-byte echoes on 64 WebSockets
(`ws_client -m echo -c 64 -s 16 -p 1 -d 1 -w 0`), reads the serving
worker's VmRSS 0.5 s later, opens the WebSockets with `ws_client -m idle -c
N`, reads VmRSS again 1 s after the last handshake, and prints the growth
divided by N. ws_client is built from bench/ws_client.c into a temporary
directory when --ws-client is not given.

--census serves the same app through census_app.py (beside this file),
which also answers GET /census with what the worker's heap holds: the
GC-tracked objects by type (count and sys.getsizeof bytes) and
sys.getallocatedblocks() and malloc()'s bytes in use. The difference between the census before and
after the WebSockets opened, divided by N, is printed per type. The census
walks the heap, so its run's RSS figure is not the one to quote, and its
app wraps the echo app's coroutine in one of its own: one coroutine per
WebSocket (248 B) more than under the benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
APPS = ROOT / "bench" / "servers" / "apps"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def worker_pid(root: int, timeout: float = 20.0) -> int:
    """The serving process: the supervisor's one child (--workers 1)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{root}/task/{root}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise RuntimeError("no worker process")


def wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("server did not start")


def build_ws_client(directory: str) -> str:
    out = os.path.join(directory, "ws_client")
    subprocess.run(["cc", "-O2", "-o", out, str(ROOT / "bench" / "ws_client.c")], check=True)
    return out


def census(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/census", timeout=60) as r:
        return json.load(r)


def print_census(before: dict, after: dict, n: int) -> None:
    blocks = after["blocks"] - before["blocks"]
    print(f"  pymalloc blocks: {blocks / n:.1f} per WebSocket")
    print(f"  malloc() in use: {(after['malloc'] - before['malloc']) / n:.1f} B per WebSocket")
    rows = []
    for name, (count, size) in after["types"].items():
        c0, s0 = before["types"].get(name, (0, 0))
        if (count - c0) / n >= 0.5:
            rows.append(((size - s0) / n, (count - c0) / n, name))
    total = sum(r[0] for r in rows)
    for size, count, name in sorted(rows, reverse=True):
        print(f"  {name:40} {count:6.2f} objects {size:8.1f} B")
    print(f"  {'GC-tracked objects, in all':40} {'':14} {total:8.1f} B per WebSocket")


def run(ws_client: str, n: int, with_census: bool) -> float:
    port = free_port()
    app_dir, app = (HERE, "census_app:echo") if with_census else (APPS, "ws_apps:echo")
    cmd = [sys.executable, "-m", "oneloop", "--app-dir", str(app_dir), "--interface", "asgi"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    cmd += ["--log-level", "warning", "--timeout-keep-alive", "600", app]
    path = os.pathsep.join(p for p in (str(APPS), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_listening(port)
        pid = worker_pid(server.pid)
        warm = [ws_client, "-m", "echo", "-c", "64", "-s", "16", "-p", "1", "-d", "1", "-w", "0"]
        subprocess.run([*warm, "127.0.0.1", str(port)], check=True, stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        first = census(port) if with_census else None
        before = rss_kib(pid)
        idle = subprocess.Popen(
            [ws_client, "-m", "idle", "-c", str(n), "127.0.0.1", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            _, opened, failed = idle.stdout.readline().split()
            time.sleep(1.0)
            after = rss_kib(pid)
            second = census(port) if with_census else None
            idle.stdin.write("\n")
            idle.stdin.flush()
            still_open = int(idle.stdout.readline().split()[1])
        finally:
            idle.stdin.close()
            idle.wait(60)
        per = (after - before) * 1024 / max(int(opened), 1)
        print(
            f"opened {opened} failed {failed} still open {still_open}: RSS {before} -> "
            f"{after} KiB, {per:,.0f} B per idle WebSocket",
            flush=True,
        )
        if with_census:
            print_census(first, second, int(opened))
        return per
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sockets", type=int, default=10000)
    parser.add_argument("--ws-client", help="a built bench/ws_client.c")
    parser.add_argument("--census", action="store_true", help="count the heap's objects too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws_client = args.ws_client or build_ws_client(tmp)
        results = [run(ws_client, args.sockets, args.census) for _ in range(args.runs)]
    print("B per idle WebSocket: " + ", ".join(f"{r:,.0f}" for r in results))


if __name__ == "__main__":
    main()
