"""Apps for test_core_events.py: situations where handling one epoll event
frees a connection whose own event is later in the same batch, input that
arrives while a connection closes, and accept() when no fd is left.

`app` (ASGI):

  /ping               "pong"
  /block?s=S          blocks the event loop (time.sleep) for S seconds, after
                      printing "BLOCK-START <n>" to stderr, then answers
                      "blocked" -- so a test can line up socket events that
                      the server will see in one wake-up
  /body               reads the request body, holding the connection in
                      receive() while more of it is due (the body timeout
                      runs); answers its length, or nothing on a disconnect
  /hold?id=X          keeps its `send` under X and waits; another request
                      answers it (/finish), then it returns
  /finish?id=X        answers /hold?id=X's request through its `send`, in
                      its own first step (without suspending); answers
                      "finished" or "gone" (that send raised)
  /big?n=N            N bytes in a single body message
  /stats              "<requests waiting in receive() for more body> <requests
                      that ever did> <held sends>"

`wsgi`: /ping and /big?n=N, the same.

With CORE_EVENTS_NOFILE=N in the environment the server process lowers its
open-file limit (RLIMIT_NOFILE) to N when it imports this module.
"""

import asyncio
import os
import resource
import sys
import time

from app_helpers import answer, query

if os.environ.get("CORE_EVENTS_NOFILE"):
    _limit = int(os.environ["CORE_EVENTS_NOFILE"])
    resource.setrlimit(resource.RLIMIT_NOFILE, (_limit, _limit))

_held: dict[str, tuple] = {}
_state = {"waiting": 0, "waited": 0, "blocks": 0}


async def _read_body(receive):
    """The body's length, or None if the client went away."""
    total = 0
    counted = False
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            total += len(message.get("body", b""))
            if not message.get("more_body", False):
                return total
            if not counted:  # from now on waiting for more of the body
                counted = True
                _state["waiting"] += 1
                _state["waited"] += 1
    finally:
        if counted:
            _state["waiting"] -= 1


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    q = query(scope["query_string"])

    if path == "/ping":
        await answer(send, b"pong")
    elif path == "/block":
        _state["blocks"] += 1
        print(f"BLOCK-START {_state['blocks']}", file=sys.stderr, flush=True)
        time.sleep(float(q["s"]))  # the whole loop stops: events pile up
        await answer(send, b"blocked")
    elif path == "/body":
        n = await _read_body(receive)
        if n is not None:
            await answer(send, str(n).encode())
    elif path == "/hold":
        done = asyncio.Event()
        _held[q["id"]] = (send, done)
        await done.wait()
    elif path == "/finish":
        other_send, done = _held.pop(q["id"])
        result = b"finished"
        try:
            await other_send({"type": "http.response.start", "status": 200, "headers": []})
            await other_send(
                {"type": "http.response.body", "body": b"finished by " + q["id"].encode()}
            )
        except Exception:
            result = b"gone"
        done.set()
        await answer(send, result)
    elif path == "/big":
        await answer(send, b"x" * int(q["n"]))
    elif path == "/stats":
        await answer(send, f"{_state['waiting']} {_state['waited']} {len(_held)}".encode())
    else:
        await answer(send, b"not found", status=404)


def wsgi(environ, start_response):
    path = environ["PATH_INFO"]
    q = query(environ.get("QUERY_STRING", ""))
    if path == "/ping":
        body = b"pong"
    elif path == "/big":
        body = b"x" * int(q["n"])
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
