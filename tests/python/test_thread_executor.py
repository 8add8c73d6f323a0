"""_core.ThreadExecutor (src/core/handback.c): the per-thread queue through
which the loop hands sync work back to a WSGI thread waiting for a
coroutine. The bridge drives it from C; these tests drive the same object
from Python, with real threads, to pin down its contract: one per thread,
work runs only in its owner and only while the owner waits, and nothing
queued is ever left hanging."""

from __future__ import annotations

import concurrent.futures
import os
import select
import threading

import pytest

from oneloop import _core


def in_thread(fn):
    """fn() run in a new thread; its result (or exception) returned here."""
    out = concurrent.futures.Future()

    def run():
        try:
            out.set_result(fn())
        except BaseException as exc:
            out.set_exception(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(10)
    return out.result(0)


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def drain(fd: int) -> None:
    while readable(fd):
        os.eventfd_read(fd)


def test_one_executor_per_thread():
    mine = _core.thread_executor()
    assert _core.thread_executor() is mine
    theirs = in_thread(_core.thread_executor)
    assert theirs is not mine and theirs.fd != mine.fd
    with pytest.raises(TypeError):
        _core.ThreadExecutor()


def test_refuses_work_while_its_thread_does_not_wait():
    executor = _core.thread_executor()
    ran = []
    assert in_thread(lambda: executor.submit(ran.append, 1)) is None
    executor.run_pending()
    assert ran == []  # nothing was queued


def test_runs_submitted_work_in_its_own_thread_while_open():
    executor = _core.thread_executor()
    drain(executor.fd)
    executor.open()
    try:

        def work(a, b, *, c):
            return (a, b, c, threading.get_ident())

        def failing():
            raise KeyError("from the work")

        ok, bad = in_thread(lambda: (executor.submit(work, 1, 2, c=3), executor.submit(failing)))
        assert readable(executor.fd)  # the waiting thread is woken
        assert not ok.done() and not bad.done()
        executor.run_pending()
        assert ok.result(0) == (1, 2, 3, threading.get_ident())
        with pytest.raises(KeyError, match="from the work"):
            bad.result(0)
    finally:
        executor.close()
    drain(executor.fd)


def test_nested_waits_keep_it_open_and_the_last_close_fails_leftovers():
    executor = _core.thread_executor()
    executor.open()
    executor.open()  # a call nested in work run while waiting
    executor.close()
    leftover = in_thread(lambda: executor.submit(lambda: "never run"))
    cancelled = in_thread(lambda: executor.submit(lambda: "never run either"))
    assert leftover is not None and cancelled is not None  # still open: queued
    assert cancelled.cancel()
    executor.close()
    with pytest.raises(RuntimeError, match="no longer waits"):
        leftover.result(0)
    assert cancelled.cancelled()
    assert in_thread(lambda: executor.submit(lambda: None)) is None
    with pytest.raises(RuntimeError, match=r"close\(\) without open\(\)"):
        executor.close()
    drain(executor.fd)


def test_submit_needs_a_callable_argument():
    executor = _core.thread_executor()
    with pytest.raises(TypeError):
        executor.submit()
