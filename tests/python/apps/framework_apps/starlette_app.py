"""A Starlette app with a lifespan that sets state, JSON, streaming and errors."""

import asyncio
import contextlib

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route


@contextlib.asynccontextmanager
async def lifespan(app):
    yield {"started": "yes", "startup_loop": id(asyncio.get_running_loop())}


async def index(request: Request):
    return PlainTextResponse("Hello from Starlette")


async def as_json(request: Request):
    return JSONResponse(
        {
            "framework": "starlette",
            "query": dict(request.query_params),
            "scheme": request.url.scheme,
            "client": request.client.host if request.client else None,
            "state_started": request.state.started,
            "same_loop": request.state.startup_loop == id(asyncio.get_running_loop()),
            "root_path": request.scope.get("root_path"),
        }
    )


async def item(request: Request):
    item_id = request.path_params["item_id"]
    if item_id == 0:
        raise HTTPException(status_code=404, detail="no item zero")
    return JSONResponse({"item": item_id})


async def json_echo(request: Request):
    payload = await request.json()
    return JSONResponse({"received": payload}, status_code=201)


async def body_size(request: Request):
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
    return JSONResponse({"size": total})


async def stream(request: Request):
    async def parts():
        for i in range(5):
            await asyncio.sleep(0)
            yield f"chunk {i}\n".encode()

    return StreamingResponse(parts(), media_type="text/plain")


async def boom(request: Request):
    raise RuntimeError("starlette endpoint failed")


app = Starlette(
    routes=[
        Route("/", index),
        Route("/json", as_json),
        Route("/items/{item_id:int}", item),
        Route("/json-echo", json_echo, methods=["POST"]),
        Route("/size", body_size, methods=["POST"]),
        Route("/stream", stream),
        Route("/boom", boom),
    ],
    lifespan=lifespan,
)
