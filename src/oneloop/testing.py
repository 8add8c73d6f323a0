"""Testing apps that keep async clients across requests.

Flask's ``app.test_client()`` runs async views through the same
new-loop-per-call path as any WSGI server, so the tests of an app with a
module-level async client fail from the second request on. Two helpers:

``one_loop()``
    A context manager: for its duration every async call made through
    Flask's ``ensure_sync``, asgiref's ``async_to_sync``,
    ``oneloop.run_coroutine`` or legacy ``get_event_loop().run_until_complete``
    runs on one event loop kept in a background thread -- as in a oneloop
    worker -- so ``app.test_client()`` works with such apps::

        from oneloop.testing import one_loop

        def test_index():
            with one_loop():
                client = app.test_client()
                assert client.get("/").status_code == 200
                assert client.get("/").status_code == 200  # same loop, still works

``serve(app, **options)``
    A context manager that runs the real server on a free loopback port in a
    subprocess and yields its base URL, for end-to-end tests::

        with serve("myapp:app", threads=4) as url:
            assert httpx.get(url + "/").status_code == 200

Installed as a pytest plugin, oneloop also provides the fixtures
``oneloop_loop`` (``one_loop()`` around the test) and ``oneloop_serve``
(a factory for ``serve``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from . import _core, bridge


class _ThreadedLoop:
    """The stand-in for a worker's core: run_coroutine() on a loop thread,
    with the same semantics as the C bridge (context copied in and back,
    the executor's work run while waiting, TimeoutError after `timeout`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread_id: int) -> None:
        self.loop = loop
        # The loop's thread as one_loop() recorded it: asyncio's private
        # loop._thread_id is not there on other loops (uvloop's Loop).
        self.thread_id = thread_id

    def run_coroutine(self, coro: Any, timeout: float | None = None) -> Any:
        if threading.get_ident() == self.thread_id:
            if hasattr(coro, "close"):
                coro.close()  # never awaited: no RuntimeWarning when collected
            raise RuntimeError(
                "run_coroutine() called on the event loop thread: await the coroutine instead"
            )
        executor = _core.thread_executor()
        context = contextvars.copy_context()
        context.run(_core.request_executor.set, executor)
        started: list[asyncio.Task] = []
        executor.open()
        try:
            return self._wait(coro, context, started, executor, timeout)
        finally:
            executor.close()
            for var, value in context.items():
                if var is not _core.request_executor and var.get(_MISSING) is not value:
                    var.set(value)

    def _wait(
        self, coro: Any, context: contextvars.Context, started: list, executor: Any, timeout: Any
    ) -> Any:
        future = asyncio.run_coroutine_threadsafe(_in_context(coro, context, started), self.loop)
        future.add_done_callback(lambda _: os.eventfd_write(executor.fd, 1))
        poller = select.poll()
        poller.register(executor.fd, select.POLLIN)
        deadline = time.monotonic() + timeout if timeout else None
        timed_out = False
        while not future.done():
            left = None if deadline is None or timed_out else max(0.0, deadline - time.monotonic())
            if not poller.poll(None if left is None else left * 1000 + 1):
                timed_out = True  # cancel; then wait for the coroutine to unwind
                self.loop.call_soon_threadsafe(_cancel, started, future)
                continue
            os.eventfd_read(executor.fd)
            executor.run_pending()
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if timed_out:
                raise TimeoutError("the async call was cancelled after its timeout") from None
            raise asyncio.CancelledError() from None


async def _in_context(coro: Any, context: contextvars.Context, started: list) -> Any:
    """Await coro in `context` (a task made by run_coroutine_threadsafe
    runs in a copy of the loop thread's), in a task put in `started`."""
    task = asyncio.get_running_loop().create_task(coro, context=context)
    started.append(task)
    return await task


def _cancel(started: list, future: concurrent.futures.Future) -> None:
    """On the loop: cancel the coroutine's own task, so that the future the
    caller waits on ends only once the coroutine has unwound (cancelling the
    future would mark it done at once), or the future if it never started."""
    if started:
        started[0].cancel()
    else:
        future.cancel()


_MISSING = object()


@contextlib.contextmanager
def one_loop(loop_factory: Any = None) -> Iterator[asyncio.AbstractEventLoop]:
    """Run the async calls of WSGI code on one loop for the duration (see module doc)."""
    if bridge._server is not None:
        raise RuntimeError("one_loop() inside a oneloop worker or another one_loop()")
    loop = (loop_factory or asyncio.new_event_loop)()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    thread = threading.Thread(target=run, name="oneloop-test-loop", daemon=True)
    thread.start()
    ready.wait()
    assert thread.ident is not None
    previous_flask = _flask_async_to_sync()
    try:
        bridge.install(_ThreadedLoop(loop, thread.ident), loop)
        saved = _thread_state()
        bridge.prepare_thread(loop)
        asyncio.run_coroutine_threadsafe(bridge.run_startup(), loop).result()
        try:
            yield loop
        finally:
            asyncio.run_coroutine_threadsafe(bridge.run_shutdown(), loop).result()
            _restore_thread_state(saved)
    finally:
        bridge.uninstall()
        _restore_flask(previous_flask)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _flask_async_to_sync() -> Any:
    try:
        import flask
    except ImportError:
        return None
    return flask.Flask.__dict__.get("async_to_sync")


def _restore_flask(previous: Any) -> None:
    if previous is None:
        return
    import flask

    flask.Flask.async_to_sync = previous  # type: ignore[method-assign]


def _thread_state() -> Any:
    """The asgiref thread-local prepare_thread() changes, to restore."""
    try:
        from asgiref.sync import SyncToAsync
    except ImportError:
        return None
    local = SyncToAsync.threadlocal
    return getattr(local, "main_event_loop", None), getattr(local, "main_event_loop_pid", None)


def _restore_thread_state(saved_asgiref: Any) -> None:
    bridge.release_thread()
    if saved_asgiref is not None:
        from asgiref.sync import SyncToAsync

        SyncToAsync.threadlocal.main_event_loop = saved_asgiref[0]
        SyncToAsync.threadlocal.main_event_loop_pid = saved_asgiref[1]


# -- the real server, for end-to-end tests -------------------------------


@contextlib.contextmanager
def serve(
    app: str, *, host: str = "127.0.0.1", ready_timeout: float = 30.0, **options: Any
) -> Iterator[str]:
    """Run `oneloop app` on a free port of `host`; yield its base URL.

    `app` is an import string ("module:attr"). Options are those of the
    command line, with underscores (``threads=4``, ``access_log=False``).
    """
    if not isinstance(app, str):
        raise TypeError(
            'serve() runs the app in a subprocess: pass an import string, "module:attr"'
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    args = [sys.executable, "-m", "oneloop", "--fd", str(sock.fileno())]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is False:
            args.append("--no-" + name.replace("_", "-"))
        else:
            args += [flag, str(value)]
    args.append(app)
    proc = subprocess.Popen(
        args, pass_fds=[sock.fileno()], env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    sock.close()
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    try:
        _wait_until_serving(host, port, proc, ready_timeout)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_serving(host: str, port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"oneloop exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1) as s:
            s.sendall(request)
            if s.recv(12).startswith(b"HTTP/1."):
                return
        time.sleep(0.05)
    raise RuntimeError(f"oneloop did not answer on {host}:{port} within {timeout}s")
