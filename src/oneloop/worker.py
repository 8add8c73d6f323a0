"""One worker: its event loop, the app, the C core, signals, graceful shutdown.

The order matters. The event loop is created and set as the main thread's
current loop *before* the app is imported, so anything the app creates at
import time (async clients, locks, queues) binds to the loop that will run
for the worker's whole life.

A worker runs alone (``--workers 0``), forked by oneloop's supervisor
(oneloop.supervisor), or inside gunicorn's arbiter (oneloop.workers). A
`Host` stands for whichever of them watches it: the worker's loop beats for
it ten times a second, and tells it when the worker serves and stops.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

from . import bridge, hooks, logs, privileges, process, selfcheck, systemd
from ._core import Server
from .binding import Listener, open_listeners
from .config import Config, ConfigError
from .lifespan import Lifespan, LifespanFailure
from .loading import AppLoadError, detect_interface, import_app
from .logs import error_log
from .loops import GatedEventLoop
from .proxy import TrustedProxies

# How often the loop proves to its host that it runs (and looks whether the
# core reached --max-requests). A wedged loop misses beats; the supervisor's
# --timeout is counted from the last one.
BEAT_INTERVAL = 0.1


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise AppLoadError("--loop uvloop: uvloop is not installed") from None
        except Exception as exc:
            # Installed but older than this Python: uvloop 0.21 raises
            # AttributeError on 3.14, whose asyncio dropped names it imports.
            why = f"uvloop cannot be imported on {selfcheck.python_version()}: {exc!r}"
            if kind == "uvloop":
                raise AppLoadError(f"--loop uvloop: {why}") from None
            error_log.warning("%s; using the asyncio loop", why)
        else:
            return uvloop.new_event_loop()
    loop = GatedEventLoop()
    problem = selfcheck.gate_problem(loop)
    if problem is not None:  # this Python's asyncio changed: no gate, same results
        error_log.warning("%s", problem)
        loop.close()
        return asyncio.SelectorEventLoop()
    return loop


class Host:
    """Whoever watches a worker. This one stands for none: a worker running
    alone, which tells systemd about itself when systemd is listening."""

    access_logger = logs.access_log
    # A worker running alone is the whole server: its listeners end with it.
    owns_listeners = True

    def __init__(self) -> None:
        self.notifier = systemd.Notifier()

    def booted(self, worker: Worker) -> None:
        urls = ", ".join(li.url for li in worker.listeners or ())
        self.notifier.ready(f"Serving on {urls}")

    def metrics_block(self) -> Any:
        """Where the core counts (metrics.py): None, a private block."""
        return None

    def beat(self, lag: float = 0.0) -> bool:
        """The loop runs (its heartbeat `lag` seconds late); False when the
        host is gone and the worker should stop."""
        self.notifier.ping()
        return True

    def stopping(self) -> None:
        self.notifier.stopping()

    async def worker_ready(self, config: Config) -> None:
        """The worker serves (the post_worker_init hook, under a supervisor)."""

    async def worker_exit(self, config: Config) -> None:
        """The worker is leaving (the worker_exit hook, under a supervisor)."""

    def interrupted(self, config: Config) -> None:
        """INT or QUIT reached the worker's loop (the worker_int hook, under a supervisor)."""

    def reopen_logs(self) -> None:
        logs.reopen_files()

    def signals(self) -> dict[int, Callable[[], None]]:
        """Signals beyond TERM, INT, QUIT and USR1, and what they do."""
        return {signal.SIGHUP: _hup_alone}


def _hup_alone() -> None:
    error_log.warning("SIGHUP ignored: reloading needs the supervisor (--workers 1 or more)")


def jittered_max_requests(config: Config) -> int:
    """--max-requests plus this worker's share of --max-requests-jitter (0: never)."""
    if not config.max_requests:
        return 0
    return config.max_requests + random.randint(0, config.max_requests_jitter)


class Worker:
    """Serves the app on the given listeners until asked to stop.

    `app` and `loop` are given by a host that made them itself (gunicorn
    imports the app); otherwise the loop is made here, then the app imported.
    """

    def __init__(
        self,
        config: Config,
        listeners: list[Listener] | None = None,
        *,
        app: Any = None,
        loop: asyncio.AbstractEventLoop | None = None,
        host: Host | None = None,
        max_requests: int | None = None,
    ) -> None:
        self.config = config
        self.listeners = listeners
        self.host = host or Host()
        self.loop = loop or new_event_loop(config.loop)
        asyncio.set_event_loop(self.loop)
        if app is None:
            app = import_app(config.app, config.app_dir, config.factory)
        self.app = app
        self.interface = detect_interface(self.app, config.interface)
        self.app = hooks.wrap_app(
            self.app, self.interface, config, getattr(self.host, "info", None)
        )
        self.max_requests = jittered_max_requests(config) if max_requests is None else max_requests
        self.core: Server | None = None
        self.threads: list[threading.Thread] = []
        self.stopping: asyncio.Event | None = None
        self.fast = False
        self._ticker: asyncio.TimerHandle | None = None
        self._tick_due: float | None = None  # when the next tick should run

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
            limit_concurrency=c.limit_concurrency,
            ws=c.ws,
            ws_max_size=c.ws_max_size,
            ws_max_queue=c.ws_max_queue,
            ws_ping_interval=c.ws_ping_interval,
            ws_ping_timeout=c.ws_ping_timeout,
            ws_per_message_deflate=c.ws_per_message_deflate,
            http=c.http,
            h2_max_concurrent_streams=c.h2_max_concurrent_streams,
            h2_initial_window_size=c.h2_initial_window_size,
            h2_max_frame_size=c.h2_max_frame_size,
            h2_max_header_list_size=c.h2_max_header_list_size,
            max_requests=self.max_requests,
            server_header=c.server_header,
            date_header=c.date_header,
            multiprocess=c.workers > 1,
            root_path=c.root_path,
            on_error=logs.on_error,
            on_access=logs.make_access_hook(c, self.host.access_logger),
            lifespan_state=lifespan.state if lifespan.supported else None,
            wsgi_errors=_ErrorStream(),
            proxy_trusted=proxy,
            metrics=self.host.metrics_block(),
            health_path=c.health_path,
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
        self._handle_signals(loop)
        self._tick()
        try:
            await self._serve(loop)
        finally:
            if self._ticker is not None:
                self._ticker.cancel()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.stopping is not None
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
                if (problem := selfcheck.policy_problem()) is not None:
                    error_log.warning("%s", problem)
            for li in self.listeners:
                error_log.info(
                    "Serving %s app on %s (pid %d)", self.interface.upper(), li.url, os.getpid()
                )
            self.host.booted(self)
            await self.host.worker_ready(self.config)
            await self.stopping.wait()
            self.host.stopping()
            if self.host.owns_listeners:
                stop_started = loop.time()
                error_log.info(
                    "Stopping %s", "now" if self.fast else "gracefully: new connections are refused"
                )
                if not self.fast:
                    for li in self.listeners:
                        li.refuse_new()
            await self._drain()
            if self.host.owns_listeners:
                error_log.info("Drained in %.1fs", loop.time() - stop_started)
        finally:
            await self.host.worker_exit(self.config)
            await bridge.run_shutdown()
            bridge.uninstall()
            await lifespan.shutdown()
            await _cancel_leftover_tasks()
            self._close_listeners()

    def _handle_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGTERM, self.stop, False)
        for sig in (signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(sig, self._interrupted)
        loop.add_signal_handler(signal.SIGUSR1, self.host.reopen_logs)
        for sig, handler in self.host.signals().items():
            loop.add_signal_handler(sig, handler)

    def _tick(self) -> None:
        """Every BEAT_INTERVAL on the loop: beat for the host, and stop once
        the host is gone or --max-requests is reached."""
        assert self.stopping is not None
        now = self.loop.time()
        lag = now - self._tick_due if self._tick_due is not None else 0.0
        self._tick_due = now + BEAT_INTERVAL
        if not self.host.beat(lag) and not self.stopping.is_set():
            error_log.warning("Worker pid %d: its supervisor is gone; stopping", os.getpid())
            self.stop()
        served = self._served_out()
        if served:
            # The core stopped taking requests at the limit; now leave.
            error_log.info(
                "Worker pid %d served %d requests (--max-requests): stopping", os.getpid(), served
            )
            self.stop()
        self._ticker = self.loop.call_later(BEAT_INTERVAL, self._tick)

    def _served_out(self) -> int:
        """Requests served, once --max-requests is reached (and not yet acted on); else 0."""
        core, stopping = self.core, self.stopping
        if not self.max_requests or core is None or stopping is None or stopping.is_set():
            return 0
        served = core.total_requests
        return served if served >= self.max_requests else 0

    def _interrupted(self) -> None:
        self.host.interrupted(self.config)
        self.stop(fast=True)

    def stop(self, fast: bool = False) -> None:
        """Begin shutting down: graceful (finish in-flight requests) or fast."""
        self.fast = self.fast or fast
        if self.stopping is not None:
            self.stopping.set()

    async def _drain(self) -> None:
        """Stop accepting, close idle connections, let requests in flight
        finish (and their responses reach the client) within
        --timeout-graceful-shutdown; then stop the threads."""
        core = self.core
        assert core is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout_graceful_shutdown
        # Outside this task: shutdown() serves requests that already
        # arrived, and an ASGI request enters a task of its own.
        shut = loop.create_future()
        loop.call_soon(_call_into, shut, core.shutdown)
        await shut
        # The core took what was queued and accepts no more: this process's
        # copies of the listeners go now. When the whole server stops (the
        # listeners refuse new connections first), the sockets close as soon
        # as every worker is here, and a client trying meanwhile is refused
        # rather than left waiting for the slowest drain.
        self._close_listeners()
        while (core.active_requests or core.connections) and not self.fast:
            if loop.time() >= deadline:
                error_log.warning("%d requests still running at shutdown", core.active_requests)
                break
            await asyncio.sleep(0.05)
        core.stop_threads()
        await loop.run_in_executor(None, self._join_threads)
        core.close()

    def _close_listeners(self) -> None:
        for li in self.listeners or ():
            li.close(remove_file=self.host.owns_listeners)

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


def _call_into(future: asyncio.Future, fn: Callable[[], object]) -> None:
    try:
        future.set_result(fn())
    except Exception as exc:
        future.set_exception(exc)


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


def app_name(app: Any) -> str:
    """The app as the process title names it: MODULE:ATTRIBUTE, or the
    object's qualified name when it was given as an object."""
    if isinstance(app, str):
        return app
    module = getattr(app, "__module__", None) or type(app).__module__
    name = getattr(app, "__qualname__", None) or type(app).__qualname__
    return f"{module}:{name}"


def run_config(config: Config, reread: Callable[[dict[str, str]], Config] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the exit status. With --workers 1 or more
    under the supervisor, which calls `reread(environ)` on SIGHUP for the
    new configuration; with --workers 0 in this process."""
    privileges.change_dir(config.chdir)  # first: relative paths are relative to it
    identity = privileges.resolve(config)  # a bad --user stops us before anything is made
    if config.umask is not None:
        os.umask(config.umask)  # before any file is made: logs, sockets, pid file
    logs.configure(config)
    privileges.give(identity, [config.error_logfile, config.access_logfile])
    if config.workers > 0:
        from .supervisor import Supervisor

        return Supervisor(config, reread, identity).run()
    return run_alone(config, identity)


def run_alone(config: Config, identity: privileges.Identity | None = None) -> int:
    if config.hooks:
        names = ", ".join(sorted(config.hooks))
        raise ConfigError(f"server hooks ({names}) need the supervisor: use --workers 1 or more")
    process.set_title(f"oneloop: worker [{app_name(config.app)}]")
    process.apply_env_file(config.env_file_vars)
    with process.pidfile(config.pid):
        try:
            listeners = None
            if identity is not None:
                # Bind as root (port 80), then give root up before the app is imported.
                listeners = open_listeners(config)
                privileges.give(identity, [li.created_path for li in listeners])
                privileges.drop(identity, config.app_dir)
            worker = Worker(config, listeners)
            worker.run()
        except LifespanFailure as exc:
            error_log.error("%s", exc)
            return 3
    return 0
