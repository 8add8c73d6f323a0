"""One loop per worker, proven over real sockets with real clients and services.

Flask async views (and asgiref's async_to_sync, Django async views under
WSGI) normally run each coroutine on a brand-new event loop, so async clients
created at import time fail from the second request on. oneloop runs every
async call of a WSGI app on the worker's one long-lived loop. Each test here
serves an app from apps/one_loop/ with the real server, drives it with at
least 16 concurrent clients and 200 requests, and checks that every request
worked and that every async callable ran on the loop the app saw at import.

Every test runs under both loops oneloop offers (see the `serve` fixture).
The services are real processes: a stand-in Elasticsearch node and three
upstreams that answer after 200 ms (apps/one_loop/services.py, an aiohttp
server in a subprocess) and a real redis-server. The gunicorn tests show the
same apps failing under a new-loop-per-call server, so the contrast is on
record. Run with -s to see the loop ids and timings observed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from conftest import APPS, connect
from h2_support import h2_connect

sys.path.insert(0, str(APPS))

from one_loop.load import CONCURRENCY, Result, assert_all, hammer, timings
from one_loop.services import ES_INFO, free_port

ERROR_SIGNS = (
    "[ERROR]",
    "Event loop is closed",
    "attached to a different loop",
    "was never awaited",
)


def report(text: str) -> None:
    print(f"\n[one-loop] {text}", flush=True)


@pytest.fixture(params=["uvloop", "asyncio"])
def serve(serve, request):
    """Every server here runs once per loop: uvloop, where each async call
    from a WSGI thread runs on the loop's thread, and the gated asyncio loop,
    where the calling thread runs a call's first step itself (oneloop.loops)."""

    def start(app: str, *options: str, **kwargs):
        return serve(app, "--loop", request.param, *options, **kwargs)

    return start


# ---------------------------------------------------------------------------
# services: the `services` and `redis_url` fixtures are in conftest.py


def stub_stats(url: str) -> dict:
    return httpx.get(f"{url}/_stub/stats", timeout=5).json()


def app_env(services: dict, redis_url: str | None = None, **extra: str) -> dict:
    env = {"ES_URL": services["es"], "UPSTREAMS": ",".join(services["upstreams"]), **extra}
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def finish(server, *extra_signs: str, tracebacks: int = 0) -> str:
    """Stop the server gracefully: exit 0, no errors logged (but the
    `tracebacks` the app logs on purpose), the start-up self-test found every
    route on the loop."""
    assert server.stop() == 0, server.log()
    log = server.log() + server.out()
    assert log.count("Traceback") == tracebacks, log[-5000:]
    for sign in (*ERROR_SIGNS, "one loop:", *extra_signs):
        assert sign not in log, f"{sign!r} in server log:\n{log[-5000:]}"
    return log


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_lines(path: Path, predicate: Callable[[str], bool], count: int, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in lines(path) if predicate(line)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


# ---------------------------------------------------------------------------
# 1. the app: AsyncElasticsearch created at import


def test_elasticsearch_client_created_at_import_serves_every_request(serve, services):
    server = serve("one_loop.es_app:app", "--no-access-log", env=app_env(services))
    before = stub_stats(services["es"])["requests"]

    results = hammer(lambda c, i: c.get(server.url + "/"))
    assert_all(results)
    assert all(r.body == ES_INFO for r in results), results[0]

    searches = hammer(lambda c, i: c.get(server.url + "/search", params={"q": f"book {i}"}))
    assert_all(searches)
    for r in searches:
        assert r.json["hits"] == [{"query": {"query": {"match": {"title": f"book {r.i}"}}}}]
    loops = {r.json["loop"] for r in searches}
    assert len(loops) == 1, loops

    served = stub_stats(services["es"])["requests"] - before
    assert served == len(results) + len(searches)  # every request really reached the node
    report(
        f"ES app: {len(results)} info + {len(searches)} search requests, all 200 with the "
        f"node's data; node served {served}; loop ids seen: {loops}; info {timings(results)}"
    )
    finish(server)


# ---------------------------------------------------------------------------
# 2. a module-level aiohttp session fanning out with gather


def test_aiohttp_session_fans_out_concurrently_on_one_loop(serve, services):
    server = serve("one_loop.fanout_app:app", "--no-access-log", env=app_env(services))
    stats_before = [stub_stats(u) for u in services["upstreams"]]

    results = hammer(lambda c, i: c.get(server.url + "/fanout"), n=224)
    assert_all(results)
    for r in results:
        assert r.json["upstreams"] == ["a", "b", "c"]
        assert r.json["loop"] == r.json["import_loop"]
        assert 0.2 <= r.json["elapsed"] < 0.4, r  # gathered: ~200 ms, not 3 x 200 ms
        assert r.elapsed < 0.4, r
    loops = {r.json["loop"] for r in results}
    assert len(loops) == 1

    stats = [stub_stats(u) for u in services["upstreams"]]
    for before, after in zip(stats_before, stats, strict=True):
        assert after["requests"] - before["requests"] == len(results)
    in_flight = min(s["max_inflight"] for s in stats)
    assert in_flight >= CONCURRENCY // 2  # the requests of many clients were in flight at once
    server_side = statistics.median(r.json["elapsed"] for r in results)
    report(
        f"fan-out (3 upstreams x 200 ms, {CONCURRENCY} clients): client {timings(results)}; "
        f"server-side median {server_side * 1000:.1f}ms; most in flight per upstream "
        f"{in_flight}; loop ids: {loops} (import loop {results[0].json['import_loop']})"
    )
    finish(server)


def test_aiohttp_session_serves_http2_streams_of_one_connection(serve, services):
    """The same over HTTP/2 (h2c): 96 streams in flight on one connection;
    each stream is a WSGI call whose async view awaits the module-level
    session on the import loop."""
    server = serve("one_loop.fanout_app:app", "--no-access-log", env=app_env(services))
    before = [stub_stats(u)["requests"] for u in services["upstreams"]]
    # One thread sends every HEADERS frame in order, so all 96 streams are in
    # flight at once (a threaded httpx client can send them out of order).
    c = h2_connect(server.host, server.port, timeout=30)
    try:
        c.handshake()
        ids = range(1, 2 * 96, 2)
        for sid in ids:
            c.request(sid, "/fanout?delay=0.02")
        results = [json.loads(c.response(sid, timeout=60)[1]) for sid in ids]
    finally:
        c.close()
    for r in results:
        assert r["upstreams"] == ["a", "b", "c"]
        assert r["loop"] == r["import_loop"]
    assert len({r["loop"] for r in results}) == 1
    after = [stub_stats(u)["requests"] for u in services["upstreams"]]
    assert [a - b for a, b in zip(after, before, strict=True)] == [len(results)] * 3
    report(f"fan-out over h2c, one connection: {len(results)} streams, all on the import loop")
    finish(server)


# ---------------------------------------------------------------------------
# 3. hooks, signal receivers and class-based views on the same loop


def test_hooks_signals_and_class_views_run_on_the_import_loop(serve, services, tmp_path):
    hooks_log = tmp_path / "hooks.log"
    server = serve(
        "one_loop.hooks_app:app", "--no-access-log", env=app_env(services, HOOKS_LOG=str(hooks_log))
    )

    def call(c: httpx.Client, i: int) -> httpx.Response:
        kind = i % 4
        if kind == 0:
            return c.get(server.url + "/view")
        if kind == 1:
            return c.get(server.url + "/boom")
        if kind == 2:
            return c.get(server.url + f"/items/{i}")
        return c.post(server.url + f"/items/{i}", json={"n": i})

    results = hammer(call, n=240)
    loops: Counter = Counter()
    for r in results:
        assert not r.error, r
        import_loop = r.headers["x-import-loop"]
        if r.i % 4 == 1:
            assert r.status == 500, r
            assert r.json["error"] == "RuntimeError"
        else:
            assert r.status == 200, r
        if r.i % 4 in (2, 3):
            assert r.json["item"] == r.i
            assert r.json["method"] == ("GET" if r.i % 4 == 2 else "POST")
        if r.i % 4 == 3:
            assert r.json["body"] == {"n": r.i}
        hooks = {
            "view/errorhandler": str(r.json["loop"]),
            "before_request": r.headers["x-loop-before"],
            "request_started receiver": r.headers["x-loop-signal"],
            "after_request": r.headers["x-loop-after"],
        }
        assert set(hooks.values()) == {import_loop}, (r, hooks)
        expected_path = ("/view", "/boom", f"/items/{r.i}", f"/items/{r.i}")[r.i % 4]
        assert r.headers["x-signal-path"] == expected_path  # the receiver saw its request
        loops.update(hooks.values())

    teardowns = wait_lines(hooks_log, lambda line: line.startswith("teardown "), len(results))
    assert len(teardowns) == len(results)
    import_loop = results[0].headers["x-import-loop"]
    for line in teardowns:
        _, path, loop, exc = line.split()
        assert loop == import_loop, line
        assert exc == ("RuntimeError" if path == "/boom" else "NoneType"), line
    assert Counter(line.split()[1] for line in teardowns)["/boom"] == len(results) // 4
    report(
        f"hooks: {len(results)} requests; loop ids from before_request, request_started "
        f"receiver, views (function + MethodView), errorhandler(500), after_request and "
        f"{len(teardowns)} teardown_request calls: {set(loops) | {import_loop}} == import loop "
        f"{import_loop}; {timings(results)}"
    )
    # Flask logs each unhandled RuntimeError("boom") (then calls the handler)
    log = finish(server, tracebacks=len(results) // 4)
    assert log.count("ERROR in app: Exception on /boom [GET]") == len(results) // 4


# ---------------------------------------------------------------------------
# 4. redis.asyncio client created at import, against a real redis-server


def test_redis_counter_counts_every_request(serve, services, redis_url):
    server = serve("one_loop.redis_app:app", "--no-access-log", env=app_env(services, redis_url))
    key = f"hits-{uuid.uuid4().hex}"

    results = hammer(lambda c, i: c.get(f"{server.url}/incr/{key}"), n=256)
    assert_all(results)
    values = sorted(r.json["value"] for r in results)
    assert values == list(range(1, len(results) + 1))  # each INCR seen exactly once
    loops = {(r.json["loop"], r.json["import_loop"]) for r in results}
    assert len(loops) == 1 and len(set(next(iter(loops)))) == 1, loops
    with redis.Redis.from_url(redis_url) as r:
        final = int(r.get(key))
    assert final == len(results)
    report(
        f"redis: {len(results)} INCRs, final value {final}; loop ids {loops}; {timings(results)}"
    )
    finish(server)


# ---------------------------------------------------------------------------
# 5. Django async views under WSGI


def test_django_async_view_under_wsgi_with_module_level_clients(serve, services, redis_url):
    server = serve(
        "one_loop.django_async_app:application",
        "--no-access-log",
        env=app_env(services, redis_url),
    )
    key = f"dj-{uuid.uuid4().hex}"

    results = hammer(lambda c, i: c.get(f"{server.url}/dj/incr/{key}"), n=224)
    assert_all(results)
    assert sorted(r.json["value"] for r in results) == list(range(1, len(results) + 1))
    for r in results:
        assert r.json["loop"] == r.json["import_loop"], r
        assert r.json["upstream"] == "a"
        # sync_to_async (thread-sensitive) ran back in the request's own WSGI thread...
        assert r.json["sync_thread"] == r.json["wsgi_thread"], r
        assert r.json["wsgi_thread"].startswith("oneloop-wsgi-")
        # ...while the async view itself ran on the loop's thread
        assert r.json["view_thread"] != r.json["wsgi_thread"], r
    loops = {r.json["loop"] for r in results}
    assert len(loops) == 1
    with redis.Redis.from_url(redis_url) as rc:
        assert int(rc.get(key)) == len(results)
    threads = {r.json["wsgi_thread"] for r in results}

    # the watchdog names a Django async view that blocks the loop (asgiref
    # runs it in a task of its own, not in a core driver)
    assert STALL not in server.log()
    with httpx.Client(timeout=10) as c:
        assert c.get(f"{server.url}/dj/block").json() == {"blocked": 0.8}
    time.sleep(0.2)
    warnings = [line for line in server.log().splitlines() if STALL in line]
    assert len(warnings) == 1 and "'block_the_loop'" in warnings[0], server.log()
    report(
        f"django: {len(results)} async-view requests via asgiref on loop {loops} (import loop "
        f"{results[0].json['import_loop']}); view thread {results[0].json['view_thread']!r}; "
        f"{len(threads)} WSGI threads used; {timings(results)}"
    )
    finish(server, "Internal Server Error")


# ---------------------------------------------------------------------------
# 6. sync views that block their thread do not delay async views


def test_slow_sync_views_do_not_delay_async_views(serve):
    server = serve("one_loop.mixed_app:app", "--no-access-log", "--threads", "32")
    stop = threading.Event()
    slow: list[float] = []

    def slow_client() -> None:
        with httpx.Client(timeout=10, verify=False) as c:
            while not stop.is_set():
                t = time.perf_counter()
                r = c.get(server.url + "/slow-sync")
                assert r.status_code == 200
                slow.append(time.perf_counter() - t)

    slow_threads = [threading.Thread(target=slow_client) for _ in range(8)]
    for t in slow_threads:
        t.start()
    time.sleep(0.1)  # the slow ones are sleeping in 8 WSGI threads
    results: list[Result] = []
    try:
        started = time.perf_counter()
        # at least 224 requests, over more than two rounds of the slow view
        while len(results) < 224 or time.perf_counter() - started < 1.2:
            results += hammer(lambda c, i: c.get(server.url + "/fast-async"), n=64)
        window = time.perf_counter() - started
        slow_during = len(slow)
    finally:
        stop.set()
        for t in slow_threads:
            t.join()
    assert_all(results)
    times = sorted(r.elapsed for r in results)
    assert times[-1] < 0.25, timings(results)  # never waited for a 0.5 s sync view
    assert statistics.median(times) < 0.1, timings(results)
    assert slow_during >= 16 and min(slow) >= 0.5, slow  # the sync views did run meanwhile
    report(
        f"mixed: {len(results)} async requests in {window:.2f}s while 8 clients kept a "
        f"0.5 s sync view busy ({slow_during} served meanwhile): async {timings(results)}"
    )
    finish(server)


def test_sync_to_async_in_a_task_that_outlived_its_request_still_runs(serve):
    """A task an async view spawned calls sync_to_async after the view has
    returned: the request's thread no longer waits for it, so the work runs
    in asgiref's own thread -- neither hanging nor failing."""
    server = serve("one_loop.mixed_app:app", "--no-access-log")
    keys = [f"k{i}" for i in range(16)]
    assert_all(hammer(lambda c, i: c.get(f"{server.url}/leftover-task/{keys[i]}"), n=len(keys)))
    outcomes = {}
    with httpx.Client() as client:
        deadline = time.monotonic() + 5
        while len(outcomes) < len(keys) and time.monotonic() < deadline:
            for key in keys:
                seen = client.get(f"{server.url}/leftover-result/{key}").json()
                if seen is not None:
                    outcomes[key] = seen
            time.sleep(0.05)
    assert len(outcomes) == len(keys), outcomes
    for seen in outcomes.values():
        assert "error" not in seen, seen
        assert seen["thread"] != seen["wsgi_thread"] and seen["thread"] != "MainThread", seen
    threads = sorted({seen["thread"] for seen in outcomes.values()})
    report(f"sync_to_async after the request: ran in {threads}")
    finish(server)


def test_sync_to_async_in_flask_async_views_runs_per_request_not_worker_wide(serve):
    """asgiref's sync_to_async (thread_sensitive=True, its default) inside a
    Flask async view: under any asgiref-based server it runs in the request's
    own WSGI thread, so concurrent requests run their blocking parts in
    parallel. It must not be funnelled through one thread for the worker."""
    server = serve("one_loop.mixed_app:app", "--no-access-log")
    # first one round of 16 concurrent requests (fails fast when serialised)
    first = hammer(lambda c, i: c.get(server.url + "/sync-to-async", params={"s": "0.1"}), n=16)
    assert_all(first)
    threads = Counter(r.json["thread"] for r in first)
    assert max(r.elapsed for r in first) < 0.5, (
        f"16 concurrent sync_to_async(sleep 0.1) calls took up to "
        f"{max(r.elapsed for r in first):.2f}s; threads used: {dict(threads)}"
    )
    for r in first:
        assert r.json["thread"] == r.json["wsgi_thread"], r  # as asgiref/Django do

    results = hammer(lambda c, i: c.get(server.url + "/sync-to-async", params={"s": "0.02"}))
    assert_all(results)
    assert max(r.elapsed for r in results) < 0.25, timings(results)
    report(f"sync_to_async in Flask async view: {timings(results)}")
    finish(server)


# ---------------------------------------------------------------------------
# 7. the contrast: the same apps under gunicorn, a new loop per async call

FAILURE_SIGNS = (
    "Event loop is closed",
    "attached to a different loop",
    "Timeout context manager should be used inside a task",
)


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Callable[..., tuple[str, Path]]]:
    procs: list[subprocess.Popen] = []

    def start(app: str, env: dict) -> tuple[str, Path]:
        port = free_port()
        log = tmp_path / f"gunicorn-{len(procs)}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "-k",
                    "gthread",
                    "--threads",
                    "4",
                    "-w",
                    "1",
                    "-b",
                    f"127.0.0.1:{port}",
                    "--chdir",
                    str(APPS),
                    app,
                ],
                stdout=err,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
            )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while "Booting worker" not in log.read_text() or not _answers(url):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        return url, log

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answers(url: str) -> bool:
    try:
        httpx.get(url + "/-not-found-", timeout=1)
    except httpx.HTTPError:
        return False
    return True


CONTRAST = {
    "elasticsearch": ("one_loop.es_app:app", "/"),
    "aiohttp": ("one_loop.fanout_app:app", "/fanout"),
    "redis": ("one_loop.redis_app:app", "/incr/{key}"),
}


@pytest.mark.parametrize("name", list(CONTRAST))
def test_same_app_fails_under_gunicorn_and_works_under_oneloop(
    name, gunicorn, serve, services, redis_url
):
    app, path = CONTRAST[name]
    env = app_env(services, redis_url)
    n = 8

    def sequential(url: str) -> list[int]:
        with httpx.Client(timeout=15, verify=False) as c:
            return [
                c.get(url + path.format(key=f"contrast-{uuid.uuid4().hex}")).status_code
                for _ in range(n)
            ]

    g_url, g_log = gunicorn(app, env)
    under_gunicorn = sequential(g_url)
    log = g_log.read_text()
    signs = sorted({sign for sign in FAILURE_SIGNS if sign in log})
    # The second request (at least) fails, most after it fail too, with the
    # loop errors in gunicorn's log.
    assert under_gunicorn[1] == 500, under_gunicorn
    assert under_gunicorn[1:].count(500) >= (n - 1) // 2, under_gunicorn
    assert signs, log[-3000:]
    if name != "aiohttp":  # the aiohttp session is bound to the import loop: even #1 fails
        assert under_gunicorn[0] == 200, under_gunicorn

    server = serve(app, env=env)
    under_oneloop = sequential(server.url)
    assert under_oneloop == [200] * n
    # and concurrently, too
    results = hammer(lambda c, i: c.get(server.url + path.format(key="contrast")), n=208)
    assert_all(results)
    report(
        f"contrast {name}: gunicorn gthread statuses {under_gunicorn}, log says {signs}; "
        f"oneloop statuses {under_oneloop} then {len(results)} concurrent requests all 200"
    )
    finish(server)


# ---------------------------------------------------------------------------
# 8. cancellation: a client that hangs up, --timeout-async


def hang_up(server, events: Path, n: int) -> float:
    """n clients ask for /sleep (a 10 s await) and hang up once all views
    are waiting; returns how long until every view saw CancelledError."""
    clients = [connect(server) for _ in range(n)]
    for i, c in enumerate(clients):
        c.send(f"GET /sleep?tag=h{i} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    started = wait_lines(events, lambda line: line.startswith("started h"), n)
    assert len(started) == n, lines(events)
    hung_up = time.perf_counter()
    for c in clients:
        c.sock.close()
    cancelled = wait_lines(events, lambda line: line.startswith("cancelled h"), n)
    took = time.perf_counter() - hung_up
    assert sorted(cancelled) == sorted(f"cancelled h{i}" for i in range(n)), lines(events)
    assert took < 2, took  # not after the 10 s sleep
    deadline = time.monotonic() + 5
    while server.log().count("the client hung up") < n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.log().count("the client hung up") == n, server.log()
    assert not [line for line in lines(events) if line.startswith("finished")]
    return took


def test_client_hang_up_cancels_the_view_and_teardown_still_runs(serve, services, tmp_path):
    events = tmp_path / "cancel.log"
    server = serve(
        "one_loop.cancel_app:app", "--threads", "32", env=app_env(services, CANCEL_LOG=str(events))
    )
    n = CONCURRENCY
    took = hang_up(server, events, n)
    teardowns = wait_lines(events, lambda line: line.startswith("teardown-sync h"), n)
    assert sorted(teardowns) == sorted(f"teardown-sync h{i} CancelledError" for i in range(n))

    # the server keeps serving, on the same loop
    results = hammer(lambda c, i: c.get(server.url + "/ok", params={"tag": f"ok{i}"}), n=208)
    assert_all(results)
    loops = {r.json["loop"] for r in results}
    assert len(loops) == 1
    report(
        f"hang-up: {n} clients hung up mid-view; all {n} views saw CancelledError within "
        f"{took * 1000:.0f}ms, teardown_request ran for each (exc=CancelledError), "
        f"{n} 'the client hung up' lines; then {timings(results)} on loop {loops}"
    )
    finish(server)


def test_client_hang_up_still_runs_async_teardown_request(serve, services, tmp_path):
    """docs/one-loop.md: after a hang-up "teardown_request functions still
    run" -- async ones included, and one must not stop the others."""
    events = tmp_path / "cancel.log"
    server = serve(
        "one_loop.cancel_app:app",
        "--threads",
        "32",
        env=app_env(services, CANCEL_LOG=str(events), CANCEL_ASYNC_TEARDOWN="1"),
    )
    n = CONCURRENCY
    hang_up(server, events, n)
    for kind in ("teardown-async", "teardown-sync"):
        done = wait_lines(events, lambda line, k=kind: line.startswith(k + " h"), n)
        assert sorted(done) == sorted(f"{kind} h{i} CancelledError" for i in range(n)), (
            f"{kind}: {len(done)} of {n} ran; events:\n"
            + "\n".join(lines(events))
            + f"\nserver log:\n{server.log()[-2000:]}"
        )
    results = hammer(lambda c, i: c.get(server.url + "/ok", params={"tag": f"ok{i}"}), n=208)
    assert_all(results)
    finish(server)


def test_timeout_async_cancels_the_view_and_the_app_handles_timeout_error(
    serve, services, tmp_path
):
    events = tmp_path / "cancel.log"
    server = serve(
        "one_loop.cancel_app:app",
        "--no-access-log",
        "--threads",
        "32",
        "--timeout-async",
        "0.3",
        env=app_env(services, CANCEL_LOG=str(events)),
    )
    results = hammer(
        lambda c, i: c.get(server.url + "/slow", params={"tag": f"t{i}"}), n=224, concurrency=32
    )
    assert_all(results, status=500)
    for r in results:
        assert isinstance(r.body, str) and r.body.startswith("custom timeout body: "), r
        assert 0.3 <= r.elapsed < 1.5, r
    n = len(results)
    cancelled = wait_lines(events, lambda line: line.startswith("cancelled t"), n)
    assert sorted(cancelled) == sorted(f"cancelled t{i}" for i in range(n))
    teardowns = wait_lines(events, lambda line: line.startswith("teardown-sync t"), n)
    assert len(teardowns) == n and all(line.endswith(" NoneType") for line in teardowns)
    assert not [line for line in lines(events) if line.startswith("finished")]
    # calls that finish in time are not touched
    quick = hammer(lambda c, i: c.get(server.url + "/ok"), n=208)
    assert_all(quick)
    report(
        f"--timeout-async 0.3: {n} views sleeping 2 s cancelled (CancelledError seen by "
        f"each), errorhandler(TimeoutError) answered 500 with its body; {timings(results)}"
    )
    finish(server)


# ---------------------------------------------------------------------------
# 9 and 13. sync code reaching async code: legacy run_until_complete,
# oneloop.run_coroutine, oneloop.async_to_sync


def test_legacy_get_event_loop_run_until_complete(serve, services):
    server = serve("one_loop.legacy_app:app", "--no-access-log", env=app_env(services))
    results = hammer(lambda c, i: c.get(server.url + "/legacy"), n=224)
    assert_all(results)
    for r in results:
        assert r.json["cluster"] == "oneloop-stub"
        assert r.json["loop"] == r.json["import_loop"]
        assert r.json["is_running"] is False
    loops = {r.json["loop"] for r in results}
    assert len(loops) == 1
    report(f"legacy run_until_complete: {timings(results)} on loop {loops}")
    finish(server, "There is no current event loop")


def test_asyncio_run_in_a_sync_view_does_not_break_the_legacy_pattern(serve, services):
    """asyncio.run() in a sync view creates and closes a loop of its own
    (docs: allowed), and on its way out sets the thread's current loop to
    None. The next legacy get_event_loop().run_until_complete() that thread
    serves must still run on the worker loop, not raise "There is no current
    event loop in thread 'oneloop-wsgi-N'"."""
    server = serve(
        "one_loop.legacy_app:app", "--no-access-log", "--threads", "2", env=app_env(services)
    )
    # two at once, 0.3 s each: one in each of the 2 WSGI threads
    both = hammer(
        lambda c, i: c.get(server.url + "/asyncio-run", params={"s": "0.3"}), n=2, concurrency=2
    )
    assert_all(both)
    assert len({r.json["thread"] for r in both}) == 2, both

    results = hammer(lambda c, i: c.get(server.url + "/legacy"), n=208)
    failed = [r for r in results if r.status != 200]
    assert not failed, (
        f"{len(failed)} of {len(results)} legacy requests failed after asyncio.run(); "
        f"log: {[line for line in server.log().splitlines() if 'RuntimeError' in line][:2]}"
    )
    assert {r.json["loop"] for r in results} == {results[0].json["import_loop"]}
    finish(server, "There is no current event loop")


def test_run_coroutine_and_async_to_sync_from_sync_views(serve, services):
    server = serve("one_loop.legacy_app:app", "--no-access-log", env=app_env(services))

    def call(c: httpx.Client, i: int) -> httpx.Response:
        path = "/run-coroutine" if i % 2 else "/async-to-sync"
        return c.get(server.url + path, params={"n": i})

    results = hammer(call, n=224)
    assert_all(results)
    for r in results:
        tag = "run_coroutine" if r.i % 2 else "async_to_sync"
        # the ContextVar the coroutine set (from flask.request's args) is visible after
        assert r.json["seen"] == f"{tag}:{r.i}", r
        assert r.json["cluster"] == "oneloop-stub"
        assert r.json["loop_thread"] != r.json["thread"]
    loops = {r.json["loop"] for r in results}
    assert len(loops) == 1

    with httpx.Client(timeout=10, verify=False) as c:
        error = c.get(server.url + "/run-coroutine-error").json()
        t = time.perf_counter()
        timeout = c.get(server.url + "/run-coroutine-timeout").json()
        took = time.perf_counter() - t
    assert error["error"] == "from the loop"
    assert error["frames"][-1] == "fail"  # the coroutine's frame is in the traceback
    # run_coroutine(timeout=...) cancels the coroutine and raises TimeoutError
    # (docs/one-loop.md, "Cancellation")
    assert timeout == {"raised": "TimeoutError", "cancelled": True}
    assert took < 1.5
    report(f"run_coroutine/async_to_sync: {timings(results)} on loop {loops}; error {error}")
    finish(server)


# ---------------------------------------------------------------------------
# the supported range: the oldest Flask and asgiref and the newest


OLDEST_STACK_DIR = Path(__file__).parents[2] / "build" / "compat" / "oldest"
OLDEST_STACK = {"flask": "2.2.5", "asgiref": "3.6.0"}  # scripts/install-deps.sh


def stack_env(stack: str) -> dict:
    if stack == "newest":
        return {}
    assert OLDEST_STACK_DIR.is_dir(), "scripts/install-deps.sh installs the oldest stack"
    return {"PYTHONPATH": str(OLDEST_STACK_DIR)}


def expected_stack(stack: str) -> dict:
    from importlib.metadata import version

    if stack == "oldest":
        return OLDEST_STACK
    return {"flask": version("flask"), "asgiref": version("asgiref")}


@pytest.mark.parametrize("stack", ["oldest", "newest"])
def test_oldest_and_newest_supported_flask_and_asgiref(serve, services, tmp_path, stack):
    """Flask's async_to_sync override and asgiref's threadlocal both land on
    the worker loop at each end of the supported range."""
    env = app_env(services, HOOKS_LOG=str(tmp_path / "hooks.log"), **stack_env(stack))
    seen_loops = {}
    for app, paths in [
        ("es_app", ["/"]),
        ("hooks_app", ["/view", "/boom", "/items/3"]),
        ("legacy_app", ["/asgiref", "/async-to-sync"]),
    ]:
        server = serve(f"one_loop.{app}:app", "--no-access-log", env=env)
        assert httpx.get(server.url + "/_stack").json() == expected_stack(stack)
        results = hammer(lambda c, i, u=server.url, p=paths: c.get(u + p[i % len(p)]), n=210)
        boom = [r for r in results if r.i % len(paths) == 1 and app == "hooks_app"]
        assert_all([r for r in results if r not in boom])
        assert all(r.status == 500 and r.json["error"] == "RuntimeError" for r in boom)
        loops = set()
        for r in results:
            if app == "hooks_app":
                loops |= {str(r.json["loop"]), r.headers["x-loop-before"]}
                loops |= {r.headers["x-loop-after"], r.headers["x-import-loop"]}
            elif app == "legacy_app":
                tag = "asgiref" if r.i % 2 == 0 else "async_to_sync"
                assert r.json["seen"] == f"{tag}:None", r  # context changes flow back
                loops.add(str(r.json["loop"]))
        assert len(loops) <= 1, loops
        seen_loops[app] = loops
        finish(server, tracebacks=len(boom))
    report(f"{stack} stack {expected_stack(stack)}: 3 apps x 210 requests; loops {seen_loops}")


# ---------------------------------------------------------------------------
# 10. on_startup / on_shutdown


def test_on_startup_and_on_shutdown_manage_a_session(serve, services, tmp_path):
    marker = tmp_path / "lifecycle"
    server = serve(
        "one_loop.lifecycle_app:app",
        "--no-access-log",
        env=app_env(services, LIFECYCLE_MARKER=str(marker)),
    )
    (started,) = lines(marker)
    startup_loop = int(started.split()[1])

    results = hammer(lambda c, i: c.get(server.url + "/"), n=224)
    assert_all(results)
    assert {r.json["loop"] for r in results} == {startup_loop}
    assert {r.json["upstream"] for r in results} == {"a"}

    log = finish(server, "Unclosed client session", "Unclosed connector", "Task was destroyed")
    assert lines(marker) == [started, f"closed {startup_loop} True"], log
    report(
        f"on_startup/on_shutdown: session opened and closed on loop {startup_loop}; "
        f"{timings(results)}; stderr clean after SIGTERM"
    )


# ---------------------------------------------------------------------------
# 11. the watchdog


STALL = "The event loop has been blocked for"


def test_watchdog_warns_once_naming_the_blocking_view(serve):
    server = serve("one_loop.mixed_app:app", "--no-access-log")
    results = hammer(lambda c, i: c.get(server.url + "/fast-async"), n=224)
    assert_all(results)
    with httpx.Client(timeout=10, verify=False) as c:
        assert c.get(server.url + "/wait").text == "waited"  # 1.2 s, but awaiting
        time.sleep(0.3)
        assert STALL not in server.log(), server.log()

        t = time.perf_counter()
        assert c.get(server.url + "/block").text == "blocked"
        took = time.perf_counter() - t
    time.sleep(0.5)
    log = server.log()
    warnings = [line for line in log.splitlines() if STALL in line]
    assert len(warnings) == 1, log
    (warning,) = warnings
    assert "[WARNING]" in warning
    assert "'block'" in warning and "serving GET /block" in warning, warning
    seconds = float(re.search(STALL + r" ([0-9.]+)s", warning).group(1))
    assert 0.5 <= seconds < 1.2, warning
    assert "time.sleep(1.2)" in log  # the loop thread's stack points at the culprit
    # ... and begins with the app's frame, not with the worker's machinery
    stack = log.split("Loop thread:\n", 1)[1].splitlines()
    import oneloop

    machinery = (os.path.dirname(oneloop.__file__), "/asyncio/", "threading.py")
    assert not any(x in stack[0] for x in machinery), stack
    report(f"watchdog: /block took {took:.2f}s; one warning: {warning.strip()}")
    finish(server)


# ---------------------------------------------------------------------------
# 12. a slow upload read in an async view does not block the loop


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_slow_upload_to_async_view_does_not_block_other_async_views(serve, framing):
    server = serve("one_loop.mixed_app:app", "--no-access-log")
    body = os.urandom(200 * 1024)
    piece = 4096
    sent = threading.Event()
    upload: dict = {}

    def uploader() -> None:
        with connect(server, timeout=10) as c:
            head = (
                "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\n"
            )
            if framing == "chunked":
                head += "Transfer-Encoding: chunked\r\n\r\n"
            else:
                head += f"Content-Length: {len(body)}\r\n\r\n"
            c.send(head.encode())
            upload["start"] = time.perf_counter()
            for i in range(0, len(body), piece):
                data = body[i : i + piece]
                if framing == "chunked":
                    data = b"%x\r\n%s\r\n" % (len(data), data)
                c.send(data)
                time.sleep(0.02)
            if framing == "chunked":
                c.send(b"0\r\n\r\n")
            upload["sent"] = time.perf_counter()
            sent.set()
            upload["response"] = c.response()

    thread = threading.Thread(target=uploader)
    thread.start()
    time.sleep(0.15)  # the upload is under way: the view's thread waits for the body
    results: list[Result] = []
    while not sent.is_set():
        results += hammer(lambda c, i: c.get(server.url + "/fast-async"), n=32)
    thread.join(15)
    assert len(results) >= 200
    assert_all(results)
    during = [r for r in results if r.started + r.elapsed < upload["sent"]]
    assert len(during) >= 200, len(during)
    assert max(r.elapsed for r in results) < 0.25, timings(results)
    status, _, raw = upload["response"]
    assert status == 200, raw
    answer = json.loads(raw)
    assert answer == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    report(
        f"slow upload ({framing}, {len(body)} bytes over "
        f"{upload['sent'] - upload['start']:.2f}s): {len(during)} async requests during it, "
        f"{timings(results)}"
    )
    finish(server, STALL)


# ---------------------------------------------------------------------------
# the README's example


def test_readme_example_serves_every_request_on_one_loop(serve):
    examples = Path(__file__).parents[2] / "examples"
    server = serve("flask_async:app", "--no-access-log", "--app-dir", str(examples))
    results = hammer(lambda c, i: c.get(server.url + "/"), n=200)
    assert_all(results)
    assert all(r.json["upstream"] == [{"answer": 42}] * 2 for r in results)
    assert len({r.json["loop"] for r in results}) == 1
    finish(server)


@pytest.mark.parametrize("app", ["modules_app:app", "modules_app:wsgi"])
def test_a_worker_imports_flask_only_when_the_app_does(serve, app):
    """Flask is installed here; an app that does not use it must not pay
    for importing it (a stall at boot under load, memory in every worker)."""
    server = serve(app, "--log-level", "debug")
    assert httpx.get(server.url + "/").json() == {"flask": False, "django": False}
    server.wait_log("Flask async views: not used by the app")
