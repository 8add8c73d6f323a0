"""systemd integration without libsystemd: sd_notify(3) over the datagram
socket named by NOTIFY_SOCKET, the watchdog interval from WATCHDOG_USEC,
and the variables of socket activation (LISTEN_FDS; the sockets themselves
are opened in oneloop.binding).

Everything here is a no-op outside systemd (or anything speaking its
protocol), so callers never check first.
"""

from __future__ import annotations

import os
import socket
import time

from .logs import error_log

# Variables meant for the process systemd started, never for its children.
_OWN_VARIABLES = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
)


class Notifier:
    """Sends state changes to systemd, and watchdog pings no more often
    than half the interval it asked for."""

    def __init__(self) -> None:
        self.address = _address(os.environ.get("NOTIFY_SOCKET", ""))
        self.watchdog = watchdog_interval()
        self._sock: socket.socket | None = None
        self._next_ping = 0.0

    def send(self, *assignments: str) -> None:
        if self.address is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(assignments).encode(), self.address)
        except OSError as exc:
            error_log.warning("cannot notify systemd at %s: %s", self.address, exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=Reloading")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=Stopping")

    def ping(self, healthy: bool = True) -> None:
        """A watchdog ping, if one is due and all is well; systemd restarts
        the service when pings stop for the whole interval."""
        if self.watchdog is None or not healthy:
            return
        now = time.monotonic()
        if now >= self._next_ping:
            self._next_ping = now + self.watchdog / 2
            self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _address(name: str) -> str | None:
    """A path, or an abstract name written with a leading '@'."""
    if not name or name[0] not in "/@":
        return None
    return "\0" + name[1:] if name[0] == "@" else name


def watchdog_interval() -> float | None:
    """Seconds within which systemd wants a ping (WATCHDOG_USEC), if meant
    for this process."""
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None and pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None


def forget_environment() -> None:
    """Called in a worker: systemd talks to the supervisor alone, and an app's
    own subprocesses must not think the sockets were passed to them."""
    for name in _OWN_VARIABLES:
        os.environ.pop(name, None)
