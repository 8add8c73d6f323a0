"""Apps for the HTTP/1.1, limits, timeouts and backpressure tests.

`asgi` and `wsgi` answer the same routes the same way, so a test can be run
against both interfaces:

  /echo?delay=S       wait S seconds, then read the whole body and answer it
                      (x-body-len: its length)
  /noread             answer at once without reading the body
  /p/...?sleep=MS     wait MS milliseconds, answer "METHOD /p/...?query"
  /fixed?n=N          N bytes "x" with Content-Length (for HEAD)
  /unsized?n=N        N bytes "x" in two pieces, no Content-Length (for HEAD)
  /chunked            a body sent in pieces (one empty), no Content-Length
  /server             sets its own Server and Date fields
  /stream?chunks=N    N chunks of 64 KiB, chunk i filled with byte i % 256;
                      /progress (another connection) tells how many were
                      handed to the server so far
  /gated              waits until /open (another connection) is requested,
                      then reads the body and answers its length and sha256
  /trickle            a body of unknown length: "first", then, once /open
                      (another connection) is requested, "second"
  /watch              reads the body; prints to stderr what happened
                      ("APP-BODY-COMPLETE", "APP-SAW-DISCONNECT",
                      "APP-READ-ERROR") so a test can wait for it
"""

import asyncio
import hashlib
import sys
import threading
import time
from urllib.parse import parse_qs

CHUNK = 65536

_progress = {"stream": 0}
_async_gate = None
_thread_gate = threading.Event()


def _query(raw):
    if isinstance(raw, bytes):
        raw = raw.decode("latin-1")
    return {k: v[0] for k, v in parse_qs(raw).items()}


def _report(text):
    print(text, file=sys.stderr, flush=True)


def _stream_chunk(i):
    return bytes([i % 256]) * CHUNK


# -- ASGI ---------------------------------------------------------------------


async def _read_all(receive):
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None, len(parts)
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts), len(parts)


async def _answer(send, body, status=200, headers=()):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _gate():
    global _async_gate
    if _async_gate is None:
        _async_gate = asyncio.Event()
    return _async_gate


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    q = _query(scope["query_string"])

    if path == "/echo":
        if "delay" in q:
            await asyncio.sleep(float(q["delay"]))
        body, _ = await _read_all(receive)
        if body is None:
            return
        headers = [(b"x-body-len", str(len(body)).encode())]
        await _answer(send, body, headers=headers)
    elif path == "/noread":
        await _answer(send, b"not read")
    elif path.startswith("/p/"):
        if "sleep" in q:
            await asyncio.sleep(int(q["sleep"]) / 1000)
        target = scope["raw_path"] + (
            b"?" + scope["query_string"] if scope["query_string"] else b""
        )
        await _answer(send, scope["method"].encode() + b" " + target)
    elif path == "/fixed":
        await _answer(send, b"x" * int(q["n"]))
    elif path == "/unsized":
        n = int(q["n"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * (n // 2), "more_body": True})
        await send({"type": "http.response.body", "body": b"x" * (n - n // 2)})
    elif path == "/chunked":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for piece in (b"hello", b"", b" ", b"world" * 1000, b"!"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/server":
        headers = [(b"server", b"custom/1.0"), (b"date", b"Thu, 01 Jan 2015 00:00:00 GMT")]
        await _answer(send, b"own fields", headers=headers)
    elif path == "/stream":
        _progress["stream"] = 0
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(int(q["chunks"])):
            await send({"type": "http.response.body", "body": _stream_chunk(i), "more_body": True})
            _progress["stream"] = i + 1
        await send({"type": "http.response.body", "body": b""})
    elif path == "/progress":
        await _answer(send, str(_progress["stream"]).encode())
    elif path == "/gated":
        await _gate().wait()
        body, _ = await _read_all(receive)
        if body is None:
            return
        await _answer(send, f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode())
    elif path == "/open":
        _gate().set()
        await _answer(send, b"open")
    elif path == "/trickle":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await _gate().wait()
        await send({"type": "http.response.body", "body": b"second"})
    elif path == "/watch":
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                _report(f"APP-SAW-DISCONNECT after {total}")
                return
            total += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        _report(f"APP-BODY-COMPLETE {total}")
        await _answer(send, str(total).encode())
    else:
        await _answer(send, b"not found", status=404)


# -- WSGI ---------------------------------------------------------------------


def _wsgi_answer(start_response, body, status="200 OK", headers=()):
    start_response(status, [("Content-Type", "text/plain"), *headers])
    return [body]


def wsgi(environ, start_response):
    path = environ["PATH_INFO"]
    q = _query(environ.get("QUERY_STRING", ""))
    stream = environ["wsgi.input"]

    if path == "/echo":
        if "delay" in q:
            time.sleep(float(q["delay"]))
        body = stream.read()
        return _wsgi_answer(start_response, body, headers=[("X-Body-Len", str(len(body)))])
    if path == "/noread":
        return _wsgi_answer(start_response, b"not read")
    if path.startswith("/p/"):
        if "sleep" in q:
            time.sleep(int(q["sleep"]) / 1000)
        target = environ.get("RAW_URI", path)
        return _wsgi_answer(start_response, f"{environ['REQUEST_METHOD']} {target}".encode())
    if path == "/fixed":
        return _wsgi_answer(start_response, b"x" * int(q["n"]))
    if path == "/unsized":
        n = int(q["n"])
        start_response("200 OK", [])
        return iter([b"x" * (n // 2), b"x" * (n - n // 2)])
    if path == "/chunked":
        start_response("200 OK", [])
        return iter([b"hello", b"", b" ", b"world" * 1000, b"!"])
    if path == "/server":
        headers = [("Server", "custom/1.0"), ("Date", "Thu, 01 Jan 2015 00:00:00 GMT")]
        return _wsgi_answer(start_response, b"own fields", headers=headers)
    if path == "/stream":
        _progress["stream"] = 0
        start_response("200 OK", [])

        def chunks():
            for i in range(int(q["chunks"])):
                yield _stream_chunk(i)
                _progress["stream"] = i + 1

        return chunks()
    if path == "/progress":
        return _wsgi_answer(start_response, str(_progress["stream"]).encode())
    if path == "/gated":
        _thread_gate.wait(10)
        body = stream.read()
        text = f"{len(body)} {hashlib.sha256(body).hexdigest()}"
        return _wsgi_answer(start_response, text.encode())
    if path == "/open":
        _thread_gate.set()
        return _wsgi_answer(start_response, b"open")
    if path == "/trickle":
        start_response("200 OK", [])

        def pieces():
            yield b"first"
            _thread_gate.wait(10)
            yield b"second"

        return pieces()
    if path == "/watch":
        total = 0
        try:
            while True:
                piece = stream.read(4096)
                if not piece:
                    break
                total += len(piece)
        except Exception as exc:
            _report(f"APP-READ-ERROR {type(exc).__name__} after {total}")
            raise
        _report(f"APP-BODY-COMPLETE {total}")
        return _wsgi_answer(start_response, str(total).encode())
    return _wsgi_answer(start_response, b"not found", status="404 Not Found")
