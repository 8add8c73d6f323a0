"""ASGI apps for test_asgi_protocol.py and test_asgi_lifespan.py.

Apps report what they saw either in the response body or, when there is no
response to carry it (the client has gone, the response is already over), as
JSON lines appended to the file named by the request's X-Record header.
"""

import asyncio
import contextlib
import contextvars
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from urllib.parse import parse_qsl

import anyio
import anyio.to_thread

import oneloop

# -- Task creations on the worker's loop ------------------------------------
# The worker creates and sets its loop before importing the app, so this
# factory sees every Task created on it from now on.

TASKS = {"created": 0}


def _counting_task_factory(loop, coro, **kwargs):
    TASKS["created"] += 1
    return asyncio.Task(coro, loop=loop, **kwargs)


asyncio.get_event_loop().set_task_factory(_counting_task_factory)


# -- helpers ----------------------------------------------------------------


def _header(scope, name: bytes):
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _query(scope) -> dict:
    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))


class Record:
    """Appends JSON lines to the file named by X-Record (nothing without it)."""

    def __init__(self, scope) -> None:
        self.path = _header(scope, b"x-record")

    def __call__(self, **event) -> None:
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(event) + "\n")


def _error(exc: BaseException) -> dict:
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "oserror": isinstance(exc, OSError),
        "client_disconnected": isinstance(exc, oneloop.ClientDisconnected),
    }


def _message(m: dict) -> dict:
    return {
        "type": m["type"],
        "body": m.get("body", b"").decode("latin-1"),
        "more": m.get("more_body", False),
    }


async def _respond(send, body: bytes, status: int = 200, headers=()) -> None:
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})


async def _json(send, data, status: int = 200) -> None:
    await _respond(
        send, json.dumps(data).encode(), status, [(b"content-type", b"application/json")]
    )


async def _wait_for_file(path: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        await asyncio.sleep(0.005)


# -- receive() --------------------------------------------------------------


async def receive_recorder(scope, receive, send):
    """Records every receive() message as it arrives, then answers with them.

    ?after=wait: once the body is over, await receive() once more before
    answering (and record what it gave). If the client goes away, the app
    records what send() then does.
    """
    if scope["type"] != "http":
        return
    rec, q = Record(scope), _query(scope)
    messages = []
    while True:
        m = await receive()
        messages.append(_message(m))
        rec(event="message", **_message(m))
        if m["type"] != "http.request" or not m.get("more_body", False):
            break
    if messages[-1]["type"] == "http.request" and q.get("after") == "wait":
        rec(event="waiting")
        m = await receive()
        messages.append(_message(m))
        rec(event="after", **_message(m))
    if messages[-1]["type"] == "http.disconnect":
        # The client is gone: what does send() do now?
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"too late"})
        except Exception as exc:
            rec(event="send_error", **_error(exc))
        else:
            rec(event="send_ok")
        return
    await _json(send, {"messages": messages})


async def body_digest(scope, receive, send):
    """Reads the body slowly (a pause before each receive()) and answers with
    its length, SHA-256 and the largest message."""
    if scope["type"] != "http":
        return
    digest, length, largest, count = hashlib.sha256(), 0, 0, 0
    await asyncio.sleep(0.2)  # the client has to wait for us to start reading
    while True:
        m = await receive()
        assert m["type"] == "http.request", m
        body = m.get("body", b"")
        digest.update(body)
        length += len(body)
        largest = max(largest, len(body))
        count += 1
        if not m.get("more_body"):
            break
        if count % 16 == 0:
            await asyncio.sleep(0.001)
    await _json(
        send, {"length": length, "sha256": digest.hexdigest(), "largest": largest, "count": count}
    )


async def receive_after_response(scope, receive, send):
    """Answers at once, then calls receive() twice and records what it gave."""
    if scope["type"] != "http":
        return
    rec, q = Record(scope), _query(scope)
    if q.get("read_body"):
        while (await receive()).get("more_body"):
            pass
    await _respond(send, b"answered")
    for _ in range(2):
        t = time.monotonic()
        m = await receive()
        rec(event="after_response", type=m["type"], waited=time.monotonic() - t)


async def receive_timeout(scope, receive, send):
    """receive() under a short asyncio.timeout (the body is late), then again."""
    if scope["type"] != "http":
        return
    rec = Record(scope)
    body, events = b"", []
    try:
        async with asyncio.timeout(0.2):
            while True:
                m = await receive()
                body += m.get("body", b"")
                if not m.get("more_body"):
                    break
    except TimeoutError:
        events.append("timeout")
        rec(event="timeout", body=body.decode("latin-1"))
    try:
        while True:
            m = await receive()
            events.append(m["type"])
            body += m.get("body", b"")
            if m["type"] != "http.request" or not m.get("more_body"):
                break
    except Exception as exc:
        rec(event="receive_error", **_error(exc))
        await _json(send, {"error": _error(exc), "events": events}, 500)
        return
    await _json(send, {"body": body.decode("latin-1"), "events": events})


async def pending_receive(scope, receive, send):
    """A receive() still pending when the response completes (a disconnect
    listener): records what it gives, or that it gave nothing in 1.5 s."""
    if scope["type"] != "http":
        return
    rec = Record(scope)
    while (await receive()).get("more_body"):
        pass

    async def listen():
        return (await receive())["type"]

    listener = asyncio.ensure_future(listen())
    await asyncio.sleep(0.01)  # the listener is now waiting in receive()
    await _respond(send, b"answered")
    t = time.monotonic()
    try:
        got = await asyncio.wait_for(listener, 1.5)
    except TimeoutError:
        got = "nothing in 1.5 s"
    rec(event="listener", got=got, waited=time.monotonic() - t)


async def disconnect_poll(scope, receive, send):
    """Starlette's Request.is_disconnected(): receive() in a cancelled scope,
    several times, then reads nothing more and answers."""
    if scope["type"] != "http":
        return
    seen = []
    for _ in range(3):
        try:
            with anyio.CancelScope() as cs:
                cs.cancel()
                m = await receive()
                seen.append(m["type"])
        except Exception as exc:
            await _json(send, {"error": _error(exc), "seen": seen}, 500)
            return
        if cs.cancelled_caught:
            seen.append("cancelled")
    await _json(send, {"seen": seen})


# -- send() -----------------------------------------------------------------


async def stream(scope, receive, send):
    """?n chunks 'chunk-i\\n' with more_body, then an empty final message.

    X-Gate: before chunk i >= 1, wait until the file '<gate>.<i>' exists, so
    the test can prove each chunk reached it before the next was sent.
    ?length=1 declares the total Content-Length; ?last=1 sends the final
    chunk with more_body False instead of an empty closing message.
    """
    if scope["type"] != "http":
        return
    q, gate = _query(scope), _header(scope, b"x-gate")
    n = int(q.get("n", "3"))
    chunks = [f"chunk-{i}\n".encode() for i in range(n)]
    headers = [(b"content-type", b"text/plain")]
    if q.get("length"):
        headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i, chunk in enumerate(chunks):
        if gate and i > 0:
            await _wait_for_file(f"{gate}.{i}")
        last = bool(q.get("last")) and i == n - 1
        await send({"type": "http.response.body", "body": chunk, "more_body": not last})
    if not q.get("last"):
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def length_mismatch(scope, receive, send):
    """Declares Content-Length ?declared, sends ?actual bytes; records send()."""
    if scope["type"] != "http":
        return
    rec, q = Record(scope), _query(scope)
    declared, actual = int(q["declared"]), int(q["actual"])
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(declared).encode())],
        }
    )
    try:
        await send({"type": "http.response.body", "body": b"x" * actual})
    except Exception as exc:
        rec(event="send_error", **_error(exc))
    else:
        rec(event="send_ok")


async def stream_until_disconnect(scope, receive, send):
    """Streams ?ticks chunks a few ms apart (default: until send() fails, which
    it records), then ends the response."""
    if scope["type"] != "http":
        return
    rec = Record(scope)
    ticks = int(_query(scope).get("ticks", "2000"))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    sent = 0
    try:
        for _ in range(ticks):
            await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
            sent += 1
            await asyncio.sleep(0.005)
    except Exception as exc:
        rec(event="send_error", sent=sent, **_error(exc))
        raise
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def protocol_errors(scope, receive, send):
    """Breaks the http.response message order on purpose (?case=...)."""
    if scope["type"] != "http":
        return
    rec, case = Record(scope), _query(scope)["case"]
    if case == "body_before_start":
        try:
            await send({"type": "http.response.body", "body": b"early"})
        except Exception as exc:
            await _json(send, _error(exc))
        else:
            await _json(send, {"type": None})
    elif case == "double_start":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-first", b"1")]})
        try:
            await send({"type": "http.response.start", "status": 404, "headers": []})
        except Exception as exc:
            result = _error(exc)
        else:
            result = {"type": None}
        await send({"type": "http.response.body", "body": json.dumps(result).encode()})
    elif case == "body_after_complete":
        await _respond(send, b"complete")
        for message in (
            {"type": "http.response.body", "body": b"SMUGGLED"},
            {"type": "http.response.start", "status": 200, "headers": []},
        ):
            try:
                await send(message)
            except Exception as exc:
                rec(event="error", message_type=message["type"], **_error(exc))
            else:
                rec(event="accepted", message_type=message["type"])


BAD = {"cr": b"\r", "lf": b"\n", "nul": b"\x00", "crlf": b"\r\nX-Injected: yes"}


async def bad_header(scope, receive, send):
    """A response header with ?char (cr, lf, nul, crlf) in its ?where (name,
    value). ?catch=1: catch the error and answer with it, else let it raise."""
    if scope["type"] != "http":
        return
    q = _query(scope)
    bad = BAD[q["char"]]
    header = (b"x-bad" + bad, b"v") if q["where"] == "name" else (b"x-bad", b"v" + bad + b"w")
    try:
        await send({"type": "http.response.start", "status": 200, "headers": [header]})
    except ValueError as exc:
        if not q.get("catch"):
            raise
        await _json(send, _error(exc), 200)
        return
    await send({"type": "http.response.body", "body": b"accepted"})


async def flood(scope, receive, send):
    """?n chunks of ?size bytes (chunk i filled with byte i % 251), counting
    in the X-Progress file how many send() calls have returned, and recording
    each time send() handed back a Future (output backed up)."""
    if scope["type"] != "http":
        return
    rec, q = Record(scope), _query(scope)
    progress = Path(_header(scope, b"x-progress"))
    n, size = int(q["n"]), int(q["size"])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    futures = 0
    for i in range(n):
        awaitable = send(
            {"type": "http.response.body", "body": bytes([i % 251]) * size, "more_body": True}
        )
        if asyncio.isfuture(awaitable):
            futures += 1
            if futures == 1:
                rec(event="first_future", at=i)
        await awaitable
        tmp = progress.with_suffix(".tmp")
        tmp.write_text(str(i + 1))
        os.replace(tmp, progress)
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    rec(event="done", futures=futures)


# -- tasks, structured concurrency ------------------------------------------


async def tasks(scope, receive, send):
    """Tasks created so far, and the current task (?sleep: suspend first;
    ?spawn: create a Task)."""
    if scope["type"] != "http":
        return
    q = _query(scope)
    before = asyncio.current_task()
    if "sleep" in q:
        await asyncio.sleep(0.001)
    if "spawn" in q:  # a Task the app makes itself: the factory must count it
        await asyncio.create_task(asyncio.sleep(0))
    after = asyncio.current_task()
    await _json(
        send,
        {
            "created": TASKS["created"],
            "task": None if before is None else id(before),
            "same_within_request": before is after,
            "task_done": None if before is None else before.done(),
        },
    )


async def _double(x):
    await asyncio.sleep(0.001)
    return x * 2


async def _fail_soon():
    await asyncio.sleep(0.001)
    raise KeyError("child failed")


async def _append_later(items, x):
    await anyio.sleep(0.001)
    items.append(x)


async def structured(scope, receive, send):
    """asyncio.timeout, TaskGroup and anyio inside a request; ?when=after:
    suspend once first, so all of it runs in the host task's later steps."""
    if scope["type"] != "http":
        return
    q = _query(scope)
    task = asyncio.current_task()
    r: dict = {"cancelling_at_start": task.cancelling() if task is not None else None}
    if q.get("when") == "after":
        await asyncio.sleep(0)
        task = asyncio.current_task()
    r["has_task"] = task is not None

    t = time.monotonic()
    try:
        async with asyncio.timeout(0.05):
            await asyncio.sleep(3)
        r["timeout"] = "not raised"
    except TimeoutError:
        r["timeout"] = time.monotonic() - t
    try:
        async with asyncio.timeout(0):
            await asyncio.sleep(3)
        r["timeout0"] = "not raised"
    except TimeoutError:
        r["timeout0"] = "raised"
    async with asyncio.timeout(5):
        await asyncio.sleep(0.001)
    r["timeout_unexpired"] = "ok"

    async with asyncio.TaskGroup() as tg:
        children = [tg.create_task(_double(i)) for i in range(3)]
    r["taskgroup"] = [c.result() for c in children]
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_fail_soon())
            tg.create_task(asyncio.sleep(3))
        r["taskgroup_error"] = "not raised"
    except* KeyError as eg:
        r["taskgroup_error"] = [str(e) for e in eg.exceptions]

    t = time.monotonic()
    try:
        with anyio.fail_after(0.05):
            await anyio.sleep(3)
        r["fail_after"] = "not raised"
    except TimeoutError:
        r["fail_after"] = time.monotonic() - t
    with anyio.move_on_after(0.05) as cs:
        await anyio.sleep(3)
    r["move_on_after"] = cs.cancelled_caught
    r["to_thread"] = await anyio.to_thread.run_sync(threading.get_ident) != threading.get_ident()
    items: list = []
    async with anyio.create_task_group() as atg:
        atg.start_soon(_append_later, items, 1)
        atg.start_soon(_append_later, items, 2)
    r["anyio_taskgroup"] = sorted(items)

    r["same_task"] = asyncio.current_task() is task
    await _json(send, r)


async def leak_cancel(scope, receive, send):
    """Reports current_task().cancelling() on arrival, then (?how=...) leaves
    the task's cancel count raised, as a request in its own Task may:
    taskgroup: a TaskGroup child fails while the group waits in __aexit__
    (CPython 3.11's TaskGroup then never uncancels its parent);
    swallow: the app swallows a cancellation without uncancel()."""
    if scope["type"] != "http":
        return
    how = _query(scope).get("how")
    task = asyncio.current_task()
    at_start = task.cancelling()
    if how == "taskgroup":
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_fail_soon())
        except* KeyError:
            pass
    elif how == "swallow":
        asyncio.get_running_loop().call_soon(task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(1)
    await _json(send, {"at_start": at_start, "at_end": task.cancelling()})


# -- contextvars --------------------------------------------------------------

REQUEST_ID: contextvars.ContextVar = contextvars.ContextVar("request_id")


async def context(scope, receive, send):
    """What REQUEST_ID held on arrival; sets it to X-Id (?sleep: suspend)."""
    if scope["type"] != "http":
        return
    q = _query(scope)
    before = REQUEST_ID.get(None)
    REQUEST_ID.set(_header(scope, b"x-id"))
    if "sleep" in q:
        await asyncio.sleep(float(q["sleep"] or 0.001))
    await _json(send, {"before": before, "after": REQUEST_ID.get(None)})


# -- app failures -------------------------------------------------------------


async def fail(scope, receive, send):
    """Fails at the point ?when says."""
    if scope["type"] != "http":
        return
    when = _query(scope)["when"]
    if when == "ok":
        await _respond(send, b"ok")
        return
    if when == "before_start":
        raise RuntimeError("boom before start")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
    if when == "after_start":
        raise RuntimeError("boom after start")
    if when == "return_after_start":
        return
    await send({"type": "http.response.body", "body": b"partial-", "more_body": True})
    if when == "after_body":
        raise RuntimeError("boom after body")
    if when == "after_body_suspended":
        await asyncio.sleep(0.01)
        raise RuntimeError("boom after body, suspended")


async def raise_cancelled(scope, receive, send):
    """CancelledError the server did not cause: raised by the app (?how=raise)
    or from awaiting a future someone else cancelled (?how=await)."""
    if scope["type"] != "http":
        return
    if _query(scope).get("how") == "raise":
        raise asyncio.CancelledError()
    fut = asyncio.get_running_loop().create_future()
    fut.cancel()
    await fut


async def silent(scope, receive, send):
    """Returns without sending anything."""
    if scope["type"] == "http" and "sleep" in _query(scope):
        await asyncio.sleep(0.001)


# -- ASGI 2 ---------------------------------------------------------------------


class ASGI2Class:
    """The double-callable form of the ASGI 2 spec (asgiref's example)."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        if self.scope["type"] != "http":
            return
        await _json(send, {"interface": "asgi2-class", "path": self.scope["path"]})


def asgi2_function(scope):
    """ASGI 2 as a plain function returning a coroutine function."""

    async def instance(receive, send):
        if scope["type"] != "http":
            return
        await _json(send, {"interface": "asgi2-function", "path": scope["path"]})

    return instance


# -- lifespan -------------------------------------------------------------------

SCOPE_TYPES: list = []


async def lifespan_app(scope, receive, send):
    """Full lifespan support. Startup fills the state; shutdown appends to the
    file in $LIFESPAN_MARKER. Requests report their state and then change it;
    ?sleep=S holds the request S seconds (recording its start and end in the
    marker)."""
    SCOPE_TYPES.append(scope["type"])
    marker = os.environ.get("LIFESPAN_MARKER")
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await asyncio.sleep(0.05)  # a startup that suspends
                scope["state"]["started"] = "yes"
                scope["state"]["counter"] = 0
                scope["state"]["shared"] = []
                scope["state"]["loop_id"] = id(asyncio.get_running_loop())
                scope["state"]["event"] = asyncio.Event()
                scope["state"]["event_id"] = id(scope["state"]["event"])
                scope["state"]["lifespan_scope"] = {
                    "asgi": scope.get("asgi"),
                    "type": scope["type"],
                }
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if marker:
                    with open(marker, "a") as f:
                        f.write("shutdown\n")
                await send({"type": "lifespan.shutdown.complete"})
                return
    q = _query(scope)
    state = scope.get("state", {})
    event = state.get("event")
    if event is not None:
        event.set()  # usable: created on the same loop
    report = {
        "scope_types": SCOPE_TYPES,
        "started": state.get("started"),
        "counter": state.get("counter"),
        "added": state.get("added"),
        "shared": list(state.get("shared", [])),
        "same_loop": state.get("loop_id") == id(asyncio.get_running_loop()),
        "same_event": "event" in state and id(state["event"]) == state.get("event_id"),
        "lifespan_scope": state.get("lifespan_scope"),
    }
    if "counter" in state:
        state["counter"] += 1
        state["added"] = "by a request"
        state["shared"].append("x")
    if "sleep" in q:
        if marker:  # tells a test the request is in the app
            with open(marker, "a") as f:
                f.write("request started\n")
        await asyncio.sleep(float(q["sleep"]))
        if marker:
            with open(marker, "a") as f:
                f.write("request done\n")
    await _json(send, report)


async def lifespan_startup_failed(scope, receive, send):
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return
    await _respond(send, b"should never serve")


async def lifespan_startup_raises(scope, receive, send):
    """Startup raises $STARTUP_ERROR (default RuntimeError) after it began:
    the app plainly supports lifespan, and its startup failed."""
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        error = {"KeyError": KeyError, "ValueError": ValueError}.get(
            os.environ.get("STARTUP_ERROR", ""), RuntimeError
        )
        raise error("startup exploded")
    await _respond(send, b"should never serve")


async def lifespan_shutdown_failed(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.failed", "message": "could not flush"})
        return
    await _respond(send, b"ok")


async def http_only(scope, receive, send):
    """An app without lifespan support, as many are."""
    assert scope["type"] == "http", scope["type"]
    SCOPE_TYPES.append(scope["type"])
    await _json(send, {"scope_types": SCOPE_TYPES, "state": sorted(scope.get("state", {}))})


async def lifespan_returns(scope, receive, send):
    """Returns at once on lifespan without a word (no lifespan support)."""
    if scope["type"] == "lifespan":
        return
    await _respond(send, b"served")


class LifespanASGI2:
    """An ASGI 2 app with lifespan support."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        if self.scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.scope["state"]["via"] = "asgi2 lifespan"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await _json(send, {"via": self.scope.get("state", {}).get("via")})


# -- many clients ---------------------------------------------------------------


async def sleepy_echo(scope, receive, send):
    """Echoes the path after a short asyncio.sleep."""
    if scope["type"] != "http":
        return
    await asyncio.sleep(0.001)
    await _respond(send, scope["path"].encode())
