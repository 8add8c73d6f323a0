"""Every kind of async callable Flask runs through ensure_sync: before_request,
a request_started signal receiver, views (function and MethodView),
after_request, errorhandler(500), teardown_request. Each reports
id(asyncio.get_running_loop()); teardown_request, which runs after the
response is built, appends "teardown <path> <loop id>" to HOOKS_LOG.
"""

import asyncio

from flask import Flask, g, jsonify, request, request_started
from flask.views import MethodView

from one_loop.record import add_stack_route, import_loop_id, record, stack_versions

IMPORT_LOOP = import_loop_id()

app = Flask(__name__)
add_stack_route(app)


def loop_id() -> int:
    return id(asyncio.get_running_loop())


async def on_request_started(sender, **extra):
    await asyncio.sleep(0)
    g.signal_loop = loop_id()
    g.signal_path = request.path  # the request context is there, on the loop


# Flask runs async signal receivers through ensure_sync from 2.3 on; older
# versions would call it and drop the coroutine.
ASYNC_SIGNALS = tuple(map(int, stack_versions()["flask"].split(".")[:2])) >= (2, 3)
if ASYNC_SIGNALS:
    request_started.connect(on_request_started, app)


@app.before_request
async def before():
    await asyncio.sleep(0)
    g.before_loop = loop_id()


@app.after_request
async def after(response):
    await asyncio.sleep(0)
    response.headers["X-Loop-After"] = str(loop_id())
    response.headers["X-Loop-Before"] = str(g.get("before_loop", ""))
    response.headers["X-Loop-Signal"] = str(g.get("signal_loop", ""))
    response.headers["X-Signal-Path"] = g.get("signal_path", "")
    response.headers["X-Import-Loop"] = str(IMPORT_LOOP)
    return response


@app.errorhandler(500)
async def server_error(error):
    await asyncio.sleep(0)
    return jsonify(error=type(error.original_exception).__name__, loop=loop_id()), 500


@app.teardown_request
async def teardown(exc):
    await asyncio.sleep(0)
    record("HOOKS_LOG", f"teardown {request.path} {loop_id()} {type(exc).__name__}")


@app.route("/view")
async def view():
    await asyncio.sleep(0.001)
    return jsonify(loop=loop_id())


@app.route("/boom")
async def boom():
    await asyncio.sleep(0)
    raise RuntimeError("boom")


class ItemView(MethodView):
    async def get(self, item: int):
        await asyncio.sleep(0)
        return jsonify(item=item, method="GET", loop=loop_id())

    async def post(self, item: int):
        await asyncio.sleep(0)
        return jsonify(item=item, method="POST", body=request.get_json(), loop=loop_id())


app.add_url_rule("/items/<int:item>", view_func=ItemView.as_view("items"))
