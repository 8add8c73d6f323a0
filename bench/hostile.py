"""Hostile clients against oneloop and its peers, in one run on one machine,
every server with its default settings (what a user gets), one worker.

    make bench-hostile                      # every scenario, every server
    bench/.venv/bin/python bench/hostile.py [--only SERVER ...] [--quick]
    bench/.venv/bin/python bench/hostile.py --soak 1000000 [--interface asgi|wsgi]

Scenarios (each against a fresh server):

  slowloris N   N connections trickle a request head that never ends, one
                line a second, for 30 s (bench/slowloris.py). Meanwhile a
                normal client opens a new connection per request: its p99,
                and how many of its requests got no answer within 5 s. At
                the end: how many slowloris connections the server still
                held, and how much RSS it grew.
  non-reader    GET of 1 GiB that the client stops reading after 64 KiB:
                the server's RSS growth over 10 s.
  unread upload POST of 256 MiB to a view that never reads it, sent until
                the server stops taking bytes: bytes taken, RSS growth.
  no fds        the server limited to 256 descriptors, 400 idle clients:
                its CPU while it cannot accept (a busy loop shows here),
                then whether it serves a new client once they leave.

--soak runs oneloop alone for N requests with wrk (plus a failing view
every tenth request, and clients that hang up mid-request or mid-response
beside it), sampling RSS, and prints the RSS curve.

Results are printed as Markdown tables (docs/hostile-clients.md holds the
last ones).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "servers"))
from procfs import cpu_times, memory_kib, serving_processes  # noqa: E402

APPS = HERE / "servers" / "apps"
SLOWLORIS = HERE / "slowloris.py"
PY = sys.executable
MiB = 1024 * 1024


@dataclass(frozen=True)
class Peer:
    name: str
    interface: str
    argv: Callable[[int], list[str]]


def _oneloop(interface: str) -> Callable[[int], list[str]]:
    return lambda port: [
        *(PY, "-m", "oneloop", "--workers", "0", "--interface", interface),
        *("--host", "127.0.0.1", "--port", str(port), "--no-access-log"),
        f"hostile_apps:{interface}",
    ]


GTHREAD = (PY, "-m", "gunicorn", "-k", "gthread", "--threads", "16")
PEERS = [
    Peer("oneloop (ASGI)", "asgi", _oneloop("asgi")),
    Peer("oneloop (WSGI)", "wsgi", _oneloop("wsgi")),
    Peer(
        "uvicorn",
        "asgi",
        lambda port: [PY, "-m", "uvicorn", "--port", str(port), "hostile_apps:asgi"],
    ),
    Peer(
        "granian",
        "asgi",
        lambda port: [
            PY,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--port",
            str(port),
            "hostile_apps:asgi",
        ],
    ),
    Peer(
        "hypercorn",
        "asgi",
        lambda port: [PY, "-m", "hypercorn", "-b", f"127.0.0.1:{port}", "hostile_apps:asgi"],
    ),
    Peer(
        "gunicorn gthread",
        "wsgi",
        lambda port: [*GTHREAD, "-b", f"127.0.0.1:{port}", "hostile_apps:wsgi"],
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answer(port: int, path: str = "/", timeout: float = 5.0) -> float | None:
    """One request on a new connection: seconds it took, None if no answer."""
    start = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"ok"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            if data.startswith(b"HTTP/1.1 200") and data.endswith(b"ok"):
                return time.perf_counter() - start
    except OSError:
        pass
    return None


@contextlib.contextmanager
def running(peer: Peer, nofile: int | None = None) -> Iterator[tuple[int, subprocess.Popen]]:
    port = free_port()
    prefix = ["prlimit", f"--nofile={nofile}:{nofile}"] if nofile else []
    proc = subprocess.Popen(
        [*prefix, *peer.argv(port)],
        cwd=APPS,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while answer(port, timeout=1) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{peer.name} did not start")
            time.sleep(0.2)
        yield port, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def rss_kib(proc: subprocess.Popen) -> int:
    return memory_kib(serving_processes(proc.pid), "VmRSS")


def cpu_seconds(proc: subprocess.Popen) -> float:
    return cpu_times(serving_processes(proc.pid)).total


def ms(seconds: list[float], q: float) -> str:
    if not seconds:
        return "-"
    ordered = sorted(seconds)
    return f"{ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000:.1f}"


# -- scenarios -------------------------------------------------------------------------


def slowloris(peer: Peer, n: int, seconds: float) -> dict:
    with running(peer) as (port, proc):
        rss0 = rss_kib(proc)
        attack = subprocess.Popen(
            [PY, str(SLOWLORIS), "127.0.0.1", str(port), str(n), "--duration", str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        attack.stdout.readline()  # "connected N"
        time.sleep(2)  # the server accepts them
        took, lost = [], 0
        end = time.monotonic() + seconds - 4
        while time.monotonic() < end:
            t = answer(port)
            if t is None:
                lost += 1
            else:
                took.append(t)
            time.sleep(0.02)
        rss1 = rss_kib(proc)
        out, _ = attack.communicate(timeout=seconds + 60)
        result = json.loads(out.strip().splitlines()[-1])
    return {
        "p99_ms": ms(took, 0.99),
        "unanswered": lost,
        "asked": lost + len(took),
        "held": result["still_open"],
        "opened": result["opened"],
        "rss_mib": (rss1 - rss0) / 1024,
    }


def non_reader(peer: Peer) -> dict:
    with running(peer) as (port, proc):
        rss0 = rss_kib(proc)
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: bench\r\n\r\n")
        s.recv(65536)
        peak = rss0
        for _ in range(20):
            time.sleep(0.5)
            peak = max(peak, rss_kib(proc))
        s.close()
        alive = answer(port) is not None
    return {"rss_mib": (peak - rss0) / 1024, "alive": alive}


def unread_upload(peer: Peer) -> dict:
    size = 256 * MiB
    with running(peer) as (port, proc):
        rss0 = rss_kib(proc)
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        s.sendall(
            f"POST /ignore HTTP/1.1\r\nHost: bench\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        block, sent = b"u" * 65536, 0
        s.settimeout(2.0)
        with contextlib.suppress(OSError):  # timeout (blocked), or reset
            while sent < size:
                sent += s.send(block)
        rss1 = rss_kib(proc)
        s.close()
    return {"taken_mib": sent / MiB, "rss_mib": (rss1 - rss0) / 1024}


def no_fds(peer: Peer) -> dict:
    with running(peer, nofile=256) as (port, proc):
        idle = []
        for _ in range(400):
            with contextlib.suppress(OSError):
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        time.sleep(1)
        cpu0, t0 = cpu_seconds(proc), time.monotonic()
        time.sleep(3)
        busy = (cpu_seconds(proc) - cpu0) / (time.monotonic() - t0)
        for s in idle:
            s.close()
        served_after = None
        start = time.monotonic()
        while time.monotonic() - start < 15:
            if answer(port, timeout=2) is not None:
                served_after = time.monotonic() - start
                break
            time.sleep(0.2)
        alive = proc.poll() is None
    return {"cpu": busy, "served_after": served_after, "alive": alive}


# -- the run -------------------------------------------------------------------------


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def compare(peers: list[Peer], quick: bool) -> None:
    sizes = [1000] if quick else [1000, 10_000]
    seconds = 15 if quick else 30
    results: dict[str, dict] = {}
    for peer in peers:
        r: dict = {}
        for n in sizes:
            print(f"{peer.name}: slowloris {n}", file=sys.stderr, flush=True)
            r[f"slowloris {n}"] = guarded(lambda p=peer, n=n: slowloris(p, n, seconds))
        for name, fn in (("non-reader", non_reader), ("upload", unread_upload), ("no fds", no_fds)):
            print(f"{peer.name}: {name}", file=sys.stderr, flush=True)
            r[name] = guarded(lambda p=peer, fn=fn: fn(p))
        results[peer.name] = r
    print_tables(results, sizes, seconds)


def guarded(fn: Callable[[], dict]) -> dict:
    try:
        return fn()
    except Exception as e:  # one peer failing a scenario is a result, not the end of the run
        return {"error": f"{type(e).__name__}: {e}"}


def print_tables(results: dict[str, dict], sizes: list[int], seconds: float) -> None:
    for n in sizes:
        key = f"slowloris {n}"
        print(f"\n### {n:,} slowloris connections, {seconds:.0f} s\n")
        print(
            row(
                [
                    "server",
                    "normal client p99 (ms)",
                    "unanswered",
                    "slowloris held at end",
                    "RSS growth (MiB)",
                ]
            )
        )
        print(row(["---"] + ["---:"] * 5))
        for name, r in results.items():
            s = r[key]
            if "error" in s:
                print(row([name, s["error"], "", "", "", ""]))
                continue
            print(
                row(
                    [
                        name,
                        f"{s['opened']:,}",
                        s["p99_ms"],
                        f"{s['unanswered']} of {s['asked']}",
                        f"{s['held']:,}",
                        f"{s['rss_mib']:.1f}",
                    ]
                )
            )
    print("\n### A client that stops reading 1 GiB, an upload nobody reads, no free fds\n")
    print(
        row(
            [
                "server",
                "non-reader: RSS growth (MiB)",
                "upload: MiB taken",
                "upload: RSS growth (MiB)",
                "no fds: CPU (cores)",
                "no fds: serves again after (s)",
            ]
        )
    )
    print(row(["---"] + ["---:"] * 5))
    for name, r in results.items():
        nr, up, nf = r["non-reader"], r["upload"], r["no fds"]
        cells = [name]
        cells.append(nr.get("error") or f"{nr['rss_mib']:.1f}" + ("" if nr["alive"] else " (died)"))
        cells += (
            [up["error"], ""]
            if "error" in up
            else [f"{up['taken_mib']:.1f}", f"{up['rss_mib']:.1f}"]
        )
        if "error" in nf:
            cells += [nf["error"], ""]
        else:
            after = "never" if nf["served_after"] is None else f"{nf['served_after']:.1f}"
            cells += [f"{nf['cpu']:.2f}", after + ("" if nf["alive"] else " (died)")]
        print(row(cells))


# -- soak ----------------------------------------------------------------------------

SOAK_LUA = """
counter = 0
request = function()
    counter = counter + 1
    if counter % 10 == 0 then
        return wrk.format("GET", "/error")
    end
    return wrk.format("GET", "/")
end
"""


def hang_ups(port: int, stop: threading.Event, count: list[int]) -> None:
    """Clients that leave mid-request and mid-response, beside the load;
    count[0] is how many left."""
    heads = [b"GET / HTTP/1.1\r\nHost: soak\r\n", b"GET /big HTTP/1.1\r\nHost: soak\r\n\r\n"]
    i = 0
    while not stop.is_set():
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(heads[i % 2])
            if i % 2:
                s.recv(65536)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            count[0] += 1
        i += 1
        time.sleep(0.005)


def soak(total: int, interface: str) -> None:
    if shutil.which("wrk") is None:
        sys.exit("hostile.py --soak needs wrk (apt-get install wrk)")
    peer = next(p for p in PEERS if p.name == f"oneloop ({interface.upper()})")
    lua = Path(os.environ.get("TMPDIR", "/tmp")) / "oneloop-soak.lua"
    lua.write_text(SOAK_LUA)
    done, failed, errors, left, curve = 0, 0, 0, [0], []
    stop = threading.Event()
    with running(peer) as (port, proc):
        curve.append((0, rss_kib(proc)))
        leaver = threading.Thread(target=hang_ups, args=(port, stop, left), daemon=True)
        leaver.start()
        start = time.monotonic()
        while done < total:
            out = subprocess.run(
                [
                    "wrk",
                    "-t",
                    "1",
                    "-c",
                    "16",
                    "-d",
                    "5",
                    "-s",
                    str(lua),
                    f"http://127.0.0.1:{port}/",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            done += int(re.search(r"(\d+) requests in", out).group(1))
            non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            failed += int(non_2xx.group(1)) if non_2xx else 0
            socket_errors = re.search(r"Socket errors: (.*)", out)
            errors += (
                sum(map(int, re.findall(r"\d+", socket_errors.group(1)))) if socket_errors else 0
            )
            curve.append((done, rss_kib(proc)))
            print(f"{done:>10,} requests  RSS {curve[-1][1] / 1024:6.1f} MiB", file=sys.stderr)
        stop.set()
        leaver.join()
        elapsed = time.monotonic() - start
    print(f"\n### Soak: {done:,} requests ({interface.upper()}, {elapsed:.0f} s)\n")
    print(f"{failed:,} answered 500 by the failing view, {left[0]:,} clients hung up")
    print(f"mid-request or mid-response, {errors} socket errors at the load generator.\n")
    print(row(["requests", "RSS (MiB)"]))
    print(row(["---:", "---:"]))
    step = max(1, len(curve) // 10)
    for n, kib in curve[::step] + ([curve[-1]] if (len(curve) - 1) % step else []):
        print(row([f"{n:,}", f"{kib / 1024:.1f}"]))
    quarter, end = curve[len(curve) // 4][1] / 1024, curve[-1][1] / 1024
    print(f"\nRSS after the first quarter {quarter:.1f} MiB, at the end {end:.1f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", help="servers whose name starts with one of these")
    ap.add_argument("--quick", action="store_true", help="1,000 slowloris for 15 s only")
    ap.add_argument("--soak", type=int, metavar="N", help="N requests against oneloop alone")
    ap.add_argument("--interface", default="asgi", choices=["asgi", "wsgi"])
    args = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 30_000), hard))
    if args.soak:
        soak(args.soak, args.interface)
        return
    peers = [p for p in PEERS if not args.only or any(p.name.startswith(o) for o in args.only)]
    compare(peers, args.quick)


if __name__ == "__main__":
    main()
