"""A FastAPI app: async and sync (thread pool) endpoints, dependencies,
validation, errors."""

import asyncio
import threading
import time
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel

app = FastAPI()

OPENED = []
CLOSED = []


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


async def get_db():
    """A yield dependency: a 'session' opened per request and closed after."""
    session = {"id": len(OPENED) + 1}
    OPENED.append(session["id"])
    try:
        yield session
    finally:
        CLOSED.append(session["id"])


def user_agent(user_agent: Annotated[str | None, Header()] = None):
    return user_agent or "none"


@app.get("/")
async def index():
    return {"hello": "fastapi"}


@app.get("/items/{item_id}")
async def read_item(item_id: int, db: Annotated[dict, Depends(get_db)], q: str | None = None):
    if item_id == 0:
        raise HTTPException(status_code=404, detail="item zero does not exist")
    return {"item_id": item_id, "q": q, "session": db["id"]}


@app.post("/items", status_code=201)
async def create_item(item: Item, ua: Annotated[str, Depends(user_agent)]):
    return {"item": item.model_dump(), "total": item.price * 2, "ua": ua}


@app.get("/sync")
def sync_endpoint(delay: float = 0.0):
    """Plain def: FastAPI runs it with anyio.to_thread, off the event loop."""
    if delay:
        time.sleep(delay)
    return {
        "thread": threading.current_thread().name,
        "is_main": threading.current_thread() is threading.main_thread(),
    }


@app.get("/fast")
async def fast():
    await asyncio.sleep(0)
    return {"fast": True}


@app.get("/sessions")
async def sessions():
    return {"opened": len(OPENED), "closed": len(CLOSED)}


@app.get("/boom")
async def boom():
    raise RuntimeError("fastapi endpoint failed")
