"""The heartbeat page shared by a worker and its supervisor.

The supervisor kills a worker whose last beat is older than --timeout, so a
read of the beat must never see a value the worker did not write: a torn or
zeroed stamp reads as "blocked since boot" and kills a healthy worker. The
stress test runs a writer process beating as fast as it can against a reader
in this process, as a worker and its supervisor do, and counts the reads no
writer could have produced: 0, or a stamp older than one read before.
"""

from __future__ import annotations

import mmap
import os
import time

import pytest
from oneloop._core import atomic_load, atomic_store

from oneloop.heartbeat import BOOTING, READY, STOPPING, Slot

STRESS_SECONDS = 1.5


def test_beat_is_never_read_torn_or_zero():
    slot = Slot()
    pid = os.fork()
    if pid == 0:  # the writer: a worker's loop, beating with no pause
        try:
            deadline = time.monotonic() + STRESS_SECONDS + 0.5
            while time.monotonic() < deadline:
                for _ in range(1000):
                    slot.beat()
        finally:
            os._exit(0)
    try:
        reads = zeros = backwards = 0
        previous = slot.last_beat()
        deadline = time.monotonic() + STRESS_SECONDS
        while time.monotonic() < deadline:
            for _ in range(1000):
                beat = slot.last_beat()
                if beat == 0:
                    zeros += 1
                elif beat < previous:
                    backwards += 1
                else:
                    previous = beat
            reads += 1000
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert previous > 0 and reads > 100_000
    assert (zeros, backwards) == (0, 0), f"{zeros} zero and {backwards} backward reads of {reads}"
    slot.close()


def test_beat_is_monotonic_seconds():
    slot = Slot()
    before = time.monotonic()
    slot.beat()
    after = time.monotonic()
    assert before - 0.001 <= slot.last_beat() <= after + 0.001
    slot.close()


def test_state_and_error_survive_fork():
    slot = Slot()
    assert slot.state == BOOTING
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            slot.state = READY
            slot.state = STOPPING
            slot.set_error("boot failed: ünïcode")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert slot.state == STOPPING
    assert slot.error() == "boot failed: ünïcode"
    assert time.monotonic() - slot.last_beat() < 5
    slot.close()


def test_atomic_word_bounds_and_alignment():
    buf = bytearray(16)
    atomic_store(buf, 8, 2**64 - 1)
    assert atomic_load(buf, 8) == 2**64 - 1 and atomic_load(bytes(buf), 0) == 0
    with pytest.raises(IndexError):
        atomic_load(buf, 9)
    with pytest.raises(IndexError):
        atomic_store(buf, -8, 1)
    with pytest.raises(BufferError):
        atomic_store(bytes(16), 0, 1)  # read-only
    with pytest.raises(OverflowError):
        atomic_store(buf, 0, 2**64)
    page = mmap.mmap(-1, mmap.PAGESIZE)
    with pytest.raises(ValueError, match="aligned"):
        atomic_store(page, 4, 1)
    page.close()
