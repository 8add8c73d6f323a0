"""Where oneloop's time goes on the plaintext path.

Two views of the same request:

* instructions per request, by function and by shared object, counted by
  valgrind's callgrind over a fixed number of requests (counters zeroed after
  a warm-up, so start-up is not in them). Instructions are not time (a cache
  miss costs more than an add), but they are exact and repeatable, which is
  what a change to the hot path needs to be judged by.
* system calls per request, counted by strace, since on this path the kernel
  (loopback TCP, epoll) costs more than all user-space code together.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import signal
import subprocess
import time

import loadgen
import servers
from procfs import process_tree

_NAME = re.compile(r"^\((\d+)\)(?: (.*))?$")


class _Names:
    """Callgrind's name compression: "(id) name" defines, "(id)" refers."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        m = _NAME.match(text)
        if not m:
            return text
        if m.group(2) is not None:
            self.names[m.group(1)] = m.group(2)
        return self.names.get(m.group(1), text)


def parse_callgrind(path: str) -> tuple[collections.Counter, collections.Counter, dict, int]:
    """Self cost per function, inclusive cost per function (self plus its
    calls; recursion counted once per level), the object of each function,
    and the total, from one callgrind output file with the single event Ir."""
    fn_names, ob_names = _Names(), _Names()
    self_cost: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    objects: dict[str, str] = {}
    fn, ob, in_call = "?", "?", False
    with open(path) as f:
        for line in f:
            if line[0].isdigit() or line[0] in "+-*":
                cost = int(line.split()[-1])
                if in_call:
                    incl[fn] += cost  # a call line's cost is the callee's inclusive cost
                    in_call = False
                else:
                    self_cost[fn] += cost
                    incl[fn] += cost
            elif line.startswith("fn="):
                fn = _strip_recursion(fn_names(line[3:].strip()))
                objects.setdefault(fn, ob)
            elif line.startswith("ob="):
                ob = ob_names(line[3:].strip())
            elif line.startswith("cob="):
                ob_names(line[4:].strip())  # may define a name used later
            elif line.startswith("cfn="):
                fn_names(line[4:].strip())
            elif line.startswith("calls="):
                in_call = True
    for name in list(incl):
        incl[name] = max(incl[name], self_cost[name])
    return self_cost, incl, objects, sum(self_cost.values())


def _strip_recursion(name: str) -> str:
    # callgrind names recursion levels f'2, f'3: one function for us.
    return re.sub(r"'\d+$", "", name)


def short_object(path: str) -> str:
    base = os.path.basename(path)
    if base.startswith("_core."):
        return "oneloop _core"
    if "libpython" in base or base.startswith("python"):
        return "CPython"
    if "uvloop" in path:
        return "uvloop"
    if base.startswith("libc.") or base.startswith("ld-linux"):
        return "libc"
    return base.split(".cpython")[0] or "?"


def _control(command: str, pids: list[int]) -> None:
    for pid in pids:
        subprocess.run(["callgrind_control", command, str(pid)], capture_output=True, timeout=60)


def callgrind(t: servers.Target, ctx, requests: int, warmup: int) -> dict:
    """Runs the target under callgrind and counts `requests` requests."""
    out_dir = os.path.join(ctx.out, "callgrind", t.label.replace(" ", "_"))
    os.makedirs(out_dir, exist_ok=True)
    for old in glob.glob(os.path.join(out_dir, "callgrind.*")):
        os.remove(old)
    prefix = ["valgrind", "--tool=callgrind", "--trace-children=yes"]
    prefix += [f"--callgrind-out-file={out_dir}/callgrind.%p"]
    r = servers.start(t, ctx.server_cpu, ctx.tools, ctx.logs, ctx.env, prefix=prefix)
    try:
        servers.wait_ready(r.port, r.proc, timeout=180)
        loadgen.h2load(r.url, 16, warmup, ctx.client_cpu)
        pids = process_tree(r.proc.pid)
        _control("-z", pids)
        done = loadgen.h2load(r.url, 16, requests, ctx.client_cpu)
        _control("-d", pids)
    finally:
        servers.stop(r, grace=30)
    return _summarize(glob.glob(os.path.join(out_dir, "callgrind.*.1")), done.requests)


def _summarize(dumps: list[str], requests: int) -> dict:
    self_cost: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    objects: dict[str, str] = {}
    total = 0
    for path in dumps:
        s, i, o, t = parse_callgrind(path)
        self_cost += s
        incl += i
        objects.update(o)
        total += t
    by_object: collections.Counter = collections.Counter()
    for fn, cost in self_cost.items():
        by_object[short_object(objects.get(fn, "?"))] += cost
    core_incl = [
        (fn, c) for fn, c in incl.items() if short_object(objects.get(fn, "")) == "oneloop _core"
    ]
    per = max(requests, 1)
    return {
        "requests": requests,
        "instructions_per_request": total / per,
        "by_object": [(o, c / per) for o, c in by_object.most_common(8)],
        "top_self": [
            (fn, short_object(objects.get(fn, "?")), c / per) for fn, c in self_cost.most_common(25)
        ],
        "core_inclusive": [(fn, c / per) for fn, c in sorted(core_incl, key=lambda x: -x[1])[:12]],
    }


def syscalls(t: servers.Target, ctx, requests: int, pipelined: bool = False) -> dict:
    """System calls per request, by name, counted by strace over `requests`
    requests (h2load, 16 connections), or with `pipelined` over 2 s of wrk
    sending 16 requests per write."""
    r = servers.start(t, ctx.server_cpu, ctx.tools, ctx.logs, ctx.env)
    name = t.label.replace(" ", "_") + ("-pipelined" if pipelined else "")
    trace = os.path.join(ctx.out, f"strace-{name}.txt")
    try:
        servers.wait_ready(r.port, r.proc, timeout=60)
        loadgen.h2load(r.url, 16, 2000, ctx.client_cpu)
        argv = ["strace", "-f", "-c", "-o", trace]
        for pid in process_tree(r.proc.pid):
            argv += ["-p", str(pid)]
        strace = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
        time.sleep(1)  # attaching to every thread takes a moment
        if pipelined:
            load = loadgen.Load("wrk", connections=16, script="pipeline.lua")
            done = loadgen.wrk(r.url, load, 2, ctx.client_cpu)
        else:
            done = loadgen.h2load(r.url, 16, requests, ctx.client_cpu)
        strace.send_signal(signal.SIGINT)
        strace.wait(30)
    finally:
        servers.stop(r)
    return {"requests": done.requests, "calls": _parse_strace(trace, done.requests)}


# Calls that only sleep (watchdog and monitor threads) are not work. futex
# stays: it is how threads hand over the GIL, which is work.
_SLEEPS = {"clock_nanosleep", "nanosleep", "restart_syscall"}


def _parse_strace(path: str, requests: int) -> dict[str, float]:
    calls: dict[str, float] = {}
    with open(path) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
                name, count = fields[-1], int(fields[3])
                if name not in _SLEEPS:
                    calls[name] = count / max(requests, 1)
    return dict(sorted(calls.items(), key=lambda kv: -kv[1]))
