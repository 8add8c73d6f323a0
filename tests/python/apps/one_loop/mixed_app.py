"""Sync views that block their thread next to async views on the loop; a
view that blocks the loop (for the watchdog); async views that read request
bodies; an async view that hands blocking work to asgiref's sync_to_async,
and one whose background task does so after the request has ended."""

import asyncio
import hashlib
import threading
import time

from asgiref.sync import sync_to_async
from flask import Flask, g, jsonify, request

app = Flask(__name__)


@app.before_request
def note_thread():
    g.wsgi_thread = threading.current_thread().name


@app.route("/slow-sync")
def slow_sync():
    time.sleep(0.5)  # a sync view: blocks its own thread only
    return jsonify(slept=0.5)


@app.route("/fast-async")
async def fast_async():
    await asyncio.sleep(0.005)
    return jsonify(loop=id(asyncio.get_running_loop()))


@app.route("/block")
async def block():
    time.sleep(1.2)  # wrong in an async view: blocks the whole loop
    return "blocked"


@app.route("/wait")
async def wait():
    await asyncio.sleep(1.2)  # as long, but the loop keeps running
    return "waited"


@app.route("/upload", methods=["POST"])
async def upload():
    data = request.get_data()
    await asyncio.sleep(0)
    return jsonify(size=len(data), sha256=hashlib.sha256(data).hexdigest())


def blocking_work(seconds: float) -> str:
    time.sleep(seconds)
    return threading.current_thread().name


@app.route("/sync-to-async")
async def via_sync_to_async():
    started = time.perf_counter()
    thread = await sync_to_async(blocking_work)(float(request.args.get("s", "0.1")))
    return jsonify(thread=thread, wsgi_thread=g.wsgi_thread, took=time.perf_counter() - started)


leftovers: dict[str, dict] = {}  # key -> what the task that outlived its request saw
_tasks: set[asyncio.Task] = set()


async def after_the_request(key: str, wsgi_thread: str) -> None:
    await asyncio.sleep(0.05)  # the request that spawned this task has been answered
    try:
        thread = await sync_to_async(threading.current_thread)()
    except Exception as exc:
        leftovers[key] = {"error": repr(exc)}
    else:
        leftovers[key] = {"thread": thread.name, "wsgi_thread": wsgi_thread}


@app.route("/leftover-task/<key>")
async def leftover_task(key):
    task = asyncio.get_running_loop().create_task(after_the_request(key, g.wsgi_thread))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return "spawned"


@app.route("/leftover-result/<key>")
def leftover_result(key):
    return jsonify(leftovers.get(key))
