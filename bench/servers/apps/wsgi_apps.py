"""The WSGI apps every WSGI server runs, one callable per scenario.

As small as a WSGI app can be, so what is measured is the server; every
response carries Content-Length.
"""

import json

PLAINTEXT = b"Hello, World!"
LARGE = b"x" * (1024 * 1024)
CHUNK = 64 * 1024


def plaintext(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [PLAINTEXT]


def json_app(environ, start_response):
    body = json.dumps({"message": "Hello, World!"}).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def large(environ, start_response):
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(LARGE)))],
    )
    return [LARGE]


def upload(environ, start_response):
    """Read the whole request body in 64 KiB pieces, answer with its length."""
    stream = environ["wsgi.input"]
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    size = 0
    while remaining > 0:
        piece = stream.read(min(CHUNK, remaining))
        if not piece:
            break
        size += len(piece)
        remaining -= len(piece)
    body = str(size).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
