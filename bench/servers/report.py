"""docs/benchmarks.md and its charts, from the results of one run.

    python report.py RESULTS.json DOCS_DIR

Everything with a number in it is generated; the prose that explains the
numbers lives in analysis.md next to this file and is copied in as written.
"""

from __future__ import annotations

import json
import os
import sys

import charts

HERE = os.path.dirname(os.path.abspath(__file__))

# (scenario, peer label, minimum oneloop/peer ratio) from the project's goals.
RATIO_TARGETS = (
    ("asgi-plaintext", "granian", 1.2),
    ("asgi-plaintext", "uvicorn", 2.5),
    ("wsgi-plaintext", "granian", 1.2),
    ("wsgi-plaintext", "gunicorn gthread", 8.0),
)
CPU_TARGET_US = 8.0
METRICS_COST_PERCENT = 2.0  # what serving metrics may add to CPU per request
TIMES = "\N{MULTIPLICATION SIGN}"
DASH = "\N{EN DASH}"
IDLE_TARGET_BYTES = 1024

# WebSocket goals: (scenario, peer label, minimum ratio of server CPU per
# message, peer's over oneloop's), and user-space memory per idle WebSocket.
WS_RATIO_TARGETS = (
    ("ws-echo-16", "uvicorn + websockets", 3.0),
    ("ws-echo-16", "uvicorn + websockets (legacy)", 3.0),
    ("ws-echo-16", "uvicorn + wsproto", 3.0),
    ("ws-echo-16", "granian", 1.5),
)
WS_IDLE_TARGET_BYTES = 2048
# The WebSocket section sits between these lines, so a run of the WebSocket
# parts alone (make bench-servers ONLY=ws) rewrites it and nothing else.
WS_BEGIN = "<!-- websocket: begin (a run of the WebSocket parts alone rewrites this section) -->"
WS_END = "<!-- websocket: end -->"
# HTTP/2 goals: oneloop's server CPU per request against granian's on h2c
# plaintext, and h2 over TLS against h2c (oneloop's own).
H2_GRANIAN_RATIO = 1.5
H2_TLS_OVERHEAD = 0.25
H2_BEGIN = "<!-- http2: begin (a run of the HTTP/2 parts alone rewrites this section) -->"
H2_END = "<!-- http2: end -->"


# ------------------------------------------------------------------ helpers


def fmt(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return DASH
    return f"{value:,.{digits}f}{unit}"


def ok_targets(sc: dict) -> list[dict]:
    return [t for t in sc["targets"] if t.get("status") == "ok"]


def find(sc: dict, label: str) -> dict | None:
    return next((t for t in ok_targets(sc) if t["label"] == label), None)


def oneloop(sc: dict) -> dict | None:
    return next((t for t in ok_targets(sc) if t["server"] == "oneloop"), None)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def scenario(results: dict, key: str) -> dict | None:
    pool = results["scenarios"] + results["fixed_rate"]
    return next((sc for sc in pool if sc["key"] == key), None)


def table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    marks = {"l": ":--", "r": "--:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


# ------------------------------------------------------------------ sections


def targets_section(results: dict) -> list[str]:
    rows = []
    for key, peer, goal in RATIO_TARGETS:
        sc = scenario(results, key)
        ours, theirs = (oneloop(sc), find(sc, peer)) if sc else (None, None)
        if not (ours and theirs):
            continue
        by_rps = ratio(ours["rps"], theirs["rps"])
        by_cpu = ratio(theirs["cpu_us"], ours["cpu_us"])
        verdict = "met" if by_rps and by_rps >= goal else "**not met**"
        rows.append(
            [
                f"{sc['title']}: oneloop ÷ {peer}",
                f"≥ {goal}{TIMES}",
                fmt(by_rps, 2, TIMES),
                fmt(by_cpu, 2, TIMES),
                verdict,
            ]
        )
    for key in ("asgi-plaintext", "wsgi-plaintext"):
        sc = scenario(results, key)
        ours = oneloop(sc) if sc else None
        if ours:
            met = "met" if ours["cpu_us"] <= CPU_TARGET_US else "**not met**"
            rows.append(
                [
                    f"{sc['title']}: server CPU per request",
                    f"≤ {CPU_TARGET_US:g} µs",
                    fmt(ours["cpu_us"], 2, " µs"),
                    "",
                    met,
                ]
            )
    for key in ("asgi-plaintext", "wsgi-plaintext"):
        sc = scenario(results, key)
        ours, metered = (oneloop(sc), find(sc, "oneloop, metrics on")) if sc else (None, None)
        if ours and metered:
            cost = (metered["cpu_us"] / ours["cpu_us"] - 1) * 100
            rows.append(
                [
                    f"{sc['title']}: CPU per request with --metrics-bind and --health-path",
                    f"≤ +{METRICS_COST_PERCENT:g} %",
                    f"{cost:+.1f} %",
                    "",
                    "met" if cost <= METRICS_COST_PERCENT else "**not met**",
                ]
            )
    floor = find(scenario(results, "asgi-plaintext") or {"targets": []}, "C epoll floor")
    if floor:
        rows.append(
            [
                "for scale: the C floor server's CPU per request, same run",
                "",
                fmt(floor["cpu_us"], 2, " µs"),
                "",
                "",
            ]
        )
    for t in results["idle"]:
        if t["server"] == "oneloop" and t.get("status") == "ok":
            met = "met" if t["bytes_per_conn"] <= IDLE_TARGET_BYTES else "**not met**"
            rows.append(
                [
                    f"{t['label']}: memory per idle keep-alive connection",
                    "≤ 1 KiB",
                    fmt(t["bytes_per_conn"], 0, " B"),
                    "",
                    met,
                ]
            )
    header = ["goal", "target", "measured (req/s)", "same, by CPU per request", "verdict"]
    return [
        "## Where oneloop stands",
        "",
        *table(header, rows, "lrrrl"),
        "",
        "The ratio by CPU per request is the peer's server CPU per request divided by "
        "oneloop's: it is the ratio of throughputs if each server had its core to itself, "
        "and it holds up when other programs share the machine.",
        "",
    ]


def scenario_rows(sc: dict, floor_rps: float | None) -> list[list[str]]:
    ours = oneloop(sc)
    rows = []
    for t in sc["targets"]:
        if t.get("status") != "ok":
            rows.append([t["label"], t.get("status", "?")] + [""] * 9)
            continue
        of_floor = [fmt(100 * t["rps"] / floor_rps, 0, " %")] if floor_rps else []
        rows.append(
            [
                f"**{t['label']}**" if t["server"] == "oneloop" else t["label"],
                fmt(t["rps"]),
                fmt(ratio(ours["rps"], t["rps"]) if ours else None, 2, TIMES),
                *of_floor,
                fmt(t["p50_ms"], 2),
                fmt(t["p99_ms"], 2),
                fmt(t["cpu_us"], 1),
                f"{fmt(t['cpu_user_us'], 1)} + {fmt(t['cpu_sys_us'], 1)}",
                fmt(100 * t["server_util"], 0, " %"),
                fmt(t["rss_kib"] / 1024, 1),
                fmt(t["errors"]),
            ]
        )
    return rows


SCENARIO_HEADER = [
    "server",
    "req/s",
    "oneloop ÷",
    "of floor",
    "p50 ms",
    "p99 ms",
    "CPU µs/req",
    "user + sys µs",
    "server core busy",
    "peak RSS MiB",
    "errors",
]


def scenarios_section(results: dict) -> list[str]:
    out = [
        "## Results",
        "",
        "*req/s* counts good responses (2xx) only; *CPU µs/req* divides the server's CPU "
        "time by all responses; *server core busy* is its CPU time over the window (below "
        "about 95 % the server was not the bottleneck: see Noise).",
        "",
        "![requests per second](img/throughput.png)",
        "",
        "![server CPU per request](img/cpu.png)",
        "",
    ]
    for sc in results["scenarios"]:
        floor = next((t for t in ok_targets(sc) if t["server"] == "floor"), None)
        header = SCENARIO_HEADER if floor else [h for h in SCENARIO_HEADER if h != "of floor"]
        out += [f"### {sc['title']}", "", sc["what"], ""]
        out += table(header, scenario_rows(sc, floor["rps"] if floor else None))
        out += [""]
    return out


def fixed_rate_section(results: dict) -> list[str]:
    if not results["fixed_rate"]:
        return []
    out = [
        "## Latency at a fixed rate",
        "",
        "Open loop (`bench/rate_client.c`): requests are due at a fixed rate, half of "
        "each server's own closed-loop peak above, over 64 connections; latency counts "
        "from when a request was due, so time spent queued behind a stall is charged. "
        "Closed-loop tools (wrk) only send when a response came back and so hide it.",
        "",
        "![latency at half of peak](img/latency.png)",
        "",
    ]
    header = [
        "server",
        "rate req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "CPU µs/req",
        "late",
        "errors",
    ]
    for sc in results["fixed_rate"]:
        rows = [
            [
                t["label"],
                fmt(t["rate"]),
                fmt(t["p50_ms"], 2),
                fmt(t["p90_ms"], 2),
                fmt(t["p99_ms"], 2),
                fmt(t["p999_ms"], 2),
                fmt(t["max_ms"], 1),
                fmt(t["cpu_us"], 1),
                fmt(t["late"]),
                fmt(t["errors"]),
            ]
            for t in ok_targets(sc)
        ]
        out += [f"### {sc['title']}", "", *table(header, rows), ""]
    out += [
        "*late*: requests sent more than 1 ms after they were due because all 64 "
        "connections were busy.",
        "",
    ]
    return out


def idle_section(results: dict) -> list[str]:
    if not results["idle"]:
        return []
    rows = []
    for t in results["idle"]:
        if t.get("status") != "ok":
            rows.append([t["label"], t.get("status", "?"), "", "", "", "", ""])
            continue
        rows.append(
            [
                t["label"],
                fmt(t["connections"]),
                fmt(t["failed"]),
                fmt(t["still_open"]),
                fmt(t["rss_before_kib"] / 1024, 1),
                fmt(t["rss_after_kib"] / 1024, 1),
                fmt(t["bytes_per_conn"]),
            ]
        )
    header = [
        "server",
        "connections served",
        "refused or unanswered",
        "still open",
        "RSS before MiB",
        "RSS after MiB",
        "bytes per connection",
    ]
    return [
        "## Idle keep-alive connections",
        "",
        "Each connection completed one request and then sat idle; the figure is the "
        "growth of the serving processes' resident memory divided by the connections. "
        "Kernel socket buffers are not in it (they are the same for every server). "
        "granian serves at most `--backpressure` connections at once per worker (default "
        "1024) and leaves the others unanswered, so it runs here with 16384.",
        "",
        "![memory per idle connection](img/idle.png)",
        "",
        *table(header, rows),
        "",
    ]


def ws_goals(ws: dict) -> list[str]:
    pool = {sc["key"]: sc for sc in ws["scenarios"]}
    rows = []
    for key, peer, goal in WS_RATIO_TARGETS:
        sc = pool.get(key)
        ours, theirs = (oneloop(sc), find(sc, peer)) if sc else (None, None)
        if not (ours and theirs):
            continue
        by_cpu = ratio(theirs["cpu_us"], ours["cpu_us"])
        rows.append(
            [
                f"{sc['title']}: oneloop ÷ {peer}",
                f"≥ {goal:g}{TIMES}",
                fmt(by_cpu, 2, TIMES),
                fmt(ratio(ours["rps"], theirs["rps"]), 2, TIMES),
                "met" if by_cpu and by_cpu >= goal else "**not met**",
            ]
        )
    for t in ws["idle"]:
        if t["server"] == "oneloop" and t.get("status") == "ok":
            met = "met" if t["bytes_per_conn"] <= WS_IDLE_TARGET_BYTES else "**not met**"
            rows.append(
                [
                    "oneloop: user-space memory per idle WebSocket",
                    f"≤ {WS_IDLE_TARGET_BYTES // 1024} KiB",
                    fmt(t["bytes_per_conn"], 0, " B"),
                    "",
                    met,
                ]
            )
    if not rows:
        return []
    header = ["goal", "target", "by server CPU per message", "same, by messages/s", "verdict"]
    return [
        *table(header, rows, "lrrrl"),
        "",
        "The echo goals are judged by server CPU per message (the peer's over oneloop's): "
        "the ratio of throughputs if each server had its core to itself.",
        "",
    ]


def status_cell(t: dict) -> str:
    """A row's failure on one line of a table: the first line of what broke."""
    lines = (t.get("status") or "?").splitlines() or ["?"]
    return lines[0].replace("|", "\\|") + (" (more in the run's logs)" if len(lines) > 1 else "")


def ws_errors(t: dict) -> str:
    """The kinds of error ws_client counted, e.g. '3 disconnects'."""
    kinds = [(k, t.get(k) or 0) for k in WS_ERROR_NAMES]
    return ", ".join(f"{n:,.0f} {WS_ERROR_NAMES[k]}" for k, n in kinds if n)


WS_ERROR_NAMES = {
    "connect_errors": "failed connects",
    "handshake_errors": "failed handshakes",
    "protocol_errors": "bad frames",
    "mismatches": "wrong echoes",
    "disconnects": "closed by the server",
    "timeouts": "timeouts",
    "close_errors": "unclean closes",
}


def ws_table(sc: dict) -> list[str]:
    per = "handshake" if sc["load"]["mode"] == "connect" else "msg"
    rate = "handshakes/s" if per == "handshake" else "msg/s"
    ours = oneloop(sc)
    ours = ours if ours and ours["rps"] else None  # nothing completed: no ratio
    rows, notes = [], []
    for t in sc["targets"]:
        if t.get("status") != "ok":
            rows.append([t["label"], status_cell(t)] + [""] * 10)
            continue
        rows.append(
            [
                f"**{t['label']}**" if t["server"] == "oneloop" else t["label"],
                fmt(t["rps"]),
                fmt(ratio(ours["rps"], t["rps"]) if ours else None, 2, TIMES),
                fmt(ratio(t["cpu_us"], ours["cpu_us"]) if ours else None, 2, TIMES),
                fmt(t["p50_ms"], 2),
                fmt(t["p99_ms"], 2),
                fmt(t["cpu_us"], 1),
                f"{fmt(t['cpu_user_us'], 1)} + {fmt(t['cpu_sys_us'], 1)}",
                fmt(100 * t["server_util"], 0, " %"),
                fmt(100 * t["client_util"], 0, " %"),
                fmt(t["rss_kib"] / 1024, 1),
                fmt(t["errors"]),
            ]
        )
        if t["errors"]:
            notes.append(f"{t['label']}: {ws_errors(t)}")
    header = [
        "server",
        rate,
        "oneloop ÷",
        "oneloop ÷ by CPU",
        "p50 ms",
        "p99 ms",
        f"CPU µs/{per}",
        "user + sys µs",
        "server core busy",
        "client core busy",
        "peak RSS MiB",
        "errors",
    ]
    out = [f"### {sc['title']}", "", sc["what"], "", *table(header, rows), ""]
    foreign = [x["foreign"] for t in ok_targets(sc) for x in t["samples"]]
    if foreign:
        out += [
            f"Other programs' load during the measured windows: up to {max(foreign):.2f} "
            "cores (of 2; a quiet machine shows under 0.1).",
            "",
        ]
    if notes:
        out += ["Errors over all repetitions: " + "; ".join(notes) + ".", ""]
    return out


def ws_idle_table(rows_in: list[dict]) -> list[str]:
    rows = []
    for t in rows_in:
        if t.get("status") != "ok":
            rows.append([t["label"], status_cell(t), "", "", "", "", ""])
            continue
        rows.append(
            [
                f"**{t['label']}**" if t["server"] == "oneloop" else t["label"],
                fmt(t["connections"]),
                fmt(t["failed"]),
                fmt(t["still_open"]),
                fmt(t["rss_before_kib"] / 1024, 1),
                fmt(t["rss_after_kib"] / 1024, 1),
                fmt(t["bytes_per_conn"]),
            ]
        )
    header = [
        "server",
        "WebSockets open",
        "refused or failed",
        "still open",
        "RSS before MiB",
        "RSS after MiB",
        "bytes per WebSocket",
    ]
    return [
        "### Idle WebSockets",
        "",
        "Each server was warmed by a second of 16-byte echoes on 64 WebSockets; then "
        "`ws_client -m idle` opened the WebSockets (64 handshakes at a time) and left each "
        "idle, its echo app waiting in `receive()`. The figure is the growth of the serving "
        "processes' resident memory divided by the WebSockets open; kernel socket buffers "
        "are not in it.",
        "",
        *table(header, rows),
        "",
    ]


def ws_client_command(sc: dict, seconds: int) -> str:
    load = sc["load"]
    argv = ["ws_client", "-m", load["mode"], "-c", str(load["connections"])]
    if load["mode"] == "echo":
        argv += ["-s", str(load["size"]), "-p", str(load["in_flight"])]
        argv += ["-b"] if load["binary"] else []
    return " ".join([*argv, "-d", str(seconds), "-w", "0", "127.0.0.1", "PORT"])


def websocket_section(results: dict) -> list[str]:
    ws = results.get("websocket") or {}
    if not (ws.get("scenarios") or ws.get("idle")):
        return []
    meta, s = results["meta"], results["meta"]["settings"]
    versions = meta["machine"]["versions"]
    names = ("oneloop", "uvicorn", "websockets", "wsproto", "granian", "hypercorn", "uvloop")
    shown = ", ".join(f"{k} {versions[k]}" for k in names if k in versions)
    out = [
        WS_BEGIN,
        "## WebSocket",
        "",
        f"Measured on {meta['date']} ({meta['mode']} run, {meta['minutes']:.0f} minutes) "
        f"with `{meta.get('invocation', 'make bench-servers')}`: {shown}. As for HTTP, every "
        "server runs one worker pinned to CPU 0 and the load runs on CPU 1; the load is "
        "`bench/ws_client.c`, a C client (one thread, epoll) that masks every frame with a "
        "fresh key, checks every echo's type and content, and answers pings.",
        "",
        *ws_goals(ws),
        *analysis("analysis_ws.md"),
        "![WebSocket: server CPU per message and per handshake, memory per idle "
        "WebSocket](img/websocket.png)",
        "",
        "*msg/s* counts echoes completed whole and correct; *CPU µs/msg* divides the "
        "server's CPU time (user + system, whole process tree) by them; *oneloop ÷* is "
        "oneloop's messages per second over the row's, *oneloop ÷ by CPU* the row's CPU per "
        "message over oneloop's. A *client core busy* near 100 % means the client, not the "
        "server, set the pace.",
        "",
    ]
    for sc in ws["scenarios"]:
        out += ws_table(sc)
    if ws.get("idle"):
        out += ws_idle_table(ws["idle"])
    out += ["### How the WebSocket figures were taken", ""]
    for sc in ws["scenarios"]:
        out.append(f"* {sc['title']}: `{ws_client_command(sc, s['seconds'])}`.")
    out += [
        f"* Each scenario: {s['warmup']} s of the same load per server first, then "
        f"{s['repetitions']} {TIMES} {s['seconds']} s repetitions interleaved across the "
        "servers; medians, errors summed. The server's CPU is read from /proc around each "
        "repetition, the client's handshakes and closes included (in the echoes, 64 or 16 "
        "of each against tens of thousands of messages).",
        f"* Idle: `ws_client -m idle -c {s['idle_connections']} 127.0.0.1 PORT`, the RSS read "
        "1 s after the last handshake.",
        "",
    ]
    cmds = [[f"`{k}`", "`" + " ".join(v) + "`"] for k, v in meta.get("ws_commands", {}).items()]
    if cmds:
        out += [*table(["server", "command"], cmds, "ll"), ""]
    return [*out, WS_END, ""]


def h2_goals(h2: dict) -> list[str]:
    pool = {sc["key"]: sc for sc in h2["scenarios"]}
    rows = []
    sc = pool.get("h2-plaintext")
    ours, theirs = (find(sc, "oneloop h2c"), find(sc, "granian h2c")) if sc else (None, None)
    if ours and theirs and ours.get("status") == theirs.get("status") == "ok":
        by_cpu = ratio(theirs["cpu_us"], ours["cpu_us"])
        rows.append(
            [
                "h2c plaintext: oneloop ÷ granian, by server CPU per request",
                f"≥ {H2_GRANIAN_RATIO:g}{TIMES}",
                fmt(by_cpu, 2, TIMES),
                "met" if by_cpu and by_cpu >= H2_GRANIAN_RATIO else "**not met**",
            ]
        )
    sc = pool.get("h2-tls")
    tls, clear = (find(sc, "oneloop h2 (TLS)"), find(sc, "oneloop h2c")) if sc else (None, None)
    if tls and clear and tls.get("status") == clear.get("status") == "ok":
        extra = tls["cpu_us"] / clear["cpu_us"] - 1 if clear["cpu_us"] else None
        rows.append(
            [
                "oneloop h2 over TLS against h2c, server CPU per request",
                f"≤ +{H2_TLS_OVERHEAD:.0%}",
                f"{extra:+.0%}" if extra is not None else "-",
                "met" if extra is not None and extra <= H2_TLS_OVERHEAD else "**not met**",
            ]
        )
    if not rows:
        return []
    return [*table(["goal", "target", "measured", "verdict"], rows, "lrrl"), ""]


def h2_table(sc: dict) -> list[str]:
    ours = find(sc, "oneloop h2c") or find(sc, "oneloop h2 (TLS)")
    ours = ours if ours and ours.get("status") == "ok" and ours["rps"] else None
    rows = []
    for t in sc["targets"]:
        if t.get("status") != "ok":
            rows.append([t["label"], status_cell(t), "", "", "", "", ""])
            continue
        by_cpu = ratio(t["cpu_us"], ours["cpu_us"]) if ours else None
        rows.append(
            [
                t["label"],
                fmt(t["rps"]),
                fmt(t["cpu_us"], 2),
                fmt(t.get("p99_ms"), 2),
                fmt(t["errors"]),
                fmt(by_cpu, 2, TIMES) if by_cpu else "",
                fmt(t.get("client_util", 0) * 100, 0, " %"),
            ]
        )
    header = [
        "server",
        "req/s",
        "CPU µs/req",
        "p99 ms",
        "errors",
        "÷ oneloop h2c by CPU",
        "client core busy",
    ]
    return [f"### {sc['title']}", "", sc["what"], "", *table(header, rows, "lrrrrrr"), ""]


def http2_section(results: dict) -> list[str]:
    h2 = results.get("http2") or {}
    if not h2.get("scenarios"):
        return []
    meta, s = results["meta"], results["meta"]["settings"]
    versions = meta["machine"]["versions"]
    names = ("oneloop", "granian", "hypercorn", "uvicorn", "gunicorn", "uvloop")
    shown = ", ".join(f"{k} {versions[k]}" for k in names if k in versions)
    out = [
        H2_BEGIN,
        "## HTTP/2",
        "",
        f"Measured on {meta['date']} ({meta['mode']} run, {meta['minutes']:.0f} minutes) "
        f"with `{meta.get('invocation', 'make bench-servers')}`: {shown}, nghttp2's h2load "
        "as the load. As for HTTP/1.1, every server runs one worker pinned to CPU 0 and the "
        "load runs on CPU 1. *÷ oneloop h2c by CPU* is the row's server CPU per request over "
        "oneloop's (h2c, or h2 over TLS in the TLS table). uvicorn and gunicorn serve "
        "HTTP/1.1 only: their rows, loaded one request at a time per connection, are context, "
        "not a like-for-like comparison.",
        "",
        *h2_goals(h2),
    ]
    for sc in h2["scenarios"]:
        out += h2_table(sc)
    out += [
        "### How the HTTP/2 figures were taken",
        "",
        f"* `h2load -t1 -c16 -m32 -D{s['seconds']}` (HTTP/2 rows; `-m1` for the "
        f"one-stream scenario) or `h2load -t1 -c16 --h1 -m1 -D{s['seconds']}` (HTTP/1.1 "
        "rows); latency percentiles from h2load's per-request log (`--log-file`).",
        f"* Each scenario: {s['warmup']} s of the same load per server first, then "
        f"{s['repetitions']} {TIMES} {s['seconds']} s repetitions interleaved across the "
        "servers; medians, errors summed.",
        "",
    ]
    cmds = [[f"`{k}`", "`" + " ".join(v) + "`"] for k, v in meta.get("h2_commands", {}).items()]
    if cmds:
        out += [*table(["row", "command"], cmds, "ll"), ""]
    return [*out, H2_END, ""]


def profile_section(results: dict) -> list[str]:
    prof = results.get("profile") or {}
    out = []
    for label, p in prof.get("callgrind", {}).items():
        if "status" in p:
            out += [f"### {label}", "", p["status"], ""]
            continue
        out += [
            f"### {label}: {fmt(p['instructions_per_request'])} instructions per request",
            "",
            f"callgrind over {fmt(p['requests'])} requests (16 connections), user space only.",
            "",
        ]
        rows = [[o, fmt(c)] for o, c in p["by_object"]]
        out += [*table(["shared object", "instructions per request"], rows), ""]
        rows = [[f"`{fn}`", obj, fmt(c)] for fn, obj, c in p["top_self"][:15]]
        out += [*table(["function (self cost)", "object", "Ir/req"], rows, "llr"), ""]
        rows = [[f"`{fn}`", fmt(c)] for fn, c in p["core_inclusive"][:8]]
        out += [*table(["oneloop function (inclusive)", "Ir/req"], rows), ""]
    if prof.get("syscalls"):
        out += syscall_table(prof["syscalls"])
    if not out:
        return []
    return ["## Where oneloop's time goes", "", *out]


def syscall_table(syscalls: dict) -> list[str]:
    syscalls = {label: s for label, s in syscalls.items() if "calls" in s}
    names: list[str] = []
    for s in syscalls.values():
        names += [n for n, v in s["calls"].items() if v >= 0.01 and n not in names]
    names = names[:10]
    rows = [
        [label, fmt(sum(s["calls"].values()), 2)] + [fmt(s["calls"].get(n), 2) for n in names]
        for label, s in syscalls.items()
    ]
    return [
        "### System calls per request",
        "",
        "strace -f -c over the same number of requests as the profile (h2load, 16 "
        "connections, one request in flight on each); the pipelined rows over 2 s of wrk "
        "sending 16 requests per write on 16 connections. strace slows the server down, "
        "which changes how many events each epoll wake-up finds, so epoll counts are upper "
        "bounds. Calls that only sleep (a watchdog's timer) are left out.",
        "",
        *table(["server", "total", *names], rows),
        "",
    ]


def noise_section(results: dict) -> list[str]:
    rows = []
    for sc in results["scenarios"]:
        samples = [s for t in ok_targets(sc) for s in t["samples"]]
        if not samples:
            continue
        foreign = [s["foreign"] for s in samples]
        client = [s["client_util"] for s in samples]
        rows.append([sc["title"], fmt(max(foreign), 2), fmt(max(client) * 100, 0, " %")])
    return [
        "## Noise",
        "",
        "CPU busy during each measured window that was neither the server's nor the load "
        "generator's (other programs, plus kernel work not charged to either process), in "
        "cores, and the load generator's busiest window: at 100 % the client, not the "
        "server, set the pace, and the server's req/s understates it (its CPU per request "
        "does not).",
        "",
        *table(["scenario", "max other load (cores)", "max client core"], rows),
        "",
    ]


def method_section(meta: dict) -> list[str]:
    m, s = meta["machine"], meta["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if k not in ("valgrind",))
    cmds = [[f"`{k}`", "`" + " ".join(v) + "`"] for k, v in meta["commands"].items()]
    return [
        "## Method",
        "",
        f"* Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}.",
        f"* Versions: {versions}.",
        "* Every server runs one worker process, pinned to CPU 0 (`taskset`); load "
        "generators and the Flask scenario's upstream run on CPU 1. All Python servers run "
        "from one virtualenv with the same interpreter."
        + (
            f" Servers and clients run at nice {meta['nice']}, so that other programs on the "
            "machine take less of the two cores."
            if meta.get("nice")
            else ""
        ),
        "* Closed loop: wrk (`-t1`, 5 s timeout; pipelining through a Lua script); "
        f"{s['warmup']} s warm-up per server, then {s['repetitions']} {TIMES} {s['seconds']} s "
        "repetitions, interleaved across the servers of a scenario (rotating the order); "
        "each figure is the median of the repetitions, errors are summed.",
        "* Server CPU per request: user + system time of the server's whole process tree "
        "(`/proc/PID/stat`, all threads, supervisor included) over the measured window, "
        "divided by the responses completed in it.",
        "* Peak RSS: `VmHWM` of the serving processes (a supervisor process, as in "
        "gunicorn, granian and hypercorn, is not counted).",
        "* Floor: `bench/floor_server.c`, a C epoll server that reads once and writes "
        "once per request (a fixed response, no parsing beyond finding the blank line). "
        "*of floor* = req/s as a fraction of the floor's in the same scenario.",
        "",
        "Server command lines (`apps` is `bench/servers/apps`; APP is the scenario's app, "
        "e.g. `asgi_apps:plaintext`):",
        "",
        *table(["server", "command"], cmds, "ll"),
        "",
    ]


def analysis(name: str = "analysis.md") -> list[str]:
    path = os.path.join(HERE, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [f.read().rstrip(), ""]


def only_part(results: dict, part: str) -> bool:
    """A run of one group of parts ("websocket", "http2") and nothing else."""
    others = {"scenarios", "fixed_rate", "idle", "profile", "websocket", "http2"} - {part}
    return bool(results.get(part)) and not any(results.get(k) for k in others)


def splice(path: str, section: list[str], begin: str, end: str) -> None:
    """Replaces a section of an existing report (or puts it before the
    profile, or the part after it), leaving the rest as it was."""
    with open(path) as f:
        text = f.read()
    block = "\n".join(section).rstrip() + "\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + block + "\n" + tail
    else:
        for heading in ("## Where oneloop's time goes", "## Noise", "## Method"):
            if "\n" + heading in text:
                head, tail = text.split("\n" + heading, 1)
                text = head.rstrip("\n") + "\n\n" + block + "\n" + heading + tail
                break
        else:
            text = text.rstrip("\n") + "\n\n" + block
    with open(path, "w") as f:
        f.write(text)


def write(results: dict, docs: str) -> None:
    img = os.path.join(docs, "img")
    os.makedirs(img, exist_ok=True)
    charts.draw_all(results, img)
    path = os.path.join(docs, "benchmarks.md")
    if only_part(results, "websocket") and os.path.exists(path):
        splice(path, websocket_section(results), WS_BEGIN, WS_END)
        return
    if only_part(results, "http2") and os.path.exists(path):
        splice(path, http2_section(results), H2_BEGIN, H2_END)
        return
    meta = results["meta"]
    lines = [
        "# Benchmarks",
        "",
        f"oneloop against uvicorn, gunicorn, granian and hypercorn, measured in one run on "
        f"one machine on {meta['date']} ({meta['mode']} run, {meta['minutes']:.0f} minutes). "
        "Generated by `make bench-servers` (`bench/servers/`); the tables and charts are "
        "rewritten by every run.",
        "",
        "![oneloop and its peers, plaintext](img/headline.png)",
        "",
        *targets_section(results),
        *analysis(),
        *scenarios_section(results),
        *fixed_rate_section(results),
        *idle_section(results),
        *websocket_section(results),
        *http2_section(results),
        *profile_section(results),
        *noise_section(results),
        *method_section(meta),
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        write(json.load(f), sys.argv[2])
