"""oneloop against another build of itself, in the same run on the same
machine: a refactor's before and after.

    make bench-compare BASE=<commit>        # builds BASE and this tree, then runs this
    python bench/servers/compare.py DIR [--this DIR2] [--quick] [--only KEY ...]

DIR (and DIR2) hold a build's package (DIR/oneloop with its extension built
in place); make bench-compare loads both rows that way, so they differ in
nothing but their code. Every scenario runs oneloop's rows twice, this
checkout's and DIR's, interleaved repetition by repetition like any run.py
scenario, with
the C floor where the scenario has it; idle memory per connection too. The
peers are left out. Prints a Markdown table (and writes it beside the raw
results): requests per second, server CPU µs per request, and the change.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import run
import servers
from scenarios import H2_SCENARIOS, IDLE, SCENARIOS, Scenario


def paired(targets, base_dir: str, this_dir: str) -> tuple[servers.Target, ...]:
    out: list[servers.Target] = []
    for t in targets:
        if t.server == "floor":
            out.append(t)
        elif t.is_oneloop:
            out.append(dataclasses.replace(t, pythonpath=this_dir))
            if not t.options:  # options of this build the base may not have
                out.append(dataclasses.replace(t, label=f"{t.label} (base)", pythonpath=base_dir))
    return tuple(out)


def table(results: dict) -> str:
    lines = [
        "| scenario | this req/s | base req/s | this CPU µs/req | base CPU µs/req | CPU change |"
        " floor req/s | this / floor |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for sc in results["scenarios"]:
        rows = {t["label"]: t for t in sc["targets"] if t.get("status") == "ok"}
        floor = next((t for t in rows.values() if t["server"] == "floor"), None)
        for label, new in rows.items():
            old = rows.get(f"{label} (base)")
            if new["server"] != "oneloop" or old is None:
                continue
            change = (new["cpu_us"] / old["cpu_us"] - 1) * 100
            ratio = f"{new['rps'] / floor['rps']:.0%}" if floor else "-"
            lines.append(
                f"| {sc['key']} ({label}) | {new['rps']:,.0f} | {old['rps']:,.0f} |"
                f" {new['cpu_us']:.1f} | {old['cpu_us']:.1f} | {change:+.1f} % |"
                f" {floor['rps'] if floor else 0:,.0f} | {ratio} |"
            )
    idle = {t["label"]: t for t in results["idle"] if t.get("status") == "ok"}
    for label, new in idle.items():
        old = idle.get(f"{label} (base)")
        if old is not None:
            lines.append(
                f"| idle ({label}) | bytes/conn: {new['bytes_per_conn']:,.0f} |"
                f" {old['bytes_per_conn']:,.0f} | | | | | |"
            )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("base", help="directory holding the other build's oneloop package")
    p.add_argument(
        "--this",
        default="",
        help="directory holding this build's package (default: the one installed); give both "
        "from a directory so that neither row differs in how it is loaded",
    )
    p.add_argument("--quick", action="store_true", help="shorter runs, one repetition")
    p.add_argument("--only", nargs="*", help="scenario keys (and 'idle') to run")
    p.add_argument("--tools", default=os.path.join(run.ROOT, "build", "bench", "bin"))
    p.add_argument("--out", default=os.path.join(run.ROOT, "build", "bench-compare"))
    args = p.parse_args()
    base = os.path.abspath(args.base)
    this = os.path.abspath(args.this) if args.this else ""
    if not os.path.isdir(os.path.join(base, "oneloop")):
        sys.exit(f"compare: {base} holds no oneloop package")
    settings = run.QUICK if args.quick else run.FULL
    run.raise_fd_limit()
    run.raise_priority()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ctx = run.Context(settings, args.out, os.path.join(args.out, "logs"), args.tools, env)
    ctx.quiet_budget = settings.quiet_budget
    results: dict = {"scenarios": [], "idle": []}
    started = time.monotonic()
    with run.upstream_running(ctx):
        for sc in (*SCENARIOS, *H2_SCENARIOS):
            if args.only and sc.key not in args.only:
                continue
            pair = Scenario(sc.key, sc.title, sc.what, paired(sc.targets, base, this), sc.load)
            if len(pair.targets) < 2:
                continue
            run.log(sc.title)
            results["scenarios"].append(run.run_scenario(ctx, pair))
    if not args.only or "idle" in args.only:
        run.IDLE = paired(IDLE, base, this)
        run.log("Idle keep-alive connections")
        results["idle"] = run.run_idle(ctx)
    results["minutes"] = (time.monotonic() - started) / 60
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    text = table(results)
    with open(os.path.join(args.out, "compare.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
