"""Small pieces the test apps share: query strings, one-message ASGI
answers, lines to the server's stderr (where the tests look for them)."""

import sys
from urllib.parse import parse_qs


def query(raw):
    if isinstance(raw, bytes):
        raw = raw.decode("latin-1")
    return {k: v[0] for k, v in parse_qs(raw).items()}


def report(text):
    print(text, file=sys.stderr, flush=True)


async def answer(send, body, status=200):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})
