"""A Flask app with async views sharing one global async client, created at
import time -- what breaks under other WSGI servers after the first request."""

import asyncio
import os

import httpx
from flask import Flask

app = Flask(__name__)
client = httpx.AsyncClient(base_url=os.environ["UPSTREAM"], timeout=10)


@app.get("/")
async def index():
    upstream = await client.get("/from-flask")
    return {
        "pid": os.getpid(),
        "loop": id(asyncio.get_running_loop()),
        "client": id(client),
        "upstream": upstream.json()["path"],
    }
