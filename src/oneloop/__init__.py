"""oneloop: an HTTP server for WSGI and ASGI apps with a C core and one
long-lived event loop per worker that all of its async code runs on."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "ClientDisconnected",
    "async_to_sync",
    "on_shutdown",
    "on_startup",
    "run",
    "run_coroutine",
]


def run(app: Any, **options: Any) -> int:
    """Serve `app` (an object, or "module:attr") until SIGTERM/SIGINT.

    Options are those of the command line, with underscores:
    ``oneloop.run(app, port=9000, threads=32, access_log=False)``.
    """
    from .config import build
    from .worker import run_config

    return run_config(build({"app": app, **options}))


_BRIDGE = {"async_to_sync", "on_shutdown", "on_startup", "run_coroutine"}


def __getattr__(name: str) -> Any:
    if name == "ClientDisconnected":
        from ._core import ClientDisconnected

        return ClientDisconnected
    if name in _BRIDGE:
        from . import bridge

        return getattr(bridge, name)
    raise AttributeError(name)
