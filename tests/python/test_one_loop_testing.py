"""oneloop.testing: app.test_client() on one persistent loop in-process
(one_loop(), the oneloop_loop fixture), and the real server for end-to-end
tests (serve(), the oneloop_serve fixture).

In-process, Flask's test client runs async views the way any WSGI server
does: on a new event loop per call. So an app that keeps an async client
across requests fails its own tests from the second request on; the tests
without one_loop() below show that, the others show the helper fixing it.
The apps are those of test_one_loop.py (apps/one_loop/), imported fresh per
test with their service addresses in the environment.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from types import ModuleType

import flask
import pytest
import uvloop
from conftest import APPS

import oneloop
from oneloop import bridge
from oneloop.testing import one_loop, serve

sys.path.insert(0, str(APPS))

from one_loop.load import assert_all, hammer, timings
from one_loop.services import ES_INFO


def report(text: str) -> None:
    print(f"\n[one-loop testing] {text}", flush=True)


@pytest.fixture
def load_app(monkeypatch, services) -> Iterator:
    """Import a fresh copy of apps/one_loop/<name>.py with the services'
    addresses in the environment. oneloop's startup/shutdown hook lists (to
    which an app adds at import) are put back afterwards."""
    monkeypatch.setenv("ES_URL", services["es"])
    monkeypatch.setenv("UPSTREAMS", ",".join(services["upstreams"]))
    hooks = list(bridge._startup), list(bridge._shutdown)

    def load(name: str, **env: str) -> ModuleType:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        sys.modules.pop(f"one_loop.{name}", None)
        return importlib.import_module(f"one_loop.{name}")

    yield load
    bridge._startup[:], bridge._shutdown[:] = hooks


def es_routes(client) -> list:
    return [client.get("/") for _ in range(5)]


# ---------------------------------------------------------------------------
# one_loop(): app.test_client() with apps that keep async clients


def test_one_loop_makes_test_client_work_with_the_es_app(load_app):
    es_app = load_app("es_app")
    with one_loop() as loop:
        client = es_app.app.test_client()
        responses = es_routes(client)
        search = client.get("/search", query_string={"q": "dune"})
        oneloop.run_coroutine(es_app.es.close())  # the helpers work in tests too
    assert [r.status_code for r in responses] == [200] * 5
    assert all(r.get_json() == ES_INFO for r in responses)
    assert search.status_code == 200
    assert search.get_json()["loop"] == id(loop)
    report(f"one_loop + ES app: 5 x 200 and a search, on the helper's loop {id(loop)}")


def test_one_loop_makes_test_client_work_with_the_aiohttp_app(load_app):
    fanout = load_app("fanout_app", FANOUT_SESSION="lazy")
    with one_loop() as loop:
        client = fanout.app.test_client()
        responses = [client.get("/fanout", query_string={"delay": "0.01"}) for _ in range(5)]
        oneloop.run_coroutine(fanout.session.close())
    assert [r.status_code for r in responses] == [200] * 5
    for r in responses:
        assert r.get_json()["upstreams"] == ["a", "b", "c"]
        assert r.get_json()["loop"] == id(loop)
    report(f"one_loop + aiohttp app: 5 x 200 on loop {id(loop)}")


@pytest.mark.parametrize(
    ("name", "env", "path"),
    [
        ("es_app", {}, "/"),
        ("fanout_app", {"FANOUT_SESSION": "lazy"}, "/fanout?delay=0.01"),
    ],
)
def test_without_one_loop_the_test_client_fails_from_the_second_request(load_app, name, env, path):
    """Why the helper exists: Flask's own path, a new loop per call."""
    module = load_app(name, **env)
    client = module.app.test_client()
    statuses = [client.get(path).status_code for _ in range(3)]
    assert statuses == [200, 500, 500]
    report(f"without one_loop, {name}: statuses {statuses}")


def test_one_loop_runs_every_flask_hook_on_its_loop(load_app, tmp_path):
    hooks_log = tmp_path / "hooks.log"
    hooks = load_app("hooks_app", HOOKS_LOG=str(hooks_log))
    with one_loop() as loop:
        client = hooks.app.test_client()
        responses = [
            client.get("/view"),
            client.get("/boom"),
            client.get("/items/7"),
            client.post("/items/8", json={"x": 1}),
        ]
    assert [r.status_code for r in responses] == [200, 500, 200, 200]
    for r in responses:
        loops = {
            str(r.get_json()["loop"]),
            r.headers["X-Loop-Before"],
            r.headers["X-Loop-Signal"],
            r.headers["X-Loop-After"],
        }
        assert loops == {str(id(loop))}, r.headers
    teardowns = hooks_log.read_text().splitlines()
    assert [line.split()[2] for line in teardowns] == [str(id(loop))] * 4


LOOP_FACTORIES = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.mark.parametrize("factory", list(LOOP_FACTORIES))
def test_one_loop_run_coroutine_on_any_loop_factory(factory):
    """one_loop() knows its loop's thread itself: uvloop's Loop has no
    asyncio private _thread_id to ask."""

    async def where() -> tuple:
        return threading.get_ident(), asyncio.get_running_loop()

    with one_loop(LOOP_FACTORIES[factory]) as loop:
        ident, running = oneloop.run_coroutine(where())
    assert running is loop and type(loop).__module__.startswith(factory)
    assert ident != threading.get_ident()


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("factory", list(LOOP_FACTORIES))
def test_one_loop_refuses_run_coroutine_on_its_loop_and_closes_the_coroutine(factory):
    async def inner() -> int:
        return 1

    async def nested() -> tuple:
        coro = inner()
        try:
            oneloop.run_coroutine(coro)
        except RuntimeError as exc:
            return str(exc), inspect.getcoroutinestate(coro)
        return None, inspect.getcoroutinestate(coro)

    with one_loop(LOOP_FACTORIES[factory]):
        error, state = oneloop.run_coroutine(nested())
    assert error and "event loop thread" in error
    assert state == inspect.CORO_CLOSED


def test_one_loop_serves_legacy_run_until_complete_and_run_coroutine(load_app):
    legacy = load_app("legacy_app")
    with one_loop() as loop:
        client = legacy.app.test_client()
        got = [
            client.get("/legacy").get_json(),
            client.get("/run-coroutine", query_string={"n": 1}).get_json(),
            client.get("/async-to-sync", query_string={"n": 2}).get_json(),
        ]
        oneloop.run_coroutine(legacy.es.close())
    assert {g["loop"] for g in got} == {id(loop)}
    assert got[0]["is_running"] is False
    assert got[1]["seen"] == "run_coroutine:1"
    assert got[2]["seen"] == "async_to_sync:2"


def test_one_loop_sends_sync_to_async_back_to_the_test_thread(load_app):
    """As in a worker: asgiref's thread-sensitive sync_to_async in an async
    view runs in the thread that waits for the view (here the test's)."""
    mixed = load_app("mixed_app")
    with one_loop():
        got = mixed.app.test_client().get("/sync-to-async", query_string={"s": "0.01"}).get_json()
    assert got["thread"] == got["wsgi_thread"] == threading.current_thread().name


def test_one_loop_timeout_cancels_and_raises_timeout_error(load_app):
    legacy = load_app("legacy_app")
    with one_loop():
        got = legacy.app.test_client().get("/run-coroutine-timeout").get_json()
    assert got == {"raised": "TimeoutError", "cancelled": True}


def test_one_loop_runs_the_startup_and_shutdown_hooks(load_app, tmp_path):
    marker = tmp_path / "lifecycle"
    lifecycle = load_app("lifecycle_app", LIFECYCLE_MARKER=str(marker))
    with one_loop() as loop:
        assert marker.read_text().split() == ["started", str(id(loop))]
        client = lifecycle.app.test_client()
        statuses = [client.get("/").status_code for _ in range(3)]
    assert statuses == [200] * 3
    assert marker.read_text().splitlines()[-1] == f"closed {id(loop)} True"


def test_one_loop_puts_everything_back(load_app):
    original = flask.Flask.__dict__["async_to_sync"]
    with one_loop():
        assert flask.Flask.__dict__["async_to_sync"] is not original
        with pytest.raises(RuntimeError), one_loop():
            pass
    assert flask.Flask.__dict__["async_to_sync"] is original
    assert bridge._server is None

    async def nothing() -> None:
        pass

    with pytest.raises(RuntimeError, match="one_loop"):
        oneloop.run_coroutine(nothing())


LOOP_AFTER = """
import asyncio
{setup}
try:
    loop = asyncio.get_event_loop()
except RuntimeError as exc:
    print("raised:", exc)
else:
    print("loop:", type(loop).__name__, loop.is_closed())
"""


def test_one_loop_leaves_get_event_loop_in_the_main_thread_as_it_found_it():
    """Before one_loop(), asyncio.get_event_loop() in the main thread gives a
    loop (Python 3.11 makes one); after it, it must still -- not raise "There
    is no current event loop", the error oneloop exists to remove. (A fresh
    interpreter each: the main thread's loop state is process-wide.)"""

    def run(setup: str) -> str:
        code = LOOP_AFTER.format(setup=setup)
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    before = run("")
    after = run("from oneloop.testing import one_loop\nwith one_loop():\n    pass")
    report(f"get_event_loop() in the main thread: without one_loop {before!r}, after {after!r}")
    assert before.startswith("loop:")
    assert after == before


# ---------------------------------------------------------------------------
# the oneloop_loop fixture


def test_oneloop_loop_fixture_with_the_redis_app(oneloop_loop, load_app, redis_url):
    redis_app = load_app("redis_app", REDIS_URL=redis_url)
    client = redis_app.app.test_client()
    key = f"fixture-{uuid.uuid4().hex}"
    got = [client.get(f"/incr/{key}").get_json() for _ in range(4)]
    oneloop.run_coroutine(redis_app.r.aclose())
    assert [g["value"] for g in got] == [1, 2, 3, 4]
    assert {g["loop"] for g in got} == {id(oneloop_loop)}
    assert oneloop_loop.is_running()
    report(f"oneloop_loop fixture + redis app: counter 1..4 on loop {id(oneloop_loop)}")


def test_oneloop_loop_fixture_with_the_es_app(oneloop_loop, load_app):
    es_app = load_app("es_app")
    client = es_app.app.test_client()
    responses = es_routes(client)
    oneloop.run_coroutine(es_app.es.close())
    assert [r.status_code for r in responses] == [200] * 5


# ---------------------------------------------------------------------------
# serve() and the oneloop_serve fixture: the real server, end to end


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_serve_runs_the_es_app_end_to_end(load_app):
    load_app("es_app")  # sets ES_URL for the subprocess
    with serve("one_loop.es_app:app", app_dir=str(APPS), threads=8, access_log=False) as url:
        results = hammer(lambda c, i: c.get(url + "/"))
    assert_all(results)
    assert all(r.body == ES_INFO for r in results)
    with pytest.raises(OSError):  # stopped, its port closed
        socket.create_connection(("127.0.0.1", port_of(url)), timeout=1).close()
    report(f"serve() + ES app: {timings(results)}")


def test_oneloop_serve_fixture_runs_the_aiohttp_app_end_to_end(oneloop_serve, load_app):
    load_app("es_app")  # sets UPSTREAMS for the subprocess
    url = oneloop_serve("one_loop.fanout_app:app", app_dir=str(APPS), access_log=False)
    results = hammer(lambda c, i: c.get(url + "/fanout"))
    assert_all(results)
    assert {r.json["loop"] for r in results} == {results[0].json["import_loop"]}
    assert max(r.elapsed for r in results) < 0.4, timings(results)
    report(f"oneloop_serve + aiohttp fan-out app: {timings(results)}")
