"""The async view of flask_apps.py written for Quart, an ASGI framework: the
async-native way to call an upstream from a view, for comparison."""

import os

import aiohttp
from quart import Quart

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8999/")

app = Quart("quart_app")
_session: aiohttp.ClientSession | None = None


def session() -> aiohttp.ClientSession:
    # One session for the process, created on first use (on the server's loop).
    global _session
    if _session is None:
        _session = aiohttp.ClientSession()
    return _session


@app.route("/")
async def shared_session_view():
    async with session().get(UPSTREAM) as response:
        return await response.text()
