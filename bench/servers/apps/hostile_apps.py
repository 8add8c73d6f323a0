"""The apps of the hostile-client comparison (bench/hostile.py), ASGI and
WSGI alike:

    /        a small answer (what the normal client asks for)
    /big     1 GiB, streamed 64 KiB at a time (for a client that never reads)
    /ignore  answers without reading the request body (for an upload nobody reads)
    /error   raises (the soak mixes it in)
"""

CHUNK = b"x" * 65536
BIG_CHUNKS = 16384  # 1 GiB


def _lifespan_done(message: dict) -> dict | None:
    kind = message["type"]
    if kind == "lifespan.startup":
        return {"type": "lifespan.startup.complete"}
    if kind == "lifespan.shutdown":
        return {"type": "lifespan.shutdown.complete"}
    return None


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            reply = _lifespan_done(await receive())
            if reply is not None:
                await send(reply)
                if reply["type"] == "lifespan.shutdown.complete":
                    return
    path = scope["path"]
    if path == "/error":
        raise RuntimeError("the soak's failing view")
    if path == "/big":
        head = [(b"content-length", str(len(CHUNK) * BIG_CHUNKS).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        for _ in range(BIG_CHUNKS):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b"ok"
    head = [(b"content-type", b"text/plain"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    await send({"type": "http.response.body", "body": body})


def wsgi(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/error":
        raise RuntimeError("the soak's failing view")
    if path == "/big":
        start_response("200 OK", [("Content-Length", str(len(CHUNK) * BIG_CHUNKS))])
        return (CHUNK for _ in range(BIG_CHUNKS))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
