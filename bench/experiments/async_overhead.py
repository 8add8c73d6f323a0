"""What an async Flask view costs over a sync one, under oneloop (with each of
its loops) and under gunicorn (gthread, Flask's default new-loop-per-call
path), in one run.

    python bench/experiments/async_overhead.py [--seconds 3] [--rounds 5]

Each server serves the same Flask app (a sync view and an async view that
return the same bytes), pinned to CPU 0, loaded by wrk on CPU 1 with 16
connections. The figure is the server's CPU time per request (user+system
of the whole process tree, from /proc), which moves less with other load on
the machine than requests/s does. The paths of one server are measured in
turn, round after round; the overhead is async minus sync *within* a round,
and the median over rounds is reported (with the range), so a slow spell of
the machine does not land on one path only.

oneloop runs twice: with the gated asyncio loop (a WSGI thread runs a
coroutine's first step itself while the loop sleeps: no thread switch for a
call that finishes without waiting) and with uvloop (every call taken to
the loop's thread and back: two switches). With --upstream URL (e.g. the C
floor server, build/bench/bin/floor_server), an async view awaiting a GET
through a module-level aiohttp session is measured too: the price of the
stdlib loop's I/O against uvloop's.
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
import os

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


_session = None


@app.route("/upstream")
async def upstream_view():  # a view that waits on the network, as real ones do
    global _session
    import aiohttp

    if _session is None:
        _session = aiohttp.ClientSession()
    async with _session.get(os.environ["UPSTREAM"]) as response:
        return await response.text()


@app.route("/bridge")
def bridge_view():  # the bridge without Flask's ensure_sync
    import oneloop

    return oneloop.run_coroutine(nothing())
"""


SERVERS = {  # name: (command maker, paths)
    "oneloop (asyncio, gated)": ("asyncio", ("/sync", "/async", "/bridge")),
    "oneloop (uvloop)": ("uvloop", ("/sync", "/async", "/bridge")),
    "gunicorn gthread": ("gunicorn", ("/sync", "/async")),
}


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


def server_command(kind: str, port: int) -> list[str]:
    if kind == "gunicorn":
        return [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "16", "-w", "1",
                "-b", f"127.0.0.1:{port}", "app:app"]  # fmt: skip
    return [sys.executable, "-m", "oneloop", "--no-access-log", "--port", str(port),
            "--threads", "16", "--loop", kind, "app:app"]  # fmt: skip


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


def measure(
    name: str, workdir: str, seconds: float, rounds: int, upstream: str | None
) -> dict[str, list[tuple[float, float, int]]]:
    """Per path, one (req/s, CPU us/request, errors) per round."""
    kind, paths = SERVERS[name]
    if upstream and kind != "gunicorn":
        paths = (*paths, "/upstream")
    port = free_port()
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *server_command(kind, port)],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "UPSTREAM": upstream or ""},
    )
    try:
        wait_up(port, proc)
        for path in paths:
            wrk(f"http://127.0.0.1:{port}{path}", 1)  # warm-up
        results: dict[str, list[tuple[float, float, int]]] = {path: [] for path in paths}
        for _ in range(rounds):
            for path in paths:
                before = cpu_seconds(proc.pid)
                rps, errors = wrk(f"http://127.0.0.1:{port}{path}", seconds)
                used = cpu_seconds(proc.pid) - before
                results[path].append((rps, used * 1e6 / (rps * seconds), errors))
        return results
    finally:
        proc.terminate()
        proc.wait(10)


def over(results: dict, path: str, base: str) -> str:
    """Median (and range) over rounds of path's CPU/request minus base's."""
    diffs = sorted(r[1] - b[1] for r, b in zip(results[path], results[base], strict=True))
    return f"{statistics.median(diffs):6.1f} us  (rounds: {diffs[0]:.1f} .. {diffs[-1]:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--upstream", help="URL an async view GETs (e.g. the C floor server)")
    parser.add_argument("--only", nargs="*", choices=list(SERVERS), help="servers to measure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        with open(os.path.join(workdir, "app.py"), "w") as f:
            f.write(APP)
        print(f"{'server':26} {'view':9} {'req/s':>8} {'CPU us/req':>11} {'errors':>7}")
        for name in args.only or SERVERS:
            results = measure(name, workdir, args.seconds, args.rounds, args.upstream)
            for path, runs in results.items():
                rps = statistics.median(r[0] for r in runs)
                us = statistics.median(r[1] for r in runs)
                errors = sum(r[2] for r in runs)
                print(f"{name:26} {path[1:]:9} {rps:8.0f} {us:11.1f} {errors:7}")
            print(f"{name:26} async view overhead:    {over(results, '/async', '/sync')}")
            if "/bridge" in results:
                print(f"{name:26} run_coroutine overhead: {over(results, '/bridge', '/sync')}")


if __name__ == "__main__":
    main()
