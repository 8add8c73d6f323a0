"""Copied into a temporary directory by the reload tests, which edit VERSION."""

import json
import os

VERSION = "v1"


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = {"pid": os.getpid(), "version": VERSION, "color": os.environ.get("APP_COLOR")}
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})
