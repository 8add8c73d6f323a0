"""Flask apps: a sync view, and async views that call a local upstream.

The async view uses one aiohttp.ClientSession for the life of the process,
created on first use and kept in a module global, the way real apps hold an
Elasticsearch, Redis or HTTP client (aiohttp refuses to create one outside a
running loop, so "at import" is not an option). Under a WSGI server that runs
each async view on a new event loop, the session belongs to the first loop
and every later request fails: the errors are part of the result.
`per_request_app` opens a session per request instead, the usual
workaround, which works but pays for a new session and connection each time.
`asgi_app` is the other usual advice: the async app wrapped in asgiref's
WsgiToAsgi and served by an ASGI server.
"""

import os

import aiohttp
from asgiref.wsgi import WsgiToAsgi
from flask import Flask

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8999/")

sync_app = Flask("sync_app")
app = Flask("async_app")
per_request_app = Flask("per_request_app")
_session: aiohttp.ClientSession | None = None


def session() -> aiohttp.ClientSession:
    global _session
    if _session is None:
        _session = aiohttp.ClientSession()
    return _session


@sync_app.route("/")
def hello():
    return "Hello, World!"


@app.route("/")
async def shared_session_view():
    async with session().get(UPSTREAM) as response:
        return await response.text()


@per_request_app.route("/")
async def per_request_view():
    async with aiohttp.ClientSession() as own, own.get(UPSTREAM) as response:
        return await response.text()


asgi_app = WsgiToAsgi(app)
