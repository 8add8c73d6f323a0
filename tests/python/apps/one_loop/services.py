"""Stand-in services for the one-loop tests, and a real redis-server.

Run as a script, this starts (in its own process, so the test's client
threads never slow it down) an aiohttp server per service on free loopback
ports and prints one JSON line with their URLs:

* ``es``: a stand-in Elasticsearch 8 node. ``GET /`` answers what a node
  answers (with ``X-Elastic-Product: Elasticsearch``, which the official
  client checks), ``/{index}/_search`` answers a search with one hit that
  echoes the query.
* ``upstreams``: three upstreams that each answer ``GET /data`` after
  ``?delay=`` seconds (default 0.2) with their name.

Every service answers ``GET /_stub/stats`` with how many requests it served
and the most it had in flight at once.

The test files use :func:`stub_services` and :func:`redis_server` in their
fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ES_INFO = {
    "name": "stub-node-1",
    "cluster_name": "oneloop-stub",
    "cluster_uuid": "Yq6nWc3JQ3S0X5XsZBq5Qg",
    "version": {
        "number": "8.13.4",
        "build_flavor": "default",
        "build_type": "docker",
        "build_hash": "da95df118650b55a500dcc181889ac35c6d8da7c",
        "build_date": "2024-05-06T22:04:45.107454559Z",
        "build_snapshot": False,
        "lucene_version": "9.10.0",
        "minimum_wire_compatibility_version": "7.17.0",
        "minimum_index_compatibility_version": "7.0.0",
    },
    "tagline": "You Know, for Search",
}


def _serve_stubs() -> None:
    from aiohttp import web

    def stats_app(name: str) -> tuple[web.Application, dict]:
        stats = {"name": name, "requests": 0, "inflight": 0, "max_inflight": 0}

        @web.middleware
        async def count(request: web.Request, handler):  # type: ignore[no-untyped-def]
            if request.path == "/_stub/stats":
                return web.json_response(stats)
            stats["requests"] += 1
            stats["inflight"] += 1
            stats["max_inflight"] = max(stats["max_inflight"], stats["inflight"])
            try:
                return await handler(request)
            finally:
                stats["inflight"] -= 1

        return web.Application(middlewares=[count]), stats

    def es_app() -> web.Application:
        app, _ = stats_app("es")
        product = {"X-Elastic-Product": "Elasticsearch"}

        async def info(request: web.Request) -> web.Response:
            return web.json_response(ES_INFO, headers=product)

        async def search(request: web.Request) -> web.Response:
            body = await request.json() if request.can_read_body else {}
            index = request.match_info["index"]
            hit = {"_index": index, "_id": "1", "_score": 1.0, "_source": {"query": body}}
            result = {
                "took": 1,
                "timed_out": False,
                "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                "hits": {"total": {"value": 1, "relation": "eq"}, "max_score": 1.0, "hits": [hit]},
            }
            return web.json_response(result, headers=product)

        app.router.add_get("/", info)
        app.router.add_route("*", "/{index}/_search", search)
        return app

    def upstream_app(name: str) -> web.Application:
        app, stats = stats_app(name)

        async def data(request: web.Request) -> web.Response:
            delay = float(request.query.get("delay", "0.2"))
            await asyncio.sleep(delay)
            return web.json_response({"upstream": name, "delay": delay, "n": stats["requests"]})

        app.router.add_get("/data", data)
        return app

    async def main() -> None:
        urls: dict = {}
        apps = {"es": es_app(), "a": upstream_app("a"), "b": upstream_app("b")}
        apps["c"] = upstream_app("c")
        for name, app in apps.items():
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            urls[name] = f"http://127.0.0.1:{port}"
        print(
            json.dumps({"es": urls["es"], "upstreams": [urls["a"], urls["b"], urls["c"]]}),
            flush=True,
        )
        await asyncio.Event().wait()

    asyncio.run(main())


@contextlib.contextmanager
def stub_services() -> Iterator[dict]:
    """Start the stand-in services in a subprocess; yield {"es": url, "upstreams": [urls]}."""
    proc = subprocess.Popen(
        [sys.executable, __file__], stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"stub services exited with {proc.wait()}")
        yield json.loads(line)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    """A real redis-server on a free loopback port, no persistence; yields its URL."""
    import redis

    port = free_port()
    log = tmp / f"redis-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {log.read_text()}")
            try:
                with redis.Redis.from_url(url, socket_timeout=1) as r:
                    r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    _serve_stubs()
