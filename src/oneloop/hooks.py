"""gunicorn's server hooks, from a --config file, called where gunicorn
calls them and with its arguments:

    on_starting(server)            supervisor, before the listeners are bound
    when_ready(server)             supervisor, once every worker serves
    on_reload(server)              supervisor, on HUP, before new workers start
    pre_fork(server, worker)       supervisor, before a worker is forked
    post_fork(server, worker)      the worker, right after the fork
    post_worker_init(worker)       the worker, once its app is loaded and it serves
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
import inspect
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
    hook = config.hooks.get(name)
    if hook is None:
        return
    try:
        result = hook(*args)
        if inspect.isawaitable(result):
            asyncio.run(_awaited(result))
    except Exception as exc:
        _failed(name, exc)


async def call_on_loop(config: Config, name: str, *args: Any) -> None:
    """The same, on the worker's loop: a coroutine hook is awaited there."""
    hook = config.hooks.get(name)
    if hook is None:
        return
    try:
        result = hook(*args)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        _failed(name, exc)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _failed(name: str, exc: Exception) -> None:
    error_log.error("The %s hook failed: %r", name, exc, exc_info=exc)
    if name in FATAL:
        raise HookFailed(f"the {name} hook failed: {exc!r}") from exc
