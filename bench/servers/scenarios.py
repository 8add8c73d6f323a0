"""The scenarios: which servers run which app under which load.

Each scenario starts all its servers at once (the idle ones cost nothing)
and interleaves their repetitions, so a burst of noise on the machine falls
on every server rather than on one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from loadgen import Load, WsLoad
from servers import FLOOR, Target


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    what: str  # one sentence for the report
    targets: tuple[Target, ...]
    load: Load | WsLoad


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


# What metrics cost: the same oneloop with the supervisor serving them and
# the health path set (the core counts either way; this row adds the rest).
METRICS = ("--metrics-bind", "127.0.0.1:0", "--health-path", "/healthz")


def with_metrics(targets: tuple[Target, ...]) -> tuple[Target, ...]:
    ours = next(t for t in targets if t.is_oneloop)
    extra = Target(ours.server, ours.interface, ours.app, "oneloop, metrics on", options=METRICS)
    i = targets.index(ours) + 1
    return (*targets[:i], extra, *targets[i:])


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
        (FLOOR, *with_metrics(asgi("plaintext"))),
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
        (FLOOR, *with_metrics(wsgi("plaintext"))),
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
        (FLOOR, *with_metrics(asgi("plaintext"))),
        PIPELINED,
    ),
    Scenario(
        "wsgi-pipelined",
        "WSGI plaintext, pipelined",
        "As WSGI plaintext, with 16 requests per write on each of 64 connections "
        "(wrk with a pipelining script; wrk cannot measure latency when it pipelines).",
        (FLOOR, *with_metrics(wsgi("plaintext"))),
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


# ------------------------------------------------------------------ WebSocket

# One ASGI echo app (apps/ws_apps.py) on every server. uvicorn runs with
# each of its WebSocket implementations: websockets-sansio is what its
# default (--ws auto) picks when websockets is installed; "websockets" is the
# older implementation on the same library, deprecated; wsproto the other
# library.
WS_APP = "ws_apps:echo"


def _uvicorn_ws(impl: str, label: str, *options: str) -> Target:
    return Target("uvicorn", "asgi", WS_APP, label, ("--ws", impl, *options), ws=True)


WS_TARGETS = (
    Target("oneloop", "asgi", WS_APP, "oneloop", ws=True),
    _uvicorn_ws("websockets-sansio", "uvicorn + websockets"),
    _uvicorn_ws("websockets", "uvicorn + websockets (legacy)"),
    _uvicorn_ws("wsproto", "uvicorn + wsproto"),
    Target("granian", "asgi", WS_APP, "granian", ws=True),
    Target("hypercorn", "asgi", WS_APP, "hypercorn", ws=True),
)

WS_SCENARIOS = (
    Scenario(
        "ws-echo-16",
        "WebSocket echo, 16-byte text",
        "An ASGI app sends every message back; 64 connections, each with one 16-byte text "
        "message in flight (bench/ws_client.c, masked frames).",
        WS_TARGETS,
        WsLoad("echo", connections=64, size=16),
    ),
    Scenario(
        "ws-echo-64k",
        "WebSocket echo, 64 KiB binary",
        "The same app; 16 connections, each with one 64 KiB binary message in flight.",
        WS_TARGETS,
        WsLoad("echo", connections=16, size=65536, binary=True),
    ),
    Scenario(
        "ws-connect",
        "WebSocket handshakes",
        "16 connections, each in a loop: TCP connect, opening handshake (the 101 and its "
        "Sec-WebSocket-Accept checked), close frame 1000, the server's close frame, the "
        "server's TCP close. The figures are per cycle.",
        WS_TARGETS,
        WsLoad("connect", connections=16),
    ),
)

# Memory per idle WebSocket; granian as in IDLE, with room for the sockets.
WS_IDLE = tuple(
    replace(t, label=f"{t.label}, backpressure 16384", options=("--backpressure", "16384"))
    if t.server == "granian"
    else t
    for t in WS_TARGETS
)


# ------------------------------------------------------------------ HTTP/2

# h2load over HTTP/2 with prior knowledge (h2c), and over TLS (h2 by ALPN);
# uvicorn and gunicorn, which serve HTTP/1.1 only, are loaded over HTTP/1.1
# with one request at a time per connection, as context.
H2_MANY = Load("h2load", connections=16, streams=32)
H2_ONE = Load("h2load", connections=16, streams=1)


def h2c(app: str, wsgi_app: str | None = None) -> tuple[Target, ...]:
    rows = [
        Target("oneloop", "asgi", f"asgi_apps:{app}", "oneloop h2c", http2=True),
        Target("granian", "asgi", f"asgi_apps:{app}", "granian h2c", http2=True),
        Target("hypercorn", "asgi", f"asgi_apps:{app}", "hypercorn h2c", http2=True),
        Target("uvicorn", "asgi", f"asgi_apps:{app}", "uvicorn HTTP/1.1"),
    ]
    if wsgi_app:
        rows.insert(
            1, Target("oneloop", "wsgi", f"wsgi_apps:{wsgi_app}", "oneloop WSGI h2c", http2=True)
        )
        rows.append(
            Target("gunicorn", "wsgi", f"wsgi_apps:{wsgi_app}", "gunicorn gthread HTTP/1.1")
        )
    return tuple(rows)


H2_TLS = (
    Target("oneloop", "asgi", "asgi_apps:plaintext", "oneloop h2 (TLS)", http2=True, tls=True),
    Target("oneloop", "asgi", "asgi_apps:plaintext", "oneloop h2c", http2=True),
    Target("granian", "asgi", "asgi_apps:plaintext", "granian h2 (TLS)", http2=True, tls=True),
    Target("hypercorn", "asgi", "asgi_apps:plaintext", "hypercorn h2 (TLS)", http2=True, tls=True),
    Target("uvicorn", "asgi", "asgi_apps:plaintext", "uvicorn HTTP/1.1 (TLS)", tls=True),
)

H2_SCENARIOS = (
    Scenario(
        "h2-plaintext",
        "HTTP/2 plaintext, 32 streams per connection",
        "GET / answered with a fixed 13-byte body; h2load, 16 connections with 32 "
        "requests in flight on each (HTTP/1.1 rows: one at a time).",
        h2c("plaintext", "plaintext"),
        H2_MANY,
    ),
    Scenario(
        "h2-plaintext-1",
        "HTTP/2 plaintext, 1 stream per connection",
        "The same app; 16 connections, one request in flight on each.",
        h2c("plaintext", "plaintext"),
        H2_ONE,
    ),
    Scenario(
        "h2-json",
        "HTTP/2 JSON, 32 streams per connection",
        "A small JSON object serialized per request; 16 connections x 32 streams.",
        h2c("json_app"),
        H2_MANY,
    ),
    Scenario(
        "h2-tls",
        "HTTP/2 over TLS, 32 streams per connection",
        "ASGI plaintext over TLS (h2 chosen by ALPN; a self-signed RSA-2048 certificate), "
        "beside oneloop's h2c; 16 connections x 32 streams.",
        H2_TLS,
        H2_MANY,
    ),
)
