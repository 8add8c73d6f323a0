"""The process model, proven with real processes over loopback: the
supervisor and its workers, gunicorn's signals, health checks, max-requests,
--reload, systemd, and the gunicorn worker class.

Steady load comes from threads speaking HTTP/1.1 over raw sockets, so every
failure is counted exactly. A request sent on a kept-alive connection that
closed under it, with no byte of response, is counted apart as a retry
(HTTP lets a client retry it, RFC 9112, 9.3.1): a killed worker leaves
those. Reloads and recycling leave none (test_zero_loss.py has the
stricter clients); anything else (a refused connection, an error or a cut
response, a 5xx) fails the test.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from conftest import APPS, listening_socket

APP = "process_model.apps"
HERE = Path(__file__).parent


# -- running oneloop ----------------------------------------------------------------


@dataclass
class Supervisor:
    proc: subprocess.Popen
    port: int
    err_path: Path
    out_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.err_path.read_text(errors="replace")

    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 10.0) -> str:
        """Until `pattern` (a regex) is in the error log `count` times."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if len(re.findall(pattern, log)) >= count:
                return log
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise AssertionError(f"{pattern!r} x{count} not logged; log:\n{self.log()}")

    def workers(self) -> list[int]:
        """The supervisor's child processes, booting ones included."""
        pid = self.proc.pid
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except FileNotFoundError:
            return []
        return [int(p) for p in text.split()]

    def serving(self) -> set[int]:
        """Worker pids that logged "Serving" (and are still children)."""
        logged = {int(p) for p in re.findall(r"Serving \S+ app on \S+ \(pid (\d+)\)", self.log())}
        return logged & set(self.workers())

    def wait_serving(self, n: int, exclude: set[int] = frozenset(), timeout: float = 10.0) -> set:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.serving() - exclude
            if len(pids) >= n:
                return pids
            assert self.proc.poll() is None, self.log()
            time.sleep(0.01)
        raise AssertionError(f"{n} workers not serving; log:\n{self.log()}")

    def wait_gone(self, pids: set[int], timeout: float = 10.0) -> None:
        """Until none of `pids` is a child any more."""
        deadline = time.monotonic() + timeout
        while pids & set(self.workers()):
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.01)

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@pytest.fixture
def supervise(tmp_path: Path) -> Iterator:
    """supervise(APP, *options, env=, app_dir=, ready=N, fd=True): `python -m
    oneloop` on a socket bound here (--fd), or with fd=False on a port it binds
    itself; with ready=N, wait until N workers serve."""
    started: list[Supervisor] = []

    def start(
        app: str,
        *options: str,
        env: dict | None = None,
        app_dir: Path = APPS,
        ready: int | None = 1,
        fd: bool = True,
    ) -> Supervisor:
        sock = listening_socket()
        n = len(started)
        err_path, out_path = tmp_path / f"sup{n}.err", tmp_path / f"sup{n}.out"
        # fd=False: oneloop binds the port itself (the socket is its own).
        port = sock.getsockname()[1]
        fd_args = ["--fd", str(sock.fileno())] if fd else ["-b", f"127.0.0.1:{port}"]
        if not fd:
            sock.close()
        cmd = [sys.executable, "-m", "oneloop", "--app-dir", str(app_dir), *fd_args, *options, app]
        full_env = {**_clean_environ(), "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(err_path, "wb") as err, open(out_path, "wb") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                pass_fds=[sock.fileno()] if fd else [],
                env=full_env,
                start_new_session=True,
            )
        sup = Supervisor(proc, port, err_path, out_path)
        sock.close()
        started.append(sup)
        if ready:
            sup.wait_serving(ready)
        return sup

    yield start
    for sup in started:
        with contextlib.suppress(Exception):
            if sup.proc.poll() is None:
                sup.stop(signal.SIGKILL, 5)
        # the workers die with the supervisor (parent-death signal); make sure
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sup.proc.pid, signal.SIGKILL)


def _clean_environ() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ONELOOP_", "LISTEN_", "NOTIFY_", "WATCHDOG_"))
        and k not in ("WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS")
    }


def get(url: str, timeout: float = 5.0) -> dict:
    r = httpx.get(url, timeout=timeout)
    assert r.status_code == 200, r.text
    return r.json()


def serving_pids(url: str, expected: int, within: float = 10.0) -> set[int]:
    """The pids that answer `url`, asked until `expected` of them have (which
    worker accepts a connection is up to the kernel: keep asking)."""
    pids: set[int] = set()
    deadline = time.monotonic() + within
    while len(pids) < expected and time.monotonic() < deadline:
        pids.add(get(url)["pid"])
    return pids


# -- steady load ----------------------------------------------------------------------


class NoResponse(Exception):
    """The connection ended before any byte of the response."""


def exchange(sock: socket.socket, path: str, method: str = "GET") -> tuple[int, dict, bool]:
    """One request on `sock` (a POST carries a small body): status, JSON
    body, whether the server closes."""
    body = b"" if method == "GET" else b'{"n": 1}'
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    try:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: test\r\n{length}\r\n".encode() + body)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise NoResponse(repr(exc)) from None
    if not buf:
        raise NoResponse("EOF")
    head, sep, rest = buf.partition(b"\r\n\r\n")
    if not sep:
        raise ConnectionError(f"response head cut: {buf!r}")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip().lower()
    n = int(headers[b"content-length"])
    while len(rest) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"response body cut: {rest!r}")
        rest += chunk
    try:
        body = json.loads(rest[:n])
    except ValueError:
        body = {"raw": head.decode("latin-1") + "\n\n" + rest[:n].decode("latin-1")}
    return int(lines[0].split()[1]), body, headers.get(b"connection") == b"close"


def _closed_by_peer(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


@dataclass
class Failure:
    at: float
    conn_pid: int | None  # the worker the connection had reached, if known
    error: str


@dataclass
class LoadThread:
    port: int
    path: str
    keep_alive: bool
    stop: threading.Event
    ok: int = 0
    retries: list[Failure] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    pids: Counter = field(default_factory=Counter)
    bodies: list[dict] = field(default_factory=list)
    conn_pid: int | None = None

    def run(self) -> None:
        sock, reused = None, False
        while not self.stop.is_set():
            if sock is not None and _closed_by_peer(sock):
                sock.close()  # as HTTP clients do: never reuse a closed connection
                sock = None
            if sock is None:
                sock, reused, self.conn_pid = self._connect(), False, None
                if sock is None:
                    continue
            try:
                status, body, close = exchange(sock, self.path)
            except NoResponse as exc:
                sock.close()
                sock = None
                if reused:  # closed as idle under our feet: retry
                    self.retries.append(Failure(time.monotonic(), self.conn_pid, str(exc)))
                else:
                    self._fail(f"no response on a new connection: {exc}")
                continue
            except (OSError, ValueError) as exc:
                sock.close()
                sock = None
                self._fail(f"{exc!r}")
                continue
            self._record(status, body)
            if close or not self.keep_alive:
                sock.close()
                sock = None
            else:
                reused = True
            time.sleep(0.002)
        if sock is not None:
            sock.close()

    def _connect(self) -> socket.socket | None:
        try:
            return socket.create_connection(("127.0.0.1", self.port), timeout=10)
        except OSError as exc:
            self._fail(f"connect: {exc!r}")
            time.sleep(0.01)
            return None

    def _record(self, status: int, body: dict) -> None:
        if status != 200:
            self._fail(f"status {status}: {body}")
            return
        self.ok += 1
        self.conn_pid = body["pid"]
        self.pids[body["pid"]] += 1
        self.bodies.append(body)

    def _fail(self, error: str) -> None:
        self.failures.append(Failure(time.monotonic(), self.conn_pid, error))


class Load:
    """`threads` clients hammering `path` until stopped: half of them on one
    kept-alive connection each, half with a new connection per request."""

    def __init__(self, port: int, path: str = "/", threads: int = 6) -> None:
        self.stop_event = threading.Event()
        self.clients = [
            LoadThread(port, path, keep_alive=i % 2 == 0, stop=self.stop_event)
            for i in range(threads)
        ]
        self.threads = [threading.Thread(target=c.run, daemon=True) for c in self.clients]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(15)
            assert not t.is_alive(), "a load thread is stuck"

    @property
    def ok(self) -> int:
        return sum(c.ok for c in self.clients)

    @property
    def retries(self) -> list[Failure]:
        return [r for c in self.clients for r in c.retries]

    @property
    def failures(self) -> list[Failure]:
        return [f for c in self.clients for f in c.failures]

    @property
    def pids(self) -> Counter:
        return sum((c.pids for c in self.clients), Counter())

    @property
    def bodies(self) -> list[dict]:
        return [b for c in self.clients for b in c.bodies]

    def wait_ok(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        start = self.ok
        while self.ok - start < n:
            assert time.monotonic() < deadline, f"load stalled: {self.failures[:5]}"
            time.sleep(0.01)


def report(name: str, **figures: object) -> None:
    """Measured figures, printed for `pytest -s` (and kept in the output on failure)."""
    print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


# -- workers, loops, listeners ---------------------------------------------------------


def test_workers_share_the_listener_each_with_its_own_loop(supervise, tmp_path):
    """The supervisor forks workers before anything imports the app: only
    workers import it, each inside its own loop, and the supervisor has no
    thread of its own. Connections on the one listening socket reach all."""
    imports = tmp_path / "imports"
    sup = supervise(f"{APP}:app", "-w", "3", env={"PROCESS_APPS_IMPORTS": str(imports)}, ready=3)
    workers = set(sup.workers())
    assert len(workers) == 3
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", sup.port)) as s:
            body = exchange(s, "/")[1]
        seen[body["pid"]] = body
    assert set(seen) == workers
    for body in seen.values():
        assert body["loop"] == body["import_loop"]  # the app imported in the worker's loop
    assert sorted(int(p) for p in imports.read_text().split()) == sorted(workers)
    status = Path(f"/proc/{sup.proc.pid}/status").read_text()
    assert re.search(r"^Threads:\s+1$", status, re.M), status
    assert sup.stop() == 0
    assert not [p for p in workers if Path(f"/proc/{p}").exists()]


def test_workers_default_from_web_concurrency(supervise):
    sup = supervise(f"{APP}:app", env={"WEB_CONCURRENCY": "2"}, ready=2)
    assert len(sup.workers()) == 2
    sup.stop()
    sup = supervise(f"{APP}:app", "-w", "1", env={"WEB_CONCURRENCY": "3"}, ready=1)
    time.sleep(0.3)
    assert len(sup.workers()) == 1  # the command line wins


def test_worker_that_cannot_boot_stops_the_supervisor_with_its_traceback_once(supervise):
    started = time.monotonic()
    sup = supervise("cli_broken_import:app", "-w", "3", ready=None)
    assert sup.proc.wait(10) == 1
    assert time.monotonic() - started < 5
    lines = [line for line in sup.log().splitlines() if line.strip()]
    assert lines[0] == "Traceback (most recent call last):", sup.log()
    assert sup.log().count("Traceback") == 1, sup.log()  # three workers, shown once
    assert re.search(r'File ".*cli_broken_import.py", line 3, in <module>', sup.log())
    assert "oneloop" not in "".join(lines[:-1]), sup.log()  # the app's frames only
    assert lines[-1].startswith("oneloop: error: importing 'cli_broken_import' failed"), lines
    assert "boom at import" in lines[-1]


def test_worker_whose_startup_fails_exits_with_status_3(supervise):
    sup = supervise("asgi_protocol_apps:lifespan_startup_failed", "-w", "2", ready=None)
    assert sup.proc.wait(10) == 3
    assert sup.log().count("oneloop: error: app startup failed: database unreachable") == 1


# -- health -----------------------------------------------------------------------------


def test_kill_9_of_a_worker_under_load(supervise):
    """The victim is replaced within a second; clients of the other workers
    see nothing."""
    # Clients that connect in one burst may all be accepted by one worker
    # (it takes what the queue holds when it wakes). Connections that end
    # every 20 requests move on, so the kept-alive clients spread over the
    # workers: someone must be there to be unaffected.
    sup = supervise(f"{APP}:app", "-w", "3", "--max-keep-alive-requests", "20", ready=3)
    with Load(sup.port, threads=12) as load:
        deadline = time.monotonic() + 10
        while True:
            load.wait_ok(300)
            kept = [c for c in load.clients if c.keep_alive and c.conn_pid]
            by_worker = Counter(c.conn_pid for c in kept)
            if len(by_worker) >= 2 or time.monotonic() > deadline:
                break
        assert len(by_worker) >= 2, by_worker
        victim = by_worker.most_common()[-1][0]
        before = sup.serving()
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        new = sup.wait_serving(1, exclude=before, timeout=5)
        replaced_in = time.monotonic() - killed_at
        load.wait_ok(300)
    failures = load.failures
    # A new connection's failure belongs to no known worker: allow it only
    # at the moment of the kill (the victim had just accepted it).
    unknown = [f for f in failures if f.conn_pid is None]
    assert all(killed_at <= f.at < killed_at + 0.2 for f in unknown), unknown
    on_others = [f for f in failures + load.retries if f.conn_pid not in (victim, None)]
    report(
        "kill -9",
        replaced_in=f"{replaced_in * 1000:.0f}ms",
        requests=load.ok,
        failed=len(failures),
        cut_on_victim=len(failures) + len(load.retries) - len(on_others),
        failed_or_retried_elsewhere=len(on_others),
    )
    assert replaced_in < 1.0
    assert on_others == []
    # Only what the victim held was lost: its kept-alive connections (retried
    # elsewhere), and requests on new connections it had just accepted -- at
    # most one per client that opens a connection per request.
    assert len(unknown) <= sum(not c.keep_alive for c in load.clients), unknown
    assert load.pids[new.pop()] > 0  # the new worker serves
    assert f"Worker pid {victim} exited unexpectedly (killed by SIGKILL)" in sup.log()


def test_wedged_loop_is_killed_after_timeout_and_replaced(supervise):
    """time.sleep in an async view: after --timeout the worker prints its
    stacks (SIGABRT) and is killed; another takes its place. The other
    worker serves throughout."""
    sup = supervise(f"{APP}:app", "-w", "2", "--timeout", "1", ready=2)
    before = sup.serving()
    hung: list = []
    client = threading.Thread(
        target=lambda: hung.append(_try_get(sup.url + "/wedge?t=30", 10)), daemon=True
    )
    wedged_at = time.monotonic()  # before the request: the wedge cannot start earlier
    client.start()
    time.sleep(0.2)
    served_meanwhile = [get(sup.url + "/")["pid"] for _ in range(10)]
    log = sup.wait_log(r"its event loop has been blocked", timeout=5)
    noticed = time.monotonic() - wedged_at
    victim = int(re.search(r"Worker pid (\d+): its event loop has been blocked", log)[1])
    deadline = time.monotonic() + 3
    while Path(f"/proc/{victim}/status").exists() and "zombie" not in _state(victim):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    gone_in = time.monotonic() - wedged_at
    new = sup.wait_serving(1, exclude=before, timeout=5)
    report("wedged loop", noticed=f"{noticed:.2f}s", dead_after=f"{gone_in:.2f}s")
    # The last beat may come up to one beat interval (0.1 s) before the wedge.
    assert 0.9 <= noticed < 1.5
    assert gone_in < noticed + 1.2  # SIGABRT, and SIGKILL one second later at worst
    assert victim in before and victim not in served_meanwhile
    assert new and new.isdisjoint(before)
    log = sup.wait_log(r"in app\n")  # faulthandler's dump names the view
    assert 'apps.py", line' in log and "Current thread" in log
    client.join(5)
    assert hung == [None]  # its client got no response


def _state(pid: int) -> str:
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
    return "gone"


def _try_get(url: str, timeout: float) -> dict | None:
    try:
        return get(url, timeout)
    except (httpx.HTTPError, AssertionError):
        return None


def test_crashing_workers_are_replaced_with_backoff(supervise, tmp_path):
    """A worker that dies right after it starts serving is replaced at once
    the first time, then later and later -- not in a tight fork loop; once
    the cause is gone, a worker stays."""
    marker = tmp_path / "crash"
    marker.touch()
    sup = supervise(f"{APP}:crashing", "-w", "1", env={"CRASH_MARKER": str(marker)}, ready=None)
    born = _watch_births(sup, count=6, timeout=10)
    marker.unlink()
    gaps = [b - a for a, b in itertools.pairwise(born)]
    report("crash backoff", gaps_s=[round(g, 2) for g in gaps])
    assert gaps[0] < 0.6, gaps  # the first replacement is immediate
    assert gaps[-1] > gaps[0] + 0.5, gaps  # then it backs off
    assert "Workers keep failing; next one in" in sup.log()
    survivor = sup.wait_serving(1, timeout=10)
    time.sleep(0.3)
    assert get(sup.url + "/")["pid"] in survivor
    assert sup.proc.poll() is None


def _watch_births(sup: Supervisor, count: int, timeout: float) -> list[float]:
    """When each of the first `count` workers appeared."""
    born: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while len(born) < count:
        assert time.monotonic() < deadline, (born, sup.log())
        for pid in sup.workers():
            born.setdefault(pid, time.monotonic())
        time.sleep(0.002)
    return sorted(born.values())


# -- signals ---------------------------------------------------------------------------


def test_hup_under_load_replaces_every_worker_without_a_failed_request(supervise, tmp_path):
    """HUP: new workers (new code, new --env-file) serve before the old ones
    drain; not one request fails, twice in a row."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    shutil.copy(APPS / "process_model" / "versioned.py", app_dir / "versioned.py")
    env_file = tmp_path / "env"
    env_file.write_text("APP_COLOR=blue\n")
    sup = supervise(
        "versioned:app",
        "-w",
        "2",
        "--env-file",
        str(env_file),
        app_dir=app_dir,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
        ready=2,
    )
    with Load(sup.port, threads=8) as load:
        load.wait_ok(200)
        generations = [sup.serving()]
        for version, color in (("v2", "green"), ("v3", "red")):
            _edit_version(app_dir / "versioned.py", version)
            env_file.write_text(f"# edited\nAPP_COLOR={color}\n")
            sup.send(signal.SIGHUP)
            sup.wait_log(r"Reload complete", count=len(generations), timeout=10)
            generations.append(sup.wait_serving(2, exclude=set().union(*generations)))
            sup.wait_gone(generations[-2])
            load.wait_ok(200)
            body = get(sup.url + "/")
            assert (body["version"], body["color"]) == (version, color)
        load.wait_ok(200)
    assert set(sup.workers()) == generations[-1]  # the old ones are gone
    report(
        "HUP x2 under load", requests=load.ok, failed=len(load.failures), retried=len(load.retries)
    )
    assert load.failures == [] and load.retries == []
    last = load.bodies[-50:]
    assert {b["version"] for b in last} == {"v3"}


def _edit_version(path: Path, version: str) -> None:
    text = re.sub(r'VERSION = "\w+"', f'VERSION = "{version}"', path.read_text())
    path.write_text(text)


def test_hup_with_broken_code_keeps_the_old_workers(supervise, tmp_path):
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    shutil.copy(APPS / "process_model" / "versioned.py", app_dir / "versioned.py")
    sup = supervise("versioned:app", "-w", "2", "--log-level", "debug", app_dir=app_dir, ready=2)
    old = sup.serving()
    (app_dir / "versioned.py").write_text("raise RuntimeError('half-deployed')\n")
    sup.send(signal.SIGHUP)
    log = sup.wait_log(r"Reload failed: .*half-deployed.*the previous workers keep serving")
    time.sleep(0.3)
    assert sup.proc.poll() is None, log
    assert {get(sup.url + "/")["pid"] for _ in range(20)} <= old
    assert get(sup.url + "/")["version"] == "v1"


def test_term_finishes_20_in_flight_requests_then_exits(supervise, tmp_path):
    """TERM: stop accepting, finish what is in flight, answer the next request
    of an idle kept-alive connection (with Connection: close), exit."""
    started = tmp_path / "started"
    sup = supervise(f"{APP}:app", "-w", "2", env={"PROCESS_APPS_STARTED": str(started)}, ready=2)
    idle = socket.create_connection(("127.0.0.1", sup.port), timeout=5)
    exchange(idle, "/")  # now an idle keep-alive connection
    results, clients = _in_flight(sup, "/slow?t=1.5", 20, started)
    termed = time.monotonic()
    sup.send(signal.SIGTERM)
    time.sleep(0.2)
    # Not closed under its client: its next request is answered, and closes it.
    status, _, close = exchange(idle, "/")
    assert (status, close) == (200, True)
    idle.settimeout(1)
    assert idle.recv(1) == b""
    for t in clients:
        t.join(10)
    finished = time.monotonic() - termed
    assert sup.proc.wait(10) == 0
    exited = time.monotonic() - termed
    report("TERM with 20 in flight", all_answered=f"{finished:.2f}s", exited=f"{exited:.2f}s")
    assert len(results) == 20 and all(r and r["path"] == "/slow" for r in results), results
    assert finished < 2.0
    assert exited < finished + 1.0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", sup.port), timeout=1)


def _in_flight(sup: Supervisor, path: str, n: int, started: Path) -> tuple[list, list]:
    """n requests the app has begun to handle (each noted in `started`)."""
    results: list = []

    def one() -> None:
        try:
            with socket.create_connection(("127.0.0.1", sup.port), timeout=15) as s:
                results.append(exchange(s, path)[1])
        except (OSError, NoResponse) as exc:
            results.append(exc)

    clients = [threading.Thread(target=one) for _ in range(n)]
    for t in clients:
        t.start()
    deadline = time.monotonic() + 10
    while not started.exists() or len(started.read_text().split()) < n:
        assert time.monotonic() < deadline, sup.log()
        time.sleep(0.01)
    return results, clients


def test_term_exits_within_the_graceful_timeout(supervise, tmp_path):
    started = tmp_path / "started"
    sup = supervise(
        f"{APP}:app",
        "-w",
        "1",
        "--graceful-timeout",
        "1",
        env={"PROCESS_APPS_STARTED": str(started)},
        ready=1,
    )
    results, clients = _in_flight(sup, "/slow?t=30", 1, started)
    termed = time.monotonic()
    assert sup.stop(signal.SIGTERM) == 0
    exited = time.monotonic() - termed
    clients[0].join(5)
    assert 1.0 <= exited < 2.5
    assert isinstance(results[0], NoResponse | OSError), results
    assert "1 requests still running at shutdown" in sup.log()


def test_int_stops_at_once(supervise):
    sup = supervise(f"{APP}:app", "-w", "2", ready=2)
    slow = threading.Thread(target=lambda: _try_get(sup.url + "/slow?t=30", 10))
    slow.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert sup.stop(signal.SIGINT) == 0
    assert time.monotonic() - started < 1.5
    slow.join(5)
    assert "Traceback" not in sup.log()


@pytest.mark.parametrize("app", ["app", "wsgi"])
def test_max_requests_recycles_workers_without_failed_requests(supervise, app):
    sup = supervise(
        f"{APP}:{app}", "-w", "2", "--max-requests", "50", "--max-requests-jitter", "20", ready=2
    )
    first = sup.serving()
    with Load(sup.port, threads=6) as load:
        load.wait_ok(800)
    pids = load.pids
    report(
        f"max-requests 50+0..20 ({app})",
        requests=load.ok,
        workers_seen=len(pids),
        failed=len(load.failures),
        retried=len(load.retries),
    )
    assert load.failures == [] and load.retries == []
    assert len(pids) >= 12, pids
    # Workers stop within a few requests of their limit, counted in the worker.
    served = [int(n) for n in re.findall(r"served (\d+) requests", sup.log())]
    assert served and all(50 <= n <= 70 + 5 for n in served), served
    assert first.isdisjoint(sup.serving())


def test_ttin_adds_and_ttou_removes_a_worker(supervise):
    sup = supervise(f"{APP}:app", "-w", "1", ready=1)
    for count in (2, 3):  # one at a time: a signal sent twice at once arrives once
        sup.send(signal.SIGTTIN)
        sup.wait_log(rf"Workers: {count} \(SIGTTIN\)")
    assert len(sup.wait_serving(3)) == 3
    three = set(sup.workers())
    sup.send(signal.SIGTTOU)
    deadline = time.monotonic() + 5
    while len(sup.workers()) != 2:
        assert time.monotonic() < deadline, sup.workers()
        time.sleep(0.01)
    assert set(sup.workers()) < three
    sup.send(signal.SIGTTOU)
    sup.wait_log(r"Workers: 1 \(SIGTTOU\)")
    sup.send(signal.SIGTTOU)
    sup.wait_log("one worker is the fewest")
    time.sleep(0.3)
    assert len(sup.workers()) == 1


def test_usr1_reopens_log_files_and_pid_file(supervise, tmp_path):
    error_log, access_log, pid = tmp_path / "error.log", tmp_path / "access.log", tmp_path / "pid"
    sup = supervise(
        f"{APP}:app",
        "-w",
        "2",
        "--error-logfile",
        str(error_log),
        "--access-logfile",
        str(access_log),
        "--pid",
        str(pid),
        ready=None,
    )
    deadline = time.monotonic() + 10
    while "workers serving" not in (error_log.read_text() if error_log.exists() else ""):
        assert time.monotonic() < deadline and sup.proc.poll() is None, sup.log()
        time.sleep(0.02)
    assert pid.read_text() == f"{sup.proc.pid}\n"
    get(sup.url + "/before-rotation")
    error_log.rename(tmp_path / "error.log.1")
    access_log.rename(tmp_path / "access.log.1")
    sup.send(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not (access_log.exists() and "after-rotation" in access_log.read_text()):
        assert time.monotonic() < deadline
        for _ in range(4):  # reach both workers
            get(sup.url + "/after-rotation")
        time.sleep(0.05)
    assert "before-rotation" in (tmp_path / "access.log.1").read_text()
    assert "before-rotation" not in access_log.read_text()
    assert "Received SIGUSR1" in (tmp_path / "error.log.1").read_text()
    assert sup.stop() == 0
    assert not pid.exists()
    assert "Received SIGTERM" in error_log.read_text()


def test_single_process_mode_handles_term_and_int_the_same(supervise, tmp_path):
    """--workers 0: no supervisor, the process serves itself."""
    pid_file = tmp_path / "pid"
    sup = supervise(f"{APP}:app", "--workers", "0", "--pid", str(pid_file), ready=None)
    sup.wait_log(r"Serving ASGI3")
    assert get(sup.url + "/")["pid"] == sup.proc.pid
    assert pid_file.read_text().strip() == str(sup.proc.pid)
    results: list = []
    clients = [
        threading.Thread(target=lambda: results.append(_try_get(sup.url + "/slow?t=1", 10)))
        for _ in range(5)
    ]
    for t in clients:
        t.start()
    time.sleep(0.3)
    assert sup.stop(signal.SIGTERM) == 0
    for t in clients:
        t.join(5)
    assert len(results) == 5 and all(results), results
    assert not pid_file.exists()
    sup = supervise(f"{APP}:app", "--workers", "0", ready=None)
    sup.wait_log(r"Serving ASGI3")
    slow = threading.Thread(target=lambda: _try_get(sup.url + "/slow?t=30", 10))
    slow.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert sup.stop(signal.SIGINT) == 0
    assert time.monotonic() - started < 1.5


# -- --reload ----------------------------------------------------------------------------


def test_reload_restarts_workers_on_source_changes(supervise, tmp_path):
    """--reload: an edit is served within a second or so; broken code is
    reported and the last good workers keep serving until it is fixed;
    files that do not match the patterns are ignored."""
    app_dir = tmp_path / "app"
    (app_dir / "pkg").mkdir(parents=True)
    shutil.copy(APPS / "process_model" / "versioned.py", app_dir / "versioned.py")
    sup = supervise(
        "versioned:app",
        "--reload",
        "--reload-exclude",
        "ignored_*.py",
        app_dir=app_dir,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
        ready=1,
    )
    first = sup.serving()
    edited = time.monotonic()
    _edit_version(app_dir / "versioned.py", "v2")
    second = sup.wait_serving(1, exclude=first)
    seen_in = time.monotonic() - edited
    sup.wait_gone(first)
    assert get(sup.url + "/")["version"] == "v2"
    assert "versioned.py changed" in sup.log()

    (app_dir / "ignored_notes.py").write_text("x = 1\n")
    (app_dir / "notes.txt").write_text("not python\n")
    time.sleep(0.8)
    assert sup.log().count("Reloading (") == 1  # neither triggered a reload

    (app_dir / "pkg" / "helper.py").write_text("raise RuntimeError('typo')\n")
    (app_dir / "versioned.py").write_text(
        (app_dir / "versioned.py").read_text().replace("import os", "import os\nimport pkg.helper")
    )
    log = sup.wait_log(r"Reload failed: .*typo")
    assert get(sup.url + "/")["version"] == "v2"  # the last good code serves
    # The app's traceback, down to the line that raised, then the one line.
    trace = log[log.index("Traceback (most recent call last):") : log.index("Reload failed")]
    assert re.search(r'File ".*versioned.py", line \d+, in <module>\n    import pkg.helper', trace)
    assert re.search(r'File ".*helper.py", line 1, in <module>', trace), trace
    assert "oneloop" not in trace and "importlib" not in trace, trace

    (app_dir / "pkg" / "helper.py").write_text("HELPER = True\n")  # in a subdirectory
    _edit_version(app_dir / "versioned.py", "v3")
    sup.wait_serving(1, exclude=first | second)
    sup.wait_gone(second)
    assert get(sup.url + "/")["version"] == "v3"
    report("--reload", edit_served_in=f"{seen_in:.2f}s")
    assert seen_in < 3


# -- systemd ---------------------------------------------------------------------------


def _notify_socket(name: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(name if not name.startswith("@") else "\0" + name[1:])
    sock.settimeout(0.05)
    return sock


class Notifications:
    """What a test's NOTIFY_SOCKET received, with the times it arrived."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received: list[tuple[float, str]] = []

    def collect(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                data = self.sock.recv(4096)
                self.received.append((time.monotonic(), data.decode()))

    def wait_for(
        self, text: str, after: float = 0.0, timeout: float = 10.0, log: Path | None = None
    ) -> float:
        """When a message with the line `text` arrived (after `after`)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for at, message in self.received[seen:]:
                if at > after and text in message.split("\n"):
                    return at
            seen = len(self.received)
            self.collect(0.05)
        server_log = log.read_text() if log else ""
        raise AssertionError(f"{text!r} not received: {self.received}\n{server_log}")

    def messages(self) -> list[str]:
        return [m for _, m in self.received]


def test_systemd_socket_activation_notify_and_watchdog(tmp_path):
    """Started the way systemd starts a Type=notify service with a socket
    unit: the listening socket arrives as fd 3 (LISTEN_FDS), the supervisor
    says READY=1 once its workers serve, pings the watchdog only while every
    worker's loop runs, says RELOADING=1 / READY=1 around a reload and
    STOPPING=1 on TERM."""
    notify = Notifications(_notify_socket(f"@oneloop-test-{os.getpid()}-{time.monotonic_ns()}"))
    address = notify.sock.getsockname()
    listener = listening_socket()
    port = listener.getsockname()[1]
    err = tmp_path / "err"
    # What systemd does between fork and exec: the socket becomes fd 3.
    activate = (
        "import os, sys\n"
        "os.dup2(int(sys.argv[1]), 3)\n"
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1')\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'oneloop', *sys.argv[2:]])\n"
    )
    command = [sys.executable, "-c", activate, str(listener.fileno())]
    command += ["--app-dir", str(APPS), "-w", "2", f"{APP}:app"]
    env = {
        **_clean_environ(),
        "NOTIFY_SOCKET": "@" + address[1:].decode(),
        "WATCHDOG_USEC": "400000",
        "PYTHONUNBUFFERED": "1",
    }
    with open(err, "wb") as log:
        proc = subprocess.Popen(
            command,
            pass_fds=[listener.fileno()],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
    listener.close()
    try:
        ready_at = notify.wait_for("READY=1", log=err)
        ready = next(m for m in notify.messages() if "READY=1" in m)
        assert f"MAINPID={proc.pid}" in ready.split("\n")
        assert len(serving_pids(f"http://127.0.0.1:{port}/", 2)) == 2
        notify.collect(1.0)
        pings = [at for at, m in notify.received if m == "WATCHDOG=1" and at > ready_at]
        assert len(pings) >= 3, notify.received  # every 0.2 s (half of 0.4 s)

        # A worker's loop blocked (but not yet for --timeout): no pings.
        threading.Thread(target=_try_get, args=(f"http://127.0.0.1:{port}/wedge?t=1.5", 5)).start()
        time.sleep(0.05)
        wedged = time.monotonic()
        notify.collect(1.8)
        gaps = [
            b - a
            for a, b in itertools.pairwise(
                at for at, m in notify.received if m == "WATCHDOG=1" and at > wedged - 0.3
            )
        ]
        assert max(gaps) >= 0.8, gaps  # silent while the loop was blocked...
        assert notify.received[-1][0] > wedged + 1.5  # ...and pinging again after

        hup = time.monotonic()
        os.kill(proc.pid, signal.SIGHUP)
        reloading = notify.wait_for("RELOADING=1", after=hup)
        notify.wait_for("READY=1", after=reloading)
        os.kill(proc.pid, signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        notify.sock.close()
    assert "Traceback" not in err.read_text()


def test_systemd_notify_from_a_lone_worker(supervise, tmp_path):
    """--workers 0: the process itself says READY=1 and pings from its loop."""
    path = tmp_path / "notify"
    notify = Notifications(_notify_socket(str(path)))
    sup = supervise(
        f"{APP}:app",
        "--workers",
        "0",
        env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"},
        ready=None,
    )
    notify.wait_for("READY=1")
    ready = next(m for m in notify.messages() if "READY=1" in m)
    assert f"MAINPID={sup.proc.pid}" in ready.split("\n")
    notify.collect(0.5)
    assert notify.messages().count("WATCHDOG=1") >= 3
    sup.send(signal.SIGTERM)
    notify.wait_for("STOPPING=1")
    assert sup.proc.wait(10) == 0
    notify.sock.close()


# -- the gunicorn worker class -----------------------------------------------------------


def _no_control_socket() -> list[str]:
    """gunicorn 24+ opens a control socket in the home directory; not here."""
    from gunicorn.config import Config

    return ["--no-control-socket"] if "control_socket_disable" in Config().settings else []


_NO_CONTROL_SOCKET = _no_control_socket()


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator:
    procs: list[subprocess.Popen] = []

    def start(*args: str, env: dict | None = None) -> tuple[str, Path, subprocess.Popen]:
        sock = listening_socket()
        port = sock.getsockname()[1]
        sock.close()  # gunicorn binds it itself
        log = tmp_path / f"gunicorn{len(procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "-k",
                    "oneloop.workers.OneloopWorker",
                    "-b",
                    f"127.0.0.1:{port}",
                    "--chdir",
                    str(APPS),
                    *_NO_CONTROL_SOCKET,
                    *args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**_clean_environ(), "PYTHONUNBUFFERED": "1", **(env or {})},
                start_new_session=True,
            )
        procs.append(proc)
        return f"http://127.0.0.1:{port}", log, proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _wait_workers(url: str, log: Path, proc: subprocess.Popen, n: int) -> None:
    deadline = time.monotonic() + 15
    while len(re.findall(r"Serving \S+ app on", log.read_text())) < n:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)


def test_gunicorn_worker_serves_flask_async_views_with_a_global_client(serve, gunicorn):
    """gunicorn's arbiter, oneloop's workers: a Flask app whose async views
    share one httpx.AsyncClient made at import time, under concurrency,
    with no error -- the client lives on each worker's one loop."""
    upstream = serve("echo_apps:echo")
    url, log, proc = gunicorn(
        "-w", "2", "process_model.flask_client:app", env={"UPSTREAM": upstream.url}
    )
    _wait_workers(url, log, proc, 2)
    port = int(url.rsplit(":", 1)[1])
    with Load(port, threads=8) as load:
        load.wait_ok(400)
    report(
        "gunicorn -k oneloop, Flask + global AsyncClient",
        requests=load.ok,
        failed=len(load.failures),
        retried=len(load.retries),
    )
    assert load.failures == [] and load.retries == []
    by_pid: dict[int, set] = {}
    for body in load.bodies:
        assert body["upstream"] == "/from-flask"
        by_pid.setdefault(body["pid"], set()).add((body["loop"], body["client"]))
    assert len(by_pid) == 2
    assert all(len(pairs) == 1 for pairs in by_pid.values()), by_pid  # one loop, one client
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert "Traceback" not in log.read_text()


def test_gunicorn_worker_honours_max_requests(gunicorn):
    url, log, proc = gunicorn(
        "-w", "2", "--max-requests", "40", "--max-requests-jitter", "10", f"{APP}:app"
    )
    _wait_workers(url, log, proc, 2)
    with Load(int(url.rsplit(":", 1)[1]), threads=4) as load:
        load.wait_ok(400)
    report(
        "gunicorn -k oneloop --max-requests",
        requests=load.ok,
        workers=len(load.pids),
        failed=len(load.failures),
    )
    assert load.failures == []
    assert len(load.pids) >= 6
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


def test_workers_stop_when_the_supervisor_is_killed(supervise):
    """kill -9 of the supervisor: its workers notice and stop, rather than
    serving on unsupervised."""
    sup = supervise(f"{APP}:app", "-w", "2", ready=2)
    workers = set(sup.workers())
    os.kill(sup.proc.pid, signal.SIGKILL)
    sup.proc.wait(5)
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{p}").exists() and "zombie" not in _state(p) for p in workers):
        assert time.monotonic() < deadline, [_state(p) for p in workers]
        time.sleep(0.02)


def test_hup_reads_rotated_tls_certificates(supervise, tmp_path):
    import ssl

    import trustme

    ca = trustme.CA()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"

    def issue(name: str) -> None:
        server_cert = ca.issue_cert("127.0.0.1", common_name=name)
        server_cert.private_key_pem.write_to_path(str(key))
        server_cert.cert_chain_pems[0].write_to_path(str(cert))

    def served_name() -> str:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        with (
            socket.create_connection(("127.0.0.1", sup.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            subject = dict(x[0] for x in tls.getpeercert()["subject"])
            return subject["commonName"]

    issue("first")
    sup = supervise(
        f"{APP}:app", "-w", "1", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), ready=1
    )
    assert served_name() == "first"
    old = sup.serving()
    issue("second")
    sup.send(signal.SIGHUP)
    sup.wait_serving(1, exclude=old)
    sup.wait_gone(old)
    assert served_name() == "second"


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["--workers", "-1"], {}, "--workers"),
        (["-w", "two"], {}, "--workers"),
        ([], {"WEB_CONCURRENCY": "lots"}, "--workers"),
        (["--max-requests", "abc"], {}, "--max-requests"),
        (["--max-requests-jitter", "-5"], {}, "--max-requests-jitter"),
        (["--timeout", "0.1"], {}, "--timeout"),
        (["-t", "soon"], {}, "--timeout"),
        (["--graceful-timeout", "-1"], {}, "--timeout-graceful-shutdown"),
        (["--reload", "--workers", "0"], {}, "--reload needs the supervisor"),
        (["--env-file", "/nonexistent/oneloop.env"], {}, "--env-file"),
        ([], {"ONELOOP_MAX_REQUESTS": "many"}, "--max-requests"),
    ],
)
def test_bad_process_options_are_one_line_errors(args, env, fragment):
    result = subprocess.run(
        [sys.executable, "-m", "oneloop", "--app-dir", str(APPS), *args, f"{APP}:app"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**_clean_environ(), **env},
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("oneloop: error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_env_file_syntax_error_names_the_line(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("# settings\nGOOD=1\nthis is not an assignment\n")
    result = subprocess.run(
        [sys.executable, "-m", "oneloop", "--env-file", str(env_file), f"{APP}:app"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_clean_environ(),
    )
    assert result.returncode == 2
    assert f"--env-file {env_file}, line 3: expected KEY=VALUE" in result.stderr


def test_gunicorn_worker_heartbeat_and_timeout(gunicorn):
    """The loop notifies gunicorn's arbiter: an idle worker outlives
    --timeout; a worker whose loop is blocked does not (stack dump first)."""
    url, log, proc = gunicorn("-w", "1", "--timeout", "1", f"{APP}:app")
    _wait_workers(url, log, proc, 1)
    first = get(url + "/")["pid"]
    time.sleep(2.5)  # idle for more than twice --timeout
    assert get(url + "/")["pid"] == first
    assert _try_get(url + "/wedge?t=30", 10) is None
    _wait_workers(url, log, proc, 2)
    assert get(url + "/")["pid"] != first
    text = log.read_text()
    assert f"WORKER TIMEOUT (pid:{first})" in text
    assert 'apps.py", line' in text and "in app" in text  # where the loop was stuck
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


@pytest.mark.parametrize("how", ["inotify", "polling"])
def test_watcher_sees_changes(tmp_path, monkeypatch, how):
    """Both ways of watching report edits, new files in new directories and
    deletions, and nothing for files the patterns leave out."""
    from oneloop import reload

    if how == "polling":
        monkeypatch.setattr(reload, "POLL_INTERVAL", 0.05)

        def no_inotify(self):
            raise OSError(38, "inotify_init1: Function not implemented")

        monkeypatch.setattr(reload.Watcher, "_start_inotify", no_inotify)
    (tmp_path / "app.py").write_text("x = 1\n")
    (tmp_path / ".git").mkdir()
    watcher = reload.Watcher([str(tmp_path)], reload.Filter([".env"], []))
    assert (watcher.fileno() is None) == (how == "polling")

    def changes_after(action) -> set[str]:
        """What is reported within 0.3 s of the first report (or of the
        action, if nothing is)."""
        time.sleep(0.06)  # past a polling interval, and a new mtime
        watcher.changes()
        action()
        found: set[str] = set()
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            new = {os.path.relpath(p, tmp_path) for p in watcher.changes()}
            if new and not found:
                deadline = time.monotonic() + 0.3
            found |= new
            time.sleep(0.02)
        return found

    try:
        assert changes_after(lambda: (tmp_path / "app.py").write_text("x = 2\n")) == {"app.py"}
        assert changes_after(lambda: _new_package(tmp_path)) == {"pkg/__init__.py", "pkg/m.py"}
        assert changes_after(lambda: (tmp_path / "pkg" / "m.py").unlink()) == {"pkg/m.py"}
        assert changes_after(lambda: (tmp_path / ".env").write_text("A=1\n")) == {".env"}
        ignored = changes_after(
            lambda: [
                (tmp_path / "notes.txt").write_text("x"),
                (tmp_path / ".git" / "HEAD.py").write_text("x"),
                (tmp_path / "app.pyc").write_text("x"),
            ]
        )
        assert ignored == set()
    finally:
        watcher.close()


def _new_package(root: Path) -> None:
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "m.py").write_text("y = 1\n")


def _umask_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Umask:\s+(\d+)", status, re.M).group(1), 8)


@pytest.mark.parametrize(("umask", "mode"), [(None, 0o666), ("027", 0o640)])
def test_unix_socket_mode_and_umask(supervise, umask, mode):
    """The UNIX socket lets a proxy running as another user connect (as
    uvicorn's and gunicorn's do); --umask narrows it and is the processes'
    mask. Checked by connecting as `nobody` when the test runs as root."""
    import tempfile

    directory = tempfile.mkdtemp(prefix="oneloop-uds-", dir="/tmp")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "app.sock")
    options = ["-w", "1", "-b", f"unix:{path}"] + (["--umask", umask] if umask else [])
    sup = supervise(f"{APP}:app", *options, ready=1, fd=False)
    try:
        assert os.stat(path).st_mode & 0o777 == mode
        if umask:
            assert {_umask_of(pid) for pid in [sup.proc.pid, *sup.workers()]} == {0o027}
        if os.geteuid() == 0:
            probe = (
                "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
                "s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); print(s.recv(12).decode())"
            )
            result = subprocess.run(
                ["/usr/bin/python3", "-c", probe, path],
                user="nobody",
                capture_output=True,
                text=True,
            )
            if mode & 0o002:
                assert result.stdout.strip() == "HTTP/1.1 200", result.stderr
            else:
                assert "PermissionError" in result.stderr, result
    finally:
        sup.stop()
        shutil.rmtree(directory, ignore_errors=True)


# -- server hooks from a gunicorn.conf.py --------------------------------------------

HOOKS_CONF = str(APPS / "process_model" / "hooks_conf.py")


def test_gunicorn_hooks_run_where_gunicorn_runs_them(supervise, tmp_path):
    events = tmp_path / "events"
    sup = supervise(f"{APP}:app", "-c", HOOKS_CONF, env={"HOOK_EVENTS": str(events)}, ready=2)
    sup.wait_log("2 workers serving")
    first = sup.serving()
    sup.send(signal.SIGHUP)
    sup.wait_log("Reload complete")
    sup.wait_gone(first)
    assert sup.stop() == 0
    lines = events.read_text().splitlines()
    assert lines[:2] == ["on_starting True", "nworkers_changed 2 None"], lines
    # Each hook ran in the right process (True), as often as workers started.
    assert sorted(set(lines)) == sorted(
        {
            "on_starting True",
            "nworkers_changed 2 None",
            "pre_fork 1",
            "pre_fork 2",
            "pre_fork 3",
            "pre_fork 4",
            "post_fork True",
            "post_worker_init True",  # an async hook, awaited on the worker's loop
            "when_ready 2",
            "on_reload",
            "worker_exit True",
            "child_exit True",
            "on_exit",
        }
    )
    counts = Counter(lines)
    assert counts["post_fork True"] == counts["post_worker_init True"] == 4
    assert counts["worker_exit True"] == counts["child_exit True"] == 4
    assert lines.index("when_ready 2") > lines.index("post_worker_init True")
    assert lines[-1] == "on_exit"


@pytest.mark.parametrize("hook", ["on_starting", "when_ready"])
def test_a_failing_start_hook_stops_the_server_naming_it(supervise, tmp_path, hook):
    env = {"HOOK_EVENTS": str(tmp_path / "events"), "HOOK_FAIL": hook}
    sup = supervise(f"{APP}:app", "-c", HOOKS_CONF, env=env, ready=None)
    assert sup.proc.wait(15) == 1
    log = sup.log()
    assert f"The {hook} hook failed: RuntimeError('{hook} broke')" in log, log
    assert f"oneloop: error: the {hook} hook failed" in log, log


def test_a_failing_worker_hook_is_logged_and_the_server_serves(supervise, tmp_path):
    env = {"HOOK_EVENTS": str(tmp_path / "events"), "HOOK_FAIL": "post_fork"}
    sup = supervise(f"{APP}:app", "-c", HOOKS_CONF, env=env, ready=2)
    assert "The post_fork hook failed: RuntimeError('post_fork broke')" in sup.log()
    assert get(sup.url + "/")["pid"] in sup.serving()


def test_hooks_need_the_supervisor(supervise, tmp_path):
    sup = supervise(
        f"{APP}:app", "-c", HOOKS_CONF, "--workers", "0", env={"HOOK_EVENTS": "x"}, ready=None
    )
    assert sup.proc.wait(10) == 1
    assert "server hooks (" in sup.log() and "need the supervisor" in sup.log()


@pytest.mark.parametrize("app", ["app", "wsgi"])
def test_pre_and_post_request_hooks(supervise, tmp_path, app):
    events = tmp_path / "events"
    sup = supervise(f"{APP}:{app}", "-c", HOOKS_CONF, env={"HOOK_EVENTS": str(events)}, ready=2)
    r = httpx.get(sup.url + "/hooked?a=1", headers={"X-Trace": "t-9"})
    assert r.status_code == 200
    deadline = time.monotonic() + 5
    while "post_request" not in events.read_text():
        assert time.monotonic() < deadline, events.read_text()
        time.sleep(0.02)
    lines = [
        x for x in events.read_text().splitlines() if x.endswith("request") or "_request " in x
    ]
    assert lines == ["pre_request GET /hooked?a=1 t-9", "post_request GET /hooked 200 True"], lines


def test_processes_are_named_for_ps_and_top(supervise):
    sup = supervise(f"{APP}:app", "-w", "2", ready=2)
    comm = {pid: Path(f"/proc/{pid}/comm").read_text().strip() for pid in sup.workers()}
    assert Path(f"/proc/{sup.proc.pid}/comm").read_text().strip() == "oneloop-master"
    assert sorted(comm.values()) == ["oneloop-w1", "oneloop-w2"], comm


def _events(path: Path, name: str, count: int, timeout: float = 10.0) -> list[str]:
    """The lines of hook `name` in the events file, once there are `count`."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        found = [line for line in lines if line.split()[0] == name]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_worker_int_hook_runs_in_each_worker_on_a_fast_stop(supervise, tmp_path, sig):
    """INT or QUIT to the supervisor: each worker gets QUIT and calls
    worker_int in its own process before it leaves, as gunicorn's do."""
    events = tmp_path / "events"
    sup = supervise(f"{APP}:app", "-c", HOOKS_CONF, env={"HOOK_EVENTS": str(events)}, ready=2)
    sup.wait_log("2 workers serving")
    assert sup.stop(sig) == 0
    assert _events(events, "worker_int", 2) == ["worker_int True"] * 2, events.read_text()
    lines = events.read_text().splitlines()
    # Before the worker leaves: worker_int, then worker_exit.
    assert lines.index("worker_int True") < lines.index("worker_exit True"), lines


def test_worker_int_hook_on_a_worker_signalled_directly(supervise, tmp_path):
    events = tmp_path / "events"
    sup = supervise(f"{APP}:app", "-c", HOOKS_CONF, env={"HOOK_EVENTS": str(events)}, ready=2)
    victim = sorted(sup.serving())[0]
    os.kill(victim, signal.SIGINT)
    assert _events(events, "worker_int", 1) == ["worker_int True"]
    sup.wait_gone({victim})


def test_a_failing_worker_int_hook_is_logged_by_name(supervise, tmp_path):
    env = {"HOOK_EVENTS": str(tmp_path / "events"), "HOOK_FAIL": "worker_int"}
    sup = supervise(f"{APP}:app", "-c", HOOKS_CONF, env=env, ready=2)
    sup.wait_log("2 workers serving")  # the supervisor QUITs only workers it knows serve
    assert sup.stop(signal.SIGINT) == 0
    log = sup.log()
    assert log.count("The worker_int hook failed: RuntimeError('worker_int broke')") == 2, log


@pytest.mark.parametrize("fail", [False, True])
def test_worker_abort_hook_runs_when_the_timeout_kills_a_worker(supervise, tmp_path, fail):
    """A loop wedged past --timeout: the supervisor sends SIGABRT, the
    worker dumps its stacks and calls worker_abort (in its own process)
    before it exits; SIGKILL would follow a second later."""
    events = tmp_path / "events"
    env = {"HOOK_EVENTS": str(events)}
    if fail:
        env["HOOK_FAIL"] = "worker_abort"
    sup = supervise(f"{APP}:app", "-c", HOOKS_CONF, "--timeout", "1", env=env, ready=2)
    threading.Thread(target=_try_get, args=(sup.url + "/wedge?t=30", 10), daemon=True).start()
    log = sup.wait_log(r"its event loop has been blocked", timeout=5)
    victim = int(re.search(r"Worker pid (\d+): its event loop has been blocked", log)[1])
    sup.wait_gone({victim}, timeout=5)
    if fail:
        log = sup.wait_log(r"The worker_abort hook failed: RuntimeError\('worker_abort broke'\)")
        assert _events(events, "worker_abort", 1, timeout=0) == []
    else:
        assert _events(events, "worker_abort", 1) == ["worker_abort True"]
    sup.wait_serving(2, timeout=5)


def test_process_titles_name_the_master_and_each_worker(supervise):
    """`ps` shows gunicorn-style titles (setproctitle): the command line of
    the supervisor and of each worker, numbered; the short names stay."""
    sup = supervise(f"{APP}:app", "-w", "2", ready=2)

    def cmdline(pid: int) -> str:
        return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode()

    assert cmdline(sup.proc.pid) == f"oneloop: master [{APP}:app]"
    titles = sorted(cmdline(pid) for pid in sup.workers())
    assert titles == [f"oneloop: worker 1 [{APP}:app]", f"oneloop: worker 2 [{APP}:app]"]
    assert Path(f"/proc/{sup.proc.pid}/comm").read_text().strip() == "oneloop-master"
    ps = subprocess.run(["ps", "-o", "args=", "-p", str(sup.proc.pid)], capture_output=True)
    assert ps.stdout.decode().strip() == f"oneloop: master [{APP}:app]"


def test_a_lone_worker_has_a_title_too(supervise):
    sup = supervise(f"{APP}:app", "--workers", "0", ready=None)
    sup.wait_log("Serving ")
    title = Path(f"/proc/{sup.proc.pid}/cmdline").read_bytes().rstrip(b"\0").decode()
    assert title == f"oneloop: worker [{APP}:app]"


def test_without_setproctitle_the_command_line_stays(supervise, tmp_path):
    """setproctitle is optional at run time: without it, only the short names."""
    blocker = tmp_path / "no_setproctitle"
    blocker.mkdir()
    (blocker / "setproctitle.py").write_text("raise ImportError('not installed')\n")
    sup = supervise(f"{APP}:app", "-w", "1", env={"PYTHONPATH": str(blocker)}, ready=1)
    cmdline = Path(f"/proc/{sup.proc.pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[1:3] == [b"-m", b"oneloop"], cmdline
    assert Path(f"/proc/{sup.proc.pid}/comm").read_text().strip() == "oneloop-master"


def test_gunicorn_worker_class_calls_worker_int(gunicorn, tmp_path):
    """Under gunicorn's arbiter the loop takes INT/QUIT, and still calls
    gunicorn's worker_int hook, as gunicorn's own workers do."""
    events = tmp_path / "events"
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(
        "import os\n\n\ndef worker_int(worker):\n"
        f"    with open({str(events)!r}, 'a') as f:\n"
        "        f.write(f'worker_int {worker.pid == os.getpid()}\\n')\n"
    )
    url, log, proc = gunicorn("-c", str(conf), "-w", "2", f"{APP}:app")
    _wait_workers(url, log, proc, 2)
    proc.send_signal(signal.SIGINT)  # the arbiter QUITs its workers
    assert proc.wait(15) == 0, log.read_text()
    assert _events(events, "worker_int", 2) == ["worker_int True"] * 2, log.read_text()


def test_chdir_then_hup_reads_the_configuration_from_where_oneloop_started(tmp_path):
    """--chdir moves the server (the app is found there with the default
    --app-dir), but a HUP still reads a relative -c and --env-file from the
    directory oneloop was started in."""
    start = tmp_path / "project"
    start.mkdir()
    (start / "settings.py").write_text("workers = 1\n")
    (start / "app.env").write_text("GREETING=one\n")
    sock = listening_socket()
    port = sock.getsockname()[1]
    err = tmp_path / "err"
    with open(err, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oneloop", "--fd", str(sock.fileno()), "-c", "settings.py",
             "--env-file", "app.env", "--chdir", str(APPS), f"{APP}:app"],
            stdout=out, stderr=subprocess.STDOUT, pass_fds=[sock.fileno()], cwd=start,
            env={**_clean_environ(), "PYTHONUNBUFFERED": "1"}, start_new_session=True,
        )  # fmt: skip
    sock.close()
    try:
        sup = Supervisor(proc, port, err, err)
        sup.wait_serving(1)
        assert Path(f"/proc/{proc.pid}/cwd").resolve() == APPS.resolve()
        (start / "settings.py").write_text("workers = 2\n")
        proc.send_signal(signal.SIGHUP)
        log = sup.wait_log("Reload complete: 2 new workers serving")
        assert "keeping the configuration" not in log, log
    finally:
        proc.kill()
        proc.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
