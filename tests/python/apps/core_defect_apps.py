"""Apps for test_core_defects.py: regression tests for defects of the C core.

`asgi` and `wsgi` answer:

  /p/...                  "METHOD /p/..." (a liveness probe)
  /echo                   read the whole body, answer it
  /stream?chunks=N&pause=S
                          N chunks of 64 KiB, chunk i filled with byte i % 256,
                          sleeping S seconds (blocking: the ASGI app holds the
                          loop, as an app doing synchronous work between chunks
                          does) after each; when the client is gone the app
                          says "APP-STREAM-STOPPED after K" on stderr

`wsgi` only:

  /file?path=P            the file P through wsgi.file_wrapper (sendfile)
  /fill-socket            a complete one-byte response (Content-Length: 1) sent
                          with write(), after which the app fills the socket's
                          send buffer until the kernel refuses more (it finds
                          the server's socket by the client's address and sends
                          on it directly; the client never reads, so the bytes
                          are never parsed). Says "APP-SOCKET-FULL" when done,
                          then returns an empty body: the response is complete
                          and the connection goes back to the server, its send
                          buffer full.
  /wrapper-int            a wsgi.file_wrapper whose file's read() returns an int
  /wrapper-int-joined     the same, but the app (as a buffering middleware
                          does) joins the wrapper's pieces itself
  /exc-info?tb=KIND       starts a response, sends part of its body, then calls
                          start_response again with an exc_info whose value is
                          not an exception: ("x", "not-an-exception", "tb") for
                          KIND=str; (int, 5, <a real traceback>) for KIND=int.
                          Says "APP-START-RESPONSE-RAISED <type>" when that
                          call raises, then re-raises.
  /ints                   collects garbage, then "ok" if the small ints (-5..256)
                          all still have type int
  /sleep?s=S              says "APP-SLEEPING", sleeps S seconds, answers "slept"
  /write-at?ms=MS         starts a response of 5 bytes; writes "write <its thread
                          id> MS socket" to the file ONELOOP_TEST_DELAY names
                          (core_defect_delays.c: its next write to a socket
                          waits MS ms before it is made), says "APP-WRITING",
                          then writes the body (write()); says "APP-WRITE-ENDED
                          <how>"
  /bridge-call?ms=MS      the same for the thread's next 8-byte write to an
                          eventfd ("write <id> MS eventfd"), says "APP-CALLING",
                          then runs a coroutine on the worker's loop
                          (oneloop.bridge.run_coroutine), whose wake-up of the
                          loop is that write; says "APP-CALL-ENDED <how>"

With CORE_DEFECT_FD_DIR in the environment, a shutdown hook (run after the
core has closed) opens 32 files there, taking the lowest free descriptor
numbers -- those the core just closed among them -- and says "APP-FDS-TAKEN
<fds>"; CORE_DEFECT_FD_WAIT seconds later (default 3) it says "APP-FDS
untouched", or what happened to them: "fd N closed under the app" (someone
closed that number), "fd N got <bytes>" (someone wrote to it).
"""

import asyncio
import gc
import os
import socket
import sys
import threading
import time

from app_helpers import answer, query, report

from oneloop import bridge

CHUNK = 65536


def _chunk(i):
    return bytes([i % 256]) * CHUNK


# -- ASGI ---------------------------------------------------------------------


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    q = query(scope["query_string"])
    if path.startswith("/p/"):
        await answer(send, scope["method"].encode() + b" " + scope["raw_path"])
    elif path == "/echo":
        parts = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                report("APP-SAW-DISCONNECT")
                return
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await answer(send, b"".join(parts))
    elif path == "/stream":
        pause = float(q.get("pause", "0"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        sent = 0
        try:
            for i in range(int(q["chunks"])):
                await send({"type": "http.response.body", "body": _chunk(i), "more_body": True})
                sent += 1
                if pause:
                    time.sleep(pause)
            await send({"type": "http.response.body", "body": b""})
        except Exception as exc:
            report(f"APP-STREAM-STOPPED after {sent}: {type(exc).__name__}")
    else:
        await answer(send, b"not found", status=404)


# -- WSGI ---------------------------------------------------------------------


def _answer_wsgi(start_response, body, status="200 OK"):
    start_response(status, [("Content-Type", "text/plain")])
    return [body]


def _own_socket(environ):
    """The server's socket of this request's connection, found by the
    client's address among the process's descriptors. The caller detaches it
    (the server owns the descriptor)."""
    peer = (environ["REMOTE_ADDR"], int(environ["REMOTE_PORT"]))
    for name in os.listdir("/proc/self/fd"):
        try:
            s = socket.socket(fileno=int(name))
        except OSError:
            continue  # not a socket, or already closed
        try:
            if s.family == socket.AF_INET and s.getpeername() == peer:
                return s
        except OSError:
            pass
        s.detach()
    raise RuntimeError(f"no socket connected to {peer}")


def _fill(sock):
    """Send until the kernel takes nothing more, several times over, so that
    bytes still moving to the client do not leave room behind."""
    block = b"\0" * CHUNK
    quiet = 0
    while quiet < 3:
        took = 0
        while True:
            try:
                took += sock.send(block, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
        quiet = quiet + 1 if took == 0 else 0
        time.sleep(0.05)


class _IntReader:
    def read(self, n=-1):
        return 42


class _Stream:
    """A WSGI body of 64 KiB chunks that tells when it is closed early."""

    def __init__(self, chunks, pause):
        self.chunks, self.pause, self.sent = chunks, pause, 0

    def __iter__(self):
        for i in range(self.chunks):
            yield _chunk(i)
            self.sent = i + 1
            if self.pause:
                time.sleep(self.pause)

    def close(self):
        if self.sent < self.chunks:
            report(f"APP-STREAM-STOPPED after {self.sent}")


def _delay_next_write(ms, kind):
    with open(os.environ["ONELOOP_TEST_DELAY"], "w") as f:
        f.write(f"write {threading.get_native_id()} {ms} {kind}")


def wsgi(environ, start_response):
    path = environ["PATH_INFO"]
    q = query(environ.get("QUERY_STRING", ""))
    if path.startswith("/p/"):
        return _answer_wsgi(start_response, f"{environ['REQUEST_METHOD']} {path}".encode())
    if path == "/echo":
        return _answer_wsgi(start_response, environ["wsgi.input"].read())
    if path == "/stream":
        start_response("200 OK", [])
        return _Stream(int(q["chunks"]), float(q.get("pause", "0")))
    if path == "/file":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(q["path"], "rb"))
    if path == "/fill-socket":
        write = start_response("200 OK", [("Content-Length", "1")])
        write(b"x")  # the whole response is out
        sock = _own_socket(environ)
        try:
            _fill(sock)
        finally:
            sock.detach()
        report("APP-SOCKET-FULL")
        return []
    if path == "/wrapper-int":
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](_IntReader())
    if path == "/wrapper-int-joined":
        body = b"".join(environ["wsgi.file_wrapper"](_IntReader()))
        return _answer_wsgi(start_response, body)
    if path == "/exc-info":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"partial")  # the head is sent: exc_info must now be re-raised
        try:
            raise ValueError("for its traceback")
        except ValueError:
            tb = sys.exc_info()[2]
        # for "int": a small int, an object the whole process shares
        exc_info = (int, 5, tb) if q.get("tb") == "int" else ("x", "not-an-exception", "tb")
        try:
            start_response("500 Oops", [], exc_info)
        except BaseException as exc:
            report(f"APP-START-RESPONSE-RAISED {type(exc).__name__}")
            raise
        report("APP-START-RESPONSE-RETURNED")
        return [b"after"]
    if path == "/sleep":
        report("APP-SLEEPING")
        time.sleep(float(q["s"]))
        return _answer_wsgi(start_response, b"slept")
    if path == "/write-at":
        write = start_response("200 OK", [("Content-Length", "5")])
        _delay_next_write(q["ms"], "socket")
        report("APP-WRITING")
        try:
            write(b"hello")
            report("APP-WRITE-ENDED returned")
        except Exception as exc:
            report(f"APP-WRITE-ENDED {type(exc).__name__}")
            raise
        return []
    if path == "/bridge-call":
        _delay_next_write(q["ms"], "eventfd")
        report("APP-CALLING")
        try:
            bridge.run_coroutine(asyncio.sleep(0.05))
            report("APP-CALL-ENDED returned")
        except Exception as exc:
            report(f"APP-CALL-ENDED {type(exc).__name__}")
            raise
        return _answer_wsgi(start_response, b"called")
    if path == "/ints":
        gc.collect()  # what the last requests left in cycles is freed now
        wrong = [i for i in range(-5, 257) if type(i) is not int]
        return _answer_wsgi(start_response, f"wrong types: {wrong!r}".encode() if wrong else b"ok")
    return _answer_wsgi(start_response, b"not found", "404 Not Found")


# -- descriptors reused after the core closed ------------------------------


async def _watch_reused_fds():
    where = os.environ["CORE_DEFECT_FD_DIR"]
    held = []
    for i in range(32):
        path = os.path.join(where, f"fd{i}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        held.append((fd, path, os.fstat(fd).st_ino))
    report("APP-FDS-TAKEN " + " ".join(str(fd) for fd, _, _ in held))
    await asyncio.sleep(float(os.environ.get("CORE_DEFECT_FD_WAIT", "3")))
    problems = []
    for fd, path, inode in held:
        try:
            ours = os.fstat(fd).st_ino == inode
        except OSError:
            ours = False
        if ours:
            os.close(fd)
        else:
            problems.append(f"fd {fd} closed under the app")
        with open(path, "rb") as f:
            data = f.read()
        if data:
            problems.append(f"fd {fd} got {data[:60]!r}")
    report("APP-FDS " + ("; ".join(problems) if problems else "untouched"))


if os.environ.get("CORE_DEFECT_FD_DIR"):
    bridge.on_shutdown(_watch_reused_fds)
