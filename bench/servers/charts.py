"""The PNG charts of the report (matplotlib, no display needed)."""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")  # files only; no display on a benchmark machine
import matplotlib.pyplot as plt

TIMES = "\N{MULTIPLICATION SIGN}"

# One colour per server everywhere, oneloop the only saturated one.
COLORS = {
    "oneloop": "#d1495b",
    "floor": "#9e9e9e",
    "uvicorn": "#66a5ad",
    "granian": "#edae49",
    "hypercorn": "#8d6a9f",
    "gunicorn": "#00798c",
}


def _ok(sc: dict) -> list[dict]:
    return [t for t in sc["targets"] if t.get("status") == "ok"]


def _bars(ax, labels: list[str], values: list[float], colors: list[str], notes: list[str]) -> None:
    """Horizontal bars, first label on top, each bar followed by its note."""
    y = list(range(len(labels)))[::-1]
    ax.barh(y, values, color=colors)
    ax.set_yticks(y, labels)
    top = max(values, default=0) or 1
    for yi, v, note in zip(y, values, notes, strict=True):
        ax.text(v + top * 0.01, yi, note, va="center", fontsize=8)
    ax.set_xlim(0, top * 1.45)
    ax.xaxis.set_major_formatter(lambda x, _: f"{x / 1000:g}k" if x >= 1000 else f"{x:g}")
    ax.spines[["top", "right"]].set_visible(False)


def _value(v: float, unit: str) -> str:
    return f"{v:,.0f}{unit}" if v >= 10 else f"{v:.1f}{unit}"


def _save(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def headline(results: dict, path: str) -> None:
    """Plaintext req/s with CPU per request and oneloop's ratio, ASGI and WSGI."""
    keys = ("asgi-plaintext", "wsgi-plaintext")
    panels = [sc for sc in results["scenarios"] if sc["key"] in keys and _ok(sc)]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 3.6), squeeze=False)
    for ax, sc in zip(axes[0], panels, strict=True):
        rows = _ok(sc)
        ours = next((t for t in rows if t["server"] == "oneloop"), None)
        notes = []
        for t in rows:
            note = f"{t['rps']:,.0f}/s, {t['cpu_us']:.1f} µs/req"
            if ours and t["server"] not in ("oneloop", "floor") and t["rps"]:
                note += f", oneloop {ours['rps'] / t['rps']:.2f}{TIMES}"
            notes.append(note)
        _bars(
            ax,
            [t["label"] for t in rows],
            [t["rps"] for t in rows],
            [COLORS[t["server"]] for t in rows],
            notes,
        )
        ax.set_title(f"{sc['title']}: requests/s, one worker on one core", fontsize=10)
    _save(fig, path)


def _grid(results: dict, key: str, unit: str, title: str, path: str) -> None:
    scenarios = [sc for sc in results["scenarios"] if _ok(sc)]
    if not scenarios:
        return
    cols = 3
    rows = math.ceil(len(scenarios) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(15, 2.8 * rows), squeeze=False)
    for ax, sc in zip(axes.flat, scenarios, strict=False):
        ts = _ok(sc)
        values = [t[key] for t in ts]
        _bars(
            ax,
            [t["label"] for t in ts],
            values,
            [COLORS[t["server"]] for t in ts],
            [_value(v, unit) for v in values],
        )
        ax.set_title(sc["title"], fontsize=10)
    for ax in list(axes.flat)[len(scenarios) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=12)
    _save(fig, path)


def latency(results: dict, path: str) -> None:
    scenarios = [sc for sc in results["fixed_rate"] if _ok(sc)]
    if not scenarios:
        return
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6 * len(scenarios), 3.4), squeeze=False)
    points = [("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99"), ("p999_ms", "p99.9")]
    for ax, sc in zip(axes[0], scenarios, strict=True):
        for t in _ok(sc):
            values = [max(t[k], 0.001) for k, _ in points]
            ax.plot(
                [p for _, p in points],
                values,
                marker="o",
                color=COLORS[t["server"]],
                label=f"{t['label']} ({t['rate']:,.0f}/s)",
            )
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(sc["title"], fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    _save(fig, path)


def idle(results: dict, path: str) -> None:
    rows = [t for t in results["idle"] if t.get("status") == "ok"]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1))
    values = [t["bytes_per_conn"] for t in rows]
    _bars(
        ax,
        [t["label"] for t in rows],
        values,
        [COLORS[t["server"]] for t in rows],
        [_value(v, " B") for v in values],
    )
    ax.set_title("Memory per idle keep-alive connection (user space, bytes)", fontsize=10)
    _save(fig, path)


def websocket(results: dict, path: str) -> None:
    """Server CPU per message (echo), per handshake, and memory per idle
    WebSocket; each bar noted with its rate and oneloop's ratio by CPU."""
    ws = results.get("websocket") or {}
    panels = [(sc, "cpu_us") for sc in ws.get("scenarios", []) if _ok(sc)]
    idle_rows = [t for t in ws.get("idle", []) if t.get("status") == "ok"]
    if not panels and not idle_rows:
        return
    count = len(panels) + bool(idle_rows)
    cols = 2 if count > 1 else 1
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(8.5 * cols, 3.7 * rows))
    axes = list(getattr(axes, "flat", [axes]))
    for ax, (sc, key) in zip(axes, panels, strict=False):
        ts = [
            t for t in _ok(sc) if t["rps"]
        ]  # a row that completed nothing has no cost per message
        ours = next((t for t in ts if t["server"] == "oneloop"), None)
        per = "handshake" if sc["load"]["mode"] == "connect" else "message"
        notes = []
        for t in ts:
            note = f"{_value(t[key], ' µs')}, {t['rps']:,.0f}/s"
            if ours and t is not ours and ours[key]:
                note += f", oneloop {t[key] / ours[key]:.2f}{TIMES}"
            notes.append(note)
        _bars(
            ax,
            [t["label"] for t in ts],
            [t[key] for t in ts],
            [COLORS[t["server"]] for t in ts],
            notes,
        )
        ax.set_xlim(0, max((t[key] for t in ts), default=1) * 1.6)  # room for the notes
        ax.set_title(f"{sc['title']}: server CPU µs per {per}", fontsize=10)
    if idle_rows:
        ax = axes[len(panels)]
        values = [t["bytes_per_conn"] for t in idle_rows]
        _bars(
            ax,
            [t["label"] for t in idle_rows],
            values,
            [COLORS[t["server"]] for t in idle_rows],
            [_value(v, " B") for v in values],
        )
        ax.set_title("Memory per idle WebSocket (user space, bytes)", fontsize=10)
    for ax in axes[count:]:
        ax.axis("off")
    fig.suptitle("WebSocket, one worker on one core (lower is better)", fontsize=12)
    _save(fig, path)


def draw_all(results: dict, img: str) -> None:
    headline(results, os.path.join(img, "headline.png"))
    _grid(results, "rps", "", "Requests per second (median)", os.path.join(img, "throughput.png"))
    _grid(
        results,
        "cpu_us",
        " µs",
        "Server CPU per request, µs (lower is better)",
        os.path.join(img, "cpu.png"),
    )
    latency(results, os.path.join(img, "latency.png"))
    idle(results, os.path.join(img, "idle.png"))
    websocket(results, os.path.join(img, "websocket.png"))
