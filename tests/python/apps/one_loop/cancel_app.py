"""Async views that wait long: for a client that hangs up and for
--timeout-async. Events go to CANCEL_LOG: "started <tag>", "cancelled
<tag>", "teardown-sync <tag> <exc>", and with CANCEL_ASYNC_TEARDOWN=1 (an
async teardown_request function too) "teardown-async <tag> <exc>"."""

import asyncio
import os

from flask import Flask, jsonify, request

from one_loop.record import record

app = Flask(__name__)


def tag() -> str:
    return request.args.get("tag", "-")


async def wait(seconds: float):
    record("CANCEL_LOG", f"started {tag()}")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        record("CANCEL_LOG", f"cancelled {tag()}")
        raise
    record("CANCEL_LOG", f"finished {tag()}")
    return jsonify(slept=seconds)


@app.route("/sleep")
async def sleep_long():
    return await wait(10)


@app.route("/slow")
async def slow():
    return await wait(2)


@app.route("/ok")
async def ok():
    await asyncio.sleep(0.001)
    return jsonify(loop=id(asyncio.get_running_loop()))


@app.errorhandler(TimeoutError)
async def timed_out(error):
    return f"custom timeout body: {error}", 500


@app.teardown_request
def teardown_sync(exc):
    record("CANCEL_LOG", f"teardown-sync {tag()} {type(exc).__name__}")


if os.environ.get("CANCEL_ASYNC_TEARDOWN") == "1":
    # registered last, so Flask runs it first

    @app.teardown_request
    async def teardown_async(exc):
        await asyncio.sleep(0)
        record("CANCEL_LOG", f"teardown-async {tag()} {type(exc).__name__}")
