"""The ASGI http protocol over real sockets: receive(), send(), backpressure,
how app coroutines are run (host task, contextvars, timeouts, task groups,
anyio), app failures, ASGI 2 apps, and many clients at once.

Apps are in apps/asgi_protocol_apps.py. Where the response cannot carry what
the app saw (the client is gone, the response is over) the app appends JSON
lines to the file named in the request's X-Record header.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import Client, connect, request

APP = "asgi_protocol_apps"


# -- helpers ------------------------------------------------------------------


def records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def wait_records(path: Path, predicate, timeout: float = 5.0) -> list[dict]:
    """The records once predicate(records) holds."""
    deadline = time.monotonic() + timeout
    while True:
        recs = records(path)
        if predicate(recs):
            return recs
        if time.monotonic() > deadline:
            raise AssertionError(f"records never matched; got {recs}")
        time.sleep(0.01)


def get(target: str, *headers: str, version: str = "1.1") -> bytes:
    lines = [f"GET {target} HTTP/{version}", "Host: t", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post_head(target: str, *headers: str) -> bytes:
    lines = [f"POST {target} HTTP/1.1", "Host: t", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_chunk(c: Client) -> bytes | None:
    """One chunk of a chunked body as framed on the wire; None for the last."""
    size = int(c._line().split(b";")[0], 16)
    if size == 0:
        assert c._line() == b"", "trailers or garbage after the last chunk"
        return None
    c._need(size + 2)
    data, crlf, c.buf = c.buf[:size], c.buf[size : size + 2], c.buf[size + 2 :]
    assert crlf == b"\r\n"
    return data


def read_until(c: Client, end: bytes) -> bytes:
    """Raw bytes up to and including `end` (which ends the stream)."""
    data = bytearray(c.buf)
    c.buf = b""
    while not data.endswith(end):
        chunk = c.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} bytes")
        data += chunk
    return bytes(data)


def dechunk(raw: bytes) -> bytes:
    """The body of a complete chunked encoding."""
    out, at = bytearray(), 0
    while True:
        eol = raw.index(b"\r\n", at)
        size = int(raw[at:eol], 16)
        if size == 0:
            assert raw[eol:] == b"\r\n\r\n"
            return bytes(out)
        out += raw[eol + 2 : eol + 2 + size]
        assert raw[eol + 2 + size : eol + 4 + size] == b"\r\n"
        at = eol + 4 + size


def nothing_to_read(c: Client, wait: float) -> bool:
    """True if the server sent nothing (and did not close) within `wait`."""
    c.sock.settimeout(wait)
    try:
        data = c.sock.recv(65536)
    except TimeoutError:
        return True
    finally:
        c.sock.settimeout(5.0)
    c.buf += data
    return False


def still_serves(server) -> None:
    r = httpx.get(f"{server.url}/", timeout=5)
    assert r.status_code == 200


# -- receive() ----------------------------------------------------------------


def test_receive_delivers_body_pieces_as_they_arrive(serve, tmp_path):
    """A slow client: each piece reaches the app before the next is sent."""
    server = serve(f"{APP}:receive_recorder")
    rec = tmp_path / "rec"
    with connect(server) as c:
        c.send(post_head("/", "Content-Length: 15", f"X-Record: {rec}"))
        for i, piece in enumerate((b"aaaaa", b"bbbbb")):
            time.sleep(0.05)
            c.send(piece)
            wait_records(rec, lambda r, n=i + 1: len(r) == n)
        time.sleep(0.05)
        c.send(b"ccccc")
        status, _, body = c.response()
    assert status == 200
    assert json.loads(body)["messages"] == [
        {"type": "http.request", "body": "aaaaa", "more": True},
        {"type": "http.request", "body": "bbbbb", "more": True},
        {"type": "http.request", "body": "ccccc", "more": False},
    ]


def test_receive_chunked_upload_in_pieces(serve, tmp_path):
    server = serve(f"{APP}:receive_recorder")
    rec = tmp_path / "rec"
    with connect(server) as c:
        c.send(post_head("/", "Transfer-Encoding: chunked", f"X-Record: {rec}"))
        c.send(b"5\r\nhello\r\n")
        wait_records(rec, lambda r: len(r) == 1)
        c.send(b"6\r\n world\r\n")
        wait_records(rec, lambda r: len(r) == 2)
        c.send(b"0\r\n\r\n")
        status, _, body = c.response()
    assert status == 200
    messages = json.loads(body)["messages"]
    assert messages[:2] == [
        {"type": "http.request", "body": "hello", "more": True},
        {"type": "http.request", "body": " world", "more": True},
    ]
    assert messages[2:] == [{"type": "http.request", "body": "", "more": False}]


def test_receive_chunked_upload_at_once(serve):
    server = serve(f"{APP}:receive_recorder")
    raw = post_head("/", "Transfer-Encoding: chunked") + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    status, _, body = request(server, raw)
    messages = json.loads(body)["messages"]
    assert status == 200
    assert "".join(m["body"] for m in messages) == "hello world"
    assert [m["more"] for m in messages] == [True] * (len(messages) - 1) + [False]
    assert all(m["type"] == "http.request" for m in messages)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_large_body_to_slow_reader_arrives_intact(serve, framing):
    """4 MiB to an app that starts reading late and reads slowly: every byte
    arrives, in order, in messages of bounded size."""
    server = serve(f"{APP}:body_digest")
    data = os.urandom(4 << 20)
    if framing == "chunked":
        pieces = [data[i : i + 100_000] for i in range(0, len(data), 100_000)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        head = post_head("/", "Transfer-Encoding: chunked")
    else:
        payload, head = data, post_head("/", f"Content-Length: {len(data)}")
    with connect(server, timeout=10) as c:
        sender = threading.Thread(target=c.send, args=(head + payload,))
        sender.start()
        status, _, body = c.response()
        sender.join(5)
    result = json.loads(body)
    assert status == 200
    assert result["length"] == len(data)
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    assert result["largest"] <= 1 << 20, "the server buffered far more than it should"


@pytest.mark.parametrize(
    "raw",
    [
        get("/"),
        post_head("/", "Content-Length: 0"),
        post_head("/", "Transfer-Encoding: chunked") + b"0\r\n\r\n",
    ],
    ids=["get", "content-length-0", "chunked-empty"],
)
def test_receive_empty_body_is_one_message(serve, raw):
    server = serve(f"{APP}:receive_recorder")
    status, _, body = request(server, raw)
    assert status == 200
    assert json.loads(body)["messages"] == [{"type": "http.request", "body": "", "more": False}]


def test_receive_after_body_waits_for_disconnect(serve, tmp_path):
    """Once the body is over receive() blocks until the client goes away, then
    gives http.disconnect; send() then raises ClientDisconnected (an OSError)."""
    server = serve(f"{APP}:receive_recorder")
    rec = tmp_path / "rec"
    with connect(server) as c:
        c.send(get("/?after=wait", f"X-Record: {rec}"))
        wait_records(rec, lambda r: any(e["event"] == "waiting" for e in r))
        assert nothing_to_read(c, 0.3)
        assert not any(e["event"] == "after" for e in records(rec))
    recs = wait_records(rec, lambda r: any(e["event"].startswith("send_") for e in r))
    after = [e for e in recs if e["event"] == "after"]
    assert after == [{"event": "after", "type": "http.disconnect", "body": "", "more": False}]
    error = next(e for e in recs if e["event"].startswith("send_"))
    assert error["event"] == "send_error", error
    assert (
        error["type"] == "ClientDisconnected" and error["oserror"] and error["client_disconnected"]
    )
    still_serves(server)


def test_receive_after_response_is_disconnect(serve, tmp_path):
    """Per the spec, receive() after the response was sent gives http.disconnect
    at once, though the connection stays open (and keeps serving)."""
    server = serve(f"{APP}:receive_after_response")
    rec = tmp_path / "rec"
    with connect(server) as c:
        c.send(get("/", f"X-Record: {rec}"))
        assert c.response()[2] == b"answered"
        recs = wait_records(rec, lambda r: len(r) == 2, timeout=3)
        assert [e["type"] for e in recs] == ["http.disconnect", "http.disconnect"]
        assert all(e["waited"] < 1.0 for e in recs), recs
        c.send(get("/?read_body=1"))
        assert c.response()[:1] == (200,)


@pytest.mark.parametrize("client", ["closes", "stays"])
def test_receive_pending_when_response_completes(serve, tmp_path, client):
    """A receive() already waiting when the response completes (a disconnect
    listener) must not hang: it gives http.disconnect -- certainly once the
    client has closed the connection (the spec), and, as uvicorn does, as soon
    as the response is complete even if the connection stays open."""
    server = serve(f"{APP}:pending_receive")
    rec = tmp_path / "rec"
    with connect(server) as c:
        c.send(get("/", f"X-Record: {rec}"))
        assert c.response()[::2] == (200, b"answered")
        if client == "stays":
            recs = wait_records(rec, lambda r: len(r) == 1)
    if client == "closes":
        recs = wait_records(rec, lambda r: len(r) == 1)
    assert recs[0]["got"] == "http.disconnect", recs
    assert recs[0]["waited"] < 1.0


def test_expect_100_continue_on_receive(serve):
    """The interim 100 goes out when the app asks for the body, not before."""
    server = serve(f"{APP}:receive_recorder")
    with connect(server) as c:
        c.send(post_head("/", "Content-Length: 5", "Expect: 100-continue"))
        status, _, _ = c.head()
        assert status == 100
        c.send(b"hello")
        status, _, body = c.response()
    assert status == 200
    assert json.loads(body)["messages"] == [
        {"type": "http.request", "body": "hello", "more": False}
    ]


def test_disconnect_mid_body_reaches_app(serve, tmp_path):
    """Half a body, then the client closes: the app awaiting receive() gets
    http.disconnect, and send() raises ClientDisconnected."""
    server = serve(f"{APP}:receive_recorder")
    rec = tmp_path / "rec"
    with connect(server) as c:
        c.send(post_head("/", "Content-Length: 1000", f"X-Record: {rec}") + b"x" * 300)
        wait_records(rec, lambda r: len(r) >= 1)
    recs = wait_records(rec, lambda r: any(e["event"].startswith("send_") for e in r))
    messages = [e for e in recs if e["event"] == "message"]
    assert messages[-1]["type"] == "http.disconnect"
    assert all(m["type"] == "http.request" and m["more"] for m in messages[:-1])
    assert "".join(m["body"] for m in messages) == "x" * 300
    error = next(e for e in recs if e["event"].startswith("send_"))
    assert error["event"] == "send_error" and error["type"] == "ClientDisconnected", error
    assert error["oserror"]
    still_serves(server)


def test_receive_cancelled_by_timeout_can_be_called_again(serve, tmp_path):
    """A receive() cancelled by a timeout (the body is slow) must leave
    receive() usable: the app calls it again and gets the rest of the body."""
    server = serve(f"{APP}:receive_timeout")
    rec = tmp_path / "rec"
    with connect(server) as c:
        c.send(post_head("/", "Content-Length: 10", f"X-Record: {rec}") + b"12345")
        wait_records(rec, lambda r: len(r) >= 1)
        c.send(b"67890")
        status, _, body = c.response()
    data = json.loads(body)
    assert status == 200, data
    assert data["body"] == "1234567890"
    assert data["events"][0] == "timeout"


def test_receive_in_cancelled_scope_repeatedly(serve):
    """Starlette's Request.is_disconnected(): receive() in an already-cancelled
    anyio scope, more than once. Each call must be allowed."""
    server = serve(f"{APP}:disconnect_poll")
    r = httpx.get(f"{server.url}/", timeout=5)
    assert r.status_code == 200, r.text
    assert r.json()["seen"] == ["http.request", "cancelled", "cancelled"]


# -- send() ---------------------------------------------------------------------


def test_streaming_chunks_arrive_in_order_as_sent(serve, tmp_path):
    """HTTP/1.1 streaming: chunked coding, one chunk per message, each on the
    wire before the app sends the next; the connection is reusable after."""
    server = serve(f"{APP}:stream")
    gate = tmp_path / "gate"
    with connect(server) as c:
        c.send(get("/?n=4", f"X-Gate: {gate}"))
        status, headers, _ = c.head()
        assert status == 200
        assert headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in headers
        got = []
        for i in range(4):
            got.append(read_chunk(c))
            Path(f"{gate}.{i + 1}").touch()
        assert got == [f"chunk-{i}\n".encode() for i in range(4)]
        assert read_chunk(c) is None
        c.send(get("/?n=2"))
        status, _, body = c.response()
        assert (status, body) == (200, b"chunk-0\nchunk-1\n")


def test_streaming_http10_is_close_delimited(serve):
    server = serve(f"{APP}:stream")
    with connect(server) as c:
        c.send(get("/?n=3", version="1.0"))
        status, headers, _ = c.head()
        body = c.read_to_eof()
    assert status == 200
    assert "transfer-encoding" not in headers and "content-length" not in headers
    assert headers.get("connection", "close").lower() == "close"
    assert body == b"chunk-0\nchunk-1\nchunk-2\n"


def test_single_body_message_gets_content_length(serve):
    server = serve(f"{APP}:stream")
    status, headers, body = request(server, get("/?n=1&last=1"))
    assert status == 200
    assert headers.get("content-length") == "8" and "transfer-encoding" not in headers
    assert body == b"chunk-0\n"


def test_content_length_from_app_is_honoured(serve):
    """A declared Content-Length frames a streamed body: no chunked coding,
    and the connection is reused afterwards."""
    server = serve(f"{APP}:stream")
    with connect(server) as c:
        for _ in range(2):
            c.send(get("/?n=3&length=1"))
            status, headers, body = c.response()
            assert status == 200
            assert headers.get("content-length") == "24"
            assert "transfer-encoding" not in headers
            assert body == b"chunk-0\nchunk-1\nchunk-2\n"


def test_body_longer_than_content_length(serve):
    """The excess beyond the app's Content-Length is not sent (it would be
    read as the next response), the connection is closed, and send() raises
    RuntimeError (as under uvicorn), which is logged."""
    server = serve(f"{APP}:length_mismatch")
    with connect(server) as c:
        c.send(get("/?declared=5&actual=10"))
        status, headers, _ = c.head()
        rest = c.read_to_eof()
    assert status == 200 and headers["content-length"] == "5"
    assert rest == b"xxxxx"
    server.wait_log("Response content longer than Content-Length")


def test_body_shorter_than_content_length(serve):
    """The connection is closed after the short body (the client can tell it
    was cut short), send() raises RuntimeError, which is logged; the server
    goes on serving."""
    server = serve(f"{APP}:length_mismatch")
    with connect(server) as c:
        c.send(get("/?declared=10&actual=4"))
        status, headers, _ = c.head()
        assert status == 200 and headers["content-length"] == "10"
        assert c.closed(3)
        assert c.buf == b"xxxx"
    server.wait_log("Response content shorter than Content-Length")
    assert request(server, get("/?declared=3&actual=3"))[::2] == (200, b"xxx")


def test_body_before_start_raises_runtime_error(serve):
    server = serve(f"{APP}:protocol_errors")
    r = httpx.get(f"{server.url}/?case=body_before_start", timeout=5)
    assert r.status_code == 200
    err = r.json()
    assert err["type"] == "RuntimeError"
    assert "http.response.start" in err["message"]


def test_second_start_raises_runtime_error(serve):
    server = serve(f"{APP}:protocol_errors")
    r = httpx.get(f"{server.url}/?case=double_start", timeout=5)
    assert r.status_code == 200 and r.headers["x-first"] == "1"
    err = r.json()
    assert err["type"] == "RuntimeError"
    assert "http.response.start" in err["message"]


def test_messages_after_completion_raise_and_send_nothing(serve, tmp_path):
    server = serve(f"{APP}:protocol_errors")
    rec = tmp_path / "rec"
    with connect(server) as c:
        c.send(get("/?case=body_after_complete", f"X-Record: {rec}"))
        assert c.response()[::2] == (200, b"complete")
        recs = wait_records(rec, lambda r: len(r) == 2)
        assert [(e["event"], e["type"]) for e in recs] == [("error", "RuntimeError")] * 2, recs
        assert "completed" in recs[0]["message"]
        # Nothing the app tried to send leaked into the connection.
        c.send(get("/?case=body_before_start"))
        status, _, body = c.response()
        assert status == 200 and json.loads(body)["type"] == "RuntimeError"
        assert b"SMUGGLED" not in c.buf + body


@pytest.mark.parametrize("where", ["name", "value"])
@pytest.mark.parametrize("char", ["cr", "lf", "nul", "crlf"])
def test_invalid_header_raises_value_error(serve, where, char):
    """send() refuses the header with ValueError; the app can answer anew."""
    server = serve(f"{APP}:bad_header")
    status, headers, body = request(server, get(f"/?char={char}&where={where}&catch=1"))
    assert status == 200
    assert json.loads(body)["type"] == "ValueError"
    assert "x-bad" not in headers and "x-injected" not in headers


def test_invalid_header_uncaught_is_500(serve):
    server = serve(f"{APP}:bad_header")
    status, headers, _ = request(server, get("/?char=crlf&where=value"))
    assert status == 500
    assert "x-injected" not in headers and "x-bad" not in headers
    log = server.wait_log("Exception in ASGI application")
    assert "ValueError" in log


def test_send_after_client_disconnect_raises(serve, tmp_path):
    """The client reads a little of an endless stream and goes: the app's
    next send() raises ClientDisconnected, an OSError; the server goes on."""
    server = serve(f"{APP}:stream_until_disconnect")
    rec = tmp_path / "rec"
    with connect(server) as c:
        c.send(get("/", f"X-Record: {rec}"))
        c.head()
        assert read_chunk(c) == b"tick\n"
    recs = wait_records(rec, lambda r: len(r) == 1)
    assert recs[0]["event"] == "send_error"
    assert recs[0]["type"] == "ClientDisconnected" and recs[0]["oserror"]
    assert recs[0]["sent"] < 1000
    assert request(server, get("/?ticks=2"))[::2] == (200, b"tick\ntick\n")


# -- backpressure ---------------------------------------------------------------


def test_send_blocks_while_client_does_not_read(serve, tmp_path):
    """A client that stops reading: send() hands back a Future and the app
    stops far short of the whole body; reading resumes it; every byte arrives."""
    server = serve(f"{APP}:flood")
    rec, progress = tmp_path / "rec", tmp_path / "progress"
    n, size = 400, 65536  # 25 MiB, far more than the socket buffers hold
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    sock.settimeout(5)
    sock.connect((server.host, server.port))
    with Client(sock) as c:
        c.send(get(f"/?n={n}&size={size}", f"X-Record: {rec}", f"X-Progress: {progress}"))
        wait_records(rec, lambda r: any(e["event"] == "first_future" for e in r))

        def sent() -> int:
            return int(progress.read_text() or 0) if progress.exists() else 0

        # The app stalls: its count stops moving, well short of the total.
        deadline, last = time.monotonic() + 3, -1
        while time.monotonic() < deadline:
            now = sent()
            if now == last:
                break
            last = now
            time.sleep(0.25)
        stalled = sent()
        assert stalled == last, "the app kept sending while the client did not read"
        assert stalled < n // 4, f"{stalled} of {n} chunks sent to a client that reads nothing"
        print(f"stalled after {stalled} chunks")
        status, headers, _ = c.head()
        assert status == 200 and headers.get("transfer-encoding") == "chunked"
        body = dechunk(read_until(c, b"\r\n0\r\n\r\n"))
    assert len(body) == n * size
    for i in range(n):
        piece = body[i * size : (i + 1) * size]
        assert piece == bytes([i % 251]) * size, f"chunk {i} corrupted"
    recs = wait_records(rec, lambda r: any(e["event"] == "done" for e in r))
    assert next(e for e in recs if e["event"] == "done")["futures"] >= 1


# -- the host task: no Task per request -----------------------------------------


def keep_alive_json(server, targets: list[str]) -> list[dict]:
    out = []
    with connect(server) as c:
        for target in targets:
            c.send(get(target))
            status, _, body = c.response()
            assert status == 200, body
            out.append(json.loads(body))
    return out


def test_no_task_per_request(serve):
    """200 keep-alive requests to an app that never suspends: no Task is made
    for them, and all run in the connection's one host task."""
    server = serve(f"{APP}:tasks")
    *results, spawned = keep_alive_json(server, ["/"] * 200 + ["/?spawn"])
    # The factory counts: the host task itself, and a Task the app makes.
    assert results[0]["created"] >= 1
    assert spawned["created"] == results[-1]["created"] + 1
    assert results[-1]["created"] - results[0]["created"] <= 2, (results[0], results[-1])
    tasks = {r["task"] for r in results}
    assert None not in tasks
    assert len(tasks) == 1, "asyncio.current_task() changed between requests"
    assert all(r["same_within_request"] and r["task_done"] is False for r in results)


def test_suspending_app_keeps_its_task(serve):
    """An app that suspends runs on in the same host task: current_task() is
    stable within the request, and the task is reused by the next requests."""
    server = serve(f"{APP}:tasks")
    results = keep_alive_json(server, ["/?sleep", "/", "/?sleep"] * 20)
    assert all(r["task"] is not None and r["same_within_request"] for r in results)
    assert len({r["task"] for r in results}) == 1
    assert results[-1]["created"] - results[0]["created"] <= 2


def test_each_connection_has_its_own_task(serve):
    server = serve(f"{APP}:tasks")
    with connect(server) as a, connect(server) as b:
        ids = []
        for c in (a, b, a, b):
            c.send(get("/?sleep"))
            ids.append(json.loads(c.response()[2])["task"])
    assert ids[0] == ids[2] and ids[1] == ids[3] and ids[0] != ids[1]


@pytest.mark.parametrize("when", ["before", "after"])
def test_timeouts_task_groups_and_anyio_work(serve, when):
    """asyncio.timeout, TaskGroup and anyio's cancel scopes, threads and task
    groups, before and after the app first suspends; twice on one connection,
    so a cancellation left over from the first request would show in the second."""
    server = serve(f"{APP}:structured")
    for r in keep_alive_json(server, [f"/?when={when}"] * 2 + ["/?when=before"]):
        assert r["has_task"]
        assert r["cancelling_at_start"] is not None
        assert isinstance(r["timeout"], float) and 0.04 <= r["timeout"] < 1.0, r
        assert r["timeout0"] == "raised"
        assert r["timeout_unexpired"] == "ok"
        assert r["taskgroup"] == [0, 2, 4]
        assert r["taskgroup_error"] == ["'child failed'"]
        assert isinstance(r["fail_after"], float) and 0.04 <= r["fail_after"] < 1.0, r
        assert r["move_on_after"] is True
        assert r["to_thread"] is True
        assert r["anyio_taskgroup"] == [1, 2]
        assert r["same_task"] is True


@pytest.mark.parametrize("how", ["taskgroup", "swallow"])
def test_cancel_count_does_not_leak_into_next_request(serve, how):
    """A request that leaves its task's cancelling() count raised (CPython
    3.11's TaskGroup does, after a child failure) must not hand that count to
    the next request on the connection: with a Task per request (uvicorn,
    hypercorn) every request starts at cancelling() == 0."""
    server = serve(f"{APP}:leak_cancel")
    first, second, third = keep_alive_json(server, [f"/?how={how}", "/", "/"])
    assert first["at_start"] == 0
    assert second["at_start"] == 0, (first, second)
    assert third["at_start"] == 0


# -- contextvars ------------------------------------------------------------------


def test_contextvar_does_not_leak_between_keep_alive_requests(serve):
    server = serve(f"{APP}:context")
    with connect(server) as c:
        for i, target in enumerate(["/", "/?sleep", "/", "/?sleep", "/?sleep", "/"]):
            c.send(get(target, f"X-Id: r{i}"))
            status, _, body = c.response()
            assert status == 200
            assert json.loads(body) == {"before": None, "after": f"r{i}"}, (i, target)


@pytest.mark.parametrize("first", ["/?sleep", "/"], ids=["suspending", "not-suspending"])
def test_contextvar_does_not_leak_into_pipelined_request(serve, first):
    """Three requests in one packet. When a request suspends before it answers,
    the next starts after its response completed inside its context."""
    server = serve(f"{APP}:context")
    with connect(server) as c:
        c.send(get(first, "X-Id: one") + get("/?sleep", "X-Id: two") + get("/", "X-Id: three"))
        got = [json.loads(c.response()[2]) for _ in range(3)]
    assert got == [
        {"before": None, "after": "one"},
        {"before": None, "after": "two"},
        {"before": None, "after": "three"},
    ]


def test_contextvar_isolated_between_concurrent_requests(serve):
    server = serve(f"{APP}:context")

    def one(i: int) -> dict:
        r = httpx.get(f"{server.url}/?sleep=0.05", headers={"X-Id": f"c{i}"}, timeout=10)
        return r.json()

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    assert results == [{"before": None, "after": f"c{i}"} for i in range(20)]


# -- app failures -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "message"),
    [("before_start", "boom before start"), ("after_start", "boom after start")],
)
def test_exception_before_head_is_500(serve, when, message):
    server = serve(f"{APP}:fail")
    status, headers, _ = request(server, get(f"/?when={when}"))
    assert status == 500
    assert "x-app" not in headers
    log = server.wait_log(message)
    assert "Exception in ASGI application" in log
    assert "Traceback" in log and f"RuntimeError: {message}" in log
    assert request(server, get("/?when=ok"))[0] == 200


@pytest.mark.parametrize("when", ["after_body", "after_body_suspended"])
def test_exception_after_body_aborts_connection(serve, when):
    """The head and a chunk are out: the client must see a truncated response
    (no last chunk), not a complete one; the server goes on serving."""
    server = serve(f"{APP}:fail")
    with connect(server) as c:
        c.send(get(f"/?when={when}"))
        status, headers, _ = c.head()
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        rest = c.read_to_eof()
    assert rest.startswith(b"8\r\npartial-\r\n")
    assert b"0\r\n\r\n" not in rest
    server.wait_log("boom after body")
    assert "Exception in ASGI application" in server.log()
    assert request(server, get("/?when=ok"))[0] == 200


@pytest.mark.parametrize("how", ["raise", "await"])
def test_cancelled_error_from_app_is_an_app_error(serve, how):
    """A CancelledError the server did not cause (raised by the app, or from
    awaiting a future something else cancelled) is an app failure like any
    other: 500 and a logged traceback (as uvicorn does), not a silently
    dropped connection."""
    server = serve(f"{APP}:raise_cancelled")
    with connect(server) as c:
        c.send(get(f"/?how={how}"))
        try:
            status = c.response()[0]
        except ConnectionError:
            status = "connection dropped without a response"
    assert status == 500
    log = server.wait_log("CancelledError")
    assert "Exception in ASGI application" in log


@pytest.mark.parametrize("target", ["/", "/?sleep"])
def test_app_returning_without_response_is_500(serve, target):
    server = serve(f"{APP}:silent")
    status, _, _ = request(server, get(target))
    assert status == 500
    server.wait_log("returned without starting a response")
    assert request(server, get(target))[0] == 500


def test_app_returning_after_start_without_body_is_500(serve):
    server = serve(f"{APP}:fail")
    status, headers, _ = request(server, get("/?when=return_after_start"))
    assert status == 500 and "x-app" not in headers
    server.wait_log("returned without completing the response")
    assert request(server, get("/?when=ok"))[0] == 200


# -- ASGI 2 -------------------------------------------------------------------------


@pytest.mark.parametrize("options", [(), ("--interface", "asgi2")], ids=["auto", "asgi2"])
def test_asgi2_double_callable_class(serve, options):
    """asgiref's ASGI 2 form: a class taking scope whose instances have an
    async __call__(receive, send). uvicorn detects it as ASGI 2."""
    server = serve(f"{APP}:ASGI2Class", *options)
    r = httpx.get(f"{server.url}/p", timeout=5)
    assert r.status_code == 200, server.log()
    assert r.json() == {"interface": "asgi2-class", "path": "/p"}


@pytest.mark.parametrize("options", [(), ("--interface", "asgi2")], ids=["auto", "asgi2"])
def test_asgi2_function_returning_coroutine_function(serve, options):
    server = serve(f"{APP}:asgi2_function", *options)
    r = httpx.get(f"{server.url}/q", timeout=5)
    assert r.status_code == 200, server.log()
    assert r.json() == {"interface": "asgi2-function", "path": "/q"}


# -- many clients -----------------------------------------------------------------


def test_many_concurrent_clients(serve):
    """50 clients at once, 20 keep-alive requests each, to an app that suspends."""
    server = serve(f"{APP}:sleepy_echo", "--no-access-log")
    failures: list = []
    start = threading.Barrier(50)

    def client(i: int) -> int:
        ok = 0
        with connect(server, timeout=10) as c:
            start.wait()
            for j in range(20):
                c.send(get(f"/c{i}/r{j}"))
                status, _, body = c.response()
                if status == 200 and body == f"/c{i}/r{j}".encode():
                    ok += 1
                else:
                    failures.append((i, j, status, body[:100]))
        return ok

    with ThreadPoolExecutor(50) as pool:
        total = sum(pool.map(client, range(50)))
    assert failures == []
    assert total == 1000
