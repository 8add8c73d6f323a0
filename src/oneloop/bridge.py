"""One loop for WSGI apps: every async call WSGI code makes runs on the
worker's event loop.

Three routes lead there, all installed when a worker starts:

* Flask: ``Flask.async_to_sync`` -- the documented override point that
  ``ensure_sync`` uses for async views, before/after_request, errorhandler,
  teardown functions, class-based views and async signal receivers -- is
  replaced by :func:`async_to_sync`, which hands the coroutine to the loop
  through the C bridge (fast; a client that hangs up cancels the view). An
  override of the user's own (a Flask subclass, or a patch made before) is
  left alone.
* asgiref: its ``async_to_sync`` (Django's async views and middleware
  under WSGI, any library) looks for a running loop in the thread-local
  ``SyncToAsync.threadlocal.main_event_loop``; each WSGI thread sets it to
  the worker loop, so asgiref runs coroutines there with its own
  machinery (context propagation and thread-sensitive sync_to_async
  included).
* Legacy code: ``asyncio.get_event_loop()`` in a WSGI thread returns a
  stand-in whose ``run_until_complete(coro)`` runs the coroutine on the
  worker loop, instead of raising "There is no current event loop".

At start-up the worker checks from a WSGI-like thread that each installed
route really lands on its loop and logs a warning naming the versions if a
library defeats it.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .logs import error_log

T = TypeVar("T")

_server: Any = None  # the running worker's _core.Server
_loop: asyncio.AbstractEventLoop | None = None
_startup: list[Callable[[], Awaitable[Any]]] = []
_shutdown: list[Callable[[], Awaitable[Any]]] = []


# -- the public helpers ---------------------------------------------------


def run_coroutine(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the worker's event loop and return its result.

    For code running in a WSGI thread (a sync view, a library): the
    coroutine runs in a copy of the calling thread's context (so
    ``flask.request`` and ``g`` work inside), its exceptions propagate with
    their traceback, and context variables it sets are visible afterwards.
    If the client of the current request hangs up, or ``timeout`` seconds
    pass (default: --timeout-async), the coroutine is cancelled and
    ``asyncio.CancelledError`` is raised here once it has unwound.
    """
    server = _server
    if server is None:
        if hasattr(coro, "close"):
            coro.close()
        raise RuntimeError(
            "oneloop.run_coroutine() needs a running oneloop worker "
            "(in tests, use oneloop.testing.one_loop())"
        )
    return server.run_coroutine(coro, timeout)


def async_to_sync(func: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """A sync function that runs the coroutine function on the worker loop."""

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> T:
        return run_coroutine(func(*args, **kwargs))

    return run


def on_startup(func: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    """Register a coroutine function to run on the worker loop before it serves.

    The place to create or warm up async clients::

        @oneloop.on_startup
        async def connect():
            await es.info()
    """
    _startup.append(func)
    return func


def on_shutdown(func: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    """Register a coroutine function to run on the worker loop after the last
    request, before the worker exits (e.g. ``await session.close()``)."""
    _shutdown.append(func)
    return func


async def run_startup() -> None:
    for func in list(_startup):
        await func()


async def run_shutdown() -> None:
    for func in list(_shutdown):
        try:
            await func()
        except Exception:
            error_log.exception("oneloop.on_shutdown hook %r failed", func)


# -- installing the routes -------------------------------------------------


def _flask_async_to_sync(self: Any, func: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    """Flask.async_to_sync for oneloop workers: run on the worker loop.

    Flask calls this once per view call, so it stays a bare closure (no
    functools.wraps: Flask uses the result once and drops it)."""
    server = _server

    def run(*args: Any, **kwargs: Any) -> Any:
        if server is None:
            return run_coroutine(func(*args, **kwargs))
        return server.run_coroutine(func(*args, **kwargs), None)

    return run


_flask_async_to_sync.__oneloop__ = True  # type: ignore[attr-defined]


def install_flask() -> str:
    """Patch Flask.async_to_sync unless someone else did. Returns a status."""
    try:
        import flask
    except ImportError:
        return "flask not installed"
    current = flask.Flask.__dict__.get("async_to_sync")
    if current is None:
        return f"flask {_version('flask')} has no async_to_sync (needs Flask >= 2.0)"
    if getattr(current, "__oneloop__", False):
        return "installed"
    if getattr(current, "__module__", "") != "flask.app":
        return "left alone: Flask.async_to_sync was already replaced"
    flask.Flask.async_to_sync = _flask_async_to_sync  # type: ignore[method-assign]
    return "installed"


def prepare_thread(loop: asyncio.AbstractEventLoop) -> None:
    """Run in each WSGI thread before it serves: asgiref and asyncio find the
    worker loop from here."""
    try:
        from asgiref.sync import SyncToAsync
    except ImportError:
        pass
    else:
        SyncToAsync.threadlocal.main_event_loop = loop
        SyncToAsync.threadlocal.main_event_loop_pid = os.getpid()
    asyncio.set_event_loop(ThreadLoop())


def install(server: Any, loop: asyncio.AbstractEventLoop) -> None:
    global _server, _loop
    _server, _loop = server, loop
    status = install_flask()
    error_log.debug("Flask async views: %s", status)


def uninstall() -> None:
    global _server, _loop
    _server, _loop = None, None


async def self_test(loop: asyncio.AbstractEventLoop) -> list[str]:
    """From a thread set up like a WSGI thread, check that each route runs a
    coroutine on `loop`. Returns warnings (empty when all is well)."""

    async def probe() -> int:
        return id(asyncio.get_running_loop())

    def check() -> list[str]:
        prepare_thread(loop)
        problems = []
        routes: list[tuple[str, Callable[[], int]]] = [("oneloop.run_coroutine", lambda: run_coroutine(probe()))]
        try:
            import flask

            if getattr(flask.Flask.__dict__.get("async_to_sync"), "__oneloop__", False):
                routes.append(("Flask async views", lambda: flask.Flask.async_to_sync(None, probe)()))  # type: ignore[arg-type]
        except ImportError:
            pass
        try:
            from asgiref.sync import async_to_sync as asgiref_async_to_sync

            routes.append(("asgiref.async_to_sync", lambda: asgiref_async_to_sync(probe)()))
        except ImportError:
            pass
        for name, route in routes:
            try:
                landed = route()
            except Exception as exc:  # a broken route is reported, not fatal
                problems.append(f"{name} failed: {exc!r}")
                continue
            if landed != id(loop):
                problems.append(
                    f"{name} does not run on the worker's event loop "
                    f"(flask {_version('flask')}, asgiref {_version('asgiref')})"
                )
        return problems

    return await loop.run_in_executor(None, check)


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "?"


# -- legacy asyncio.get_event_loop() in WSGI threads ---------------------


class ThreadLoop(asyncio.AbstractEventLoop):
    """What ``asyncio.get_event_loop()`` returns in a oneloop WSGI thread.

    ``run_until_complete(coro)`` runs the coroutine on the worker's event
    loop (so clients created at import time keep working) and waits for it.
    Nothing else can be done with it: this thread runs no loop of its own.
    Prefer ``oneloop.run_coroutine(coro)`` or ``asgiref.sync.async_to_sync``.
    """

    def run_until_complete(self, future: Any) -> Any:
        if asyncio.iscoroutine(future):
            return run_coroutine(future)

        async def wait() -> Any:
            return await future

        return run_coroutine(wait())

    def is_running(self) -> bool:
        return False

    def is_closed(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_debug(self) -> bool:
        return False

    def time(self) -> float:
        return time.monotonic()

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if name.startswith("_") or name in _THREAD_LOOP_API:
            return value
        if callable(value):

            def unsupported(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError(
                    f"loop.{name}() on asyncio.get_event_loop() in a oneloop WSGI thread: this "
                    "thread runs no event loop (the worker's runs in another thread). Use "
                    "oneloop.run_coroutine(coro) or asgiref.sync.async_to_sync(fn) instead."
                )

            return unsupported
        return value


_THREAD_LOOP_API = {"run_until_complete", "is_running", "is_closed", "close", "get_debug", "time"}
