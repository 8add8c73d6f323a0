"""Apps for tests/python/test_http2_edges.py: what HTTP/2's edges need.

`app` (ASGI) reads the whole request body, then by path: /stream sends 50
pieces of 1,000 bytes 10 ms apart, /big 4 MiB at once in 64 KiB pieces,
/slow answers after a second; anything else answers "<body length>:<first
16 bytes>". `trailers_app` ends its response with trailers where the scope
offers them. `wsgi_app` is the WSGI counterpart.
"""

import asyncio


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(receive):
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def pieces(send, chunk, count, pause=0.0):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for _ in range(count):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if pause:
            await asyncio.sleep(pause)
    await send({"type": "http.response.body", "body": b""})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    body = await read_body(receive)
    if body is None:
        return
    if scope["path"] == "/stream":
        return await pieces(send, b"x" * 1000, 50, pause=0.01)
    if scope["path"] == "/big":
        return await pieces(send, b"y" * 65536, 64)
    if scope["path"] == "/slow":
        await asyncio.sleep(1.0)
    headers = [(b"Content-Type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"%d:" % len(body) + body[:16]})


async def trailers_app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    await read_body(receive)
    offered = "http.response.trailers" in scope.get("extensions", {})
    start = {"type": "http.response.start", "status": 200, "trailers": offered}
    await send({**start, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"offered=%d" % offered, "more_body": True})
    await send({"type": "http.response.body", "body": b"!"})
    if offered:
        trailer = {"type": "http.response.trailers", "more_trailers": True}
        await send({**trailer, "headers": [(b"Grpc-Status", b"0")]})
        await send({"type": "http.response.trailers", "headers": [(b"grpc-message", b"ok")]})


def wsgi_app(environ, start_response):
    body = environ["wsgi.input"].read()
    if environ["PATH_INFO"] == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [b"z" * 65536 for _ in range(64)]
    start_response("200 OK", [("Content-Type", "text/plain")])
    what = f"{environ['SERVER_PROTOCOL']} {environ['REQUEST_METHOD']} {environ['PATH_INFO']}"
    return [f"{what} {len(body)}".encode()]
