"""@oneloop.on_startup creates an aiohttp session on the worker loop,
@oneloop.on_shutdown closes it and writes LIFECYCLE_MARKER. UPSTREAMS: the
upstreams."""

import asyncio
import os

import aiohttp
from flask import Flask, jsonify

import oneloop
from one_loop.record import record

app = Flask(__name__)
UPSTREAM = os.environ["UPSTREAMS"].split(",")[0]
session: aiohttp.ClientSession | None = None


@oneloop.on_startup
async def open_session():
    global session
    session = aiohttp.ClientSession()  # needs a running loop: this is one
    record("LIFECYCLE_MARKER", f"started {id(asyncio.get_running_loop())}")


@oneloop.on_shutdown
async def close_session():
    assert session is not None
    await session.close()
    record("LIFECYCLE_MARKER", f"closed {id(asyncio.get_running_loop())} {session.closed}")


@app.route("/")
async def index():
    assert session is not None
    async with session.get(f"{UPSTREAM}/data", params={"delay": "0"}) as response:
        data = await response.json()
    return jsonify(upstream=data["upstream"], loop=id(asyncio.get_running_loop()))
