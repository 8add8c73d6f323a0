"""Apps for the process-model tests: each answers with the pid of the worker
that served it, so a test can tell workers apart."""

import asyncio
import json
import os
import time
from urllib.parse import parse_qs

# The loop current while the module is imported: the worker's own, if the
# worker made it before importing the app (and nothing leaked one in).
IMPORT_LOOP = id(asyncio.get_event_loop())

if os.environ.get("PROCESS_APPS_IMPORTS"):
    with open(os.environ["PROCESS_APPS_IMPORTS"], "a") as f:
        f.write(f"{os.getpid()}\n")


_LEAKED: list[bytes] = []  # /leak: memory an app keeps by mistake


def _note_started():
    """Tell the test a slow request is in the app's hands."""
    if os.environ.get("PROCESS_APPS_STARTED"):
        with open(os.environ["PROCESS_APPS_STARTED"], "a") as f:
            f.write(f"{os.getpid()}\n")


async def _body(send, data, status=200):
    payload = json.dumps(data).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def app(scope, receive, send):
    """/ (who am I), /slow?t=S (sleeps on the loop), /wedge?t=S (blocks it)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    path = scope["path"]
    if path == "/slow":
        _note_started()
        await asyncio.sleep(float(query.get("t", "1")))
    elif path == "/wedge":
        time.sleep(float(query.get("t", "30")))  # the bug the --timeout is for
    elif path == "/leak":
        _LEAKED.append(b"x" * (int(query.get("mb", "10")) << 20))  # resident, never freed
    await _body(
        send,
        {
            "pid": os.getpid(),
            "path": path,
            "loop": id(asyncio.get_running_loop()),
            "import_loop": IMPORT_LOOP,
            "color": os.environ.get("APP_COLOR"),
        },
    )


async def crashing(scope, receive, send):
    """Serves, then dies 50 ms later, while the marker file exists."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            marker = os.environ.get("CRASH_MARKER", "")
            if marker and os.path.exists(marker):
                asyncio.get_running_loop().call_later(0.05, os._exit, 7)
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await _body(send, {"pid": os.getpid()})


def wsgi(environ, start_response):
    """WSGI twin of `app` for / and /slow (sleeps in the view's thread)."""
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if environ["PATH_INFO"] == "/slow":
        _note_started()
        time.sleep(float(query.get("t", "1")))
    body = json.dumps({"pid": os.getpid(), "path": environ["PATH_INFO"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
