"""The private asyncio names oneloop reads, checked before it relies on them.

oneloop runs coroutines the way asyncio's own Task does, and lets a WSGI
thread run a step of the worker's loop while that loop sleeps; both need a
few of asyncio's private names. A Python release may change any of them, so
each is checked at start-up against the running interpreter and loop:

* The four the connection core cannot work without (every ASGI request and
  every bridged call enters a host task) refuse start-up with one line that
  names the attribute and the Python version: ``REQUIRED``.
* Those only the gated asyncio loop uses (``GATE``) make the worker fall
  back to the ungated loop, where every async call from WSGI code takes the
  loop's own thread, as under uvloop: slower, equally correct.
* The policy's thread-local (``POLICY``) only lets the legacy
  ``asyncio.get_event_loop()`` in a WSGI thread return a loop the thread set
  itself; without it such a call gets the thread's stand-in loop.

docs/architecture.md ("Private asyncio names") lists them, where each is
used, the Python versions each path was tested on, and what 3.14 changes.
This module imports nothing of oneloop's C core, so it can run before it.
"""

from __future__ import annotations

import asyncio
import importlib
import platform
import threading
from typing import Any

# (module, attribute): read once, by the C core's module init (module.c).
REQUIRED = (
    ("asyncio.tasks", "_enter_task"),  # driver.c: a step runs inside the host task
    ("asyncio.tasks", "_leave_task"),
    ("asyncio", "_get_running_loop"),  # bridge.c: a WSGI thread runs a step of the loop
    ("asyncio", "_set_running_loop"),
)

# Attributes of the asyncio loop the gate (gate.c, bridge.c start_here) reads
# or writes while a WSGI thread stands in for the loop's thread.
GATE = ("_ready", "_scheduled", "_debug", "_thread_id", "_write_to_self")

TESTED = "CPython 3.11, 3.12 and 3.13"


class SelfCheckError(RuntimeError):
    """This interpreter lacks something oneloop cannot work without."""


def python_version() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}"


def check_interpreter() -> None:
    """Raise SelfCheckError naming the first required private that is missing."""
    for module_name, name in REQUIRED:
        module = importlib.import_module(module_name)
        if not callable(getattr(module, name, None)):
            raise SelfCheckError(
                f"{module_name}.{name} is missing on {python_version()}: oneloop runs "
                f"coroutines through it and cannot serve without it (tested on {TESTED})"
            )


def gate_missing(loop: Any) -> str | None:
    """The first private attribute the gate needs that `loop` lacks, or None."""
    for name in GATE:
        try:
            value = getattr(loop, name)
        except AttributeError:
            return name
        if name in ("_ready", "_scheduled") and not hasattr(value, "__len__"):
            return name
        if name == "_write_to_self" and not callable(value):
            return name
    return None


def policy_local_missing() -> bool:
    """Whether asyncio's event loop policy lacks the thread-local in which
    set_event_loop() keeps a thread's loop, which the legacy get_event_loop()
    stand-in reads (bridge._own_loop)."""
    getter = (
        getattr(asyncio.events, "_get_event_loop_policy", None) or asyncio.get_event_loop_policy
    )
    return not isinstance(getattr(getter(), "_local", None), threading.local)


def gate_problem(loop: Any) -> str | None:
    """For a gated loop lacking what the gate needs: the line to log before
    falling back to the ungated loop. None when the gate can be used."""
    name = gate_missing(loop)
    if name is None:
        return None
    return (
        f"asyncio loop attribute {name} is missing on {python_version()}: the loop is not "
        f"gated, async calls from WSGI code run on the loop's thread only (tested on {TESTED})"
    )


def policy_problem() -> str | None:
    """The line to log when the legacy get_event_loop() stand-in must do
    without the policy's thread-local; None when it has it."""
    if not policy_local_missing():
        return None
    return (
        f"asyncio's event loop policy keeps no thread-local _local on {python_version()}: "
        f"get_event_loop() in a WSGI thread returns oneloop's stand-in loop even where "
        f"the thread set one of its own (tested on {TESTED})"
    )
