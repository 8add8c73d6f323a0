"""Answers which optional frameworks the worker process has imported."""

import json
import sys


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps({name: name in sys.modules for name in ("flask", "django")}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def wsgi(environ, start_response):
    start_response("200 OK", [])
    return [json.dumps({name: name in sys.modules for name in ("flask", "django")}).encode()]
