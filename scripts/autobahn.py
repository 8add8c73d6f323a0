"""The Autobahn TestSuite's WebSocket cases against oneloop, or against a peer.

    python scripts/autobahn.py                       # oneloop on uvloop over TCP, every case
    python scripts/autobahn.py --loop asyncio --tls  # the stdlib loop, over TLS
    python scripts/autobahn.py --cases '1.*,2.*'     # a subset (ids or globs)
    python scripts/autobahn.py --quick               # all but the 96 slowest compression cases
    python scripts/autobahn.py --server uvicorn-wsproto
    python scripts/autobahn.py --details             # expected vs. observed, each failing case

Starts the server on tests/python/apps/ws_echo.py (every message sent back
as it came, text as text and bytes as bytes), runs kosoku's fuzzing client
(the Autobahn TestSuite's 517 cases, permessage-deflate's 12.* and 13.*
included) against it, and reads kosoku's reports (index.json and one JSON
per case). It prints a line per verdict with its count (and the ids of the
cases that got it, unless OK) and the failing cases. The exit status is 0
when every case passed -- its verdict OK, NON-STRICT or INFORMATIONAL and its
closing handshake OK or INFORMATIONAL -- 1 when a case did not or the server
died during the run, 2 when the run could not be made.

kosoku connects over plain TCP only (ws://): with --tls the server gets a
trustme certificate and kosoku reaches it through a relay in this process
that carries each connection over TLS, so the server's TLS transport is what
is tested; the relay passes bytes and closes one side when the other closes.

Peers: uvicorn with websockets (its legacy implementation, or the sans-I/O
one uvicorn will switch to) or wsproto, hypercorn and granian, each with the
same app, one worker and the chosen loop (bench/servers/requirements.txt pins
their versions; they are not test dependencies). Servers that send keepalive
pings by default (oneloop, uvicorn) run with them off: a case takes a ping
for an event it did not expect, and each of 12.* and 13.* ends at the first
one, FAILED.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import fnmatch
import importlib.metadata
import importlib.util
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "tests" / "python" / "apps"
APP = "ws_echo:app"
HOST = "127.0.0.1"

# kosoku's (Autobahn's) verdicts, in the order they are printed.
BEHAVIORS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "ERROR")
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
PASSING_CLOSE = {"OK", "INFORMATIONAL"}

# --quick leaves these out: 12.* and 13.* with messages of 64 KiB and 128 KiB
# (x.y.9, x.y.10), and of 32 KiB and more in fragments (x.y.13 to x.y.18).
# They take five sixths of a full run; the smaller sizes, fragmented ones
# included, and every offer (13.1 to 13.7) stay.
QUICK_EXCLUDE = [f"{major}.*.{n}" for major in (12, 13) for n in (9, 10, 13, 14, 15, 16, 17, 18)]

# uvicorn's keepalive ping interval, as long as "never" (see the docstring).
NO_PING = "86400"

SERVERS = (
    "oneloop",
    "uvicorn-websockets",
    "uvicorn-websockets-sansio",
    "uvicorn-wsproto",
    "hypercorn",
    "granian",
)
# The distributions whose versions describe a run.
DISTRIBUTIONS = {
    "oneloop": ("oneloop",),
    "uvicorn-websockets": ("uvicorn", "websockets"),
    "uvicorn-websockets-sansio": ("uvicorn", "websockets"),
    "uvicorn-wsproto": ("uvicorn", "wsproto"),
    "hypercorn": ("hypercorn", "wsproto"),
    "granian": ("granian",),
}


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def server_command(server: str, port: int, loop: str, certs: Certs | None) -> list[str]:
    py = sys.executable
    if server == "oneloop":
        argv = [py, "-m", "oneloop", "--app-dir", str(APPS), "--host", HOST, "--port", str(port)]
        argv += ["--loop", loop, "--no-access-log", "--log-level", "warning"]
        argv += ["--ws-ping-interval", "0"]
        if certs:
            argv += ["--ssl-certfile", str(certs.cert), "--ssl-keyfile", str(certs.key)]
    elif server.startswith("uvicorn-"):
        argv = [py, "-m", "uvicorn", "--app-dir", str(APPS), "--host", HOST, "--port", str(port)]
        argv += ["--loop", loop, "--ws", server.removeprefix("uvicorn-"), "--no-access-log"]
        argv += ["--log-level", "warning", "--ws-ping-interval", NO_PING]
        if certs:
            argv += ["--ssl-certfile", str(certs.cert), "--ssl-keyfile", str(certs.key)]
    elif server == "hypercorn":
        argv = [py, "-m", "hypercorn", "-k", loop, "-w", "1", "-b", f"{HOST}:{port}"]
        argv += ["--log-level", "warning"]
        if certs:
            argv += ["--certfile", str(certs.cert), "--keyfile", str(certs.key)]
    elif server == "granian":
        argv = [py, "-m", "granian", "--interface", "asgi", "--workers", "1", "--http", "1"]
        argv += ["--ws", "--host", HOST, "--port", str(port), "--loop", loop]
        argv += ["--working-dir", str(APPS), "--log-level", "warning"]
        if certs:
            argv += ["--ssl-certificate", str(certs.cert), "--ssl-keyfile", str(certs.key)]
    else:
        raise ValueError(server)
    return [*argv, APP]


def versions(server: str) -> str:
    out = []
    for dist in (*DISTRIBUTIONS[server], "kosoku"):
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist} (not installed)")
    return ", ".join(out)


def make_certs(directory: Path) -> Certs:
    """A trustme CA and a certificate for 127.0.0.1; the key as PKCS#8 (granian
    reads nothing else)."""
    import trustme
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA()
    issued = ca.issue_cert(HOST, "localhost")
    certs = Certs(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(str(certs.ca))
    certs.cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), password=None)
    certs.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certs


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_ready(
    port: int, proc: subprocess.Popen, context: ssl.SSLContext | None, timeout: float
) -> None:
    """Until the server answers a plain HTTP request (the app's 200)."""
    deadline = time.monotonic() + timeout
    request = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=2) as raw:
                sock = context.wrap_socket(raw, server_hostname=HOST) if context else raw
                sock.sendall(request)
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not answer on port {port} within {timeout:.0f} s")


@contextlib.contextmanager
def running_server(argv: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """The server in a session of its own, so every process it forks stops with it."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, cwd=APPS, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
                break


class TLSRelay:
    """A plain-TCP listener whose every connection is carried over TLS to the
    server under test (kosoku speaks ws:// only). Bytes pass as they come;
    when one side closes (or fails), the relay closes the other."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.target = port
        self.context = context
        self.port = 0
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task] = set()  # the loop holds its tasks weakly
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    def __enter__(self) -> TLSRelay:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the TLS relay did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, HOST, 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            for task in self._tasks:
                task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(
                HOST, self.target, ssl=self.context, server_hostname=HOST
            )
        except OSError:
            writer.close()
            return
        up = asyncio.create_task(_pipe(reader, up_writer))
        down = asyncio.create_task(_pipe(up_reader, writer))
        self._tasks |= {up, down}
        await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
        # One side has closed and the relay has closed the other: the other's
        # remaining bytes get a moment, then the connection is torn down (a TLS
        # shutdown the server does not answer would otherwise never end).
        await asyncio.wait((up, down), timeout=5)
        for task in (up, down):
            task.cancel()
        up_writer.transport.abort()
        writer.transport.abort()
        self._tasks -= {up, down}


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        writer.close()


RUN_KOSOKU = "--run-kosoku"  # argv[1] when this script runs as kosoku itself


def run_kosoku(argv: list[str]) -> None:
    """kosoku's command line (its console script's entry point), with one fix
    to the 12.* and 13.* cases: kosoku hands a message that came without
    compression on a permessage-deflate connection to the case as str (text
    decoded, binary as latin-1) where the case hashes bytes, so a server
    that sends a small message uncompressed, as RFC 7692 allows, has the
    case crash (ERROR, "Strings must be encoded before hashing"). The fix
    gives the case the message's bytes, as Autobahn does."""
    import kosoku._cli
    import kosoku.cases

    def bytes_payload(on_message):
        def on_message_bytes(self, msg, binary):
            if isinstance(msg, str):
                msg = msg.encode("latin-1" if binary else "utf-8")
            return on_message(self, msg, binary)

        return on_message_bytes

    for case_id, cls in kosoku.cases.CASES.items():
        if case_id.split(".")[0] in ("12", "13"):
            cls.onMessage = bytes_payload(cls.onMessage)
    sys.argv = ["kosoku", *argv]
    kosoku._cli.main()


def kosoku_command() -> list[str]:
    if importlib.util.find_spec("kosoku") is None:
        raise RuntimeError("kosoku is not installed (pip install -e '.[test]')")
    return [sys.executable, str(Path(__file__).resolve()), RUN_KOSOKU]


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class Case:
    id: str
    behavior: str
    close: str
    report: Path

    @property
    def passed(self) -> bool:
        return self.behavior in PASSING and self.close in PASSING_CLOSE


def case_key(case_id: str) -> list[int]:
    return [int(part) for part in case_id.split(".")]


def load_results(outdir: Path) -> list[Case]:
    index = json.loads((outdir / "index.json").read_text())
    cases = [
        Case(case_id, entry["behavior"], entry["behaviorClose"], outdir / entry["reportfile"])
        for by_agent in index.values()
        for case_id, entry in by_agent.items()
    ]
    return sorted(cases, key=lambda c: case_key(c.id))


def compact(ids: list[str], universe: list[str]) -> list[str]:
    """Case ids, with every group the run covered whole written as its glob
    ("12.*" for all of 12.x.y when each of them is in `ids`)."""
    chosen = set(ids)
    out: list[str] = []
    covered: set[str] = set()
    for case_id in sorted(chosen, key=case_key):
        if case_id in covered:
            continue
        parts = case_id.split(".")
        label = case_id
        for depth in range(1, len(parts)):
            prefix = ".".join(parts[:depth]) + "."
            group = [u for u in universe if u.startswith(prefix)]
            if len(group) > 1 and all(u in chosen for u in group):
                label = prefix + "*"
                covered.update(group)
                break
        out.append(label)
    return out


def summarize(label: str, cases: list[Case], seconds: float | None) -> tuple[list[str], list[Case]]:
    universe = [c.id for c in cases]
    behaviors = Counter(c.behavior for c in cases)
    closes = Counter(c.close for c in cases)
    failing = [c for c in cases if not c.passed]
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    lines = [f"{label}: {len(cases)} cases{took}, {len(failing)} failing"]
    for behavior in [*BEHAVIORS, *sorted(set(behaviors) - set(BEHAVIORS))]:
        n = behaviors.get(behavior, 0)
        if n == 0 and behavior in ("ERROR",):
            continue
        ids = [c.id for c in cases if c.behavior == behavior]
        listed = "" if behavior == "OK" or not ids else "  " + " ".join(compact(ids, universe))
        lines.append(f"  {behavior:<14} {n:>4}{listed}")
    bad_close = {k: v for k, v in closes.items() if k not in PASSING_CLOSE}
    close_line = ", ".join(f"{k} {v}" for k, v in sorted(closes.items()))
    lines.append(f"  close          {close_line}")
    for verdict in sorted(bad_close):
        ids = [c.id for c in cases if c.close == verdict]
        lines.append(f"    {verdict}: {' '.join(compact(ids, universe))}")
    shown = " ".join(compact([c.id for c in failing], universe)) if failing else "none"
    lines.append(f"failing: {shown}")
    return lines, failing


def _events(events: list) -> str:
    if not events:
        return "(nothing)"
    return "; ".join(" ".join(repr(part) for part in event) for event in events)


def details(case: Case) -> list[str]:
    """What the case expected and what the server did, from kosoku's report."""
    r = json.loads(case.report.read_text())
    lines = [f"{case.id}  {case.behavior} / close {case.close}: {r['description']}"]
    lines.append(f"    expectation: {r['expectation']}")
    if case.behavior not in PASSING:
        for verdict, events in (r.get("expected") or {}).items():
            lines.append(f"    expected ({verdict}): {_events(events)}")
        lines.append(f"    observed: {_events(r.get('received') or [])}")
        lines.append(f"    result: {r['result']}")
    ec = r.get("expectedClose") or {}
    lines.append(
        f"    close expected: {'client' if ec.get('closedByMe') else 'server'} closes first, "
        f"code in {ec.get('closeCode')}, clean required: {ec.get('requireClean')}"
    )
    observed = [
        f"server sent code {r.get('remoteCloseCode')}"
        + (f" ({r['remoteCloseReason']!r})" if r.get("remoteCloseReason") else ""),
        f"client sent code {r.get('localCloseCode')}",
        f"client closed first: {r.get('closedByMe')}",
        f"client failed it: {r.get('failedByMe')}",
        f"client dropped TCP: {r.get('droppedByMe')}",
        f"clean: {r.get('wasClean')}",
    ]
    if r.get("wasNotCleanReason"):
        observed.append(f"not clean because: {r['wasNotCleanReason']}")
    for flag, text in (
        ("wasOpenHandshakeTimeout", "opening handshake timed out"),
        ("wasCloseHandshakeTimeout", "closing handshake timed out"),
        ("wasServerConnectionDropTimeout", "server did not drop TCP in time"),
    ):
        if r.get(flag):
            observed.append(text)
    lines.append(f"    close observed: {', '.join(observed)}")
    lines.append(f"    close result: {r['resultClose']}")
    response = (r.get("httpResponse") or "").split("\r\n")
    if case.behavior == "UNIMPLEMENTED" or not response[0].startswith("HTTP/1.1 101"):
        lines.append(f"    handshake response: {' | '.join(response)}")
    lines.append(f"    report: {case.report.with_suffix('.html')}")
    return lines


# ------------------------------------------------------------------ the run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run the Autobahn TestSuite's WebSocket cases (kosoku) against a server.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[0],
    )
    p.add_argument("--server", choices=SERVERS, default="oneloop", help="default: oneloop")
    p.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="uvloop", help="default: uvloop"
    )
    p.add_argument("--tls", action="store_true", help="serve over TLS (a trustme certificate)")
    p.add_argument(
        "--cases",
        default="",
        help="comma-separated case ids or globs to run, e.g. '1.*,2.*,9.7.1' (default: all)",
    )
    p.add_argument("--exclude", default="", help="comma-separated case ids or globs to leave out")
    p.add_argument(
        "--quick",
        action="store_true",
        help="leave out the 96 slowest permessage-deflate cases (messages of 64 KiB and more, "
        "32 KiB and more in 256-byte fragments): 421 cases, about a sixth of the time",
    )
    p.add_argument("--parallelism", type=int, default=1, help="cases at once (default: 1)")
    p.add_argument(
        "--out", type=Path, help="report directory (default: build/autobahn/SERVER-TRANSPORT-LOOP)"
    )
    p.add_argument("--details", action="store_true", help="expected vs. observed, failing cases")
    p.add_argument("--json", type=Path, help="also write the summary as JSON to this file")
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra option for the server's command line (repeatable; --server-arg=--x=1)",
    )
    p.add_argument("--timeout", type=float, default=1800, help="seconds for the whole run")
    p.add_argument(
        "--from-reports",
        type=Path,
        metavar="DIR",
        help="run nothing: summarize the reports kosoku wrote to DIR (its -o)",
    )
    return p.parse_args(argv)


def split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def selection(args: argparse.Namespace) -> tuple[list[str], list[str] | None]:
    """Every case id kosoku has, and the ids chosen (None: all). Globs match
    whole ids here ("12.*.1" is not 12.1.10, as it is to kosoku's -i)."""
    import kosoku.cases

    every = list(kosoku.cases.CASES)
    include, exclude = split(args.cases), split(args.exclude)
    if args.quick:
        exclude += QUICK_EXCLUDE
    if not include and not exclude:
        return every, None
    chosen = [
        case_id
        for case_id in every
        if (not include or any(fnmatch.fnmatchcase(case_id, p) for p in include))
        and not any(fnmatch.fnmatchcase(case_id, p) for p in exclude)
    ]
    return every, chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_reports:
        cases = load_results(args.from_reports)
        lines, failing = summarize(str(args.from_reports), cases, None)
        print("\n".join(lines))
        if args.details:
            for case in failing:
                print("\n".join(details(case)))
        return 1 if failing or not cases else 0
    transport = "tls" if args.tls else "tcp"
    name = f"{args.server}-{transport}-{args.loop}"
    out: Path = args.out or ROOT / "build" / "autobahn" / name
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("*_case_*.*"), out / "index.json", out / "index.html"]:
        stale.unlink(missing_ok=True)
    label = f"{args.server} over {transport.upper()} on {args.loop}"

    try:
        kosoku = kosoku_command()
    except RuntimeError as e:
        print(f"autobahn: {e}", file=sys.stderr)
        return 2
    every, selected = selection(args)
    expected = len(every) if selected is None else len(selected)
    if expected == 0:
        print("autobahn: no case matches --cases/--exclude", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(APPS), env.get("PYTHONPATH")]))
    server_log, kosoku_log = out / "server.log", out / "kosoku.log"
    print(f"autobahn: {label} ({versions(args.server)}); reports in {out}", flush=True)

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        certs = make_certs(Path(tmp)) if args.tls else None
        context = ssl.create_default_context(cafile=str(certs.ca)) if certs else None
        port = free_port()
        argv_server = server_command(args.server, port, args.loop, certs)
        argv_server[-1:-1] = args.server_arg
        proc = stack.enter_context(running_server(argv_server, server_log, env))
        try:
            wait_ready(port, proc, context, timeout=60)
        except RuntimeError as e:
            print(f"autobahn: {e}; its log ({server_log}):", file=sys.stderr)
            print(server_log.read_text(errors="replace")[-4000:], file=sys.stderr)
            return 2
        if context is not None:
            port = stack.enter_context(TLSRelay(port, context)).port
        command = [*kosoku, "-m", "fuzzingclient", f"ws://{HOST}:{port}", "-o", str(out)]
        command += ["-p", str(args.parallelism)]
        for case_id in selected or ():
            command += ["-i", case_id]
        started = time.monotonic()
        with open(kosoku_log, "wb") as log:
            try:
                subprocess.run(
                    command, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout, check=False
                )
            except subprocess.TimeoutExpired:
                print(f"autobahn: kosoku still running after {args.timeout:.0f} s", file=sys.stderr)
        seconds = time.monotonic() - started
        died = proc.poll()

    if not (out / "index.json").exists():
        print(f"autobahn: kosoku wrote no report; its log ({kosoku_log}):", file=sys.stderr)
        print(kosoku_log.read_text(errors="replace")[-4000:], file=sys.stderr)
        return 2
    cases = load_results(out)
    lines, failing = summarize(label, cases, seconds)
    print("\n".join(lines))
    if args.details:
        for case in failing:
            print("\n".join(details(case)))
    if died is not None:
        print(f"autobahn: the server exited during the run (status {died})", file=sys.stderr)
    if len(cases) != expected:
        print(f"autobahn: kosoku reported {len(cases)} of {expected} cases", file=sys.stderr)
    server_output = server_log.read_text(errors="replace")
    if "Traceback" in server_output or "ERROR" in server_output:
        tracebacks = server_output.count("Traceback")
        print(
            f"autobahn: the server logged errors ({tracebacks} tracebacks; {server_log}), "
            "the last of it:",
            file=sys.stderr,
        )
        print(server_output[-1500:], file=sys.stderr)
    if args.json:
        summary = {
            "server": args.server,
            "transport": transport,
            "loop": args.loop,
            "versions": versions(args.server),
            "date": datetime.date.today().isoformat(),
            "seconds": round(seconds, 1),
            "cases": len(cases),
            "behavior": dict(Counter(c.behavior for c in cases)),
            "close": dict(Counter(c.close for c in cases)),
            "failing": [c.id for c in failing],
            "server_died": died,
        }
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if failing or died is not None or len(cases) != expected else 0


if __name__ == "__main__":
    if sys.argv[1:2] == [RUN_KOSOKU]:
        run_kosoku(sys.argv[2:])
    else:
        sys.exit(main())
