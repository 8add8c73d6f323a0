"""ASGI WebSocket apps for test_websocket.py.

`app` routes on the first path segment (after the root path): /scope,
/echo, /accept, /reject, /end, /stall, /flood, /held, and /edge (for
test_websocket_edges.py). What an app cannot tell the client over the
socket (the client is gone) it appends as JSON lines to the file named by
the X-Record header. Lifespan startup puts a token in the
state every connection's scope gets a copy of.
"""

import asyncio
import contextvars
import gc
import json
import os
import sys
import time
from urllib.parse import parse_qsl

import oneloop


def _header(scope, name: bytes):
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _query(scope) -> list[tuple[str, str]]:
    return parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)


class Record:
    """Appends JSON lines to the file named by X-Record (nothing without it)."""

    def __init__(self, scope) -> None:
        self.path = _header(scope, b"x-record")

    def __call__(self, **event) -> None:
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(event) + "\n")


def _error(exc: BaseException) -> dict:
    return {
        "type": type(exc).__name__,
        "oserror": isinstance(exc, OSError),
        "client_disconnected": isinstance(exc, oneloop.ClientDisconnected),
    }


def _received(m: dict) -> dict:
    """A websocket.receive message made JSON: which of text/bytes it carried."""
    out = {"type": m["type"], "keys": sorted(m)}
    if m.get("text") is not None:
        out["text"] = m["text"]
    if m.get("bytes") is not None:
        out["bytes"] = len(m["bytes"])
    return out


async def _wait_for_file(path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        await asyncio.sleep(0.005)


async def _until_disconnect(receive, rec) -> dict:
    """Receive (and drop) messages until the client goes; records how."""
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            rec(event="disconnect", code=m.get("code"), reason=m.get("reason"), keys=sorted(m))
            return m


async def _send_after_disconnect(send, rec) -> None:
    try:
        await send({"type": "websocket.send", "text": "too late"})
    except Exception as exc:
        rec(event="send_error", **_error(exc))
    else:
        rec(event="send_ok")


# -- routes -----------------------------------------------------------------------


async def scope_route(scope, receive, send, rec):
    """Accepts and sends the scope (and the first message received) as JSON."""
    first = await receive()
    data = {
        k: v for k, v in scope.items() if k not in ("headers", "state", "raw_path", "query_string")
    }
    data["first"] = first
    data["raw_path"] = scope["raw_path"].decode("latin-1")
    data["query_string"] = scope["query_string"].decode("latin-1")
    data["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
    data["bytes_types"] = sorted(
        {type(x).__name__ for pair in scope["headers"] for x in pair}
        | {type(scope["raw_path"]).__name__, type(scope["query_string"]).__name__}
    )
    data["state"] = dict(scope.get("state", {}))
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps(data)})
    await _until_disconnect(receive, rec)


async def echo(scope, receive, send, rec):
    """Echoes every message as it came (text as text, bytes as bytes). When
    the client goes it records the disconnect and what send() then does."""
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            rec(event="disconnect", code=m.get("code"), reason=m.get("reason"), keys=sorted(m))
            await _send_after_disconnect(send, rec)
            return
        rec(event="message", **_received(m))
        if m.get("text") is not None:
            await send({"type": "websocket.send", "text": m["text"]})
        else:
            await send({"type": "websocket.send", "bytes": m["bytes"]})


async def accept(scope, receive, send, rec):
    """Accepts with ?subprotocol= and ?header=name:value (repeatable)."""
    await receive()
    message = {"type": "websocket.accept"}
    headers = []
    for key, value in _query(scope):
        if key == "subprotocol":
            message["subprotocol"] = value
        elif key == "header":
            name, _, val = value.partition(":")
            headers.append((name.encode(), val.encode()))
    if headers:
        message["headers"] = headers
    await send(message)
    await send({"type": "websocket.send", "text": "accepted"})
    await _until_disconnect(receive, rec)


async def reject(scope, receive, send, rec):
    """Does not accept: ?how=close (403), raise, return (500), or http (a
    401 response through the websocket.http.response extension)."""
    await receive()
    how = dict(_query(scope))["how"]
    if how == "close":
        await send({"type": "websocket.close"})
    elif how == "raise":
        raise RuntimeError("refused by raising")
    elif how == "http":
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"text/plain"), (b"x-why", b"no token")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"denied: ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"show a token"})


async def end(scope, receive, send, rec):
    """Accepts, waits for one message, then ends as ?how= says: close (with
    ?code= and ?reason=), raise, or return."""
    await receive()
    await send({"type": "websocket.accept"})
    await receive()
    q = dict(_query(scope))
    if q["how"] == "close":
        await send({"type": "websocket.close", "code": int(q["code"]), "reason": q["reason"]})
        await _until_disconnect(receive, rec)
    elif q["how"] == "raise":
        raise RuntimeError("failed after accept")


async def stall(scope, receive, send, rec):
    """Accepts, then does not receive until the file named by X-Release
    exists; then receives ?total= bytes and answers with what it got."""
    await receive()
    await send({"type": "websocket.accept"})
    rec(event="accepted")
    await _wait_for_file(_header(scope, b"x-release"))
    want, got, messages = int(dict(_query(scope))["total"]), 0, 0
    while got < want:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            rec(event="disconnect", code=m.get("code"))
            return
        got += len(m.get("bytes") or b"")
        messages += 1
    await send({"type": "websocket.send", "text": json.dumps({"bytes": got, "messages": messages})})
    await _until_disconnect(receive, rec)


async def flood(scope, receive, send, rec):
    """Sends ?count= binary messages of ?size= bytes (?random=1: random
    bytes, which do not compress), recording each one sent, then closes. If
    send() fails, records how."""
    await receive()
    await send({"type": "websocket.accept"})
    q = dict(_query(scope))
    size = int(q["size"])
    payload = os.urandom(size) if q.get("random") else b"\x5a" * size
    try:
        for i in range(int(q["count"])):
            await send({"type": "websocket.send", "bytes": payload})
            rec(event="sent", n=i + 1)
        await send({"type": "websocket.close", "code": 1000})
    except Exception as exc:
        rec(event="send_error", **_error(exc))
        return
    rec(event="done")


async def _hold(scope, q: dict) -> None:
    """Pause for ?hold_s= seconds, or until the file named by X-Release exists."""
    release = _header(scope, b"x-release")
    if release:
        await _wait_for_file(release)
    else:
        await asyncio.sleep(float(q.get("hold_s", "0.05")))


async def edge(scope, receive, send, rec):
    """Records each step of a session whose client may vanish at any point,
    every record tagged with ?id=. ?hold=connect pauses before the first
    receive(), ?hold=accept between websocket.connect and the accept (see
    _hold); ?escape=1 lets an accept's error escape; ?flood=SIZE sends
    SIZE-byte messages once accepted until send() fails. In the end it
    receives until websocket.disconnect and records its code."""
    q = dict(_query(scope))

    def step(**event) -> None:
        rec(id=q.get("id"), **event)

    step(event="started")
    if q.get("hold") == "connect":
        await _hold(scope, q)
    step(event="first", type=(await receive())["type"])
    if q.get("hold") == "accept":
        await _hold(scope, q)
    try:
        await send({"type": "websocket.accept"})
    except Exception as exc:
        step(event="accept_error", **_error(exc))
        if q.get("escape"):  # as a framework's disconnect exception would
            raise
    else:
        step(event="accepted")
        if q.get("flood"):
            payload, sent = b"\x5a" * int(q["flood"]), 0
            try:
                while True:
                    await send({"type": "websocket.send", "bytes": payload})
                    sent += 1
                    step(event="sent", n=sent)
            except Exception as exc:
                step(event="send_error", n=sent, **_error(exc))
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            step(event="disconnect", code=m.get("code"))
            return
        step(event="message", **_received(m))


_HELD: list[dict] = []  # what the open /held sessions hold, oldest first


async def held(scope, receive, send, rec):
    """Accepts and tells what this session holds beside the last /held
    session still open: which header pairs and client host are the same
    objects, whether their host tasks share a context, and the sizes of
    receive and send. Then waits for the client to go."""
    assert (await receive())["type"] == "websocket.connect"
    task = asyncio.current_task()
    mine = {
        "scope": scope,
        "contexts": [o for o in gc.get_referents(task) if isinstance(o, contextvars.Context)],
    }
    report = {"channels": [sys.getsizeof(receive), sys.getsizeof(send)]}
    if _HELD:
        last = _HELD[-1]
        report["shared_headers"] = sorted(
            a[0].decode() for a in scope["headers"] for b in last["scope"]["headers"] if a is b
        )
        report["shared_client_host"] = scope["client"][0] is last["scope"]["client"][0]
        report["shared_task_context"] = any(
            a is b for a in mine["contexts"] for b in last["contexts"]
        )
    _HELD.append(mine)
    try:
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(report)})
        await _until_disconnect(receive, rec)
    finally:
        _HELD.remove(mine)


ROUTES = {
    "scope": scope_route,
    "echo": echo,
    "accept": accept,
    "reject": reject,
    "end": end,
    "stall": stall,
    "flood": flood,
    "edge": edge,
    "held": held,
}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["token"] = "from-lifespan"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    if scope["type"] == "http":
        # A plain request, or an upgrade the server does not take (--ws off).
        body = json.dumps(
            {
                "type": scope["type"],
                "path": scope["path"],
                "raw_path": scope["raw_path"].decode("latin-1"),
                "root_path": root,
                "query_string": scope["query_string"].decode("latin-1"),
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    await ROUTES[path.strip("/").split("/")[0]](scope, receive, send, Record(scope))
