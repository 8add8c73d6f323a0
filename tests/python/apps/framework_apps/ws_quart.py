"""Quart's websocket: echo, JSON, accepting with headers and a
subprotocol, and a handler that answers with HTTP instead of accepting."""

from quart import Quart, websocket

app = Quart(__name__)


@app.websocket("/ws/echo")
async def echo():
    await websocket.accept()
    while True:
        await websocket.send(await websocket.receive())


@app.websocket("/ws/json")
async def json_messages():
    while True:
        data = await websocket.receive_json()
        await websocket.send_json({"reversed": data["items"][::-1]})


@app.websocket("/ws/guarded")
async def guarded():
    if websocket.args.get("token") != "secret":
        return "no entry", 401, {"X-Reason": "token"}
    subprotocol = "v2" if "v2" in websocket.requested_subprotocols else None
    await websocket.accept(headers={"X-Welcome": "yes"}, subprotocol=subprotocol)
    await websocket.send_json(
        {"path": websocket.path, "args": websocket.args.to_dict(), "scheme": websocket.scheme}
    )
    return None
