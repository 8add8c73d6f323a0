"""Benchmark oneloop against its peers in one run on one machine.

    make bench-servers                  # everything, then docs/benchmarks.md
    make bench-servers BENCH_QUICK=1    # shorter runs, one repetition
    make bench-smoke                    # ~1 s per scenario, oneloop and one peer
    make bench-servers ONLY=ws          # only some parts (here every WebSocket one)

Servers are pinned to CPU 0 and every client to CPU 1. For each server and
scenario: a warm-up, then repetitions interleaved across servers, and the
median of each figure. Server CPU time comes from /proc for the server's
whole process tree, so CPU per request holds up on a busy machine even when
requests per second do not.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace

import hotpath
import loadgen
import procfs
import report
import servers
from scenarios import (
    FIXED_RATE,
    H2_SCENARIOS,
    IDLE,
    PROFILED,
    SCENARIOS,
    SYSCALLS,
    WS_IDLE,
    WS_SCENARIOS,
    WS_TARGETS,
    Scenario,
)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PEERS = ("oneloop", "uvicorn", "uvloop", "httptools", "gunicorn", "granian", "hypercorn")
PEERS += ("websockets", "wsproto", "flask", "quart", "aiohttp", "asgiref")
NOISY = 0.3  # cores of other load in a window that make us measure it again
PRIORITY = -10  # nice value of servers and clients, when we may raise it


@dataclass(frozen=True)
class Settings:
    warmup: int  # seconds of load before the measured repetitions
    seconds: int  # per repetition
    repetitions: int
    rate_seconds: int  # fixed-rate latency run
    idle_connections: int
    profile_requests: int
    all_targets: bool  # False: oneloop and the first other target only
    quiet_budget: float  # seconds the run may spend waiting for a quiet machine


FULL = Settings(2, 4, 3, 10, 10_000, 20_000, True, 180)
QUICK = Settings(1, 2, 1, 4, 10_000, 5_000, True, 60)
SMOKE = Settings(1, 1, 1, 2, 200, 500, False, 0)


@dataclass
class Context:
    settings: Settings
    out: str  # raw output: logs, callgrind files
    logs_root: str
    tools: str  # floor_server, rate_client
    env: dict[str, str]
    server_cpu: str = "0"
    client_cpu: str = "1"
    quiet_budget: float = 0.0  # what is left of settings.quiet_budget
    helpers: tuple[int, ...] = ()  # our own processes besides server and client (upstream)
    logs: str = ""  # where the servers of the current part write their output

    def part(self, name: str) -> None:
        self.logs = os.path.join(self.logs_root, name)
        os.makedirs(self.logs, exist_ok=True)


# ------------------------------------------------------------------ measuring


def measure(ctx: Context, r: servers.Running, run_load) -> dict:
    """One measured window, repeated (up to twice more) while other programs
    took more than NOISY cores during it and the quiet budget lasts."""
    retries = 0
    while True:
        started = time.monotonic()
        if ctx.quiet_budget > 0:
            procfs.wait_for_quiet(0.15, 0.3, min(10.0, ctx.quiet_budget))
        ctx.quiet_budget -= time.monotonic() - started
        started = time.monotonic()
        sample = window(r, run_load, ctx.helpers)
        if sample["foreign"] <= NOISY or ctx.quiet_budget <= 0 or retries == 2:
            return {**sample, "retries": retries}
        ctx.quiet_budget -= time.monotonic() - started  # the discarded window
        retries += 1


def window(r: servers.Running, run_load, helpers: tuple[int, ...]) -> dict:
    """The load runs while we read the server's CPU time and the machine's
    busy time before and after."""
    pids, ours = procfs.process_tree(r.proc.pid), list(helpers)
    cpu0, busy0, t0 = procfs.cpu_times(pids), procfs.machine_busy()[0], time.monotonic()
    helped0 = procfs.cpu_times(ours).total
    outcome: loadgen.Outcome = run_load()
    cpu = procfs.cpu_times(pids) - cpu0
    wall = time.monotonic() - t0
    busy = procfs.machine_busy()[0] - busy0 - (procfs.cpu_times(ours).total - helped0)
    per = max(outcome.requests, 1)
    return {
        "requests": outcome.requests,
        "rps": outcome.rps,
        "errors": outcome.errors,
        "p50_ms": outcome.p50_ms,
        "p99_ms": outcome.p99_ms,
        "cpu_us": cpu.total * 1e6 / per,
        "cpu_user_us": cpu.user * 1e6 / per,
        "cpu_sys_us": cpu.system * 1e6 / per,
        "server_util": cpu.total / wall,
        "client_util": outcome.client_cpu / wall,
        # CPU that was not ours (server, client, upstream): other programs,
        # and kernel work not charged to any process.
        "foreign": max(0.0, busy - cpu.total - outcome.client_cpu) / wall,
        **outcome.extra,
    }


# What a broken load generator or server can raise; any of it fails one row, not the run.
HARNESS_ERRORS = (RuntimeError, OSError, subprocess.SubprocessError, ValueError, KeyError)


def failed(t: servers.Target, e: Exception) -> dict:
    log(f"  {t.label}: harness error: {e}")
    return {"status": f"harness error: {e}"}


def ws_log(r: servers.Running) -> str:
    """Where ws_client's notes on errors go: beside the server's log."""
    return r.log.removesuffix(".log") + ".ws_client.log"


def closed_loop(ctx: Context, sc: Scenario, r: servers.Running, seconds: int) -> loadgen.Outcome:
    if isinstance(sc.load, loadgen.WsLoad):
        tool = os.path.join(ctx.tools, "ws_client")
        return loadgen.ws(tool, r.port, sc.load, seconds, ctx.client_cpu, ws_log(r))
    if sc.load.tool == "h2load":
        log_file = r.log.removesuffix(".log") + ".h2load.tsv"
        return loadgen.h2load_timed(
            r.url, sc.load, seconds, ctx.client_cpu, r.target.http2, log_file
        )
    return loadgen.wrk(r.url, sc.load, seconds, ctx.client_cpu)


def unit(sc: Scenario) -> str:
    if isinstance(sc.load, loadgen.WsLoad):
        return "handshakes/s" if sc.load.mode == "connect" else "msg/s"
    return "req/s"


# Counts that add up over the repetitions; every other figure is a median.
SUMMED = ("requests", "errors", *loadgen.WS_ERRORS)


def summarize(samples: list[dict], rss_kib: int) -> dict:
    keys = [k for k in samples[0] if k not in SUMMED]
    summary = {k: loadgen.median([s[k] for s in samples]) for k in keys}
    for k in SUMMED:
        if k in samples[0]:
            summary[k] = sum(s[k] for s in samples)
    summary["rss_kib"] = rss_kib
    summary["samples"] = samples
    return summary


def select(ctx: Context, targets: tuple[servers.Target, ...]) -> list[servers.Target]:
    if ctx.settings.all_targets:
        return list(targets)
    ours = [t for t in targets if t.is_oneloop]
    return ours + [t for t in targets if not t.is_oneloop and t.server != "floor"][:1]


def run_scenario(ctx: Context, sc: Scenario) -> dict:
    s = ctx.settings
    ctx.part(sc.key)
    targets = select(ctx, sc.targets)
    rows: dict[servers.Target, dict] = {}
    with servers.running(targets, ctx.server_cpu, ctx.tools, ctx.logs, ctx.env) as live:
        ok = {t: r for t, r in live.items() if isinstance(r, servers.Running)}
        for t, r in live.items():
            if not isinstance(r, servers.Running):
                rows[t] = {"status": str(r)}
        for t, r in list(ok.items()):
            try:
                closed_loop(ctx, sc, r, s.warmup)
            except HARNESS_ERRORS as e:
                rows[t] = failed(t, e)
                del ok[t]
        samples: dict[servers.Target, list[dict]] = {t: [] for t in ok}
        order = list(ok)
        for rep in range(s.repetitions):
            # Rotate the order so no server always runs right after another.
            for t in order[rep % len(order) :] + order[: rep % len(order)]:
                if t not in ok:
                    continue
                try:
                    run = functools.partial(closed_loop, ctx, sc, ok[t], s.seconds)
                    samples[t].append(measure(ctx, ok[t], run))
                except HARNESS_ERRORS as e:
                    rows[t] = failed(t, e)
                    del ok[t]
                    continue
                log(f"  {sc.key:16} {t.label:34} {samples[t][-1]['rps']:10.0f} {unit(sc)}")
        for t, r in ok.items():
            rss = procfs.memory_kib(procfs.serving_processes(r.proc.pid), "VmHWM")
            rows[t] = {"status": "ok", **summarize(samples[t], rss)}
    return scenario_result(sc, targets, rows)


def scenario_result(sc: Scenario, targets: list[servers.Target], rows: dict) -> dict:
    return {
        "key": sc.key,
        "title": sc.title,
        "what": sc.what,
        "load": asdict(sc.load),
        "targets": [{**asdict(t), **rows[t]} for t in targets],
    }


def run_fixed_rate(ctx: Context, sc: Scenario, peaks: dict) -> dict:
    """Each server at half its own closed-loop peak, open loop."""
    s = ctx.settings
    ctx.part(FIXED_RATE[sc.key])
    targets = [t for t in select(ctx, sc.targets) if peaks.get(t.label)]
    rows: dict[servers.Target, dict] = {}
    tool = os.path.join(ctx.tools, "rate_client")
    with servers.running(targets, ctx.server_cpu, ctx.tools, ctx.logs, ctx.env) as live:
        for t, r in live.items():
            if not isinstance(r, servers.Running):
                rows[t] = {"status": str(r)}
                continue
            rate = peaks[t.label] / 2
            run = functools.partial(
                loadgen.fixed_rate,
                tool,
                r.port,
                rate,
                s.rate_seconds,
                sc.load.connections,
                ctx.client_cpu,
            )
            try:
                sample = measure(ctx, r, run)
            except HARNESS_ERRORS as e:
                rows[t] = failed(t, e)
                continue
            rows[t] = {"status": "ok", "rate": rate, **sample}
            log(f"  {FIXED_RATE[sc.key]:16} {t.label:34} p99 {sample['p99_ms']:.2f} ms")
    result = scenario_result(sc, targets, rows)
    result["key"] = FIXED_RATE[sc.key]
    result["title"] = f"{sc.title} at half of peak (open loop)"
    return result


def run_idle(
    ctx: Context, targets: tuple[servers.Target, ...] | None = None, websocket: bool = False
) -> list[dict]:
    """User-space memory per idle keep-alive connection: the servers' RSS
    before and after holding N connections that have each served a request.
    With `websocket`, per idle WebSocket: N WebSockets opened and left idle,
    each held by the echo app waiting for a message."""
    n = ctx.settings.idle_connections
    part = "ws-idle" if websocket else "idle"
    ctx.part(part)
    rows = []
    for t in select(ctx, IDLE if targets is None else targets):
        with servers.running([t], ctx.server_cpu, ctx.tools, ctx.logs, ctx.env) as live:
            r = live[t]
            if not isinstance(r, servers.Running):
                rows.append({**asdict(t), "status": str(r)})
                continue
            try:
                held = hold_idle_ws(ctx, r, n) if websocket else hold_idle(ctx, r, n)
                rows.append({**asdict(t), "status": "ok", **held})
            except HARNESS_ERRORS as e:
                rows.append({**asdict(t), **failed(t, e)})
                continue
            log(f"  {part:16} {t.label:34} {rows[-1]['bytes_per_conn']:10.0f} B/conn")
    return rows


def hold_idle(ctx: Context, r: servers.Running, n: int) -> dict:
    # Warm the server first, so allocator pools and lazily built state exist
    # before the baseline and do not count as connection memory.
    loadgen.wrk(r.url, loadgen.Load("wrk", connections=64), 1, ctx.client_cpu)
    argv = [sys.executable, os.path.join(HERE, "idle.py"), str(r.port), str(n)]
    return hold(ctx, r, argv, None)


def hold_idle_ws(ctx: Context, r: servers.Running, n: int) -> dict:
    """As hold_idle, with WebSockets: warmed by a second of echoes on 64 of
    them, then N opened by ws_client in idle mode (same protocol as idle.py)."""
    tool = os.path.join(ctx.tools, "ws_client")
    loadgen.ws(tool, r.port, loadgen.WsLoad("echo"), 1, ctx.client_cpu, ws_log(r))
    argv = [tool, "-m", "idle", "-c", str(n), "127.0.0.1", str(r.port)]
    return hold(ctx, r, argv, ws_log(r))


def hold(ctx: Context, r: servers.Running, argv: list[str], log_path: str | None) -> dict:
    """The serving processes' RSS before and after the client `argv` opened
    its connections; it prints "ready SERVED FAILED", waits for a line, then
    prints "open N" (the connections the server still held)."""
    time.sleep(0.5)
    pids = procfs.serving_processes(r.proc.pid)
    before = procfs.memory_kib(pids, "VmRSS")
    with contextlib.ExitStack() as stack:
        errors = stack.enter_context(open(log_path, "a")) if log_path else None
        client = subprocess.Popen(
            ["taskset", "-c", ctx.client_cpu, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        return read_held(client, pids, before)


def read_held(client: subprocess.Popen, pids: list[int], before: int) -> dict:
    try:
        _, served, failed = client.stdout.readline().split()
        time.sleep(1.0)  # let the server settle (deferred frees, timers)
        after = procfs.memory_kib(pids, "VmRSS")
        client.stdin.write("\n")
        client.stdin.flush()
        still_open = int(client.stdout.readline().split()[1])
    finally:
        client.stdin.close()
        client.wait(60)
    return {
        "connections": int(served),
        "failed": int(failed),
        "still_open": still_open,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "bytes_per_conn": (after - before) * 1024 / max(int(served), 1),
    }


def run_profile(ctx: Context) -> dict:
    n = ctx.settings.profile_requests
    ctx.part("profile")
    result: dict = {"callgrind": {}, "syscalls": {}}
    for t in PROFILED:
        try:
            profile = hotpath.callgrind(t, ctx, n, warmup=max(n // 10, 200))
        except HARNESS_ERRORS as e:
            result["callgrind"][t.label] = failed(t, e)
            continue
        result["callgrind"][t.label] = profile
        log(f"  callgrind        {t.label:34} {profile['instructions_per_request']:10.0f} Ir/req")
    jobs = [(t, False) for t in select(ctx, SYSCALLS)]
    # Pipelining shows whether the responses to one read leave in one write.
    jobs += [(t, True) for t, _ in jobs if t.server in ("floor", "oneloop")]
    for t, pipelined in jobs:
        label = f"{t.label}, pipelined" if pipelined else t.label
        try:
            result["syscalls"][label] = hotpath.syscalls(t, ctx, n, pipelined)
        except HARNESS_ERRORS as e:
            result["syscalls"][label] = failed(t, e)
    return result


# ------------------------------------------------------------------ setup


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


def raise_priority() -> bool:
    """Run at nice -10 (inherited by every server and client) when allowed:
    a program at the default priority elsewhere on the machine then gets
    only a small share of a core we use, instead of half of it."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, PRIORITY)
        return True
    except OSError:
        return False


def raise_fd_limit() -> None:
    """10,000 idle connections need more descriptors than the usual 1024;
    servers and clients inherit the limit from us."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def machine() -> dict:
    with open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    versions = {}
    for name in PEERS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    # setup.sh notes which commit of oneloop it built into the virtualenv.
    with contextlib.suppress(OSError), open(os.path.join(sys.prefix, ".bench-oneloop-source")) as f:
        versions["oneloop"] += f" ({f.read().strip()})"
    for tool, flag in (("wrk", "-v"), ("h2load", "--version"), ("valgrind", "--version")):
        with contextlib.suppress(OSError):
            done = subprocess.run([tool, flag], capture_output=True, text=True)
            # "wrk debian/4.1.0-3+b2 [epoll] Copyright ...": the version only.
            words = (done.stdout or done.stderr).split()
            versions[tool] = words[1] if len(words) > 1 else words[0]
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
    }


def ws_commands(ctx: Context) -> dict[str, list[str]]:
    """The command line of each WebSocket row, its options included."""
    seen = {}
    for t in WS_TARGETS + tuple(t for t in WS_IDLE if t not in WS_TARGETS):
        target = servers.Target(t.server, t.interface, t.app, "", t.options, ws=True)
        argv = servers.command(target, 65432, ctx.tools)
        argv[0] = "python"
        seen[t.label] = [a.replace(servers.APPS, "apps").replace("65432", "PORT") for a in argv]
    return seen


def commands(ctx: Context) -> dict[str, list[str]]:
    """The command line of every server and interface, for the report; APP
    stands for the scenario's app, PORT for a free port."""
    seen = {}
    for sc in SCENARIOS:
        for t in sc.targets:
            key = f"{t.server} ({t.interface.upper()})" if t.server != "floor" else t.label
            target = servers.Target(t.server, t.interface, "APP", "")
            argv = servers.command(target, 65432, ctx.tools)
            argv[0] = os.path.basename(argv[0]) if t.server == "floor" else "python"
            argv = [a.replace(servers.APPS, "apps").replace("65432", "PORT") for a in argv]
            seen.setdefault(key, argv)
    return seen


def h2_commands(ctx: Context) -> dict[str, list[str]]:
    """The command line of each HTTP/2 row's server, for the report."""
    seen = {}
    for sc in H2_SCENARIOS:
        for t in sc.targets:
            argv = servers.command(replace(t, app="APP"), 65432, ctx.tools)
            argv[0] = "python"
            argv = [a.replace(servers.APPS, "apps").replace("65432", "PORT") for a in argv]
            argv = [a.replace(servers.TLS_DIR, "build/bench-tls") for a in argv]
            seen.setdefault(t.label, argv)
    return seen


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="shorter runs, one repetition")
    mode.add_argument("--smoke", action="store_true", help="prove the harness works (CI)")
    p.add_argument(
        "--only",
        nargs="*",
        help="run only these parts: scenario keys, idle, profile, ws-idle; ws: every WebSocket "
        "one; h2: every HTTP/2 one",
    )
    p.add_argument("--tools", default=os.path.join(ROOT, "build", "bench", "bin"))
    p.add_argument("--out", help="raw results directory (default build/bench or build/bench-smoke)")
    p.add_argument(
        "--docs", help="where benchmarks.md and img/ go (default docs/; smoke: OUT/docs)"
    )
    p.add_argument("--report-only", action="store_true", help="rebuild the report from results")
    return p.parse_args()


def wanted(args: argparse.Namespace, part: str) -> bool:
    if not args.only:
        return True
    return (
        part in args.only
        or ("ws" in args.only and part.startswith("ws-"))
        or ("h2" in args.only and part.startswith("h2-"))
    )


def save(results: dict, path: str) -> None:
    """Written after every part, so an interrupted run keeps what it measured."""
    with open(path + ".partial", "w") as f:
        json.dump(results, f, indent=1)


@contextlib.contextmanager
def upstream_running(ctx: Context) -> Iterator[None]:
    """The upstream the Flask async scenario calls (the C floor server), on
    the client's core, for the scenarios run inside."""
    ctx.part("upstream")
    upstream = servers.start(servers.UPSTREAM, ctx.client_cpu, ctx.tools, ctx.logs, ctx.env)
    try:
        servers.wait_ready(upstream.port, upstream.proc, timeout=10)
        ctx.env["BENCH_UPSTREAM"] = upstream.url
        ctx.helpers = (upstream.proc.pid,)
        yield
    finally:
        servers.stop(upstream)


def run_all(args: argparse.Namespace, ctx: Context) -> dict:
    results: dict = {"scenarios": [], "fixed_rate": [], "idle": [], "profile": {}}
    partial = os.path.join(ctx.out, "results.json")
    http = [sc for sc in SCENARIOS if wanted(args, sc.key)]
    with upstream_running(ctx) if http else contextlib.nullcontext():
        for sc in http:
            log(f"{sc.title}")
            results["scenarios"].append(run_scenario(ctx, sc))
            save(results, partial)
    peaks = {
        sc["key"]: {t["label"]: t.get("rps") for t in sc["targets"] if t.get("status") == "ok"}
        for sc in results["scenarios"]
    }
    for sc in SCENARIOS:
        if sc.key in FIXED_RATE and sc.key in peaks and wanted(args, FIXED_RATE[sc.key]):
            log(f"{sc.title} at half of peak")
            results["fixed_rate"].append(run_fixed_rate(ctx, sc, peaks[sc.key]))
            save(results, partial)
    if wanted(args, "idle"):
        log("Idle keep-alive connections")
        results["idle"] = run_idle(ctx)
        save(results, partial)
    websocket: dict = {"scenarios": [], "idle": []}
    for sc in WS_SCENARIOS:
        if wanted(args, sc.key):
            log(sc.title)
            websocket["scenarios"].append(run_scenario(ctx, sc))
            results["websocket"] = websocket
            save(results, partial)
    if wanted(args, "ws-idle"):
        log("Idle WebSockets")
        websocket["idle"] = run_idle(ctx, WS_IDLE, websocket=True)
        results["websocket"] = websocket
        save(results, partial)
    http2: dict = {"scenarios": []}
    for sc in H2_SCENARIOS:
        if wanted(args, sc.key):
            log(sc.title)
            http2["scenarios"].append(run_scenario(ctx, sc))
            results["http2"] = http2
            save(results, partial)
    if wanted(args, "profile"):
        log("Profile")
        results["profile"] = run_profile(ctx)
    return results


def main() -> int:
    args = parse_args()
    settings = SMOKE if args.smoke else QUICK if args.quick else FULL
    out = args.out or os.path.join(ROOT, "build", "bench-smoke" if args.smoke else "bench")
    results_path = os.path.join(out, "results.json")
    docs = args.docs or (os.path.join(out, "docs") if args.smoke else os.path.join(ROOT, "docs"))
    if args.report_only:
        with open(results_path) as f:
            results = json.load(f)
        # Descriptions and command lines come from the code, not from the run.
        results["meta"]["commands"] = commands(Context(settings, out, "", args.tools, {}))
        results["meta"]["ws_commands"] = ws_commands(Context(settings, out, "", args.tools, {}))
        results["meta"]["h2_commands"] = h2_commands(Context(settings, out, "", args.tools, {}))
        what = {sc.key: sc.what for sc in SCENARIOS + WS_SCENARIOS + H2_SCENARIOS}
        for sc in (
            results["scenarios"]
            + results.get("websocket", {}).get("scenarios", [])
            + results.get("http2", {}).get("scenarios", [])
        ):
            sc["what"] = what.get(sc["key"], sc["what"])
        report.write(results, docs)
        return 0
    raise_fd_limit()
    raised = raise_priority()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ctx = Context(settings, out, os.path.join(out, "logs"), args.tools, env)
    ctx.quiet_budget = settings.quiet_budget
    started = time.monotonic()
    results = run_all(args, ctx)
    results["meta"] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "smoke" if args.smoke else "quick" if args.quick else "full",
        "settings": asdict(settings),
        "machine": machine(),
        "commands": commands(ctx),
        "ws_commands": ws_commands(ctx),
        "h2_commands": h2_commands(ctx),
        "minutes": (time.monotonic() - started) / 60,
        "nice": PRIORITY if raised else 0,
        "invocation": invocation(args),
    }
    with open(results_path, "w") as f:
        json.dump(results, f, indent=1)
    report.write(results, docs)
    log(f"results: {results_path}; report: {os.path.join(docs, 'benchmarks.md')}")
    return check_smoke(results) if args.smoke else 0


def invocation(args: argparse.Namespace) -> str:
    """The make command that runs what this run ran (run.py's options are
    make's variables one for one)."""
    words = []
    if os.environ.get("BENCH_ONELOOP_REF"):
        words.append(f"BENCH_ONELOOP_REF={os.environ['BENCH_ONELOOP_REF']}")
    words.append("make bench-smoke" if args.smoke else "make bench-servers")
    if args.quick:
        words.append("BENCH_QUICK=1")
    if args.only:
        only = " ".join(args.only)
        words.append(f'ONLY="{only}"' if " " in only else f"ONLY={only}")
    return " ".join(words)


def check_smoke(results: dict) -> int:
    """The smoke run fails only if the harness broke: a server that did not
    start, a part that produced nothing. Never on a number."""
    broken = [
        f"{sc['key']}: {t['label']}: {t['status']}"
        for sc in results["scenarios"] + results["fixed_rate"]
        for t in sc["targets"]
        if t.get("status") != "ok"
    ]
    websocket = results.get("websocket", {})
    broken += [
        f"{sc['key']}: {t['label']}: {t['status']}"
        for sc in websocket.get("scenarios", []) + results.get("http2", {}).get("scenarios", [])
        for t in sc["targets"]
        if t.get("status") != "ok"
    ]
    idle = [("idle", t) for t in results["idle"]] + [
        ("ws-idle", t) for t in websocket.get("idle", [])
    ]
    broken += [f"{part}: {t['label']}: {t['status']}" for part, t in idle if t["status"] != "ok"]
    for kind, rows in results["profile"].items():
        broken += [f"{kind}: {label}: {p['status']}" for label, p in rows.items() if "status" in p]
    for line in broken:
        log(f"smoke: {line}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
