"""How each server is started, and a context manager that runs a set of them.

Every server runs from the same virtualenv and Python, with one worker
process, pinned to the server core, with access logs off. Where a server has
a thread pool for WSGI (oneloop, gunicorn gthread) it gets 16 threads;
granian keeps its own default. Each gets a long keep-alive timeout so no
server closes idle connections during a measurement.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
APPS = os.path.join(HERE, "apps")
THREADS = "16"
KEEP_ALIVE = "600"
TLS_DIR = os.path.join(HERE, "..", "..", "build", "bench-tls")


@dataclass(frozen=True)
class Target:
    """One server serving one app, as a row of a scenario."""

    server: str  # floor, oneloop, uvicorn, gunicorn, granian, hypercorn
    interface: str  # asgi, wsgi, or "-" for the floor
    app: str  # module:attribute inside apps/
    label: str
    options: tuple[str, ...] = ()  # extra command-line options for this row only
    pythonpath: str = ""  # oneloop: run another build of it (bench/servers/compare.py)
    # Serves WebSockets. Only granian's command differs: the HTTP rows run it
    # with --no-ws, so it does not pay for a protocol they never use.
    ws: bool = False
    http2: bool = False  # loaded over HTTP/2 (granian then runs with --http 2)
    tls: bool = False  # over TLS, with a self-signed certificate (tls_files())

    @property
    def is_oneloop(self) -> bool:
        return self.server == "oneloop"


FLOOR = Target("floor", "-", "-", "C epoll floor")
# The upstream of the Flask async scenario: the floor server, so it costs little.
UPSTREAM = Target("floor", "-", "-", "upstream")


def tls_files() -> tuple[str, str]:
    """A self-signed certificate and its key for the TLS rows, made once."""
    cert, key = os.path.join(TLS_DIR, "cert.pem"), os.path.join(TLS_DIR, "key.pem")
    if not os.path.exists(key):
        os.makedirs(TLS_DIR, exist_ok=True)
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30"),
                *("-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert),
            ],
            check=True,
            capture_output=True,
        )
    return cert, key


def _oneloop(t: Target, port: int) -> list[str]:
    argv = [sys.executable, "-m", "oneloop", "--app-dir", APPS, "--interface", t.interface]
    if t.tls:
        cert, key = tls_files()
        argv += ["--ssl-certfile", cert, "--ssl-keyfile", key]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    argv += ["--log-level", "warning", "--timeout-keep-alive", KEEP_ALIVE]
    return argv + (["--threads", THREADS] if t.interface == "wsgi" else []) + [t.app]


def _uvicorn(t: Target, port: int) -> list[str]:
    argv = [sys.executable, "-m", "uvicorn", "--app-dir", APPS, "--port", str(port)]
    argv += ["--interface", "asgi3" if t.interface == "asgi" else "wsgi"]
    argv += ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]
    if t.tls:
        cert, key = tls_files()
        argv += ["--ssl-certfile", cert, "--ssl-keyfile", key]
    return [*argv, "--log-level", "warning", "--timeout-keep-alive", KEEP_ALIVE, t.app]


def _gunicorn(t: Target, port: int) -> list[str]:
    argv = [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", THREADS, "-w", "1"]
    argv += ["-b", f"127.0.0.1:{port}", "--chdir", APPS, "--keep-alive", KEEP_ALIVE]
    # worker-connections caps open connections in gthread (default 1000).
    argv += ["--worker-connections", "20000", "--no-control-socket", "--log-level", "warning"]
    return [*argv, t.app]


def _granian(t: Target, port: int) -> list[str]:
    argv = [sys.executable, "-m", "granian", "--interface", t.interface, "--workers", "1"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--http", "2" if t.http2 else "1"]
    argv += [] if t.ws else ["--no-ws"]
    if t.tls:
        cert, key = tls_files()
        argv += ["--ssl-certificate", cert, "--ssl-keyfile", key]
    argv += ["--loop", "uvloop", "--working-dir", APPS, "--log-level", "warning"]
    return [*argv, "--http1-header-read-timeout", "60000", t.app]


def _hypercorn(t: Target, port: int) -> list[str]:
    argv = [sys.executable, "-m", "hypercorn", "-k", "uvloop", "-w", "1"]
    argv += ["-b", f"127.0.0.1:{port}", "--keep-alive", KEEP_ALIVE, "--log-level", "warning"]
    if t.tls:
        cert, key = tls_files()
        argv += ["--certfile", cert, "--keyfile", key]
    return [*argv, t.app]


COMMANDS = {
    "oneloop": _oneloop,
    "uvicorn": _uvicorn,
    "gunicorn": _gunicorn,
    "granian": _granian,
    "hypercorn": _hypercorn,
}


def command(t: Target, port: int, tools: str) -> list[str]:
    if t.server == "floor":
        return [os.path.join(tools, "floor_server"), str(port)]
    argv = COMMANDS[t.server](t, port)
    prefix = ["env", f"PYTHONPATH={t.pythonpath}"] if t.pythonpath else []
    return [*prefix, *argv[:-1], *t.options, argv[-1]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _answers(port: int, target: Target | None) -> bool:
    """Does the server answer a request (HTTP/1.1), or the HTTP/2 preface
    with its SETTINGS frame, over TLS for the TLS rows?"""
    http2 = target is not None and target.http2
    with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
        s: socket.socket = raw
        if target is not None and target.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"] if http2 else ["http/1.1"])
            s = ctx.wrap_socket(raw)
        if http2:
            s.sendall(H2_PREFACE)
            return s.recv(9)[3:4] == b"\x04"
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        return s.recv(64).startswith(b"HTTP/1.1")


def wait_ready(
    port: int, proc: subprocess.Popen, timeout: float, target: Target | None = None
) -> None:
    """Until the server answers a request (not merely accepts a connection:
    supervisors listen before their worker has imported the app)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before serving")
        try:
            if _answers(port, target):
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"not serving on port {port} after {timeout:.0f}s")


@dataclass
class Running:
    target: Target
    port: int
    proc: subprocess.Popen
    log: str

    @property
    def url(self) -> str:
        return f"{'https' if self.target.tls else 'http'}://127.0.0.1:{self.port}/"


def start(
    t: Target,
    cpu: str,
    tools: str,
    logs: str,
    env: dict[str, str],
    prefix: tuple[str, ...] | list[str] = (),
) -> Running:
    """Starts the target pinned to `cpu` in a session of its own, so it and
    every process it forks can be stopped together."""
    port = free_port()
    log = os.path.join(logs, f"{t.label}.log".replace(" ", "_").replace("/", "-"))
    argv = ["taskset", "-c", cpu, *prefix, *command(t, port, tools)]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            argv, cwd=APPS, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Running(t, port, proc, log)


def stop(r: Running, grace: float = 5) -> None:
    """TERM to the server's process group, KILL to whatever is left after `grace`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(r.proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        r.proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(r.proc.pid, signal.SIGKILL)
    r.proc.wait()


@contextlib.contextmanager
def running(
    targets: list[Target], cpu: str, tools: str, logs: str, env: dict[str, str]
) -> Iterator[dict[Target, Running | Exception]]:
    """Starts every target; one that fails to start maps to its exception, so
    one broken peer does not cost the rest of the run."""
    started: dict[Target, Running | Exception] = {}
    try:
        for t in targets:
            r = start(t, cpu, tools, logs, env)
            started[t] = r
            try:
                wait_ready(r.port, r.proc, timeout=60, target=t)
            except RuntimeError as e:
                stop(r)
                log = os.path.relpath(r.log, os.path.join(HERE, "..", ".."))
                started[t] = RuntimeError(f"{t.label}: {e} (log: {log})")
        yield started
    finally:
        for r in started.values():
            if isinstance(r, Running):
                stop(r)
