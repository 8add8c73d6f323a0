"""A worker class for gunicorn, for shops that keep gunicorn's arbiter:

    gunicorn -k oneloop.workers.OneloopWorker -w 4 myapp:app

Each worker runs oneloop's C core and one event loop, as oneloop's own
workers do, on gunicorn's listening sockets. gunicorn keeps its arbiter, its
signals, its hooks around forking, --timeout (the loop beats for it),
--max-requests and its jitter, --graceful-timeout and its logging. The app
may be WSGI or ASGI.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import os
import signal
import sys
import time
from typing import Any

from gunicorn.workers import base

from . import config as cfg
from . import logs
from .binding import Listener, describe_socket
from .worker import Host, Worker, new_event_loop

# gunicorn's 0 means "no limit" for these; ours need a number.
_UNLIMITED_LINE = 65536


class OneloopWorker(base.Worker):
    """gunicorn.workers.base.Worker running oneloop's core and one loop."""

    def init_process(self) -> None:
        # The loop exists before gunicorn imports the app (in load_wsgi,
        # called by the base class), so what the app creates at import
        # time binds to the loop that serves it.
        self.oneloop_config = config_from_gunicorn(self.cfg)
        self.loop = new_event_loop(self.oneloop_config.loop)
        asyncio.set_event_loop(self.loop)
        super().init_process()  # loads the app, then calls run()

    def init_signals(self) -> None:
        # gunicorn's handlers would stop the worker from a signal handler;
        # the loop takes TERM, INT, QUIT and USR1 once it runs (Worker).
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        # On --timeout the arbiter sends SIGABRT, then SIGKILL: faulthandler
        # shows where the loop is stuck first (from C, so a loop that never
        # runs Python again is shown too), then hands the signal to
        # gunicorn's handler, which runs the worker_abort hook and exits.
        signal.signal(signal.SIGABRT, self.handle_abort)
        faulthandler.enable(all_threads=True)

    def handle_abort(self, sig: int, frame: Any) -> None:
        # gunicorn raises SystemExit here, which the core would take for an
        # exception of the app's (a 500) and the worker would live on.
        self.alive = False
        self.cfg.worker_abort(self)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(1)

    def run(self) -> None:
        config = self.oneloop_config
        listeners = [_listener(s, self.cfg) for s in self.sockets]
        max_requests = 0 if self.cfg.max_requests <= 0 else self.max_requests
        host = _GunicornHost(self)
        worker = Worker(
            config, listeners, app=self.wsgi, loop=self.loop, host=host, max_requests=max_requests
        )
        worker.run()


class _GunicornHost(Host):
    """Heartbeats become gunicorn's notify(); logging goes to its loggers."""

    owns_listeners = False  # gunicorn's arbiter's

    def __init__(self, worker: OneloopWorker) -> None:
        self.worker = worker
        self.access_logger = worker.log.access_log
        self._next_notify = 0.0
        # gunicorn passes half its --timeout; notify well within it.
        self._interval = min(1.0, worker.timeout / 2) if worker.timeout else 1.0
        _route_error_log(worker.log)

    def booted(self, worker: Any) -> None:
        self.worker.notify()

    def beat(self, lag: float = 0.0) -> bool:
        now = time.monotonic()
        if now >= self._next_notify:
            self._next_notify = now + self._interval
            self.worker.notify()
        return os.getppid() == self.worker.ppid

    def stopping(self) -> None:
        self.worker.alive = False

    def reopen_logs(self) -> None:
        self.worker.log.reopen_files()
        _route_error_log(self.worker.log)

    def interrupted(self, config: Any) -> None:
        # gunicorn's handle_quit runs worker_int; the loop took the signal.
        try:
            self.worker.cfg.worker_int(self.worker)
        except Exception:
            self.worker.log.exception("Exception in worker_int hook")

    def signals(self) -> dict:
        return {signal.SIGHUP: _ignore, signal.SIGWINCH: _ignore}


def _ignore() -> None:
    pass


def _route_error_log(glog: Any) -> None:
    """oneloop's error log writes where gunicorn's does."""
    error_log = logs.error_log
    for handler in list(error_log.handlers):
        error_log.removeHandler(handler)
    for handler in glog.error_log.handlers:
        error_log.addHandler(handler)
    error_log.setLevel(glog.error_log.level)
    error_log.propagate = False


def config_from_gunicorn(gcfg: Any) -> cfg.Config:
    """oneloop's options from gunicorn's settings of the same meaning, over
    ONELOOP_* variables for the rest (in the environment or gunicorn's --env)."""
    environ = {**os.environ, **(gcfg.env or {})}
    values: dict[str, Any] = cfg.from_environ(environ)
    values |= {
        "app": "(loaded by gunicorn)",
        "workers": gcfg.workers,
        "timeout_keep_alive": gcfg.keepalive,
        "timeout_graceful_shutdown": gcfg.graceful_timeout,
        "limit_request_line": gcfg.limit_request_line or _UNLIMITED_LINE,
        "limit_request_fields": gcfg.limit_request_fields,
        "limit_request_field_size": gcfg.limit_request_field_size or _UNLIMITED_LINE,
        "forwarded_allow_ips": gcfg.forwarded_allow_ips,
        "access_log": bool(gcfg.accesslog),
        "access_logformat": gcfg.access_log_format,
        "log_level": gcfg.loglevel.lower(),
        "backlog": gcfg.backlog,
    }
    # gunicorn's default of one thread is the sync worker's; a oneloop
    # worker's pool grows only when views block, so keep ours unless set.
    if gcfg.threads > 1:
        values["threads"] = gcfg.threads
    values["reload"] = False  # gunicorn's own --reload applies
    return cfg.build(values)


def _listener(gsock: Any, gcfg: Any) -> Listener:
    sock = getattr(gsock, "sock", gsock)  # gunicorn wraps the socket
    ssl_context = None
    if gcfg.is_ssl:
        from gunicorn.sock import ssl_context as gunicorn_ssl_context

        ssl_context = gunicorn_ssl_context(gcfg)
        ssl_context.set_alpn_protocols(["http/1.1"])
    sock.setblocking(False)
    address, is_unix, url = describe_socket(sock, ssl_context)
    return Listener(sock, address, ssl_context, is_unix, url)
