"""The supervisor: binds the listeners, forks the workers, keeps them healthy.

Signals, as gunicorn's arbiter takes them: TERM stops gracefully, INT and
QUIT stop fast, HUP reloads (new workers serve before the old ones drain;
the configuration and the app's code are read again), TTIN and TTOU add and
remove a worker, USR1 reopens the log files.

The supervisor never imports the app and never starts an event loop or a
thread, so a worker forked from it is a clean process that makes its own
loop and then imports the app (oneloop.worker). It sleeps in select() on a
pipe the signal handlers write to (and, with --reload, on the file watcher),
and wakes ten times a second to read the workers' heartbeats from shared
memory (oneloop.heartbeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import math
import os
import random
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import hooks, logs, metrics, privileges, process, systemd
from .binding import Listener, make_ssl_context, open_listeners
from .config import Config, ConfigError
from .heartbeat import BOOTING, READY, STOPPING, Slot
from .logs import error_log
from .reload import Watcher
from .worker import Host, app_name, jittered_max_requests

TICK = 0.1  # seconds between looks at the heartbeats
ABORT_GRACE = 1.0  # from SIGABRT (the worker dumps its stacks) to SIGKILL
STOP_MARGIN = 1.0  # beyond --graceful-timeout, for the workers' shutdown hooks
FAST_STOP_GRACE = 5.0  # a fast stop waits at most this long before SIGKILL
CRASH_MEMORY = 10.0  # a crash this soon after the previous one continues a streak
MAX_BACKOFF = 5.0  # longest wait before replacing a worker that keeps crashing
RELOAD_SETTLE = 0.2  # --reload: wait for a burst of file changes to end
RSS_CHECK = 1.0  # --workers-max-rss: seconds between looks at the workers' memory
RSS_GRACE = 3.0  # ... and how long a worker may stay above the limit
LIFETIME_JITTER = 0.1  # --workers-lifetime: each worker lives up to 10% longer

HANDLED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGCHLD,
)

# Exit statuses with which a worker says it has already explained why it
# could not boot (an app that does not import, a failed startup).
_EXPLAINED = {1, 3}


@dataclass(eq=False)
class Child:
    """The supervisor's record of one worker process."""

    pid: int
    slot: Slot
    generation: int  # bumped by each reload; older ones give way
    ready: bool = False  # has served
    retiring: bool = False  # asked to stop (or stopping by itself); not counted
    aborted: bool = False  # killed for --timeout
    kill_at: float | None = None  # SIGKILL if still alive then
    info: Any = None  # what the server hooks are told of it
    replace_at: float = math.inf  # --workers-lifetime: its replacement starts then
    over_rss_since: float | None = None  # --workers-max-rss: above the limit since
    replacing: bool = False  # a replacement is booting; it stops once that one serves
    exit_reason: str = ""  # why it was let go, for the metrics (metrics.EXIT_REASONS)


class SupervisedHost(Host):
    """The worker side of the heartbeat (runs in the forked worker)."""

    owns_listeners = False  # the supervisor's, shared with the other workers

    def __init__(self, slot: Slot, parent: int, server: Any = None, info: Any = None) -> None:
        self.slot = slot
        self.parent = parent
        self.server, self.info = server, info  # for the worker-side hooks

    async def worker_ready(self, config: Config) -> None:
        await hooks.call_on_loop(config, "post_worker_init", self.info)

    async def worker_exit(self, config: Config) -> None:
        await hooks.call_on_loop(config, "worker_exit", self.server, self.info)

    def interrupted(self, config: Config) -> None:
        # On the loop, from its INT/QUIT handler: the hook runs next, before
        # the fast stop it announces.
        if "worker_int" in config.hooks:
            asyncio.get_running_loop().create_task(
                hooks.call_on_loop(config, "worker_int", self.info)
            )

    def booted(self, worker: object) -> None:
        self.slot.state = READY

    def metrics_block(self) -> Any:
        return self.slot.metrics_block()

    def beat(self, lag: float = 0.0) -> bool:
        self.slot.set_loop_lag(lag)
        self.slot.beat()
        return os.getppid() == self.parent

    def stopping(self) -> None:
        self.slot.state = STOPPING

    def signals(self) -> dict:
        # The supervisor's signals; one sent to the whole process group
        # (a terminal's hangup, a stray `kill -HUP -PGID`) must not kill us.
        return {sig: _ignore for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)}


def _ignore() -> None:
    pass


def _dump_stacks_on_abort(on_abort: Callable[[], None]) -> None:
    """On SIGABRT (sent for --timeout) print every thread's stack, from C,
    so a loop stuck without ever running Python is shown too; then, when
    Python code can run, call `on_abort` (the worker_abort hook) and exit.
    faulthandler hands the signal back to the Python handler set first, so
    no core is dumped; SIGKILL follows ABORT_GRACE later if the process
    cannot even do that."""

    def exit_aborted(sig: int, frame: object) -> None:
        try:
            on_abort()
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):  # exiting anyway
                    stream.flush()
            os._exit(128 + signal.SIGABRT)

    signal.signal(signal.SIGABRT, exit_aborted)
    faulthandler.enable(all_threads=True)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


class Supervisor:
    """Runs `config.workers` workers until told to stop; `reread(environ)`
    gives the configuration anew on SIGHUP (None: keep this one)."""

    def __init__(
        self,
        config: Config,
        reread: Callable[[dict[str, str]], Config] | None = None,
        identity: privileges.Identity | None = None,
    ) -> None:
        self.config = config
        self.reread = reread
        self.identity = identity  # --user/--group: whom the workers run as
        self.base_environ = dict(os.environ)  # before --env-file
        self.pid = os.getpid()
        self.listeners: list[Listener] = []
        self.children: dict[int, Child] = {}
        self.target = config.workers
        self.generation = 0
        self.pending: list[int] = []  # signals received, not yet handled
        self.stopping: str | None = None  # "graceful" or "fast"
        self.exit_code = 0
        self.crash_streak = 0
        self.last_crash = -math.inf
        self.spawn_after = 0.0
        self.announced = False  # told systemd and the log that all workers serve
        self.reloading = False
        self.paused = False  # --reload: a worker could not boot; wait for a change
        self.last_details = ""  # the last boot failure's traceback, shown once
        self.next_rss_check = 0.0  # --workers-max-rss
        self.stop_started = 0.0
        self.spawned = 0  # workers started, for the hooks' worker.age
        self.reload_due: float | None = None
        self.reload_reason = ""
        self.notifier = systemd.Notifier()
        self.watcher: Watcher | None = None
        self._wake: tuple[int, int] | None = None
        self.supervision = metrics.Supervision()
        self.metrics_endpoint: metrics.Endpoint | None = None

    # -- the main loop ----------------------------------------------------

    # gunicorn's Arbiter, as the server hooks see it.
    @property
    def cfg(self) -> Config:
        return self.config

    @property
    def log(self) -> Any:
        return error_log

    @property
    def num_workers(self) -> int:
        return self.target

    def run(self) -> int:
        process.set_title(f"oneloop: master [{app_name(self.config.app)}]")
        process.set_name("oneloop-master")
        process.apply_env_file(self.config.env_file_vars)
        hooks.call(self.config, "on_starting", self)
        self.listeners = open_listeners(self.config)
        privileges.give(self.identity, [li.created_path for li in self.listeners])
        if self.config.metrics_bind:
            self.metrics_endpoint = metrics.Endpoint(
                self.config.metrics_bind, self.metrics_text, self.config.umask
            )
            error_log.info("Metrics on %s", self.metrics_endpoint.url)
        hooks.call(self.config, "nworkers_changed", self, self.target, None)
        try:
            with process.pidfile(self.config.pid):
                self._install_signals()
                if self.config.reload:
                    self.watcher = Watcher.for_config(self.config)
                self._loop()
        finally:
            self._clean_up()
            hooks.call(self.config, "on_exit", self)
        return self.exit_code

    def _loop(self) -> None:
        while True:
            self._handle_signals()
            self._reap()
            if self.stopping and not self.children:
                if self.stop_started:
                    error_log.info("Stopped in %.1fs", time.monotonic() - self.stop_started)
                return
            now = time.monotonic()
            self._watch_children(now)
            self._recycle(now)
            self._watch_files(now)
            if not self.stopping:
                self._manage(now)
            self.notifier.ping(self._healthy(now))
            self._sleep()

    def _sleep(self) -> None:
        assert self._wake is not None
        fds = [self._wake[0]]
        watched = self.watcher.fileno() if self.watcher is not None else None
        if watched is not None:
            fds.append(watched)
        endpoint, writers = self.metrics_endpoint, []
        if endpoint is not None:
            fds += endpoint.readers()
            writers = endpoint.writers()
        readable, writable, _ = select.select(fds, writers, [], TICK)
        if endpoint is not None:
            endpoint.handle(readable, writable, time.monotonic())
        if self._wake[0] in readable:
            while True:
                try:
                    if not os.read(self._wake[0], 4096):
                        break
                except BlockingIOError:
                    break

    # -- signals ----------------------------------------------------------

    def _install_signals(self) -> None:
        self._wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake[1], warn_on_full_buffer=False)
        for sig in HANDLED:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, sig: int, frame: object) -> None:
        self.pending.append(sig)  # handled by the main loop, not in here

    def _handle_signals(self) -> None:
        while self.pending:
            sig = self.pending.pop(0)
            if sig != signal.SIGCHLD:
                error_log.info("Received %s", signal.Signals(sig).name)
            if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                self._stop_on_signal(fast=sig != signal.SIGTERM)
            elif sig == signal.SIGHUP:
                self.reload("SIGHUP")
            elif sig == signal.SIGTTIN:
                self._resize(+1)
            elif sig == signal.SIGTTOU:
                self._resize(-1)
            elif sig == signal.SIGUSR1:
                self._reopen_logs()

    def _resize(self, by: int) -> None:
        if self.stopping:
            return
        if self.target + by < 1:
            error_log.warning("SIGTTOU ignored: one worker is the fewest")
            return
        self.target += by
        error_log.info("Workers: %d (SIG%s)", self.target, "TTIN" if by > 0 else "TTOU")
        hooks.call(self.config, "nworkers_changed", self, self.target, self.target - by)

    def _reopen_logs(self) -> None:
        logs.reopen_files()
        # Made anew by root after a rotation: the workers' before they reopen them.
        privileges.give(self.identity, [self.config.error_logfile, self.config.access_logfile])
        for child in self.children.values():
            self._send(child, signal.SIGUSR1)  # a booting worker ignores it

    # -- starting workers -------------------------------------------------

    def _spawn(self) -> None:
        slot = Slot()
        max_requests = jittered_max_requests(self.config)
        self.spawned += 1
        self.supervision.starts += 1
        info = hooks.WorkerInfo(age=self.spawned, cfg=self.config)
        hooks.call(self.config, "pre_fork", self, info)
        # Signals stay blocked across fork() until the child has put back
        # the default handlers: ours must never run in a worker.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        pid = os.fork()
        if pid == 0:
            info.pid = os.getpid()
            process.set_title(f"oneloop: worker {info.age} [{app_name(self.config.app)}]")
            process.set_name(f"oneloop-w{info.age}")
            self._become_worker(slot, max_requests, mask, info)  # never returns
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        info.pid = pid
        child = Child(pid, slot, self.generation, info=info)
        if self.config.workers_lifetime:
            lifetime = self.config.workers_lifetime * (1 + random.uniform(0, LIFETIME_JITTER))
            child.replace_at = time.monotonic() + lifetime
        self.children[pid] = child
        error_log.debug("Booting worker pid %d", pid)

    def _become_worker(
        self, slot: Slot, max_requests: int, mask: set, info: hooks.WorkerInfo
    ) -> None:
        code = 1
        try:
            self._reset_signals(mask)
            self._close_inherited(slot)
            systemd.forget_environment()
            if process.die_with_parent(self.pid):
                _dump_stacks_on_abort(lambda: hooks.call(self.config, "worker_abort", info))
                hooks.call(self.config, "post_fork", self, info)
                # Root given up before the app is imported (as gunicorn: after
                # post_fork). Changing credentials clears the parent-death
                # signal: ask for it again.
                try:
                    privileges.drop(self.identity, self.config.app_dir)
                except ConfigError as exc:
                    slot.set_error(str(exc))
                    raise SystemExit(1) from None
                if process.die_with_parent(self.pid):
                    host = SupervisedHost(slot, self.pid, self, info)
                    code = run_worker(self.config, self.listeners, host, max_requests)
                else:
                    code = 0
            else:
                code = 0
        except KeyboardInterrupt:
            # INT or QUIT while booting (the terminal's Ctrl-C reached us too).
            hooks.call(self.config, "worker_int", info)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:
            traceback.print_exc()
            slot.set_error(f"the worker failed: {exc!r}")
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):  # exiting anyway
                    stream.flush()
            os._exit(code)

    def _reset_signals(self, mask: set) -> None:
        signal.set_wakeup_fd(-1)
        for sig in HANDLED:
            signal.signal(sig, signal.SIG_DFL)
        # Until the worker's loop takes them: INT and QUIT interrupt the
        # boot; the supervisor's own signals are ignored (USR1 would kill).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGQUIT, signal.default_int_handler)
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _close_inherited(self, keep: Slot) -> None:
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
        if self.watcher is not None:
            self.watcher.close()
        for child in self.children.values():
            child.slot.close()
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close(remove_file=False)
        self.notifier.close()

    # -- watching workers -------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self._exited(child, status)

    def _exited(self, child: Child, status: int) -> None:
        state, message = child.slot.state, child.slot.error()
        self._count_exit(child, state)
        child.slot.close()
        hooks.call(self.config, "child_exit", self, child.info)
        if self.stopping or child.retiring or state == STOPPING:
            error_log.debug("Worker pid %d exited (%s)", child.pid, _describe(status))
            return
        now = time.monotonic()
        if not child.ready and state == BOOTING:
            self._boot_failed(child, status, message, now)
            return
        error_log.error(
            "Worker pid %d exited unexpectedly (%s); starting another", child.pid, _describe(status)
        )
        self._crashed(now)

    def _count_exit(self, child: Child, state: int) -> None:
        """Keep what the worker counted (its totals outlive it) and why it went."""
        self.supervision.retire(child.slot.metrics())
        reason = child.exit_reason
        if not reason:
            if self.stopping:
                reason = "shutdown"
            elif state == STOPPING:
                reason = "max_requests"
            elif not child.ready and state == BOOTING:
                reason = "boot_failure"
            else:
                reason = "crash"
        self.supervision.exits[reason] += 1

    def metrics_text(self) -> str:
        """The Prometheus text of all workers (--metrics-bind)."""
        now = time.monotonic()
        live = [c.slot.metrics() for c in self.children.values()]
        states = {"serving": 0, "booting": 0, "stopping": 0}
        for c in self.children.values():
            states["stopping" if c.retiring else "serving" if c.ready else "booting"] += 1
        serving = [c for c in self.children.values() if c.ready and not c.retiring]
        age = max((now - c.slot.last_beat() for c in serving), default=0.0)
        return metrics.render(live, self.supervision, states, max(age, 0.0))

    def _note_ready(self) -> None:
        for child in list(self.children.values()):
            if not child.ready and child.slot.state != BOOTING:
                self._on_ready(child)

    def _watch_children(self, now: float) -> None:
        self._note_ready()
        for child in list(self.children.values()):
            state = child.slot.state
            if state == STOPPING and not child.retiring:
                # Stopping by itself (--max-requests): replace it right away.
                self._retire(child, now, None, "max_requests")
            if child.kill_at is not None and now >= child.kill_at:
                self._kill(child)
            else:
                # One load of the beat per look: the decision to kill and the
                # "blocked for" it reports come from the same value.
                blocked = now - child.slot.last_beat()
                if self._wedged(child, blocked):
                    self._abort(child, now, blocked)

    def _recycle(self, now: float) -> None:
        """--workers-lifetime and --workers-max-rss: a worker due for
        replacement keeps serving until its replacement serves, then stops
        gracefully (as in a reload: nothing is lost, nothing waits)."""
        check_rss = self.config.workers_max_rss and now >= self.next_rss_check
        if check_rss:
            self.next_rss_check = now + RSS_CHECK
        for child in list(self.children.values()):
            if not child.ready or child.retiring or child.replacing:
                continue
            if now >= child.replace_at:
                error_log.info(
                    "Worker pid %d reached --workers-lifetime (%gs): replacing it",
                    child.pid,
                    self.config.workers_lifetime,
                )
                self._replace(child, "lifetime")
            elif check_rss:
                self._check_rss(child, now)

    def _check_rss(self, child: Child, now: float) -> None:
        rss = process.rss_mib(child.pid)
        if rss is None or rss <= self.config.workers_max_rss:
            child.over_rss_since = None
            return
        if child.over_rss_since is None:
            child.over_rss_since = now
        elif now - child.over_rss_since >= RSS_GRACE:
            error_log.warning(
                "Worker pid %d uses %d MiB, above --workers-max-rss %d MiB for %.0fs: replacing it",
                child.pid,
                rss,
                self.config.workers_max_rss,
                now - child.over_rss_since,
            )
            self._replace(child, "max_rss")

    def _replace(self, child: Child, reason: str) -> None:
        """Count the worker out so that _manage starts a replacement, and
        let it go once more workers serve than are wanted."""
        child.replacing = True
        child.exit_reason = reason

    def _wedged(self, child: Child, blocked: float) -> bool:
        timeout = self.config.timeout
        return bool(timeout) and not child.aborted and blocked > timeout

    def _on_ready(self, child: Child) -> None:
        child.ready = True
        error_log.debug("Worker pid %d serves", child.pid)
        current = self._current()
        if len(current) < self.target or not all(c.ready for c in current):
            return
        if not self.announced:
            self.announced = True
            error_log.info("Supervisor pid %d: %s serving", self.pid, _workers(self.target))
            try:
                hooks.call(self.config, "when_ready", self)
            except hooks.HookFailed as exc:
                print(f"oneloop: error: {exc}", file=sys.stderr, flush=True)
                self.exit_code = 1
                self.stop(fast=True)
                return
            self.notifier.ready(self._status())

    def _abort(self, child: Child, now: float, blocked: float) -> None:
        """A loop blocked past --timeout (or a boot that takes longer):
        SIGABRT makes the worker print every thread's stack, SIGKILL follows."""
        if child.ready:
            error_log.error(
                "Worker pid %d: its event loop has been blocked for %.1fs (--timeout %g); "
                "killing it (stack dump follows) and starting another",
                child.pid,
                blocked,
                self.config.timeout,
            )
        else:
            error_log.error(
                "Worker pid %d has not booted within --timeout (%gs); killing it "
                "(stack dump follows)",
                child.pid,
                self.config.timeout,
            )
        child.aborted = True
        child.retiring = True
        child.exit_reason = "timeout"
        child.kill_at = now + ABORT_GRACE
        self._send(child, signal.SIGABRT)

    def _kill(self, child: Child) -> None:
        if not child.aborted:
            error_log.warning(
                "Worker pid %d still running %.0fs after it was asked to stop; killing it",
                child.pid,
                self.config.timeout_graceful_shutdown + STOP_MARGIN,
            )
        child.kill_at = None
        self._send(child, signal.SIGKILL)

    def _healthy(self, now: float) -> bool:
        """For the systemd watchdog: some worker serves, and every serving
        worker's loop has beaten within the watchdog interval."""
        serving = [c for c in self.children.values() if c.ready and not c.retiring]
        window = self.notifier.watchdog or math.inf
        return bool(serving) and all(now - c.slot.last_beat() < window for c in serving)

    # -- keeping the count ------------------------------------------------

    def _current(self) -> list[Child]:
        """Workers of the current generation that are meant to go on serving."""
        return [
            c
            for c in self.children.values()
            if c.generation == self.generation and not c.retiring and not c.replacing
        ]

    def _manage(self, now: float) -> None:
        current = self._current()
        for child in current[: max(0, len(current) - self.target)]:  # oldest first
            self._retire(child, now, reason="scale_down")
        current = current[max(0, len(current) - self.target) :]
        # A reload: each new worker that serves lets one old worker go.
        old = [c for c in self.children.values() if c.generation < self.generation]
        old = [c for c in old if not c.retiring]
        ready = sum(c.ready for c in current)
        for child in old[: max(0, len(old) + ready - self.target)]:
            self._retire(child, now, reason="reload")
        # Workers being replaced go once their replacements serve.
        replaced = [c for c in self.children.values() if c.replacing and not c.retiring]
        for child in replaced[: max(0, len(replaced) + ready - self.target)]:
            self._retire(child, now)
        if len(current) < self.target and now >= self.spawn_after and not self.paused:
            for _ in range(self.target - len(current)):
                self._spawn()
        if self.reloading and not old and ready == self.target:
            self.reloading = False
            error_log.info("Reload complete: %s serving", _workers(ready, "new "))
            self.notifier.ready(self._status())

    def _retire(
        self, child: Child, now: float, sig: int | None = signal.SIGTERM, reason: str = ""
    ) -> None:
        """Let a worker go: it is no longer counted, so a replacement starts."""
        child.retiring = True
        child.exit_reason = child.exit_reason or reason
        child.kill_at = now + self.config.timeout_graceful_shutdown + STOP_MARGIN
        if sig is not None:
            self._send(child, sig if child.ready else signal.SIGTERM)

    def _send(self, child: Child, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # exited; reaped on the next pass
            os.kill(child.pid, sig)

    def _crashed(self, now: float) -> None:
        """Replace at once the first time; back off while crashes follow
        each other (0.1 s, doubling, up to MAX_BACKOFF)."""
        recent = now - self.last_crash < CRASH_MEMORY
        self.crash_streak = self.crash_streak + 1 if recent else 1
        self.last_crash = now
        if self.crash_streak > 1:
            delay = min(0.1 * 2 ** (self.crash_streak - 2), MAX_BACKOFF)
            self.spawn_after = max(self.spawn_after, now + delay)
            error_log.warning("Workers keep failing; next one in %.1fs", delay)

    # -- boot failures ----------------------------------------------------

    def _boot_failed(self, child: Child, status: int, message: str, now: float) -> None:
        # The app's traceback, if it raised, then one line; the traceback is
        # shown once however many workers fail the same way.
        details, _, message = message.rpartition("\n")
        if details and details != self.last_details:
            self.last_details = details
            print(details, file=sys.stderr, flush=True)
        if not message:
            if child.aborted:
                message = f"the worker did not boot within --timeout ({self.config.timeout:g}s)"
            else:
                message = f"the worker exited before serving ({_describe(status)})"
        if self.reloading and child.generation == self.generation:
            self._abort_reload(message, now)
        elif self.config.reload:
            error_log.error("The worker cannot boot: %s", message)
        elif any(c.ready and not c.retiring for c in self.children.values()):
            error_log.error("A worker cannot boot: %s", message)
            self._crashed(now)
            return
        else:
            # Nothing serves and nothing will: say why once and exit,
            # rather than fork failing workers forever.
            print(f"oneloop: error: {message}", file=sys.stderr, flush=True)
            code = os.waitstatus_to_exitcode(status)
            self.exit_code = code if code in _EXPLAINED else 1
            self.stop(fast=True)
            return
        if self.config.reload:
            error_log.info("Waiting for a file to change")
            self.paused = True

    def _abort_reload(self, message: str, now: float) -> None:
        error_log.error("Reload failed: %s; the previous workers keep serving", message)
        for child in self.children.values():
            if child.generation == self.generation and not child.ready:
                self._retire(child, now, reason="reload")
        for child in self.children.values():
            child.generation = self.generation  # the survivors are current again
        self.reloading = False
        self.notifier.ready(self._status())

    # -- reloading --------------------------------------------------------

    def reload(self, reason: str) -> None:
        """Start a new generation of workers; _manage lets the old ones go
        as the new ones serve."""
        if self.stopping:
            return
        self.notifier.reloading()
        self._reread_config()
        hooks.call(self.config, "on_reload", self)
        self.supervision.reloads += 1
        now = time.monotonic()
        self._note_ready()
        for child in self.children.values():
            if not child.ready and not child.retiring:
                self._retire(child, now, reason="reload")  # still booting the old code
        self.generation += 1
        self.last_details = ""  # a new attempt: a traceback is worth showing again
        self.reloading = True
        self.paused = False
        self.spawn_after = 0.0
        error_log.info("Reloading (%s): starting %s", reason, _workers(self.target, "new "))

    def _reread_config(self) -> None:
        if self.reread is None:
            return
        try:
            config = self.reread(self.base_environ)
            logs.configure(config)
            tls = make_ssl_context(config) if config.ssl_certfile else None
        except ConfigError as exc:
            error_log.error("Reload: %s; keeping the configuration", exc)
            return
        if _listening(config) != _listening(self.config):
            error_log.warning("Reload: new listening addresses take effect only on a restart")
        if _identity(config) != _identity(self.config):
            error_log.warning("Reload: --user, --group and --chdir take effect only on a restart")
        for listener in self.listeners:
            if listener.ssl_context is not None and tls is not None:
                listener.ssl_context = tls  # new certificates for new workers
        process.apply_env_file(config.env_file_vars)
        self.config = config
        self.target = max(config.workers, 1)

    def _watch_files(self, now: float) -> None:
        if self.watcher is None:
            return
        changed = self.watcher.changes()
        if changed:
            self.reload_due = now + RELOAD_SETTLE
            self.reload_reason = changed[0]
        if self.reload_due is not None and now >= self.reload_due:
            self.reload_due = None
            self.reload(f"{self.reload_reason} changed")

    # -- stopping ---------------------------------------------------------

    def _stop_on_signal(self, fast: bool) -> None:
        """A stop asked for: say what happens, and (in _loop) when it is done."""
        if self.stopping == "fast" or (self.stopping and not fast):
            return
        self.stop_started = time.monotonic()
        n = _workers(len(self.children))
        if fast:
            error_log.info("Stopping now: %s close their connections", n)
        else:
            error_log.info(
                "Stopping gracefully: new connections are refused; %s finish what they "
                "have (at most --graceful-timeout %gs)",
                n,
                self.config.timeout_graceful_shutdown,
            )
        self.stop(fast)

    def stop(self, fast: bool) -> None:
        """Graceful: workers finish what is in flight within
        --graceful-timeout. Fast: they close everything now."""
        if self.stopping == "fast" or (self.stopping and not fast):
            return
        self.stopping = "fast" if fast else "graceful"
        self.notifier.stopping()
        for listener in self.listeners:
            if not fast:
                listener.refuse_new()  # what is queued is served, not reset
            listener.close()  # workers hold their own copies until they exit
        grace = self.config.timeout_graceful_shutdown + STOP_MARGIN
        if fast:
            grace = min(grace, FAST_STOP_GRACE)
        deadline = time.monotonic() + grace
        for child in self.children.values():
            child.retiring = True
            child.kill_at = min(child.kill_at or math.inf, deadline)
            self._send(child, signal.SIGQUIT if fast and child.ready else signal.SIGTERM)

    def _clean_up(self) -> None:
        for child in self.children.values():  # only after an unexpected error
            self._send(child, signal.SIGKILL)
        while self.children:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            child = self.children.pop(pid, None)
            if child is not None:
                child.slot.close()
        for listener in self.listeners:
            listener.close()
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()
        if self._wake is not None:
            signal.set_wakeup_fd(-1)
            for fd in self._wake:
                os.close(fd)
            self._wake = None
        if self.watcher is not None:
            self.watcher.close()
        self.notifier.close()

    def _status(self) -> str:
        urls = ", ".join(li.url for li in self.listeners)
        return f"{_workers(len(self._current()))} serving on {urls}"


def _listening(config: Config) -> tuple:
    return (
        config.bind,
        config.host,
        config.port,
        config.uds,
        config.fd,
        config.reuse_port,
        config.metrics_bind,
    )


def _identity(config: Config) -> tuple:
    return (config.user, config.group, config.initgroups, config.chdir)


def run_worker(
    config: Config, listeners: list[Listener], host: SupervisedHost, max_requests: int
) -> int:
    """The forked worker's life; its exit status. A worker that cannot boot
    leaves the reason in its heartbeat slot for the supervisor to report."""
    from .lifespan import LifespanFailure
    from .loading import AppLoadError
    from .worker import Worker

    try:
        Worker(config, listeners, host=host, max_requests=max_requests).run()
    except AppLoadError as exc:
        host.slot.set_error(exc.report())  # the app's traceback, then one line
        return 1
    except ConfigError as exc:
        host.slot.set_error(str(exc))
        return 1
    except LifespanFailure as exc:
        host.slot.set_error(str(exc))
        return 3
    return 0


def _workers(n: int, kind: str = "") -> str:
    return f"{n} {kind}worker{'s' if n != 1 else ''}"
