"""ASGI apps used by the tests. Each answers a request in a way the test can check."""

import asyncio
import json


def _jsonable(value):
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


async def _read_body(receive):
    body, chunks = b"", []
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        chunks.append([len(message.get("body", b"")), message.get("more_body", False)])
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body, chunks


async def _send(send, status, body, headers=()):
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})


async def scope(scope, receive, send):
    """The scope (minus non-JSON bits) and the body as JSON."""
    if scope["type"] != "http":
        return
    body, chunks = await _read_body(receive)
    data = {k: _jsonable(v) for k, v in scope.items() if k not in ("state",)}
    data["state_keys"] = sorted(scope.get("state", {}))
    data["body"] = body.decode("latin-1")
    data["chunks"] = chunks
    await _send(send, 200, json.dumps(data).encode(), [(b"content-type", b"application/json")])


async def hello(scope, receive, send):
    if scope["type"] == "http":
        await _send(send, 200, b"Hello, World!", [(b"content-type", b"text/plain")])


async def task_identity(scope, receive, send):
    """id() of the current task, whether the app suspends (?sleep) or not."""
    if scope["type"] != "http":
        return
    if b"sleep" in scope["query_string"]:
        await asyncio.sleep(0.001)
    task = asyncio.current_task()
    await _send(send, 200, str(id(task)).encode())
