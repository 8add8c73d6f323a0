"""The ASGI apps every ASGI server runs, one callable per scenario.

Each app is as small as an ASGI app can be, so what is measured is the server.
Every response carries Content-Length, so no server falls back to chunked
encoding for one and not for another.
"""

import json

PLAINTEXT = b"Hello, World!"
LARGE = b"x" * (1024 * 1024)


def _head(content_type: bytes, length: int) -> dict:
    return {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", content_type), (b"content-length", str(length).encode())],
    }


async def _lifespan(receive, send) -> None:
    # Servers that speak the lifespan protocol (granian always does) expect
    # an answer; nothing needs starting.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def plaintext(scope, receive, send):
    if scope["type"] != "http":
        return await _lifespan(receive, send)
    await send(_head(b"text/plain", len(PLAINTEXT)))
    await send({"type": "http.response.body", "body": PLAINTEXT})


async def json_app(scope, receive, send):
    if scope["type"] != "http":
        return await _lifespan(receive, send)
    # Serialized per request, as a real JSON endpoint would.
    body = json.dumps({"message": "Hello, World!"}).encode()
    await send(_head(b"application/json", len(body)))
    await send({"type": "http.response.body", "body": body})


async def large(scope, receive, send):
    if scope["type"] != "http":
        return await _lifespan(receive, send)
    await send(_head(b"application/octet-stream", len(LARGE)))
    await send({"type": "http.response.body", "body": LARGE})


async def upload(scope, receive, send):
    """Read the whole request body, answer with its length."""
    if scope["type"] != "http":
        return await _lifespan(receive, send)
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    await send(_head(b"text/plain", len(body)))
    await send({"type": "http.response.body", "body": body})
