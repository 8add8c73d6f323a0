"""A WebSocket echo app for the Autobahn TestSuite's cases (scripts/autobahn.py).

Accepts every WebSocket, sends each message back as it came (text as text,
bytes as bytes) until the client disconnects (or is found gone by a send).
Plain HTTP gets a 200, so a runner can tell when the server is up; lifespan
is answered.
"""


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                reply = {"type": "websocket.send", "text": message["text"]}
            else:
                reply = {"type": "websocket.send", "bytes": message.get("bytes") or b""}
            try:
                await send(reply)
            except OSError:  # the client went away meanwhile (ASGI: an OSError)
                return
    elif scope["type"] == "http":
        while (await receive()).get("more_body"):
            pass
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"ws echo\n"})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
