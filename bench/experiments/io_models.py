"""Measure the I/O models of DESIGN.md section 3 in one run (see io_models.c).

    python bench/experiments/io_models.py [--seconds 5] [--repeat 3]

Builds the experiment module and bench/floor_server.c, then for each model
starts a server pinned to CPU 0, loads it with wrk pinned to CPU 1
(-t1 -c64, fixed 13-byte response) and prints requests/s and server CPU
microseconds per request (from the server's own CPU time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def build(workdir: str) -> None:
    include = sysconfig.get_paths()["include"]
    ext = sysconfig.get_config_var("EXT_SUFFIX")
    subprocess.run(
        [
            "cc",
            "-O2",
            "-shared",
            "-fPIC",
            f"-I{include}",
            os.path.join(HERE, "io_models.c"),
            "-o",
            os.path.join(workdir, "io_models" + ext),
        ],
        check=True,
    )
    subprocess.run(
        [
            "cc",
            "-O2",
            os.path.join(HERE, "..", "floor_server.c"),
            "-o",
            os.path.join(workdir, "floor"),
        ],
        check=True,
    )


SERVER = r"""
import asyncio, socket, sys
sys.path.insert(0, {workdir!r})
import io_models
kind, model, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind == "uvloop":
    import uvloop
    loop = uvloop.new_event_loop()
else:
    loop = asyncio.new_event_loop()
sock = socket.socket(); sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", port)); sock.listen(4096); sock.setblocking(False)
if model == "protocol":
    # asyncio (and uvloop) use get_buffer/buffer_updated only for subclasses
    # of BufferedProtocol; the C type itself cannot name a Python base.
    class Protocol(io_models.FixedProtocol, asyncio.BufferedProtocol):
        __slots__ = ()
    loop.run_until_complete(loop.create_server(Protocol, sock=sock))
else:
    io_models.serve_epoll(loop, sock.fileno())
loop.run_forever()
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(cmd: list[str], port: int, seconds: float) -> tuple[float, float]:
    proc = subprocess.Popen(["taskset", "-c", "0", *cmd], stdout=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        url = f"http://127.0.0.1:{port}/"
        subprocess.run(
            ["taskset", "-c", "1", "wrk", "-t1", "-c64", "-d1s", url], capture_output=True
        )
        before = cpu_seconds(proc.pid)
        out = subprocess.run(
            ["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{seconds:g}s", url],
            capture_output=True,
            text=True,
        ).stdout
        used = cpu_seconds(proc.pid) - before
        rates = [ln.split()[1] for ln in out.splitlines() if ln.startswith("Requests/sec")]
        if not rates or proc.poll() is not None:
            sys.exit(f"io_models: {cmd[-1]}: no result (server exited: {proc.poll()}):\n{out}")
        rps = float(rates[0])
        return rps, used * 1e6 / (rps * seconds)
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--repeat", type=int, default=3, help="runs per model; medians shown")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        build(workdir)
        script = os.path.join(workdir, "server.py")
        with open(script, "w") as f:
            f.write(SERVER.format(workdir=workdir))
        rows = [("C epoll floor (no Python)", [os.path.join(workdir, "floor"), "9301"], 9301)]
        for i, (loop, model) in enumerate(
            [
                ("asyncio", "protocol"),
                ("uvloop", "protocol"),
                ("asyncio", "epoll"),
                ("uvloop", "epoll"),
            ]
        ):
            label = f"({'a' if model == 'protocol' else 'b'}) {model} on {loop}"
            rows.append((label, [sys.executable, script, loop, model, str(9302 + i)], 9302 + i))
        print(f"{'I/O model':32} {'req/s':>10} {'server CPU us/req':>18}")
        for label, cmd, port in rows:
            runs = [measure(cmd, port, args.seconds) for _ in range(args.repeat)]
            rps = statistics.median(r for r, _ in runs)
            us = statistics.median(u for _, u in runs)
            print(f"{label:32} {rps:10.0f} {us:18.2f}")


if __name__ == "__main__":
    main()
