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
  worker loop, instead of raising "There is no current event loop" (or
  returning a loop an ``asyncio.run()`` closed).

While a WSGI thread waits for a coroutine it runs the sync work that
asgiref's thread-sensitive ``sync_to_async`` hands back to it, as it would
under asgiref's own ``async_to_sync``: blocking code deferred by concurrent
async views runs in their requests' threads, in parallel, not in one
thread for the whole worker.

At start-up the worker checks from a WSGI-like thread that each installed
route really lands on its loop and logs a warning naming the versions if a
library defeats it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from . import _core
from .logs import error_log

T = TypeVar("T")

_server: Any = None  # the running worker's _core.Server
_loop: asyncio.AbstractEventLoop | None = None
_asgiref_sync: Any = None  # asgiref.sync, when installed
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


class LoopExecutor(concurrent.futures.Executor):
    """asgiref's executor for the worker loop (``AsyncToSync.loop_thread_executors``).

    Thread-sensitive ``sync_to_async`` without an asgiref caller above it
    uses the executor registered for its loop -- the one asgiref itself
    registers for the loop it runs in a new thread. Here it sends the work
    to the WSGI thread whose coroutine (or a task it spawned) asks: the
    bridge names that thread's ``_core.ThreadExecutor`` in the coroutine's
    context, and the thread runs the work while it waits (as under asgiref's
    own ``async_to_sync``). Code with no such thread (startup hooks, ASGI,
    a task that outlived the call that spawned it) gets asgiref's default,
    its single shared thread.
    """

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        executor = _core.request_executor.get(None)
        future = executor.submit(fn, *args, **kwargs) if executor is not None else None
        if future is None:  # no thread waits for this coroutine (any more)
            future = _asgiref_sync.SyncToAsync.single_thread_executor.submit(fn, *args, **kwargs)
        return future


_threads = threading.local()


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


def _flask_async_to_sync(
    self: Any, func: Callable[..., Coroutine[Any, Any, Any]]
) -> Callable[..., Any]:
    """Flask.async_to_sync for oneloop workers: run on the worker loop.

    Flask calls this once per view call, so it stays a bare closure (no
    functools.wraps: Flask uses the result once and drops it)."""
    server = _server

    def run(*args: Any, **kwargs: Any) -> Any:
        if server is None:
            return run_coroutine(func(*args, **kwargs))
        return server.run_coroutine(func(*args, **kwargs))

    return run


_flask_async_to_sync.__oneloop__ = True  # type: ignore[attr-defined]


def install_flask() -> str:
    """Patch Flask.async_to_sync unless someone else did. Returns a status.

    Only when the app imported Flask (the worker imports the app first): a
    Django or ASGI app's worker must not pay for importing Flask because it
    happens to be installed (nor stall its loop doing so under load)."""
    flask = sys.modules.get("flask")
    if flask is None:
        return "not used by the app (flask is not imported)"
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
    _threads.inherited_loop = _own_loop(_event_loop_policy())
    _threads.bridged = True


def release_thread() -> None:
    """Undo prepare_thread() (oneloop.testing, for the test's own thread)."""
    _threads.bridged = False


def install(server: Any, loop: asyncio.AbstractEventLoop, wsgi: bool = True) -> None:
    """Route async calls to `loop`; `wsgi`: its threads serve a WSGI app and
    take back the sync work their coroutines defer."""
    global _server, _loop, _asgiref_sync
    _server, _loop = server, loop
    status = install_flask()
    error_log.debug("Flask async views: %s", status)
    _install_get_event_loop()
    try:
        import asgiref.sync
    except ImportError:
        return
    if wsgi:
        _asgiref_sync = asgiref.sync
        asgiref.sync.AsyncToSync.loop_thread_executors[loop] = LoopExecutor()


def uninstall() -> None:
    global _server, _loop, _asgiref_sync
    if _asgiref_sync is not None and _loop is not None:
        _asgiref_sync.AsyncToSync.loop_thread_executors.pop(_loop, None)
    _server, _loop, _asgiref_sync = None, None, None
    _uninstall_get_event_loop()


async def self_test(loop: asyncio.AbstractEventLoop) -> list[str]:
    """From a thread set up like a WSGI thread, check that each route runs a
    coroutine on `loop`. Returns warnings (empty when all is well)."""

    async def probe() -> int:
        return id(asyncio.get_running_loop())

    def check() -> list[str]:
        prepare_thread(loop)
        problems = []
        routes: list[tuple[str, Callable[[], int]]] = [
            ("oneloop.run_coroutine", lambda: run_coroutine(probe()))
        ]
        flask = sys.modules.get("flask")
        if flask is not None and getattr(
            flask.Flask.__dict__.get("async_to_sync"), "__oneloop__", False
        ):
            routes.append(("Flask async views", lambda: flask.Flask.async_to_sync(None, probe)()))
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

_patched_policy: Any = None


def _event_loop_policy() -> Any:
    # asyncio.get_event_loop_policy() warns from Python 3.14 on; the private
    # accessor it wraps does not.
    getter = (
        getattr(asyncio.events, "_get_event_loop_policy", None) or asyncio.get_event_loop_policy
    )
    return getter()


def _install_get_event_loop() -> None:
    """Make asyncio.get_event_loop() in bridged threads return the
    ThreadLoop stand-in when the thread has no usable loop of its own.

    The policy's method is shadowed on the instance, not replaced with a new
    policy: the main thread's loop and a custom policy (uvloop's) stay."""
    global _patched_policy
    _uninstall_get_event_loop()
    policy = _event_loop_policy()
    original = policy.get_event_loop

    def get_event_loop() -> asyncio.AbstractEventLoop:
        if not getattr(_threads, "bridged", False):
            return original()
        # A loop the thread's code set for itself, if still usable (the one
        # an asyncio.run() in a view closed and unset is not; one set before
        # the thread was bridged, by a test runner say, is not its code's).
        loop = _own_loop(policy)
        if loop is None or loop.is_closed() or loop is _threads.inherited_loop:
            return _THREAD_LOOP
        return loop

    policy.get_event_loop = get_event_loop
    _patched_policy = policy


def _own_loop(policy: Any) -> asyncio.AbstractEventLoop | None:
    """The loop set in this thread with set_event_loop(), if any. Read
    without get_event_loop(), which may create one or warn."""
    return getattr(getattr(policy, "_local", None), "_loop", None)


def _uninstall_get_event_loop() -> None:
    global _patched_policy
    if _patched_policy is not None:
        vars(_patched_policy).pop("get_event_loop", None)
        _patched_policy = None


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
_THREAD_LOOP = ThreadLoop()
