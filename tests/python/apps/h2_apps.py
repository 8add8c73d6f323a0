"""ASGI apps for the HTTP/2 tests. `app` routes by path:

/                 200 "hello" (the request body is read and dropped)
/scope            the scope as JSON (headers as [name, value] pairs) and the body's length
/echo             the request body streamed back as it arrives
/sha256           reads the body; answers {"size": N, "sha256": hex}
/download?size=N  N bytes of a fixed pattern (pattern(N)), in 64 KiB chunks
/stream?chunks=N&size=S&delay=D   N chunks of S bytes, D seconds apart
/slow?delay=D     waits D seconds, then 200 "slow done"
/until-disconnect streams 1 KiB chunks until http.disconnect, then prints
                  "disconnected <x-tag>" to stdout
/trailers         200 with a trailer (if the server offers http.response.trailers)
"""

import asyncio
import hashlib
import json
import sys
import threading
from urllib.parse import parse_qs

CHUNK = 65536


def pattern(n: int) -> bytes:
    """n bytes that differ along the body, so a misplaced chunk shows."""
    block = hashlib.sha256(b"oneloop-h2").digest() * 2048  # 64 KiB
    out = bytearray()
    i = 0
    while len(out) < n:
        out += i.to_bytes(4, "big") + block[: CHUNK - 4]
        i += 1
    return bytes(out[:n])


async def _body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def _send(send, status: int, body: bytes, headers=()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _query(scope) -> dict:
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path, q = scope["path"], _query(scope)
    if path == "/scope":
        body = await _body(receive)
        info = {
            "http_version": scope["http_version"],
            "scheme": scope["scheme"],
            "method": scope["method"],
            "path": scope["path"],
            "query_string": scope["query_string"].decode(),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_size": len(body),
            "extensions": sorted(scope.get("extensions") or {}),
        }
        await _send(send, 200, json.dumps(info).encode(), [(b"content-type", b"application/json")])
    elif path == "/echo":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            await send({"type": "http.response.body", "body": chunk, "more_body": more})
            if not more:
                return
    elif path == "/sha256":
        body = await _body(receive)
        info = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        await _send(send, 200, json.dumps(info).encode(), [(b"content-type", b"application/json")])
    elif path == "/download":
        await _body(receive)
        size = int(q.get("size", "1048576"))
        body = pattern(size)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(size).encode())],
            }
        )
        for i in range(0, size, CHUNK):
            chunk = body[i : i + CHUNK]
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/stream":
        await _body(receive)
        chunks, size = int(q.get("chunks", "10")), int(q.get("size", "1024"))
        delay = float(q.get("delay", "0"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(chunks):
            if delay:
                await asyncio.sleep(delay)
            chunk = (b"%d:" % i).ljust(size, b".")
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/slow":
        await _body(receive)
        await asyncio.sleep(float(q.get("delay", "1")))
        await _send(send, 200, b"slow done")
    elif path == "/until-disconnect":
        tag = dict(scope["headers"]).get(b"x-tag", b"-").decode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        sending = True

        async def pump():
            while sending:
                await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
                await asyncio.sleep(0.01)

        task = asyncio.ensure_future(pump())
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        sending = False
        task.cancel()
        print(f"disconnected {tag}", file=sys.stdout, flush=True)
    elif path == "/trailers":
        await _body(receive)
        trailers = "http.response.trailers" in (scope.get("extensions") or {})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"trailer", b"x-checksum")] if trailers else [],
                "trailers": trailers,
            }
        )
        await send({"type": "http.response.body", "body": b"body", "more_body": trailers})
        if trailers:
            await send(
                {
                    "type": "http.response.trailers",
                    "headers": [(b"x-checksum", b"abc")],
                    "more_trailers": False,
                }
            )
    else:
        await _body(receive)
        await _send(send, 200, b"hello", [(b"content-type", b"text/plain")])


GATES: dict[str, threading.Event] = {}
GATES_LOCK = threading.Lock()


def gate(name: str) -> threading.Event:
    with GATES_LOCK:
        return GATES.setdefault(name, threading.Event())


def wsgi_app(environ, start_response):
    """A WSGI app: / answers "wsgi <SERVER_PROTOCOL>"; /environ the protocol, host and
    scheme as JSON; /sha256 reads wsgi.input in pieces and answers its size and
    digest; /hold?name=X&timeout=T blocks its thread until /release?name=X (or T
    seconds, 10 by default) and answers "released X" or "timed out X";
    /download?size=N answers pattern(N) in 64 KiB pieces."""
    path = environ["PATH_INFO"]
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/hold":
        released = gate(query["name"]).wait(float(query.get("timeout", "10")))
        body = f"{'released' if released else 'timed out'} {query['name']}".encode()
    elif path == "/release":
        gate(query["name"]).set()
        body = b"ok"
    elif path == "/download":
        size = int(query["size"])
        whole = pattern(size)
        start_response("200 OK", [("Content-Length", str(size))])
        return (whole[i : i + CHUNK] for i in range(0, size, CHUNK))
    elif path == "/environ":
        keys = ("SERVER_PROTOCOL", "HTTP_HOST", "wsgi.url_scheme", "REQUEST_METHOD")
        body = json.dumps({k: environ.get(k) for k in keys}).encode()
    elif path == "/sha256":
        digest, size, stream = hashlib.sha256(), 0, environ["wsgi.input"]
        while chunk := stream.read(65536):
            digest.update(chunk)
            size += len(chunk)
        body = json.dumps({"size": size, "sha256": digest.hexdigest()}).encode()
    else:
        body = f"wsgi {environ['SERVER_PROTOCOL']}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
