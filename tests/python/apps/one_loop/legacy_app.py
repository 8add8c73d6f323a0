"""Sync views that reach async code the old ways and the oneloop ways: the
legacy asyncio.get_event_loop().run_until_complete(...), oneloop.run_coroutine
and @oneloop.async_to_sync, all with the module-level AsyncElasticsearch
client. ES_URL: the node."""

import asyncio
import contextvars
import os
import threading

import asgiref.sync
from elasticsearch import AsyncElasticsearch
from flask import Flask, jsonify, request

import oneloop
from one_loop.record import add_stack_route, import_loop_id

IMPORT_LOOP = import_loop_id()

app = Flask(__name__)
add_stack_route(app)
es = AsyncElasticsearch(os.environ["ES_URL"])
seen = contextvars.ContextVar("seen", default="unset")


async def cluster_name() -> dict:
    info = await es.info()
    return {"cluster": info["cluster_name"], "loop": id(asyncio.get_running_loop())}


@app.route("/legacy")
def legacy():
    loop = asyncio.get_event_loop()
    result = loop.run_until_complete(cluster_name())
    return jsonify(**result, is_running=loop.is_running(), import_loop=IMPORT_LOOP)


async def tagged(tag: str) -> dict:
    info = await es.info()
    seen.set(f"{tag}:{request.args.get('n')}")  # flask.request works on the loop
    return {
        "cluster": info["cluster_name"],
        "loop": id(asyncio.get_running_loop()),
        "loop_thread": threading.current_thread().name,
    }


@app.route("/run-coroutine")
def run_coroutine():
    result = oneloop.run_coroutine(tagged("run_coroutine"))
    return jsonify(**result, seen=seen.get(), thread=threading.current_thread().name)


@oneloop.async_to_sync
async def tagged_sync(tag: str) -> dict:
    return await tagged(tag)


@app.route("/asgiref")
def asgiref_async_to_sync():
    result = asgiref.sync.async_to_sync(tagged)("asgiref")
    return jsonify(**result, seen=seen.get(), thread=threading.current_thread().name)


@app.route("/async-to-sync")
def async_to_sync():
    result = tagged_sync("async_to_sync")
    return jsonify(**result, seen=seen.get(), thread=threading.current_thread().name)


class Oops(Exception):
    pass


async def fail() -> None:
    await asyncio.sleep(0)
    raise Oops("from the loop")


@app.route("/run-coroutine-error")
def run_coroutine_error():
    try:
        oneloop.run_coroutine(fail())
    except Oops as exc:
        frames = []
        tb = exc.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame.f_code.co_name)
            tb = tb.tb_next
        return jsonify(error=str(exc), frames=frames)
    return "no exception", 500


@app.route("/run-coroutine-timeout")
def run_coroutine_timeout():
    state = {"cancelled": False}

    async def slow():
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    try:
        oneloop.run_coroutine(slow(), timeout=0.2)
    except BaseException as exc:
        return jsonify(raised=type(exc).__name__, cancelled=state["cancelled"])
    return "no exception", 500


@app.route("/asyncio-run")
def with_asyncio_run():
    """Sync code that runs a coroutine on a throwaway loop of its own (as
    sync wrappers of async libraries do): allowed, and must not break the
    legacy pattern for the next request this thread serves."""
    seconds = float(request.args.get("s", "0"))

    async def pause() -> str:
        await asyncio.sleep(seconds)
        return threading.current_thread().name

    return jsonify(thread=asyncio.run(pause()))
