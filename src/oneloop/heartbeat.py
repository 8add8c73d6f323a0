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

BOOTING, READY, STOPPING = 0, 1, 2

# beat (CLOCK_MONOTONIC seconds, the same clock in every process), state,
# then at ERROR_AT a length-prefixed UTF-8 message.
_HEAD = struct.Struct("=dI")
_ERROR_AT = 64
_ERROR_LEN = struct.Struct("=I")


class Slot:
    """The shared page of one worker. Created by the supervisor, inherited
    across fork(); an 8-byte aligned store is not torn on the platforms we
    run on, so readers need no lock."""

    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, mmap.PAGESIZE)  # anonymous and shared
        self.beat()

    def beat(self) -> None:
        _HEAD.pack_into(self._mem, 0, time.monotonic(), self.state)

    def last_beat(self) -> float:
        return _HEAD.unpack_from(self._mem, 0)[0]

    @property
    def state(self) -> int:
        return _HEAD.unpack_from(self._mem, 0)[1]

    @state.setter
    def state(self, value: int) -> None:
        _HEAD.pack_into(self._mem, 0, time.monotonic(), value)

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
