"""What an async Flask view costs over a sync one, under oneloop and under
gunicorn (gthread, Flask's default new-loop-per-call path), in one run.

    python bench/experiments/async_overhead.py [--seconds 5] [--repeat 3]

Each server serves the same Flask app (a sync view and an async view that
return the same bytes), pinned to CPU 0, loaded by wrk on CPU 1 with 16
connections. The figure is the server's CPU time per request (user+system
of the whole process, from /proc), which does not move with other load on
the machine the way requests/s does; the overhead is async minus sync.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

APP = """
from flask import Flask

app = Flask(__name__)


@app.route("/sync")
def sync_view():
    return "ok"


@app.route("/async")
async def async_view():
    return "ok"


async def nothing():
    return "ok"


@app.route("/bridge")
def bridge_view():  # the bridge alone: no Flask ensure_sync, no asgiref
    import oneloop

    return oneloop.run_coroutine(nothing())
"""


PATHS = {"oneloop": ("/sync", "/async", "/bridge"), "gunicorn": ("/sync", "/async")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for child in [pid, *children(pid)]:
        with open(f"/proc/{child}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def server_command(name: str, port: int) -> list[str]:
    if name == "oneloop":
        return [sys.executable, "-m", "oneloop", "--no-access-log", "--port", str(port),
                "--threads", "16", "app:app"]  # fmt: skip
    return [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "16", "-w", "1",
            "-b", f"127.0.0.1:{port}", "app:app"]  # fmt: skip


def wait_up(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"async_overhead: server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("async_overhead: server did not start")


def wrk(url: str, seconds: float) -> tuple[float, int]:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{seconds:g}s", url],
        capture_output=True,
        text=True,
    ).stdout
    rate = [ln.split()[1] for ln in out.splitlines() if ln.startswith("Requests/sec")]
    bad = [ln for ln in out.splitlines() if "Non-2xx" in ln or "Socket errors" in ln]
    if not rate:
        sys.exit(f"async_overhead: wrk failed:\n{out}")
    errors = sum(int(n) for ln in bad for n in ln.replace(",", " ").split() if n.isdigit())
    return float(rate[0]), errors


def measure(name: str, workdir: str, seconds: float) -> dict[str, tuple[float, float, int]]:
    port = free_port()
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *server_command(name, port)],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_up(port, proc)
        results = {}
        for path in PATHS[name]:
            url = f"http://127.0.0.1:{port}{path}"
            wrk(url, 1)  # warm-up
            before = cpu_seconds(proc.pid)
            rps, errors = wrk(url, seconds)
            used = cpu_seconds(proc.pid) - before
            results[path] = (rps, used * 1e6 / (rps * seconds), errors)
        return results
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        with open(os.path.join(workdir, "app.py"), "w") as f:
            f.write(APP)
        print(f"{'server':10} {'view':7} {'req/s':>8} {'CPU us/req':>11} {'errors':>7}")
        for name in ("oneloop", "gunicorn"):
            runs = [measure(name, workdir, args.seconds) for _ in range(args.repeat)]
            us = {}
            for path in PATHS[name]:
                rps = statistics.median(r[path][0] for r in runs)
                us[path] = statistics.median(r[path][1] for r in runs)
                errors = sum(r[path][2] for r in runs)
                print(f"{name:10} {path[1:]:7} {rps:8.0f} {us[path]:11.1f} {errors:7}")
            print(f"{name:10} async view overhead: {us['/async'] - us['/sync']:.1f} us/request")
            if "/bridge" in us:
                print(f"{name:10} run_coroutine overhead: {us['/bridge'] - us['/sync']:.1f} us")


if __name__ == "__main__":
    main()
