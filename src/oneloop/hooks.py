"""gunicorn's server hooks, from a --config file, called where gunicorn
calls them and with its arguments:

    on_starting(server)            supervisor, before the listeners are bound
    when_ready(server)             supervisor, once every worker serves
    on_reload(server)              supervisor, on HUP, before new workers start
    pre_fork(server, worker)       supervisor, before a worker is forked
    post_fork(server, worker)      the worker, right after the fork
    post_worker_init(worker)       the worker, once its app is loaded and it serves
    worker_int(worker)             the worker, on SIGINT or SIGQUIT (a fast stop)
    worker_abort(worker)           the worker, on SIGABRT: --timeout, before SIGKILL
    worker_exit(server, worker)    the worker, as it exits
    child_exit(server, worker)     supervisor, once a worker has exited
    nworkers_changed(server, new, old)   supervisor, when the target changes
    on_exit(server)                supervisor, before it exits

`server` is the supervisor (`.pid`, `.cfg`, `.log`, `.num_workers`);
`worker` a WorkerInfo (`.pid`, `.age`, `.cfg`, `.log`). A hook that raises
is logged with its name; in on_starting or when_ready it stops the server.
A coroutine hook is awaited: on the worker's loop for post_worker_init and
worker_exit, on a loop of its own elsewhere (no loop runs there).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .config import Config, ConfigError
from .logs import error_log

# Hooks whose failure stops the server: nothing has served yet.
FATAL = {"on_starting", "when_ready"}


class HookFailed(ConfigError):
    """A hook in FATAL raised: the server does not start."""


@dataclass
class WorkerInfo:
    """What a hook is told of a worker, as gunicorn's Worker tells it."""

    age: int  # the how-manieth worker the supervisor started
    cfg: Config
    pid: int | None = None
    log: Any = error_log


def call(config: Config, name: str, *args: Any) -> None:
    """Call hook `name` if the config has it, where no event loop runs (the
    supervisor; a worker before its loop): a coroutine hook runs on a loop
    of its own. Errors are logged (raised as HookFailed for FATAL ones)."""
    with _reported(name):
        result = _invoke(config, name, args)
        if inspect.isawaitable(result):
            _run_to_end(result)


async def call_on_loop(config: Config, name: str, *args: Any) -> None:
    """The same, on the worker's loop: a coroutine hook is awaited there."""
    with _reported(name):
        result = _invoke(config, name, args)
        if inspect.isawaitable(result):
            await result


def _invoke(config: Config, name: str, args: tuple) -> Any:
    hook = config.hooks.get(name)
    return None if hook is None else hook(*args)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _run_to_end(awaitable: Any) -> None:
    """Await a hook's coroutine on a loop of its own; in a thread of its own
    when this thread's loop is running but stuck (worker_abort is called
    from a signal handler while the worker's loop is wedged)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_awaited(awaitable))
        return
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(_awaited(awaitable))
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="oneloop-hook")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


@contextlib.contextmanager
def _reported(name: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        _failed(name, exc)


def _failed(name: str, exc: Exception) -> None:
    error_log.error("The %s hook failed: %r", name, exc, exc_info=exc)
    if name in FATAL:
        raise HookFailed(f"the {name} hook failed: {exc!r}") from exc


# -- the per-request hooks ------------------------------------------------------------


@dataclass
class RequestInfo:
    """gunicorn's `req`, as much as its hooks use: method, uri, path, query,
    version, headers as (NAME, value) pairs with upper-case names."""

    method: str
    uri: str
    path: str
    query: str
    version: tuple[int, int]
    headers: list[tuple[str, str]]


@dataclass
class ResponseInfo:
    """gunicorn's `resp` for post_request: the status line and headers sent."""

    status: str = ""
    headers: list = None  # type: ignore[assignment]

    @property
    def status_code(self) -> int:
        return int(self.status.split(" ", 1)[0]) if self.status else 0


def _wsgi_request(environ: dict) -> RequestInfo:
    headers = [(k[5:].replace("_", "-"), v) for k, v in environ.items() if k.startswith("HTTP_")]
    query = environ.get("QUERY_STRING", "")
    path = environ.get("PATH_INFO", "")
    major, minor = environ.get("SERVER_PROTOCOL", "HTTP/1.1")[5:].split(".")
    return RequestInfo(
        environ["REQUEST_METHOD"],
        path + ("?" + query if query else ""),
        path,
        query,
        (int(major), int(minor)),
        headers,
    )


def _asgi_request(scope: dict) -> RequestInfo:
    query = scope.get("query_string", b"").decode("latin-1")
    major, _, minor = scope.get("http_version", "1.1").partition(".")
    headers = [(k.decode("latin-1").upper(), v.decode("latin-1")) for k, v in scope["headers"]]
    return RequestInfo(
        scope["method"],
        scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        + ("?" + query if query else ""),
        scope["path"],
        query,
        (int(major), int(minor or 0)),
        headers,
    )


def wrap_app(app: Any, interface: str, config: Config, worker: Any) -> Any:
    """The app itself when no pre_request/post_request hook is set (the hot
    path stays as it is); else the app wrapped so that they run around each
    request: pre_request(worker, req) before it, post_request(worker, req,
    environ, resp) once the response is complete (ASGI: `environ` is the
    scope). Their cost is theirs plus a wrapper call per request, and, for
    WSGI, the body wrapped (wsgi.file_wrapper's sendfile is lost)."""
    pre, post = config.hooks.get("pre_request"), config.hooks.get("post_request")
    if pre is None and post is None:
        return app
    if interface == "wsgi":
        return _wrap_wsgi(app, pre, post, worker)
    if interface == "asgi3":
        return _wrap_asgi(app, pre, post, worker)
    raise ConfigError("pre_request/post_request hooks need a WSGI or ASGI 3 app")


def _guarded(name: str, hook: Any, *args: Any) -> None:
    if hook is not None:
        with _reported(name):
            hook(*args)


class _ThenCall:
    """A WSGI response body that calls `after` once the server closes it."""

    def __init__(self, body: Any, after: Any) -> None:
        self.body, self.after = body, after

    def __iter__(self) -> Any:
        return iter(self.body)

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.after()


def _wrap_wsgi(app: Any, pre: Any, post: Any, worker: Any) -> Any:
    def hooked(environ: dict, start_response: Any) -> Any:
        req = _wsgi_request(environ)
        resp = ResponseInfo()
        _guarded("pre_request", pre, worker, req)

        def start(status: str, headers: list, exc_info: Any = None) -> Any:
            resp.status, resp.headers = status, headers
            return start_response(status, headers, exc_info)

        body = app(environ, start)  # its exceptions are the server's to see
        return _ThenCall(body, lambda: _guarded("post_request", post, worker, req, environ, resp))

    return hooked


def _wrap_asgi(app: Any, pre: Any, post: Any, worker: Any) -> Any:
    async def hooked(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        req = _asgi_request(scope)
        resp = ResponseInfo()
        _guarded("pre_request", pre, worker, req)

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                resp.status = str(message["status"])
                resp.headers = list(message.get("headers", ()))
            await send(message)

        try:
            await app(scope, receive, sending)
        finally:
            _guarded("post_request", post, worker, req, scope, resp)

    return hooked
