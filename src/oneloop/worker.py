"""One worker: its event loop, the app, the C core, signals, graceful shutdown.

The order matters. The event loop is created and set as the main thread's
current loop *before* the app is imported, so anything the app creates at
import time (async clients, locks, queues) binds to the loop that will run
for the worker's whole life.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import types
from typing import Any

from . import bridge, logs
from ._core import Server
from .binding import Listener, open_listeners
from .config import Config
from .lifespan import Lifespan, LifespanFailure
from .loading import AppLoadError, detect_interface, import_app
from .logs import error_log
from .proxy import TrustedProxies


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise AppLoadError("--loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class Worker:
    """Serves the app on the given listeners until asked to stop."""

    def __init__(self, config: Config, listeners: list[Listener] | None = None) -> None:
        self.config = config
        self.listeners = listeners
        self.loop = new_event_loop(config.loop)
        asyncio.set_event_loop(self.loop)
        self.app = import_app(config.app, config.app_dir, config.factory)
        self.interface = detect_interface(self.app, config.interface)
        self.core: Server | None = None
        self.threads: list[threading.Thread] = []
        self.stopping: asyncio.Event | None = None
        self.fast = False

    # -- set-up -----------------------------------------------------------

    def _core_config(self, lifespan: Lifespan) -> Any:
        c = self.config
        proxy = TrustedProxies(c.forwarded_allow_ips) if c.proxy_headers else None
        return types.SimpleNamespace(
            interface=self.interface,
            limit_request_line=c.limit_request_line,
            limit_request_fields=c.limit_request_fields,
            limit_request_field_size=c.limit_request_field_size,
            limit_request_body=c.limit_request_body,
            timeout_keep_alive=c.timeout_keep_alive,
            timeout_request_head=c.timeout_request_head,
            timeout_request_body=c.timeout_request_body,
            timeout_send=c.timeout_send,
            timeout_async=c.timeout_async,
            loop_stall_warning=c.loop_stall_warning,
            on_stall=logs.on_stall,
            threads=c.threads,
            max_keep_alive_requests=c.max_keep_alive_requests,
            server_header=c.server_header,
            date_header=c.date_header,
            multiprocess=c.workers > 1,
            root_path=c.root_path,
            on_error=logs.on_error,
            on_access=logs.make_access_hook(c),
            lifespan_state=lifespan.state if lifespan.supported else None,
            wsgi_errors=_ErrorStream(),
            proxy_trusted=proxy,
        )

    def _start_threads(self) -> None:
        core, loop = self.core, self.loop
        assert core is not None

        def serve_thread() -> None:
            bridge.prepare_thread(loop)
            core._serve_thread()

        for i in range(self.config.threads):
            t = threading.Thread(target=serve_thread, name=f"oneloop-wsgi-{i}", daemon=True)
            t.start()
            self.threads.append(t)

    # -- running ----------------------------------------------------------

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        for sig, fast in ((signal.SIGTERM, False), (signal.SIGINT, True), (signal.SIGQUIT, True)):
            loop.add_signal_handler(sig, self.stop, fast)
        # Bind before the app's startup runs: a port in use fails fast, with
        # no startup side effects to undo. Connections made meanwhile wait
        # in the backlog until the core starts.
        if self.listeners is None:
            self.listeners = open_listeners(self.config)
        lifespan = Lifespan(self.app, self.interface, self.config.lifespan)
        await lifespan.startup()
        try:
            try:
                await bridge.run_startup()
            except Exception as exc:
                error_log.error("an oneloop.on_startup hook failed", exc_info=exc)
                raise LifespanFailure(f"startup hook failed: {exc!r}") from exc
            listeners = [li.core_tuple() for li in self.listeners]
            self.core = Server(self.app, self._core_config(lifespan), listeners, loop)
            self.core.start()
            bridge.install(self.core, loop, wsgi=self.interface == "wsgi")
            if self.interface == "wsgi":
                self._start_threads()
                for problem in await bridge.self_test(loop):
                    error_log.warning("one loop: %s", problem)
            for li in self.listeners:
                error_log.info(
                    "Serving %s app on %s (pid %d)", self.interface.upper(), li.url, os.getpid()
                )
            await self.stopping.wait()
            await self._drain()
        finally:
            await bridge.run_shutdown()
            bridge.uninstall()
            await lifespan.shutdown()
            await _cancel_leftover_tasks()
            self._close_listeners()

    def stop(self, fast: bool = False) -> None:
        """Begin shutting down: graceful (finish in-flight requests) or fast."""
        self.fast = self.fast or fast
        if self.stopping is not None:
            self.stopping.set()

    async def _drain(self) -> None:
        core = self.core
        assert core is not None
        core.shutdown()
        if not self.fast:
            deadline = asyncio.get_running_loop().time() + self.config.timeout_graceful_shutdown
            while (
                core.active_requests
                and asyncio.get_running_loop().time() < deadline
                and not self.fast
            ):
                await asyncio.sleep(0.05)
            if core.active_requests:
                error_log.warning("%d requests still running at shutdown", core.active_requests)
        core.stop_threads()
        await asyncio.get_running_loop().run_in_executor(None, self._join_threads)
        core.close()

    def _close_listeners(self) -> None:
        for li in self.listeners or ():
            li.close()

    def _join_threads(self) -> None:
        for t in self.threads:
            t.join(timeout=self.config.timeout_graceful_shutdown + 1)

    def run(self) -> None:
        try:
            self.loop.run_until_complete(self.serve())
        finally:
            try:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                self.loop.close()


async def _cancel_leftover_tasks() -> None:
    """Tasks the app left running (and host tasks still finishing) end here,
    not in "Task was destroyed but it is pending" at exit."""
    await asyncio.sleep(0)
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=1)


class _ErrorStream:
    """wsgi.errors: the process's stderr, as under gunicorn. What apps write
    there (Flask's default log handler does) keeps its own format and level."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def writelines(self, lines: Any) -> None:
        sys.stderr.writelines(lines)

    def flush(self) -> None:
        sys.stderr.flush()


def run_config(config: Config) -> int:
    """Run one worker in this process until SIGTERM/SIGINT; the exit status."""
    logs.configure(config)
    try:
        worker = Worker(config)
        worker.run()
    except LifespanFailure as exc:
        error_log.error("%s", exc)
        return 3
    return 0
