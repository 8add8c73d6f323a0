"""The scenarios: which servers run which app under which load.

Each scenario starts all its servers at once (the idle ones cost nothing)
and interleaves their repetitions, so a burst of noise on the machine falls
on every server rather than on one.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadgen import Load
from servers import FLOOR, Target


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    what: str  # one sentence for the report
    targets: tuple[Target, ...]
    load: Load


def asgi(app: str) -> tuple[Target, ...]:
    return (
        Target("oneloop", "asgi", f"asgi_apps:{app}", "oneloop"),
        Target("uvicorn", "asgi", f"asgi_apps:{app}", "uvicorn"),
        Target("granian", "asgi", f"asgi_apps:{app}", "granian"),
        Target("hypercorn", "asgi", f"asgi_apps:{app}", "hypercorn"),
    )


def wsgi(app: str) -> tuple[Target, ...]:
    return (
        Target("oneloop", "wsgi", f"wsgi_apps:{app}", "oneloop"),
        Target("gunicorn", "wsgi", f"wsgi_apps:{app}", "gunicorn gthread"),
        Target("granian", "wsgi", f"wsgi_apps:{app}", "granian"),
        Target("uvicorn", "wsgi", f"wsgi_apps:{app}", "uvicorn"),
        Target("hypercorn", "wsgi", f"wsgi_apps:{app}", "hypercorn"),
    )


FLASK_SYNC = (
    Target("oneloop", "wsgi", "flask_apps:sync_app", "oneloop"),
    Target("gunicorn", "wsgi", "flask_apps:sync_app", "gunicorn gthread"),
    Target("granian", "wsgi", "flask_apps:sync_app", "granian"),
)

FLASK_ASYNC = (
    Target("oneloop", "wsgi", "flask_apps:app", "oneloop"),
    Target("gunicorn", "wsgi", "flask_apps:app", "gunicorn gthread, shared session"),
    Target("gunicorn", "wsgi", "flask_apps:per_request_app", "gunicorn, session per request"),
    Target("uvicorn", "asgi", "flask_apps:asgi_app", "uvicorn + WsgiToAsgi"),
    Target("uvicorn", "asgi", "quart_app:app", "uvicorn + Quart"),
)

WRK = Load("wrk", connections=64)
PIPELINED = Load("wrk", connections=64, script="pipeline.lua", latency=False)

SCENARIOS = (
    Scenario(
        "asgi-plaintext",
        "ASGI plaintext",
        "GET / answered with a fixed 13-byte body by a bare ASGI app; 64 connections.",
        (FLOOR, *asgi("plaintext")),
        WRK,
    ),
    Scenario(
        "asgi-json",
        "ASGI JSON",
        "A small JSON object serialized per request with the json module; 64 connections.",
        asgi("json_app"),
        WRK,
    ),
    Scenario(
        "wsgi-plaintext",
        "WSGI plaintext",
        "GET / answered with a fixed 13-byte body by a bare WSGI app; 64 connections.",
        (FLOOR, *wsgi("plaintext")),
        WRK,
    ),
    Scenario(
        "flask-sync",
        "Flask sync view",
        "A Flask view returning a string; 64 connections.",
        FLASK_SYNC,
        WRK,
    ),
    Scenario(
        "flask-async",
        "Flask async view calling an upstream",
        "An async Flask view awaiting a GET to a local upstream (the C floor server) "
        "through one aiohttp.ClientSession kept for the life of the process (created on "
        "first use); 16 connections, one per WSGI thread. The aiohttp call itself costs "
        "over 100 µs of CPU in every row: it is a large share of each figure.",
        FLASK_ASYNC,
        Load("wrk", connections=16),
    ),
    Scenario(
        "asgi-1mib",
        "ASGI 1 MiB response",
        "A 1 MiB body from memory in one send; 16 connections.",
        asgi("large"),
        Load("wrk", connections=16),
    ),
    Scenario(
        "wsgi-1mib",
        "WSGI 1 MiB response",
        "A 1 MiB body as a one-item iterable; 16 connections.",
        wsgi("large")[:3],
        Load("wrk", connections=16),
    ),
    Scenario(
        "asgi-upload",
        "ASGI 10 MiB upload",
        "A 10 MiB POST body read to the end, answered with its length; 4 connections.",
        asgi("upload"),
        Load("wrk", connections=4, script="upload.lua"),
    ),
    Scenario(
        "wsgi-upload",
        "WSGI 10 MiB upload",
        "A 10 MiB POST body read from wsgi.input in 64 KiB pieces; 4 connections.",
        wsgi("upload")[:3],
        Load("wrk", connections=4, script="upload.lua"),
    ),
    Scenario(
        "asgi-pipelined",
        "ASGI plaintext, pipelined",
        "As ASGI plaintext, with 16 requests per write on each of 64 connections "
        "(wrk with a pipelining script; wrk cannot measure latency when it pipelines).",
        (FLOOR, *asgi("plaintext")),
        PIPELINED,
    ),
    Scenario(
        "wsgi-pipelined",
        "WSGI plaintext, pipelined",
        "As WSGI plaintext, with 16 requests per write on each of 64 connections "
        "(wrk with a pipelining script; wrk cannot measure latency when it pipelines).",
        (FLOOR, *wsgi("plaintext")),
        PIPELINED,
    ),
)

# Latency at a fixed rate of half each server's own closed-loop peak.
FIXED_RATE = {"asgi-plaintext": "asgi-fixed-rate", "wsgi-plaintext": "wsgi-fixed-rate"}

IDLE = (
    Target("oneloop", "asgi", "asgi_apps:plaintext", "oneloop ASGI"),
    Target("oneloop", "wsgi", "wsgi_apps:plaintext", "oneloop WSGI"),
    Target("uvicorn", "asgi", "asgi_apps:plaintext", "uvicorn"),
    # granian serves at most --backpressure (default 1024) connections at once
    # per worker and leaves the rest unanswered: raised so it can hold them.
    Target(
        "granian",
        "asgi",
        "asgi_apps:plaintext",
        "granian ASGI, backpressure 16384",
        ("--backpressure", "16384"),
    ),
    Target("hypercorn", "asgi", "asgi_apps:plaintext", "hypercorn"),
    Target("gunicorn", "wsgi", "wsgi_apps:plaintext", "gunicorn gthread"),
)

SYSCALLS = (
    FLOOR,
    Target("oneloop", "asgi", "asgi_apps:plaintext", "oneloop ASGI"),
    Target("uvicorn", "asgi", "asgi_apps:plaintext", "uvicorn"),
    Target("granian", "asgi", "asgi_apps:plaintext", "granian ASGI"),
    Target("oneloop", "wsgi", "wsgi_apps:plaintext", "oneloop WSGI"),
    Target("gunicorn", "wsgi", "wsgi_apps:plaintext", "gunicorn gthread"),
)

PROFILED = (
    Target("oneloop", "asgi", "asgi_apps:plaintext", "oneloop ASGI"),
    Target("oneloop", "wsgi", "wsgi_apps:plaintext", "oneloop WSGI"),
)
