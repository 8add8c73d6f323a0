"""The benchmarks' WebSocket echo app, plus GET /census: what the worker's
heap holds (used by ws_idle.py --census).

The census is the GC-tracked objects by type, each with its count and the
sum of sys.getsizeof, sys.getallocatedblocks(), and the bytes malloc() has
handed out (glibc's mallinfo2). Objects the collector does not track
(bytes, str, ints, tuples and dicts holding only such) are not in it.
"""

import ctypes
import gc
import json
import sys

from ws_apps import echo as ws_echo

MALLINFO2 = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks")
MALLINFO2 += ("uordblks", "fordblks", "keepcost")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in MALLINFO2]


def malloc_in_use() -> int:
    """Bytes the C allocator has handed out and not taken back (glibc)."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        return 0
    mallinfo2.restype = _Mallinfo2
    info = mallinfo2()
    return info.uordblks + info.hblkhd


def heap() -> dict:
    gc.collect()
    types: dict[str, list[int]] = {}
    for obj in gc.get_objects():
        t = type(obj)
        name = f"{t.__module__}.{t.__qualname__}"
        entry = types.setdefault(name, [0, 0])
        entry[0] += 1
        entry[1] += sys.getsizeof(obj)
    return {"blocks": sys.getallocatedblocks(), "malloc": malloc_in_use(), "types": types}


async def echo(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == "/census":
        body = json.dumps(heap()).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await ws_echo(scope, receive, send)
