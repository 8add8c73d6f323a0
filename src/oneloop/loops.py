"""The worker's event loop.

``GatedEventLoop`` is asyncio's selector loop with one addition: its thread
opens a gate (``_core.LoopGate``, src/core/gate.c) while it sleeps in
``select()`` and closes it when it wakes. A WSGI thread that needs a
coroutine run (a Flask async view or hook, ``async_to_sync``) and finds the
gate open runs the coroutine's first step itself, as the loop's thread,
instead of waking the loop's thread and sleeping until it answers: an async
call that finishes without waiting costs no thread switch at all. One that
waits goes on on the loop's thread, as before.

uvloop cannot be gated (libuv runs its part of each iteration without the
GIL, so no other thread may touch the loop meanwhile); under uvloop every
async call from WSGI code takes the two-switch path.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

from ._core import LoopGate


class _GatedSelector(selectors.DefaultSelector):  # type: ignore[misc, valid-type]
    def __init__(self, gate: LoopGate) -> None:
        super().__init__()
        self._gate = gate

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is not None and timeout <= 0:
            return super().select(timeout)  # a peek: not worth letting anyone in
        self._gate.open()
        try:
            return super().select(timeout)
        finally:
            self._gate.close()


class GatedEventLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop whose code other threads may run while it
    sleeps (see the module docstring)."""

    def __init__(self) -> None:
        self.oneloop_gate = LoopGate()  # closed: this thread runs the loop
        super().__init__(_GatedSelector(self.oneloop_gate))
