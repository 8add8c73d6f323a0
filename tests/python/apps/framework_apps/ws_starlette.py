"""Starlette WebSocket endpoints: WebSocketEndpoint classes (text and JSON),
a denial response before accepting, lifespan state, and bytes."""

import contextlib
import hashlib

from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket


class Echo(WebSocketEndpoint):
    encoding = "text"

    async def on_receive(self, websocket, data):
        await websocket.send_text(f"echo: {data}")


class Totals(WebSocketEndpoint):
    encoding = "json"

    async def on_connect(self, websocket):
        await websocket.accept()
        await websocket.send_json({"greeting": websocket.state.greeting})

    async def on_receive(self, websocket, data):
        await websocket.send_json({"total": sum(data)})


async def guarded(websocket: WebSocket):
    if websocket.query_params.get("token") != "secret":
        response = PlainTextResponse("no entry", status_code=401, headers={"x-reason": "token"})
        await websocket.send_denial_response(response)
        return
    offered = websocket.scope["subprotocols"]
    await websocket.accept(
        subprotocol="v2" if "v2" in offered else None, headers=[(b"x-welcome", b"yes")]
    )
    await websocket.send_text(f"welcome {websocket.path_params['name']}")
    await websocket.close(code=4000, reason="goodbye")


async def digests(websocket: WebSocket):
    await websocket.accept()
    async for data in websocket.iter_bytes():
        await websocket.send_bytes(hashlib.sha256(data).digest())


@contextlib.asynccontextmanager
async def lifespan(app):
    yield {"greeting": "hello from lifespan"}


app = Starlette(
    routes=[
        WebSocketRoute("/ws/echo", Echo),
        WebSocketRoute("/ws/totals", Totals),
        WebSocketRoute("/ws/guarded/{name}", guarded),
        WebSocketRoute("/ws/digests", digests),
    ],
    lifespan=lifespan,
)
