"""What the kernel knows about a server: CPU time, memory, and the machine's
other load, all read from /proc.

CPU time is the figure the benchmark trusts most. Requests per second move
with whatever else runs on the machine; the CPU a server spends per request
barely does, so results from a noisy machine stay comparable.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        # The command name is in parentheses and may hold spaces: split after it.
        return f.read().rsplit(")", 1)[1].split()


def process_tree(root: int) -> list[int]:
    """The root and all its descendants (threads are counted in each process)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(name))[1])
        except (OSError, IndexError):
            continue  # it exited while we looked
        children.setdefault(parent, []).append(int(name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def serving_processes(root: int) -> list[int]:
    """The processes that serve requests: the root when it has no children;
    otherwise its descendants (the root is then a supervisor: gunicorn's
    arbiter, granian's and hypercorn's main process), minus multiprocessing's
    resource tracker. Memory is summed over these."""
    tree = process_tree(root)
    if len(tree) == 1:
        return tree
    return [pid for pid in tree[1:] if "resource_tracker" not in _cmdline(pid)]


@dataclass(frozen=True)
class CpuTimes:
    user: float  # seconds
    system: float

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user - other.user, self.system - other.system)

    @property
    def total(self) -> float:
        return self.user + self.system


def cpu_times(pids: list[int]) -> CpuTimes:
    """User and system CPU of these processes (all their threads, live or exited)."""
    user = system = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return CpuTimes(user / TICK, system / TICK)


def memory_kib(pids: list[int], key: str) -> int:
    """Sum of one /proc/PID/status field (VmRSS, VmHWM) in KiB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def machine_busy() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine since boot. Niced work
    (a fuzzer at nice 19, say) is left out: the scheduler gives it a few
    percent of a core against our processes at nice 0, so it barely
    disturbs a measurement and is not worth waiting for."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    not_busy = values[1] + values[3] + values[4]  # nice, idle, iowait
    return (sum(values) - not_busy) / TICK, sum(values) / TICK


def wait_for_quiet(max_busy: float, settle: float, give_up: float) -> float:
    """Wait until the machine's busy CPU (in cores) over `settle` seconds is
    at most max_busy, or `give_up` seconds have passed. Returns the last
    reading. Our own servers idle meanwhile, so what is busy is someone else."""
    deadline = time.monotonic() + give_up
    while True:
        busy0, _ = machine_busy()
        time.sleep(settle)
        busy1, _ = machine_busy()
        busy = (busy1 - busy0) / settle
        if busy <= max_busy or time.monotonic() >= deadline:
            return busy
