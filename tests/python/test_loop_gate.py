"""The gated asyncio loop (oneloop.loops, src/core/gate.c): a WSGI thread
that needs a coroutine run while the loop's thread sleeps runs the first step
itself, as the loop's thread, instead of paying two thread switches.

Proven over real sockets: where each part of a call runs (request thread for
the first step, loop thread after a real wait, always the worker's loop and
a task), that work a first step leaves for the loop runs at once (the loop's
thread is woken, not left asleep until its next timer), that asyncio's debug
mode sees no foreign-thread use, and that uvloop -- which cannot be gated --
keeps every step on the loop's thread.
"""

from __future__ import annotations

import statistics
import sys
from collections import Counter

import httpx
import pytest
from conftest import APPS

sys.path.insert(0, str(APPS))

from one_loop.load import assert_all, hammer, timings

APP = "one_loop.gate_app:app"
LOOP_THREAD = "MainThread"


def report(text: str) -> None:
    print(f"\n[loop-gate] {text}", flush=True)


def finish(server) -> str:
    assert server.stop() == 0, server.log()
    log = server.log() + server.out()
    for sign in ("Traceback", "[ERROR]", "one loop:", "Non-thread-safe"):
        assert sign not in log, f"{sign!r} in server log:\n{log[-5000:]}"
    return log


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_where_a_first_step_runs(serve, loop):
    server = serve(APP, "--no-access-log", "--loop", loop)
    results = hammer(lambda c, i: c.get(server.url + "/first-step"), n=224)
    assert_all(results)
    places = Counter()
    for r in results:
        body = r.json
        assert body["path"] == "/first-step"  # flask.request inside the coroutine
        for step in (body["hook"], body["view"]):
            assert step["loop"] == body["import_loop"] and step["task"], body
            places[
                "request thread" if step["thread"] == body["wsgi_thread"] else step["thread"]
            ] += 1
    report(f"--loop {loop}: first steps ran in {dict(places)}; {timings(results)}")
    if loop == "uvloop":
        assert places == {LOOP_THREAD: 2 * len(results)}
    else:
        # The gate is shut while another thread runs a step or the loop's
        # thread is awake; such calls take the loop's thread, as under uvloop.
        assert places["request thread"] >= len(results), places
        assert set(places) <= {"request thread", LOOP_THREAD}, places
    finish(server)


def test_after_a_real_wait_the_loop_thread_resumes(serve):
    server = serve(APP, "--no-access-log", "--loop", "asyncio")
    results = hammer(lambda c, i: c.get(server.url + "/after-wait"), n=224)
    assert_all(results)
    before = Counter(r.json["before"]["thread"] == r.json["wsgi_thread"] for r in results)
    assert all(r.json["after"]["thread"] == LOOP_THREAD for r in results)
    assert all(r.json["before"]["loop"] == r.json["after"]["loop"] for r in results)
    assert all(r.json["after"]["task"] for r in results)
    assert before[True] >= len(results) // 2, before
    report(f"/after-wait: first step in the request thread {before[True]}/{len(results)}")
    finish(server)


@pytest.mark.parametrize("path", ["/leave-work", "/timer"])
def test_work_a_first_step_leaves_runs_without_delay(serve, path):
    """Without waking the loop's thread, a callback or timer added by a step
    run elsewhere would wait for the loop's next wake-up (its 100 ms beat)."""
    server = serve(APP, "--no-access-log", "--loop", "asyncio")
    # One client: no other request's events wake the loop's thread by chance.
    results = hammer(lambda c, i: c.get(server.url + path), n=60, concurrency=1)
    assert_all(results)
    took = sorted(r.json["took"] for r in results)
    median = statistics.median(took)
    report(f"{path}: in-app median {median * 1000:.1f} ms, max {took[-1] * 1000:.1f} ms")
    floor = 0.01 if path == "/timer" else 0.0
    assert median < floor + 0.02, took
    assert took[int(len(took) * 0.9)] < floor + 0.03, took
    finish(server)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_sync_call_inside_async_code_is_refused_not_deadlocked(serve, loop):
    """The refused coroutine is closed: with warnings as errors, an unclosed
    one would log 'coroutine ... was never awaited' when collected."""
    server = serve(
        APP, "--no-access-log", "--loop", loop, env={"PYTHONWARNINGS": "error::RuntimeWarning"}
    )
    with httpx.Client(timeout=10) as c:
        for _ in range(20):
            error = c.get(server.url + "/nested").json()["error"]
            assert error and "event loop thread" in error, error
    log = finish(server)
    assert "never awaited" not in log and "RuntimeWarning" not in log, log[-3000:]


def test_asyncio_debug_mode_sees_one_thread_at_a_time(serve):
    server = serve(APP, "--no-access-log", "--loop", "asyncio", env={"PYTHONASYNCIODEBUG": "1"})
    for path in ("/first-step", "/after-wait", "/timer", "/leave-work"):
        assert_all(hammer(lambda c, i, path=path: c.get(server.url + path), n=224))
    finish(server)
