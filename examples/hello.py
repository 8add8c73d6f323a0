"""Two tiny apps to try oneloop with:

oneloop --app-dir examples hello:app        # ASGI
oneloop --app-dir examples hello:wsgi_app   # WSGI
"""


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"Hello from oneloop\n"})


def wsgi_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello from oneloop (WSGI)\n"]
