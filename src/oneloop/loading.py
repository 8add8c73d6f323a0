"""Finding the app: import MODULE:ATTRIBUTE, call factories, tell WSGI from ASGI."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from typing import Any


class AppLoadError(Exception):
    """The app could not be imported or is not a WSGI/ASGI callable.
    `details` is the traceback of the app's own code, when it raised."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details

    def report(self, limit: int = 3000) -> str:
        """The app's traceback (its last `limit` characters), then the
        one-line message: what a user needs to find the line that failed."""
        details = self.details
        if len(details) > limit:
            details = "...\n" + details[-limit:].partition("\n")[2]
        return f"{details}{self}"


# Frames that are not the app's: oneloop's, and the import machinery's.
_NOT_THE_APPS = (
    os.path.dirname(os.path.abspath(__file__)),
    os.path.dirname(os.path.abspath(importlib.__file__)),
    "<frozen importlib",
)


def _app_traceback(exc: BaseException) -> str:
    """The traceback as Python prints it, without the frames of oneloop and
    of the import machinery that led to the app's code."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith(_NOT_THE_APPS)
    ]
    lines = traceback.format_exception_only(exc)
    if frames:
        head = ["Traceback (most recent call last):\n"]
        lines = head + traceback.StackSummary.from_list(frames).format() + lines
    return "".join(lines)


def import_app(spec: Any, app_dir: str = ".", factory: bool = False) -> Any:
    """The object named by "module:attr" (attr may be dotted, or "factory()")."""
    if not isinstance(spec, str):
        return spec() if factory else spec
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise AppLoadError(f'app must be given as "MODULE:ATTRIBUTE", not {spec!r}')
    call = attr.endswith("()")
    if call:
        attr = attr[:-2]
    directory = os.path.abspath(app_dir)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            raise AppLoadError(f"cannot import module {module_name!r}: {exc}") from exc
        raise AppLoadError(
            f"importing {module_name!r} failed: {exc!r}", _app_traceback(exc)
        ) from exc
    except Exception as exc:
        raise AppLoadError(
            f"importing {module_name!r} failed: {exc!r}", _app_traceback(exc)
        ) from exc
    obj: Any = module
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise AppLoadError(f"module {module_name!r} has no attribute {attr!r}") from None
    if factory or call:
        try:
            obj = obj()
        except Exception as exc:
            raise AppLoadError(
                f"calling the app factory {spec!r} failed: {exc!r}", _app_traceback(exc)
            ) from exc
    if not callable(obj):
        raise AppLoadError(f"{spec!r} is not callable (it is {type(obj).__name__})")
    return obj


def _is_async(fn: Any) -> bool:
    """A coroutine function, or an object whose class has an async __call__."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = inspect.getattr_static(type(fn), "__call__", None)
    return not inspect.isroutine(fn) and inspect.iscoroutinefunction(call)


def _positional_params(fn: Any) -> int | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    count = 0
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            count += 1
        elif p.kind is p.VAR_POSITIONAL:
            return None
    return count


def detect_interface(app: Any, requested: str = "auto") -> str:
    """'wsgi', 'asgi3' or 'asgi2' for an app.

    ASGI 3 apps are coroutine functions (or objects with an async __call__)
    taking (scope, receive, send). ASGI 2 apps are callables of (scope) that
    return such a coroutine function -- typically classes. WSGI apps are
    plain callables of (environ, start_response): Flask, Django's
    WSGIHandler and the like.
    """
    if requested in ("wsgi", "asgi2", "asgi3"):
        return requested
    if requested == "asgi":
        return "asgi2" if _looks_asgi2(app) else "asgi3"
    if inspect.isclass(app):
        # A class is called with the scope and its instance does the rest
        # (ASGI 2), unless instances are awaitable themselves (as uvicorn).
        return "asgi3" if hasattr(app, "__await__") else "asgi2"
    if _is_async(app):
        return "asgi3"
    params = _positional_params(app)
    if params == 2:
        return "wsgi"
    if params == 3:
        return "asgi3"
    if params == 1:
        return "asgi2"
    raise AppLoadError(
        "cannot tell whether the app is WSGI or ASGI; pass --interface wsgi|asgi3|asgi2"
    )


def _looks_asgi2(app: Any) -> bool:
    if inspect.isclass(app):
        return not hasattr(app, "__await__")
    if _is_async(app):
        return False
    return _positional_params(app) == 1
