"""The load generators, run pinned to the client core: wrk (closed loop, and
pipelining through a Lua script), h2load (a fixed number of requests),
rate_client (open loop at a fixed rate) and ws_client (WebSocket echo and
handshakes), with their output turned into one Outcome."""

from __future__ import annotations

import os
import re
import resource
import statistics
import subprocess
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Load:
    """How a scenario loads a server."""

    tool: str  # "wrk", or "h2load" (HTTP/2; HTTP/1.1 for targets that do not speak it)
    connections: int = 64
    streams: int = 1  # h2load over HTTP/2: requests in flight per connection (-m)
    script: str | None = None  # wrk Lua script, relative to this directory
    # wrk's latency percentiles are garbage when it pipelines (zeros, one
    # sample per batch): such loads report none.
    latency: bool = True


@dataclass(frozen=True)
class WsLoad:
    """How a WebSocket scenario loads a server (bench/ws_client.c)."""

    mode: str  # "echo": messages echoed; "connect": connect, handshake, close
    connections: int = 64
    size: int = 16  # bytes per message
    binary: bool = False  # binary messages, else text
    in_flight: int = 1  # messages in flight per connection


# What ws_client counts apart, besides completed operations.
WS_ERRORS = (
    "connect_errors",
    "handshake_errors",
    "protocol_errors",
    "mismatches",
    "disconnects",
    "timeouts",
    "close_errors",
)


@dataclass
class Outcome:
    """What the load generator saw, plus the CPU it used itself."""

    requests: int  # completed responses, whatever their status
    seconds: float
    errors: int  # non-2xx/3xx responses, socket errors, timeouts
    bad: int  # non-2xx/3xx responses (counted in requests and in errors)
    p50_ms: float | None
    p99_ms: float | None
    client_cpu: float  # seconds
    extra: dict[str, float]

    @property
    def rps(self) -> float:
        """Good responses per second: a fast 500 is not throughput."""
        return (self.requests - self.bad) / self.seconds if self.seconds else 0.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(argv: list[str], cpu: str, timeout: float, log: str | None = None) -> tuple[str, float]:
    """Run a client pinned to `cpu`; returns its stdout and the CPU it used
    (from the rusage of reaped children, so the tool need not report it).
    What it printed on stderr is appended to `log`, if given."""
    before = _children_cpu()
    done = subprocess.run(
        ["taskset", "-c", cpu, *argv], capture_output=True, text=True, timeout=timeout
    )
    if log and done.stderr:
        with open(log, "a") as f:
            f.write(done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout, _children_cpu() - before


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _wrk_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * _UNITS[unit]


def parse_wrk(out: str, client_cpu: float) -> Outcome:
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", out)
    requests = int(done.group(1))
    seconds = _wrk_ms(done.group(2) + done.group(3)) / 1e3
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    bad = int(non2xx.group(1)) if non2xx else 0
    return Outcome(
        requests=requests,
        seconds=seconds,
        errors=errors + bad,
        bad=bad,
        p50_ms=_wrk_ms(latency["50"]) if "50" in latency else None,
        p99_ms=_wrk_ms(latency["99"]) if "99" in latency else None,
        client_cpu=client_cpu,
        extra={},
    )


def wrk(url: str, load: Load, seconds: float, cpu: str) -> Outcome:
    argv = ["wrk", "-t1", f"-c{load.connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if load.script:
        argv += ["-s", os.path.join(HERE, load.script)]
    out, client_cpu = _run([*argv, url], cpu, timeout=seconds + 30)
    outcome = parse_wrk(out, client_cpu)
    if not load.latency:
        outcome.p50_ms = outcome.p99_ms = None
    return outcome


def parse_h2load(out: str, client_cpu: float) -> Outcome:
    seconds = float(re.search(r"finished in ([\d.]+)(s|ms)", out).group(1))
    if re.search(r"finished in [\d.]+ms", out):
        seconds /= 1e3
    counts = re.search(
        r"(\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out
    )
    done, succeeded = int(counts.group(1)), int(counts.group(2))
    status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    return Outcome(
        requests=done,
        seconds=seconds,
        errors=(done - succeeded) + int(counts.group(4)) + int(counts.group(5)),
        bad=int(status.group(3)) + int(status.group(4)),
        p50_ms=None,
        p99_ms=None,
        client_cpu=client_cpu,
        extra={},
    )


def h2load(url: str, connections: int, requests: int, cpu: str) -> Outcome:
    """Exactly `requests` requests, one at a time per connection."""
    argv = ["h2load", "--h1", f"-c{connections}", "-m1", f"-n{requests}", url]
    out, client_cpu = _run(argv, cpu, timeout=600)
    return parse_h2load(out, client_cpu)


def h2load_timed(url: str, load: Load, seconds: float, cpu: str, http2: bool, log: str) -> Outcome:
    """h2load for `seconds`: HTTP/2 with `load.streams` requests in flight
    per connection, or HTTP/1.1 one request at a time per connection (h2load
    pipelines with --h1 -m, which is not how HTTP/1.1 clients behave). The
    latency percentiles come from h2load's per-request log."""
    argv = ["h2load", "-t1", f"-c{load.connections}", f"-D{seconds}"]
    argv += [f"-m{load.streams}"] if http2 else ["--h1", "-m1"]
    argv += [f"--log-file={log}"]
    out, client_cpu = _run([*argv, url], cpu, timeout=seconds + 60)
    outcome = parse_h2load(out, client_cpu)
    outcome.p50_ms, outcome.p99_ms = _log_percentiles(log)
    return outcome


def _log_percentiles(path: str) -> tuple[float | None, float | None]:
    """p50 and p99 in ms of h2load's log (start µs, status, duration µs per line)."""
    try:
        with open(path) as f:
            durations = sorted(int(line.split()[2]) for line in f if line.strip())
        os.unlink(path)
    except (OSError, IndexError, ValueError):
        return None, None
    if not durations:
        return None, None
    pick = lambda q: durations[min(len(durations) - 1, int(q * len(durations)))] / 1e3  # noqa: E731
    return pick(0.50), pick(0.99)


def fixed_rate(
    tool: str, port: int, rate: float, seconds: float, connections: int, cpu: str
) -> Outcome:
    """Open-loop load from rate_client: latency counts from when each request
    was due, so queueing behind a stall is charged to the server."""
    warmup = min(1.0, seconds / 4)
    argv = [tool, "127.0.0.1", str(port), f"{rate:.0f}", str(seconds), str(connections)]
    out, client_cpu = _run([*argv, str(warmup)], cpu, timeout=seconds + 30)
    values = {k: float(v) for k, v in (line.split() for line in out.splitlines() if line)}
    return Outcome(
        requests=int(values["completed"]),
        seconds=seconds,
        errors=int(values["errors"]),
        bad=0,
        p50_ms=values["p50_us"] / 1e3,
        p99_ms=values["p99_us"] / 1e3,
        client_cpu=client_cpu,
        extra={
            "achieved_rps": values["achieved_rps"],
            "p90_ms": values["p90_us"] / 1e3,
            "p999_ms": values["p999_us"] / 1e3,
            "max_ms": values["max_us"] / 1e3,
            "late": values["late"],
        },
    )


def ws_argv(tool: str, port: int, load: WsLoad) -> list[str]:
    argv = [tool, "-m", load.mode, "-c", str(load.connections), "-s", str(load.size)]
    argv += ["-p", str(load.in_flight)] + (["-b"] if load.binary else [])
    return [*argv, "127.0.0.1", str(port)]


def ws(
    tool: str, port: int, load: WsLoad, seconds: float, cpu: str, log: str | None = None
) -> Outcome:
    """Closed loop from ws_client: echoes (or connect-to-close cycles)
    completed in `seconds`, counted from when every connection is open; the
    caller warms the server up beforehand, so none here. ws_client tells the
    first errors of each kind on stderr: they go to `log`."""
    argv = [*ws_argv(tool, port, load)[:-2], "-d", str(seconds), "-w", "0", "127.0.0.1", str(port)]
    out, client_cpu = _run(argv, cpu, timeout=seconds + 60, log=log)
    values = {k: float(v) for k, v in (ln.split() for ln in out.splitlines() if ln) if k != "mode"}
    return Outcome(
        requests=int(values["completed"]),
        seconds=values["seconds"],
        errors=int(values["errors"]),
        bad=0,  # a wrong echo is not counted as completed
        p50_ms=values["p50_us"] / 1e3,
        p99_ms=values["p99_us"] / 1e3,
        client_cpu=client_cpu,
        extra={
            "p90_ms": values["p90_us"] / 1e3,
            "p999_ms": values["p999_us"] / 1e3,
            "max_ms": values["max_us"] / 1e3,
            "opened": values["opened"],
            **{k: values[k] for k in WS_ERRORS},
        },
    )


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None
