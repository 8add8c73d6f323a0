"""FastAPI WebSocket endpoints: text, bytes, JSON, path and query
parameters, a dependency that refuses, and a broadcast hub."""

from typing import Annotated

from fastapi import Depends, FastAPI, Query, WebSocket, WebSocketDisconnect, WebSocketException
from fastapi import status as codes

app = FastAPI()


@app.websocket("/ws/text")
async def text(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            await websocket.send_text((await websocket.receive_text()).upper())
    except WebSocketDisconnect:
        pass


@app.websocket("/ws/bytes")
async def binary(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            await websocket.send_bytes((await websocket.receive_bytes())[::-1])
    except WebSocketDisconnect:
        pass


@app.websocket("/ws/json")
async def json_messages(websocket: WebSocket):
    await websocket.accept()
    try:
        async for data in websocket.iter_json():
            await websocket.send_json({"sum": sum(data["numbers"]), "name": data["name"]})
    except WebSocketDisconnect:
        pass


def token(token: Annotated[str | None, Query()] = None) -> str:
    if token != "secret":
        raise WebSocketException(code=codes.WS_1008_POLICY_VIOLATION, reason="bad token")
    return token


@app.websocket("/ws/items/{item_id}")
async def item(
    websocket: WebSocket, item_id: int, who: Annotated[str, Depends(token)], q: str = ""
):
    await websocket.accept()
    await websocket.send_json({"item_id": item_id, "q": q, "token": who})
    await websocket.close(code=4000, reason="that is all")


MEMBERS: set[WebSocket] = set()


@app.websocket("/ws/broadcast")
async def broadcast(websocket: WebSocket):
    """Every text message a member sends goes to every member."""
    await websocket.accept()
    MEMBERS.add(websocket)
    await websocket.send_json({"members": len(MEMBERS)})
    try:
        while True:
            message = await websocket.receive_text()
            for member in list(MEMBERS):
                try:
                    await member.send_text(message)
                except (WebSocketDisconnect, OSError, RuntimeError):
                    MEMBERS.discard(member)
    except WebSocketDisconnect:
        pass
    finally:
        MEMBERS.discard(websocket)
