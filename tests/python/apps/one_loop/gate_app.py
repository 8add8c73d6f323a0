"""Async views and hooks that report where each part of them ran: which
thread, which loop, which task. On the gated asyncio loop (oneloop.loops) a
call's first step runs in the request's own thread; what follows an await
that waits runs on the loop's thread. Also: a step that leaves work for the
loop (timers, callbacks, tasks), a nested call, and a step that blocks."""

import asyncio
import threading
import time

from flask import Flask, g, jsonify, request

import oneloop

app = Flask(__name__)
IMPORT_LOOP = id(asyncio.get_event_loop())
TASKS: set = set()  # strong references to the tasks /leave-work starts


def where() -> dict:
    loop = asyncio.get_running_loop()
    return {
        "thread": threading.current_thread().name,
        "loop": id(loop),
        "task": asyncio.current_task() is not None,
    }


@app.before_request
def request_thread():  # a sync hook: runs in the request's own WSGI thread
    g.wsgi_thread = threading.current_thread().name


@app.before_request
async def hook():
    g.hook = where()


@app.route("/first-step")
async def first_step():
    return jsonify(
        import_loop=IMPORT_LOOP,
        hook=g.hook,
        view=where(),
        wsgi_thread=g.wsgi_thread,
        path=request.path,
    )


@app.route("/after-wait")
async def after_wait():
    before = where()
    await asyncio.sleep(0.001)  # a real wait: the loop's thread resumes the view
    return jsonify(before=before, after=where(), wsgi_thread=g.wsgi_thread)


@app.route("/timer")
async def timer():
    started = time.perf_counter()
    await asyncio.sleep(0.01)
    return jsonify(took=time.perf_counter() - started)


@app.route("/leave-work")
def leave_work():
    """A coroutine that finishes at once but leaves a callback and a task for
    the loop: how long until the loop runs them."""
    called, tasked = threading.Event(), threading.Event()

    async def task() -> None:
        tasked.set()

    async def schedule() -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(called.set)
        TASKS.add(loop.create_task(task()))

    started = time.perf_counter()
    oneloop.run_coroutine(schedule())
    assert called.wait(5) and tasked.wait(5)
    took = time.perf_counter() - started
    TASKS.clear()
    return jsonify(took=took)


@app.route("/nested")
async def nested():
    async def inner() -> str:
        return "inner"

    try:
        oneloop.run_coroutine(inner())  # sync call inside async code: refused
    except RuntimeError as exc:
        return jsonify(error=str(exc))
    return jsonify(error=None)


@app.route("/block-first-step")
async def block_first_step():
    time.sleep(0.9)  # wrong in an async view: holds the loop for its length
    return "blocked"
