"""The extension module links the wire layer: its parser answers from Python."""

import pytest

from oneloop import _core


def test_parses_a_head():
    head = b"POST /a?b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    req = _core.parse_request(head)
    assert req["method"] == b"POST"
    assert req["target"] == b"/a?b"
    assert req["headers"] == [(b"Host", b"x"), (b"Content-Length", b"3")]
    assert req["framing"] == "length"
    assert req["content_length"] == 3
    assert req["head_length"] == len(head) - 3


def test_incomplete_head_is_none():
    assert _core.parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n") is None


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ],
)
def test_errors_carry_the_status(head, status):
    with pytest.raises(ValueError, match=rf"^{status} "):
        _core.parse_request(head)


def test_any_token_is_a_method():
    for method in (b"BREW", b"-BLARGH", b"FOO_BAR"):
        req = _core.parse_request(method + b" / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert req["method"] == method


def test_decode_chunked():
    body = b"5; a = b\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\nNEXT"
    assert _core.decode_chunked(body) == (b"hello", len(body) - 4, [(b"X-Sum", b"1")])
    assert _core.decode_chunked(b"5\r\nhel") is None
    with pytest.raises(ValueError, match=r"^400 field not allowed in a trailer"):
        _core.decode_chunked(b"0\r\nContent-Length: 5\r\n\r\n")
