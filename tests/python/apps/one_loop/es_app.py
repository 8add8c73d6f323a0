"""The issue's app: Flask, an AsyncElasticsearch client created at import
time, an async view that awaits it.

Under a WSGI server that runs each async view on a new event loop, request 1
answers and every later one fails ("Event loop is closed"): the client's
aiohttp session belongs to the first, closed, loop. ES_URL: the node.
"""

import asyncio
import os

from elasticsearch import AsyncElasticsearch
from flask import Flask, jsonify, request

from one_loop.record import add_stack_route

app = Flask(__name__)
add_stack_route(app)
es = AsyncElasticsearch(os.environ["ES_URL"])


@app.route("/")
async def index():
    return jsonify(**(await es.info()))


@app.route("/search")
async def search():
    found = await es.search(index="books", query={"match": {"title": request.args["q"]}})
    return jsonify(
        hits=[hit["_source"] for hit in found["hits"]["hits"]],
        loop=id(asyncio.get_running_loop()),
    )
