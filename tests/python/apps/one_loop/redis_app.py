"""A redis.asyncio client created at import time; an async view that INCRs a
counter. REDIS_URL: the server."""

import asyncio
import os

import redis.asyncio as aioredis
from flask import Flask, jsonify

from one_loop.record import import_loop_id

IMPORT_LOOP = import_loop_id()

app = Flask(__name__)
r = aioredis.Redis.from_url(os.environ["REDIS_URL"])


@app.route("/incr/<key>")
async def incr(key: str):
    value = await r.incr(key)
    return jsonify(value=value, loop=id(asyncio.get_running_loop()), import_loop=IMPORT_LOOP)
