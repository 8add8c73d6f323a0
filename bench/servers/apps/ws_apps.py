"""The ASGI WebSocket app every server runs for the WebSocket scenarios.

`echo` accepts every WebSocket and sends each message back as it came, text
as text and bytes as bytes, until the client closes. A plain HTTP request
gets the 13-byte plaintext answer (the harness asks one to know the server
is up). Like the HTTP apps, it is as small as an ASGI app can be, so what is
measured is the server.
"""

from asgi_apps import plaintext


async def echo(scope, receive, send):
    if scope["type"] != "websocket":
        return await plaintext(scope, receive, send)
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return  # websocket.disconnect
        text = message.get("text")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
