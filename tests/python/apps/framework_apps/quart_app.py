"""A Quart app whose resource is created in before_serving (lifespan startup)
and released in after_serving (lifespan shutdown)."""

import asyncio
import os
from pathlib import Path

from quart import Quart, jsonify, request

app = Quart(__name__)
app.resource = None


@app.before_serving
async def open_resource():
    app.resource = {
        "queue": asyncio.Queue(),
        "loop": id(asyncio.get_running_loop()),
        "opened": True,
    }


@app.after_serving
async def close_resource():
    marker = os.environ.get("QUART_SHUTDOWN_MARKER")
    if marker:
        Path(marker).write_text(f"closed after {app.resource['queue'].qsize()} items")
    app.resource = None


@app.get("/")
async def index():
    return "Hello from Quart"


@app.get("/resource")
async def resource():
    res = app.resource
    if res is None:
        return jsonify(error="no resource"), 503
    await res["queue"].put(1)
    return jsonify(
        opened=res["opened"],
        same_loop=res["loop"] == id(asyncio.get_running_loop()),
        items=res["queue"].qsize(),
    )


@app.post("/form")
async def form():
    data = await request.form
    return jsonify(form={k: data.getlist(k) for k in data})


@app.post("/json-echo")
async def json_echo():
    payload = await request.get_json()
    return jsonify(received=payload), 201


@app.get("/boom")
async def boom():
    raise RuntimeError("quart view failed")
