"""Instructions per plaintext request, counted by callgrind: this build
against another, ASGI and WSGI, each also with --metrics-bind and
--health-path. Where a change costs a few percent, CPU time per request
in a load run is too noisy to tell (±5 % between repetitions); the count
of instructions is repeatable to about 0.2 % with a fixed hash seed.

    make bench-instructions BASE=<commit>
    python bench/servers/instructions.py BASE_DIR --this THIS_DIR [--runs N]

Each row is the mean of --runs runs (interleaved) of 20,000 requests (h2load, 16
connections) after 2,000 of warm-up; the server runs under valgrind with
its supervisor (whose idle loop is counted too).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import hotpath
import run
from scenarios import METRICS
from servers import Target

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
APPS = (("asgi", "asgi_apps:plaintext"), ("wsgi", "wsgi_apps:plaintext"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("base", help="directory holding the other build's oneloop package")
    p.add_argument("--this", required=True, help="directory holding this build's package")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--requests", type=int, default=20_000)
    args = p.parse_args()
    out = os.path.join(ROOT, "build", "bench-instructions")
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    env = dict(os.environ, PYTHONHASHSEED="0")  # the same dicts, the same probes, every run
    ctx = run.Context(
        run.FULL, out, os.path.join(out, "logs"), os.path.join(ROOT, "build", "bench", "bin"), env
    )
    ctx.part("callgrind")  # the servers' output goes there, not to the working directory
    builds = (
        ("base", args.base, ()),
        ("this", args.this, ()),
        ("this, metrics on", args.this, METRICS),
    )
    rows = []
    for interface, app in APPS:
        # Interleaved, run after run: how many requests one wake-up of the
        # loop handles depends on timing, and drifts over minutes.
        runs: dict[str, list[float]] = {label: [] for label, _, _ in builds}
        for _ in range(args.runs):
            for label, path, options in builds:
                t = Target(
                    "oneloop",
                    interface,
                    app,
                    f"{interface} {label}",
                    options=options,
                    pythonpath=path,
                )
                r = hotpath.callgrind(t, ctx, args.requests, args.requests // 10)
                runs[label].append(r["instructions_per_request"])
        counts = {label: statistics.mean(values) for label, values in runs.items()}
        for label, values in runs.items():
            print(
                f"{interface:5} {label:18} {counts[label]:9,.0f} instructions/request "
                f"(runs: {', '.join(f'{v:,.0f}' for v in values)})",
                flush=True,
            )
        base = counts["base"]
        rows.append(
            f"| {interface} plaintext | {base:,.0f} | {counts['this']:,.0f} "
            f"({(counts['this'] / base - 1) * 100:+.2f} %) | {counts['this, metrics on']:,.0f} "
            f"({(counts['this, metrics on'] / base - 1) * 100:+.2f} %) |"
        )
    print("\n| scenario | base | this | this, metrics on |\n|---|--:|--:|--:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
