"""A worker's heartbeat: one page of memory shared with the supervisor.

The supervisor maps the page before it forks the worker; the worker's event
loop writes a timestamp into it ten times a second and its state when that
changes. Reading it costs the supervisor no system call and the worker no
message: a loop that stops writing is a loop that stopped running. A worker
that cannot boot leaves its reason there, so the supervisor can report it
once, however many workers failed the same way.
"""

from __future__ import annotations

import mmap
import struct
import time

from . import metrics
from ._core import atomic_load, atomic_store, metrics_snapshot

BOOTING, READY, STOPPING = 0, 1, 2

# Two 8-byte words, each written with one atomic store and read with one
# atomic load, so a reader in another process sees either the old value or
# the new one, never a torn or zeroed word (struct.pack_into zeroes a field
# before filling it in; a supervisor that read that 0 took a healthy worker
# for one blocked since boot and killed it). The beat is CLOCK_MONOTONIC in
# integer nanoseconds (the same clock in every process; never 0 once the
# machine has booted), then the state; at ERROR_AT a length-prefixed UTF-8
# message, written once before the worker exits.
_BEAT_AT = 0
_STATE_AT = 8
_ERROR_AT = 64
_ERROR_LEN = struct.Struct("=I")


class Slot:
    """The shared page of one worker. Created by the supervisor, inherited
    across fork(); the worker stores, the supervisor loads, no lock."""

    def __init__(self) -> None:
        # The heartbeat's page, then the worker's metrics block (metrics.py).
        pages = 1 + metrics.block_pages()
        self._mem = mmap.mmap(-1, pages * mmap.PAGESIZE)  # anonymous and shared
        self.beat()

    def metrics_block(self) -> memoryview:
        """The worker's metrics block, for its C core to count into. The
        view keeps the mapping exported: the worker never closes it."""
        return memoryview(self._mem)[mmap.PAGESIZE :]

    def metrics(self) -> tuple[int, ...]:
        """Every word of the metrics block, each read with one atomic load."""
        with memoryview(self._mem) as whole, whole[mmap.PAGESIZE :] as block:
            return metrics_snapshot(block)

    def set_loop_lag(self, seconds: float) -> None:
        atomic_store(self._mem, mmap.PAGESIZE + metrics.LAG_OFFSET, max(0, int(seconds * 1e6)))

    def beat(self) -> None:
        atomic_store(self._mem, _BEAT_AT, time.monotonic_ns())

    def last_beat(self) -> float:
        """The last beat, in time.monotonic() seconds: one load."""
        return atomic_load(self._mem, _BEAT_AT) / 1e9

    @property
    def state(self) -> int:
        return atomic_load(self._mem, _STATE_AT)

    @state.setter
    def state(self, value: int) -> None:
        # The state first, then the beat that announces it (release order):
        # a reader that sees the new beat sees the new state too.
        atomic_store(self._mem, _STATE_AT, value)
        self.beat()

    def set_error(self, message: str) -> None:
        limit = mmap.PAGESIZE - _ERROR_AT - _ERROR_LEN.size
        data = message.encode("utf-8", "replace")[:limit]
        self._mem[_ERROR_AT + _ERROR_LEN.size : _ERROR_AT + _ERROR_LEN.size + len(data)] = data
        _ERROR_LEN.pack_into(self._mem, _ERROR_AT, len(data))

    def error(self) -> str:
        (length,) = _ERROR_LEN.unpack_from(self._mem, _ERROR_AT)
        start = _ERROR_AT + _ERROR_LEN.size
        return self._mem[start : start + length].decode("utf-8", "replace")

    def close(self) -> None:
        self._mem.close()
