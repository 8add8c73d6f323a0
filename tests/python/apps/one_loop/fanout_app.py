"""A module-level aiohttp.ClientSession, created at import, and an async view
that fans out to three upstreams at once with asyncio.gather.

aiohttp (3.10+) refuses to create a session without a running loop unless it
is given one, so the session is bound to ``asyncio.get_event_loop()`` at
import: in a oneloop worker that is the worker's loop. With
FANOUT_SESSION=lazy the module-level session is instead created by the first
request that needs it (the other common pattern; what in-process tests use).
UPSTREAMS: comma-separated base URLs.
"""

import asyncio
import os
import time

import aiohttp
from flask import Flask, jsonify, request

UPSTREAMS = os.environ["UPSTREAMS"].split(",")
LAZY = os.environ.get("FANOUT_SESSION", "import") == "lazy"
IMPORT_LOOP = None if LAZY else asyncio.get_event_loop()

app = Flask(__name__)
session = None if LAZY else aiohttp.ClientSession(loop=IMPORT_LOOP)


def get_session() -> aiohttp.ClientSession:
    global session
    if session is None:
        session = aiohttp.ClientSession()
    return session


async def fetch(base: str, delay: str) -> dict:
    async with get_session().get(f"{base}/data", params={"delay": delay}) as response:
        response.raise_for_status()
        return await response.json()


@app.route("/fanout")
async def fanout():
    started = time.perf_counter()
    delay = request.args.get("delay", "0.2")
    results = await asyncio.gather(*(fetch(base, delay) for base in UPSTREAMS))
    return jsonify(
        upstreams=[r["upstream"] for r in results],
        elapsed=time.perf_counter() - started,
        loop=id(asyncio.get_running_loop()),
        import_loop=id(IMPORT_LOOP) if IMPORT_LOOP else None,
    )
