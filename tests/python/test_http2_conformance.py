"""HTTP/2 conformance as a table of raw-frame cases, in the spirit of h2spec's RFC 9113
and RFC 7541 suites: each case opens a fresh h2c (prior knowledge) connection to
oneloop, sends frames built by hand (tests/python/h2_support.py), and expects either a
connection error (GOAWAY with one of the listed codes, then close), a stream error
(RST_STREAM on that stream, or GOAWAY, with one of the codes), or a normal answer.

Where RFC 9113 lets a server answer a stream error with a connection error, either is
accepted, as h2spec does. The last test prints and checks the count:

    pytest tests/python/test_http2_conformance.py -s
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from h2_support import (
    CANCEL,
    COMPRESSION_ERROR,
    DATA,
    ENABLE_PUSH,
    END_STREAM,
    ERROR_NAMES,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADER_TABLE_SIZE,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_FRAME_SIZE,
    PING,
    PREFACE,
    PRIORITY,
    PROTOCOL_ERROR,
    REFERENCE,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    H2Conn,
    continuation,
    data,
    frame,
    goaway,
    h2_connect,
    h2_server,
    headers_frame,
    ping,
    priority,
    request_headers,
    rst_stream,
    settings,
    window_update,
)

# -- what a case expects ---------------------------------------------------------------


@dataclass
class Case:
    id: str
    section: str
    send: Callable[[H2Conn], None]
    expect: str  # "conn" | "stream" | "ok" | "ping"
    codes: tuple[int, ...] = ()
    stream: int = 1
    client_settings: tuple[tuple[int, int], ...] = ()
    handshake: bool = True
    not_acked: bytes | None = None
    reference_differs: str = ""  # why the reference server fails this case


def conn_error(*codes: int) -> dict:
    return {"expect": "conn", "codes": codes}


def stream_error(*codes: int, stream: int = 1) -> dict:
    return {"expect": "stream", "codes": codes, "stream": stream}


OK = {"expect": "ok"}
PING_OK = {"expect": "ping"}

CASES: list[Case] = []


def case(id: str, section: str, send, expect: dict, **kw) -> None:
    CASES.append(Case(id, section, send, **expect, **kw))


# -- helpers for the senders -----------------------------------------------------------


def get(c: H2Conn, sid: int = 1, path: str = "/", extra=(), **kw) -> bytes:
    """A HEADERS frame for a GET (not sent)."""
    return headers_frame(sid, c.block([*request_headers(path), *extra]), **kw)


def raw_block(*fields: tuple[str, str]) -> bytes:
    """A header block of literal fields without indexing (no table state touched)."""
    out = b""
    for name, value in fields:
        out += b"\x00" + hstr(name.encode()) + hstr(value.encode())
    return out


def hstr(s: bytes) -> bytes:
    """An HPACK string literal, not Huffman-coded (lengths < 127 here)."""
    assert len(s) < 127
    return bytes([len(s)]) + s


def base_block() -> bytes:
    """:method GET, :scheme http, :path / (static indices 2, 6, 4) and :authority."""
    return b"\x82\x86\x84" + b"\x01" + hstr(b"localhost")


def with_headers(c: H2Conn, fields, end_stream: bool = True) -> bytes:
    return headers_frame(1, c.block(fields), end_stream=end_stream)


BIG = "/download?size=1000000"


def held_open(c: H2Conn, sid: int = 1, path: str = "/") -> None:
    """Stream `sid` in half-closed (remote): request sent with END_STREAM, the response
    held back by the zero window the case's SETTINGS set."""
    c.send(get(c, sid, path))
    assert c.wait(lambda f: f.type == HEADERS and f.stream == sid), c.frames


def finished(c: H2Conn, sid: int = 1) -> None:
    """Stream `sid` closed: request and response both ended."""
    c.send(get(c, sid))
    c.response(sid)


def reset_by_client(c: H2Conn, sid: int = 1) -> None:
    """Stream `sid` open (a POST whose body has not ended), then reset by us."""
    c.send(headers_frame(sid, c.block(request_headers("/", "POST")), end_stream=False))
    c.send(rst_stream(sid, CANCEL))


ZERO_WINDOW = ((INITIAL_WINDOW_SIZE, 0),)

# -- 3.4 / 3.5 connection preface ------------------------------------------------------

case(
    "preface-then-ping-not-settings",
    "3.4",
    lambda c: c.send(PREFACE + ping()),
    conn_error(PROTOCOL_ERROR),
    handshake=False,
)
case(
    "preface-settings-then-request",
    "3.4",
    lambda c: c.send(get(c)),
    OK,
)
case(
    "preface-and-settings-in-separate-writes",
    "3.4",
    lambda c: (c.send(PREFACE[:10]), c.send(PREFACE[10:]), c.send(settings()), c.send(get(c))),
    OK,
    handshake=False,
)

# -- 4.1 frame format ------------------------------------------------------------------

case("unknown-frame-type-ignored", "4.1", lambda c: c.send(frame(0x20, 0, 0, b"xyz")), PING_OK)
case(
    "unknown-frame-type-on-stream-ignored",
    "4.1",
    lambda c: (c.send(frame(0x20, 0, 1, b"xyz")), c.send(get(c, 1))),
    OK,
)
case(
    "undefined-flags-on-ping-ignored",
    "4.1",
    lambda c: c.send(frame(PING, 0xFE, 0, b"abcdefgh")),
    PING_OK,
)


def _reserved_bit(c: H2Conn) -> bytes:
    f = get(c, 1)
    return f[:5] + struct.pack(">I", 0x80000001) + f[9:]


case("reserved-bit-in-stream-id-ignored", "4.1", lambda c: c.send(_reserved_bit(c)), OK)


case(
    "undefined-flags-on-headers-ignored",
    "4.1",
    lambda c: c.send(frame(HEADERS, 0x5 | 0x2 | 0x10 | 0x40, 1, c.block(request_headers()))),
    OK,
)

# -- 4.2 frame size --------------------------------------------------------------------

case(
    "data-larger-than-max-frame-size",
    "4.2",
    lambda c: (
        c.send(headers_frame(1, c.block(request_headers("/", "POST")), end_stream=False)),
        c.send(data(1, b"x" * 16385)),
    ),
    {"expect": "stream", "codes": (FRAME_SIZE_ERROR,), "stream": 1},
)
case(
    "headers-larger-than-max-frame-size",
    "4.2",
    lambda c: c.send(headers_frame(1, c.block([*request_headers(), ("x-big", "a" * 16500)]))),
    conn_error(FRAME_SIZE_ERROR),
)
case(
    "settings-frame-larger-than-max-frame-size",
    "4.2",
    lambda c: c.send(frame(SETTINGS, 0, 0, struct.pack(">HI", 0x30, 0) * 2731)),
    conn_error(FRAME_SIZE_ERROR),
)
case(
    "ping-with-length-field-lying",
    "4.2",
    lambda c: c.send(frame(PING, 0, 0, b"12345678", length=20000) + b"\0" * 20000),
    conn_error(FRAME_SIZE_ERROR),
)

# -- 4.3 header compression and decompression ------------------------------------------

case(
    "invalid-header-block-fragment",
    "4.3",
    lambda c: c.send(headers_frame(1, b"\x82\x86\x84\x41\x0fwww.example.com\x80")),
    conn_error(COMPRESSION_ERROR),
)
case(
    "priority-frame-while-sending-header-block",
    "4.3",
    lambda c: c.send(get(c, 1, end_headers=False), priority(1, 0)),
    conn_error(PROTOCOL_ERROR),
)
case(
    "headers-to-another-stream-while-sending-header-block",
    "4.3",
    lambda c: c.send(
        headers_frame(1, base_block(), end_headers=False), headers_frame(3, base_block())
    ),
    conn_error(PROTOCOL_ERROR),
)

# -- 5.1 stream states -----------------------------------------------------------------

case("idle-data", "5.1", lambda c: c.send(data(1, b"x")), conn_error(PROTOCOL_ERROR))
case("idle-rst-stream", "5.1", lambda c: c.send(rst_stream(1)), conn_error(PROTOCOL_ERROR))
case(
    "idle-window-update", "5.1", lambda c: c.send(window_update(1, 100)), conn_error(PROTOCOL_ERROR)
)
case(
    "idle-continuation",
    "5.1",
    lambda c: c.send(continuation(1, base_block())),
    conn_error(PROTOCOL_ERROR),
)
case(
    "half-closed-remote-data",
    "5.1",
    lambda c: (held_open(c), c.send(data(1, b"x"))),
    stream_error(STREAM_CLOSED),
    client_settings=ZERO_WINDOW,
)
case(
    "half-closed-remote-headers",
    "5.1",
    lambda c: (held_open(c), c.send(headers_frame(1, c.block([("x-trailer", "1")])))),
    stream_error(STREAM_CLOSED),
    client_settings=ZERO_WINDOW,
)
case(
    "half-closed-remote-continuation",
    "5.1",
    lambda c: (held_open(c), c.send(continuation(1, c.block([("x-a", "1")])))),
    conn_error(PROTOCOL_ERROR),
    client_settings=ZERO_WINDOW,
)
case(
    "closed-data-after-rst-stream",
    "5.1",
    lambda c: (reset_by_client(c), c.send(data(1, b"x"))),
    stream_error(STREAM_CLOSED),
)
case(
    "closed-headers-after-rst-stream",
    "5.1",
    lambda c: (reset_by_client(c), c.send(headers_frame(1, c.block([("x-a", "1")])))),
    stream_error(STREAM_CLOSED),
)
case(
    "closed-continuation-after-rst-stream",
    "5.1",
    lambda c: (reset_by_client(c), c.send(continuation(1, c.block([("x-a", "1")])))),
    conn_error(PROTOCOL_ERROR),
)
case(
    "closed-data",
    "5.1",
    lambda c: (finished(c), c.send(data(1, b"x"))),
    stream_error(STREAM_CLOSED),
)
case(
    "closed-headers",
    "5.1",
    lambda c: (finished(c), c.send(headers_frame(1, c.block([("x-a", "1")])))),
    stream_error(STREAM_CLOSED, PROTOCOL_ERROR),
)
case(
    "closed-continuation",
    "5.1",
    lambda c: (finished(c), c.send(continuation(1, c.block([("x-a", "1")])))),
    conn_error(PROTOCOL_ERROR),
)
case(
    "closed-priority-allowed",
    "5.1",
    lambda c: (finished(c), c.send(priority(1, 0))),
    PING_OK,
)

# -- 5.1.1 stream identifiers ----------------------------------------------------------

case("even-stream-id", "5.1.1", lambda c: c.send(get(c, 2)), conn_error(PROTOCOL_ERROR))
case(
    "decreasing-stream-id",
    "5.1.1",
    lambda c: (finished(c, 5), c.send(get(c, 3))),
    conn_error(PROTOCOL_ERROR),
    reference_differs="nghttp2 ignores a HEADERS whose id is below the last one",
)
case(
    "reused-stream-id",
    "5.1.1",
    lambda c: (finished(c, 1), c.send(get(c, 1))),
    conn_error(PROTOCOL_ERROR, STREAM_CLOSED),
)
case(
    "stream-ids-may-skip",
    "5.1.1",
    lambda c: (finished(c, 1), c.send(get(c, 11))),
    {"expect": "ok", "stream": 11},
)

# -- 5.1.2 concurrency -----------------------------------------------------------------


def over_concurrency(c: H2Conn) -> None:
    limit = c.server_settings.get(3, 100)  # SETTINGS_MAX_CONCURRENT_STREAMS
    c.wait(lambda f: f.type == SETTINGS and f.flags & 1)  # our SETTINGS acked
    for i in range(limit):
        c.send(get(c, 1 + 2 * i))
    c.send(get(c, 1 + 2 * limit))
    CONCURRENCY["stream"] = 1 + 2 * limit


CONCURRENCY: dict = {}
case(
    "streams-beyond-max-concurrent",
    "5.1.2",
    over_concurrency,
    {"expect": "stream", "codes": (REFUSED_STREAM, PROTOCOL_ERROR), "stream": -1},
    client_settings=ZERO_WINDOW,
)

# -- 5.3 priority ----------------------------------------------------------------------

case(
    "headers-depending-on-itself",
    "5.3.1",
    lambda c: c.send(headers_frame(1, c.block(request_headers()), depends=1)),
    stream_error(PROTOCOL_ERROR),
)
case(
    "priority-depending-on-itself",
    "5.3.1",
    lambda c: c.send(priority(1, 1)),
    stream_error(PROTOCOL_ERROR),
)

# -- 5.5 extensions --------------------------------------------------------------------

case(
    "unknown-frame-inside-header-block",
    "5.5",
    lambda c: c.send(
        headers_frame(1, base_block(), end_headers=False),
        frame(0x20, 0, 1, b"x"),
        continuation(1, b""),
    ),
    conn_error(PROTOCOL_ERROR),
)

# -- 6.1 DATA --------------------------------------------------------------------------

case("data-on-stream-0", "6.1", lambda c: c.send(data(0, b"x")), conn_error(PROTOCOL_ERROR))
case(
    "data-pad-length-too-long",
    "6.1",
    lambda c: c.send(
        headers_frame(1, c.block(request_headers("/", "POST")), end_stream=False),
        frame(DATA, END_STREAM | 0x8, 1, b"\x06hello"),
    ),
    conn_error(PROTOCOL_ERROR),
)
case(
    "data-padded-accepted",
    "6.1",
    lambda c: c.send(
        headers_frame(1, c.block(request_headers("/", "POST")), end_stream=False),
        data(1, b"body", pad=10),
    ),
    OK,
)
case(
    "data-empty-with-end-stream",
    "6.1",
    lambda c: c.send(
        headers_frame(1, c.block(request_headers("/", "POST")), end_stream=False), data(1, b"")
    ),
    OK,
)

# -- 6.2 HEADERS -----------------------------------------------------------------------

case("headers-on-stream-0", "6.2", lambda c: c.send(get(c, 0)), conn_error(PROTOCOL_ERROR))
case(
    "headers-pad-length-too-long",
    "6.2",
    lambda c: c.send(frame(HEADERS, 0x5 | 0x8, 1, b"\x20" + base_block())),
    conn_error(PROTOCOL_ERROR),
)
case("headers-padded-accepted", "6.2", lambda c: c.send(get(c, pad=20)), OK)
case("headers-with-priority-accepted", "6.2", lambda c: c.send(get(c, depends=0, weight=200)), OK)
case(
    "headers-without-end-headers-then-data",
    "6.2",
    lambda c: c.send(headers_frame(1, base_block(), end_headers=False, end_stream=False), data(1)),
    conn_error(PROTOCOL_ERROR),
)

# -- 6.3 PRIORITY ----------------------------------------------------------------------

case("priority-on-stream-0", "6.3", lambda c: c.send(priority(0, 1)), conn_error(PROTOCOL_ERROR))
case(
    "priority-length-4",
    "6.3",
    lambda c: c.send(frame(PRIORITY, 0, 1, b"\0\0\0\0")),
    stream_error(FRAME_SIZE_ERROR),
)
case(
    "priority-on-idle-stream-allowed",
    "6.3",
    lambda c: c.send(priority(3, 0), get(c, 1)),
    OK,
)

# -- 6.4 RST_STREAM --------------------------------------------------------------------

case("rst-stream-on-stream-0", "6.4", lambda c: c.send(rst_stream(0)), conn_error(PROTOCOL_ERROR))
case(
    "rst-stream-length-3",
    "6.4",
    lambda c: (c.send(get(c, 1, end_stream=False)), c.send(frame(RST_STREAM, 0, 1, b"\0\0\x08"))),
    conn_error(FRAME_SIZE_ERROR),
)
case(
    "rst-stream-then-new-stream",
    "6.4",
    lambda c: (reset_by_client(c, 1), c.send(get(c, 3))),
    {"expect": "ok", "stream": 3},
)

# -- 6.5 SETTINGS ----------------------------------------------------------------------

case(
    "settings-ack-with-payload",
    "6.5",
    lambda c: c.send(frame(SETTINGS, 1, 0, struct.pack(">HI", 1, 4096))),
    conn_error(FRAME_SIZE_ERROR),
)
case(
    "settings-on-stream-1", "6.5", lambda c: c.send(settings(stream=1)), conn_error(PROTOCOL_ERROR)
)
case(
    "settings-length-not-multiple-of-6",
    "6.5",
    lambda c: c.send(frame(SETTINGS, 0, 0, b"\0\x03\0\0\0")),
    conn_error(FRAME_SIZE_ERROR),
)
case(
    "settings-enable-push-2",
    "6.5.2",
    lambda c: c.send(settings((ENABLE_PUSH, 2))),
    conn_error(PROTOCOL_ERROR),
)
case(
    "settings-initial-window-size-over-max",
    "6.5.2",
    lambda c: c.send(settings((INITIAL_WINDOW_SIZE, 2**31))),
    conn_error(FLOW_CONTROL_ERROR),
)
case(
    "settings-max-frame-size-below-16384",
    "6.5.2",
    lambda c: c.send(settings((MAX_FRAME_SIZE, 16383))),
    conn_error(PROTOCOL_ERROR),
)
case(
    "settings-max-frame-size-over-2^24-1",
    "6.5.2",
    lambda c: c.send(settings((MAX_FRAME_SIZE, 2**24))),
    conn_error(PROTOCOL_ERROR),
)
case(
    "settings-unknown-identifier-ignored",
    "6.5.2",
    lambda c: c.send(settings((0xFF, 1), (0x7777, 123456))),
    PING_OK,
)
case(
    "settings-acked",
    "6.5.3",
    lambda c: c.send(settings((HEADER_TABLE_SIZE, 4096))),
    {"expect": "settings_ack"},
)
case(
    "settings-header-table-size-0-responses-still-decode",
    "6.5.2",
    lambda c: (c.send(settings((HEADER_TABLE_SIZE, 0))), c.send(get(c))),
    OK,
)
case(
    "settings-max-frame-size-max-accepted",
    "6.5.2",
    lambda c: (c.send(settings((MAX_FRAME_SIZE, 2**24 - 1))), c.send(get(c))),
    OK,
)
case(
    "settings-enable-push-0-and-1-accepted",
    "6.5.2",
    lambda c: (c.send(settings((ENABLE_PUSH, 0))), c.send(settings((ENABLE_PUSH, 1)))),
    PING_OK,
)

# -- 6.7 PING --------------------------------------------------------------------------

case("ping-acked-with-same-payload", "6.7", lambda c: None, PING_OK)
case(
    "ping-ack-from-client-not-answered",
    "6.7",
    lambda c: c.send(ping(b"unasked!", ack=True)),
    {"expect": "ping", "not_acked": b"unasked!"},
)
case("ping-on-stream-1", "6.7", lambda c: c.send(ping(stream=1)), conn_error(PROTOCOL_ERROR))
case(
    "ping-length-7",
    "6.7",
    lambda c: c.send(frame(PING, 0, 0, b"1234567")),
    conn_error(FRAME_SIZE_ERROR),
)
case(
    "ping-length-9",
    "6.7",
    lambda c: c.send(frame(PING, 0, 0, b"123456789")),
    conn_error(FRAME_SIZE_ERROR),
)

# -- 6.8 GOAWAY ------------------------------------------------------------------------

case("goaway-on-stream-1", "6.8", lambda c: c.send(goaway(stream=1)), conn_error(PROTOCOL_ERROR))

# -- 6.9 WINDOW_UPDATE -----------------------------------------------------------------

case(
    "window-update-0-on-connection",
    "6.9",
    lambda c: c.send(window_update(0, 0)),
    conn_error(PROTOCOL_ERROR),
)
case(
    "window-update-0-on-stream",
    "6.9",
    lambda c: (held_open(c), c.send(window_update(1, 0))),
    stream_error(PROTOCOL_ERROR),
    client_settings=ZERO_WINDOW,
)
case(
    "window-update-length-3",
    "6.9",
    lambda c: c.send(frame(WINDOW_UPDATE, 0, 0, b"\0\0\x01")),
    conn_error(FRAME_SIZE_ERROR),
)
case(
    "window-update-connection-overflow",
    "6.9.1",
    lambda c: c.send(window_update(0, 2**31 - 1), window_update(0, 2**31 - 1)),
    conn_error(FLOW_CONTROL_ERROR),
)
case(
    "window-update-stream-overflow",
    "6.9.1",
    lambda c: (
        held_open(c, path=BIG),
        c.send(window_update(1, 2**31 - 1) + window_update(1, 2**31 - 1)),
    ),
    stream_error(FLOW_CONTROL_ERROR),
    client_settings=ZERO_WINDOW,
)
case(
    "settings-initial-window-size-overflows-open-stream",
    "6.9.2",
    lambda c: (
        held_open(c, path=BIG),
        c.send(window_update(1, 2**31 - 1) + settings((INITIAL_WINDOW_SIZE, 2**31 - 1))),
    ),
    # RFC 9113 6.9.2 says connection error; nghttp2 resets the stream that overflows.
    stream_error(FLOW_CONTROL_ERROR),
    client_settings=ZERO_WINDOW,
)
case(
    "window-update-releases-held-response",
    "6.9",
    lambda c: (held_open(c), c.send(window_update(1, 1 << 20))),
    OK,
    client_settings=ZERO_WINDOW,
)
case(
    "settings-initial-window-size-change-releases-response",
    "6.9.2",
    lambda c: (held_open(c), c.send(settings((INITIAL_WINDOW_SIZE, 65535)))),
    OK,
    client_settings=ZERO_WINDOW,
)

# -- 6.10 CONTINUATION -----------------------------------------------------------------


def split(c: H2Conn, parts: int) -> None:
    block = c.block([*request_headers(), *[(f"x-h{i}", "v" * 20) for i in range(parts)]])
    step = max(1, len(block) // parts)
    chunks = [block[i : i + step] for i in range(0, len(block), step)]
    c.send(headers_frame(1, chunks[0], end_headers=False))
    for chunk in chunks[1:-1]:
        c.send(continuation(1, chunk, end_headers=False))
    c.send(continuation(1, chunks[-1]))


case("continuation-one", "6.10", lambda c: split(c, 2), OK)
case("continuation-several", "6.10", lambda c: split(c, 8), OK)
case(
    "continuation-after-end-headers",
    "6.10",
    lambda c: c.send(get(c, end_stream=False), continuation(1, c.block([("x-a", "1")]))),
    conn_error(PROTOCOL_ERROR),
)
case(
    "continuation-on-stream-0",
    "6.10",
    lambda c: c.send(headers_frame(1, base_block(), end_headers=False), continuation(0, b"")),
    conn_error(PROTOCOL_ERROR),
)
case(
    "continuation-on-other-stream",
    "6.10",
    lambda c: c.send(headers_frame(1, base_block(), end_headers=False), continuation(3, b"")),
    conn_error(PROTOCOL_ERROR),
)
case(
    "continuation-interleaved-with-ping",
    "6.10",
    lambda c: c.send(headers_frame(1, base_block(), end_headers=False), ping()),
    conn_error(PROTOCOL_ERROR),
)

# -- 8.1 HTTP message framing ----------------------------------------------------------


case(
    "second-headers-without-end-stream",
    "8.1",
    lambda c: c.send(
        headers_frame(1, c.block(request_headers("/", "POST")), end_stream=False),
        headers_frame(1, c.block([("x-trailer", "1")]), end_stream=False),
    ),
    stream_error(PROTOCOL_ERROR),
)
case(
    "trailers-accepted",
    "8.1",
    lambda c: c.send(
        headers_frame(1, c.block(request_headers("/", "POST")), end_stream=False),
        data(1, b"abc", end=False),
        headers_frame(1, c.block([("x-trailer", "1")])),
    ),
    OK,
)
case(
    "pseudo-header-in-trailers",
    "8.1",
    lambda c: c.send(
        headers_frame(1, c.block(request_headers("/", "POST")), end_stream=False),
        data(1, b"abc", end=False),
        headers_frame(1, c.block([(":path", "/x")])),
    ),
    stream_error(PROTOCOL_ERROR),
)
case(
    "content-length-larger-than-data",
    "8.1.1",
    lambda c: c.send(
        headers_frame(
            1, c.block([*request_headers("/", "POST"), ("content-length", "10")]), end_stream=False
        ),
        data(1, b"abc"),
    ),
    stream_error(PROTOCOL_ERROR),
)
case(
    "content-length-smaller-than-data",
    "8.1.1",
    lambda c: c.send(
        headers_frame(
            1, c.block([*request_headers("/", "POST"), ("content-length", "2")]), end_stream=False
        ),
        data(1, b"abcdef"),
    ),
    stream_error(PROTOCOL_ERROR),
)
case(
    "content-length-matching-accepted",
    "8.1.1",
    lambda c: c.send(
        headers_frame(
            1, c.block([*request_headers("/", "POST"), ("content-length", "3")]), end_stream=False
        ),
        data(1, b"abc"),
    ),
    OK,
)

# -- 8.2 header fields -----------------------------------------------------------------

BAD_FIELDS = {
    "uppercase-header-name": ("X-Upper", "1"),
    "connection-header": ("connection", "keep-alive"),
    "keep-alive-header": ("keep-alive", "timeout=5"),
    "proxy-connection-header": ("proxy-connection", "keep-alive"),
    "transfer-encoding-header": ("transfer-encoding", "chunked"),
    "upgrade-header": ("upgrade", "h2c"),
    "te-other-than-trailers": ("te", "gzip"),
    "space-in-header-name": ("x y", "1"),
    "colon-inside-header-name": ("x:y", "1"),
    "empty-header-name": ("", "1"),
    "nul-in-header-value": ("x-a", "a\x00b"),
    "cr-in-header-value": ("x-a", "a\rb"),
    "lf-in-header-value": ("x-a", "a\nb"),
}
for _id, _field in BAD_FIELDS.items():
    case(
        _id,
        "8.2",
        lambda c, f=_field: c.send(headers_frame(1, base_block() + raw_block(f))),
        stream_error(PROTOCOL_ERROR),
    )
case(
    "te-trailers-accepted",
    "8.2.2",
    lambda c: c.send(get(c, extra=[("te", "trailers")])),
    OK,
)

# -- 8.3 pseudo-header fields ----------------------------------------------------------

BAD_PSEUDO = {
    "unknown-pseudo-header": [*request_headers(), (":foo", "bar")],
    "response-pseudo-header-in-request": [*request_headers(), (":status", "200")],
    "pseudo-header-after-regular": [
        (":method", "GET"),
        (":scheme", "http"),
        ("x-a", "1"),
        (":path", "/"),
    ],
    "duplicate-method": [*request_headers(), (":method", "GET")],
    "duplicate-path": [*request_headers(), (":path", "/")],
    "duplicate-scheme": [*request_headers(), (":scheme", "http")],
    "missing-method": [(":scheme", "http"), (":path", "/"), (":authority", "localhost")],
    "missing-scheme": [(":method", "GET"), (":path", "/"), (":authority", "localhost")],
    "missing-path": [(":method", "GET"), (":scheme", "http"), (":authority", "localhost")],
    "empty-path": [(":method", "GET"), (":scheme", "http"), (":path", ""), (":authority", "x")],
}
for _id, _fields in BAD_PSEUDO.items():
    case(
        _id,
        "8.3",
        lambda c, f=_fields: c.send(headers_frame(1, raw_block(*f))),
        stream_error(PROTOCOL_ERROR),
    )
case(
    "authority-and-host-accepted",
    "8.3.1",
    lambda c: c.send(get(c, extra=[("host", "localhost")])),
    OK,
)
case(
    "host-without-authority-accepted",
    "8.3.1",
    lambda c: c.send(
        headers_frame(
            1, raw_block((":method", "GET"), (":scheme", "http"), (":path", "/"), ("host", "x"))
        )
    ),
    OK,
)

# -- RFC 7541 HPACK --------------------------------------------------------------------

HPACK_ERRORS = {
    # Indexed field 0 is not allowed (RFC 7541 6.1).
    "hpack-index-0": b"\x80",
    # Indexed field beyond the static table and the one dynamic entry (2.3.3).
    "hpack-index-beyond-tables": b"\xbf",
    # Literal with incremental indexing, its name index beyond the tables.
    "hpack-literal-name-index-beyond-tables": b"\x7f\x10\x01a",
    # Dynamic table size update beyond SETTINGS_HEADER_TABLE_SIZE (6.3).
    "hpack-table-size-update-too-large": b"\x3f\xe1\x1f",
    # Dynamic table size update after a field (4.2).
    "hpack-table-size-update-after-field": b"\x82\x20",
    # Huffman string with the EOS symbol inside (5.2).
    "hpack-huffman-eos": b"\x00\x81\x00\x84\xff\xff\xff\xff",
    # Huffman padding longer than 7 bits (5.2).
    "hpack-huffman-padding-too-long": b"\x00\x81\x00\x82\x1f\xff",
    # Huffman padding not made of EOS's most significant bits (5.2).
    "hpack-huffman-padding-zeros": b"\x00\x81\x00\x81\x00",
    # Integer that overflows (5.1).
    "hpack-integer-overflow": b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
    # String literal longer than the block.
    "hpack-truncated-string": b"\x00\x05ab",
    # Block ends inside an integer.
    "hpack-truncated-integer": b"\xff",
}
for _id, _block in HPACK_ERRORS.items():
    case(
        _id,
        "RFC 7541",
        lambda c, b=_block: c.send(headers_frame(1, b"\x82\x86\x84\x41\x09localhost" + b)),
        conn_error(COMPRESSION_ERROR),
    )
case(
    "hpack-table-size-update-to-0-at-start",
    "RFC 7541 4.2",
    lambda c: c.send(headers_frame(1, b"\x20" + base_block())),
    OK,
)
case(
    "hpack-huffman-strings-accepted",
    "RFC 7541 5.2",
    lambda c: c.send(headers_frame(1, c.block([*request_headers(), ("x-huff", "hello")], True))),
    OK,
)
case(
    "hpack-dynamic-table-reused-across-streams",
    "RFC 7541 2.3",
    lambda c: (
        c.send(get(c, 1, extra=[("x-same", "v" * 40)])),
        c.response(1),
        c.send(get(c, 3, extra=[("x-same", "v" * 40)])),
    ),
    {"expect": "ok", "stream": 3},
)
case(
    "hpack-never-indexed-literal-accepted",
    "RFC 7541 6.2.3",
    lambda c: c.send(headers_frame(1, base_block() + b"\x10" + hstr(b"x-secret") + hstr(b"1"))),
    OK,
)


# -- the runner ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with h2_server(tmp_path_factory.mktemp("h2conf"), "h2_apps:app") as s:
        yield s


RESULTS: dict[str, bool] = {}


def describe(frames) -> str:
    return "\n  ".join(repr(f) for f in frames[-12:])


def check(c: H2Conn, k: Case) -> None:
    if k.expect == "conn":
        got = c.goaway(5)
        assert got is not None, f"no GOAWAY; frames:\n  {describe(c.frames)}"
        assert got.error_code in k.codes, (
            f"GOAWAY {ERROR_NAMES.get(got.error_code)}, expected "
            f"{[ERROR_NAMES[x] for x in k.codes]}; frames:\n  {describe(c.frames)}"
        )
        assert c.closes(5), "connection not closed after GOAWAY"
    elif k.expect == "stream":
        sid = CONCURRENCY["stream"] if k.stream == -1 else k.stream
        got = c.wait(lambda f: f.type == GOAWAY or (f.type == RST_STREAM and f.stream == sid), 5)
        assert got is not None, (
            f"no RST_STREAM on {sid} nor GOAWAY; frames:\n  {describe(c.frames)}"
        )
        assert got.error_code in k.codes, (
            f"{got!r}, expected {[ERROR_NAMES[x] for x in k.codes]}; "
            f"frames:\n  {describe(c.frames)}"
        )
        if got.type == RST_STREAM:  # a stream error leaves the connection usable
            c.send(ping(b"after-rs"))
            assert c.wait(lambda f: f.type == PING and f.payload == b"after-rs", 5), describe(
                c.frames
            )
    elif k.expect == "ok":
        head, body = c.response(k.stream or 1)
        assert head[":status"] == "200", head
        assert body == b"hello", body
        assert not [f for f in c.frames if f.type in (GOAWAY, RST_STREAM)], describe(c.frames)
    elif k.expect == "ping":
        c.send(ping(b"checking"))
        got = c.wait(lambda f: f.type == PING and f.flags & 1 and f.payload == b"checking", 5)
        assert got is not None, f"no PING ack; frames:\n  {describe(c.frames)}"
        bad = [f for f in c.frames if f.type in (GOAWAY, RST_STREAM)]
        assert not bad, describe(c.frames)
        if k.not_acked:
            assert not [f for f in c.frames if f.type == PING and f.payload == k.not_acked]
    elif k.expect == "settings_ack":
        acks = lambda: [f for f in c.frames if f.type == SETTINGS and f.flags & 1]  # noqa: E731
        c.send(ping(b"checking"))
        c.wait(lambda f: f.type == PING and f.payload == b"checking", 5)
        assert len(acks()) >= 2, describe(c.frames)  # the handshake's and this one's


def params():
    for k in CASES:
        marks = ()
        if REFERENCE and k.reference_differs:
            marks = pytest.mark.xfail(reason=k.reference_differs, strict=True)
        yield pytest.param(k, id=f"{k.section}:{k.id}", marks=marks)


@pytest.mark.parametrize("k", list(params()))
def test_case(server, k: Case):
    RESULTS[k.id] = False
    c = h2_connect(server.host, server.port)
    try:
        if k.handshake:
            c.handshake(*k.client_settings)
        k.send(c)
        check(c, k)
    finally:
        c.close()
    RESULTS[k.id] = True


def test_count():
    """Prints the count (run with -s to see it); fails if a case ran and failed."""
    passed = sum(RESULTS.values())
    differs = {k.id for k in CASES if REFERENCE and k.reference_differs}
    failed = sorted(k for k, ok in RESULTS.items() if not ok and k not in differs)
    print(
        f"\nHTTP/2 conformance: {passed} of {len(RESULTS)} cases passed ({len(CASES)} in the table)"
    )
    if failed:
        print("failed: " + ", ".join(failed))
    assert not failed
    assert len(CASES) >= 60
