"""A Flask app with an async view that uses an async HTTP client created at
import time -- the pattern that breaks under WSGI servers.

    oneloop --app-dir examples flask_async:app
    curl localhost:8000/            # as often as you like

Under a WSGI server such as gunicorn, Flask runs each async view on a new
event loop, and the client's pooled connections belong to the loop of an
earlier request, closed since: requests fail with "RuntimeError: Event loop
is closed". Under oneloop every async view of a worker runs on the worker's
one loop, so the client works on every request.

The upstream service the view calls is a stand-in started on the worker
loop by an @oneloop.on_startup hook, so the example needs nothing else
running; @oneloop.on_shutdown closes it and the client.
"""

import asyncio

import httpx
from flask import Flask, jsonify

import oneloop

app = Flask(__name__)
client = httpx.AsyncClient()  # one connection pool for the whole process
upstream: asyncio.Server | None = None
connections: set[asyncio.Task] = set()  # the upstream's, to end them cleanly


@app.route("/")
async def index():
    url = f"http://127.0.0.1:{upstream.sockets[0].getsockname()[1]}/"
    first, second = await asyncio.gather(client.get(url), client.get(url))
    return jsonify(
        upstream=[first.json(), second.json()],
        loop=id(asyncio.get_running_loop()),  # the same on every request
    )


ANSWER = b'{"answer": 42}'
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(ANSWER),
    ANSWER,
)


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The stand-in upstream: every request (no body) gets the same JSON."""
    connections.add(asyncio.current_task())
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(RESPONSE)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
        connections.discard(asyncio.current_task())


@oneloop.on_startup
async def start_upstream() -> None:
    global upstream
    upstream = await asyncio.start_server(answer, "127.0.0.1", 0)


@oneloop.on_shutdown
async def stop() -> None:
    await client.aclose()  # the upstream's connections see EOF and end
    upstream.close()
    if connections:
        await asyncio.wait(connections, timeout=5)
