"""Apps for the metrics tests: statuses on demand, a request the test holds
in the app, a WSGI view that calls the worker loop, a worker that dies."""

import asyncio
import os

import oneloop

_HELD: asyncio.Event | None = None


async def app(scope, receive, send):
    """/status/N answers N; /hold stays in the app until a /release; POST
    bodies are read; /die ends the worker process at once."""
    global _HELD
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    while (await receive()).get("more_body"):
        pass
    status = 200
    if path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
    elif path == "/hold":
        _HELD = _HELD or asyncio.Event()
        await _HELD.wait()
    elif path == "/release" and _HELD is not None:
        _HELD.set()
        _HELD = None
    elif path == "/die":
        os._exit(9)
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"x" * 10})


async def _pause(seconds):
    await asyncio.sleep(seconds)
    return seconds


def wsgi(environ, start_response):
    """/status/N answers N; /bridge runs two coroutines on the worker loop."""
    path = environ["PATH_INFO"]
    status = "200 OK"
    if path.startswith("/status/"):
        status = path.rsplit("/", 1)[1] + " Whatever"
    elif path == "/bridge":
        oneloop.run_coroutine(_pause(0.001))
        oneloop.run_coroutine(_pause(0.02))
    start_response(status, [("Content-Type", "text/plain")])
    return [b"y" * 10]
