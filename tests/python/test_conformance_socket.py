"""The llhttp strict corpus sent over the socket to a running server.

Accepted requests must reach the app exactly as llhttp parsed them; rejected
ones must be answered with an error and the connection closed, after the
requests before the fault were answered. What a server does beyond parsing
(RFC 9110/9112 server rules) is asserted where it differs, with the reason:

* HTTP/1.1 requires Host (RFC 9112 3.2), which llhttp does not check: the
  test adds "Host: corpus" to HTTP/1.1 messages without one.
* RTSP/ICE requests and HTTP/0.9 are parsed but not served: 505.
* A transfer coding before chunked cannot be decoded: 501 (RFC 9112 6.1).
* CONNECT: 501; "Upgrade: websocket" is a handshake the server checks (these
  pre-RFC 6455 ones get 426, naming version 13); other upgrades are ignored
  and the request served (RFC 9110 7.8).
* connection/032 relies on llhttp's test-only "skip body" switch: not a
  property of the byte stream, so not sent.
* DEVIATIONS: where oneloop's parser disagrees with llhttp on purpose (see
  tests/c/gen_llhttp.py and docs/architecture.md): any token is a method, so
  ANNOUNCE and MKCOLA over HTTP reach the app; "M-SEARCH *" is refused, as
  asterisk-form is only for OPTIONS.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import connect

CORPUS = json.loads((Path(__file__).parents[1] / "data" / "llhttp-requests.json").read_text())
STRICT = [c for c in CORPUS["cases"] if c["mode"] == "strict" and c["id"] != "content-length/032"]


def restored(request: str) -> bytes:
    """The input llhttp parsed: the export dropped one final CRLF (see tests/c/gen_llhttp.py)."""
    data = request.encode("latin-1")
    return data + b"\r\n" if data.endswith(b"\r\n") else data


def with_host(data: bytes, messages: list[dict]) -> bytes:
    """Add Host to every HTTP/1.1 message that lacks one, after its request line."""
    at = 0
    for m in messages:
        line = f"{m['method']} {m['url']} HTTP/{m['version']}\r\n".encode("latin-1")
        i = data.find(line, at)
        if i < 0:
            break
        end = i + len(line)
        names = {h[0].lower() for h in m["headers"]}
        if m["version"] == "1.1" and "host" not in names:
            data = data[:end] + b"Host: corpus\r\n" + data[end:]
            end += len(b"Host: corpus\r\n")
        at = end
    return data


def split_target(url: str) -> tuple[str, str]:
    if "://" in url:
        rest = url.split("://", 1)[1]
        cut = min((rest.find(c) for c in "/?#" if c in rest), default=len(rest))
        url = rest[cut:]
    url = url.split("#", 1)[0]
    path, _, query = url.partition("?")
    return path or "/", query


def expected_value(text: str) -> str:
    return text.replace("\\t", "\t").replace("\\f", "\f").rstrip(" \t")


def server_policy(case: dict) -> int | None:
    """The status a server gives where it does more than parse, else None."""
    req = case["request"]
    line = req.lstrip("\r\n").split("\r\n", 1)[0]
    if line.startswith("CONNECT "):
        return 501
    if " RTSP/" in line or " ICE/" in line or not line.rstrip().endswith(("HTTP/1.0", "HTTP/1.1")):
        return 505
    lower = req.lower()
    if "upgrade: websocket" in lower and "connection:" in lower:
        # A WebSocket handshake to an ASGI app is checked: these (hixie-76
        # style, no Sec-WebSocket-Version) get 426 naming version 13.
        return 400 if "sec-websocket-version: 13" in lower else 426
    for m in case["messages"]:
        for name, value in m["headers"]:
            codings = [v.strip() for v in value.lower().split(",")]
            if (
                name.lower() == "transfer-encoding"
                and codings[-1] == "chunked"
                and len(codings) > 1
            ):
                return 501
        names = [h[0].lower() for h in m["headers"]]
        if names.count("transfer-encoding") > 1:
            return 501
    return None


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory):
    import subprocess
    import sys

    from conftest import APPS, Server, listening_socket, wait_ready

    sock = listening_socket()
    log = tmp_path_factory.mktemp("corpus") / "server.err"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "oneloop",
                "--app-dir",
                str(APPS),
                "--fd",
                str(sock.fileno()),
                "--no-access-log",
                "--timeout-request-head",
                "2",
                "echo_apps:echo",
            ],
            stderr=err,
            stdout=subprocess.DEVNULL,
            pass_fds=[sock.fileno()],
        )
    port = sock.getsockname()[1]
    sock.close()
    wait_ready("127.0.0.1", port, proc, log)
    yield Server(proc, "127.0.0.1", port, log, log)
    proc.terminate()
    proc.wait(10)


def check_message(seen: dict, want: dict, case_id: str) -> None:
    path, query = split_target(want["url"])
    assert seen["method"] == want["method"], case_id
    assert (seen["path"], seen["query"]) == (path, query), case_id
    assert seen["version"] == want["version"], case_id
    got = [(k, v) for k, v in seen["headers"] if (k, v) != ("host", "corpus")]
    wanted = [(k.lower(), expected_value(v)) for k, v in want["headers"]]
    # Trailer fields of a chunked body are reported by llhttp as headers;
    # the ASGI scope has only the head's fields, which come first.
    assert got == wanted[: len(got)], case_id
    assert seen["body"] == want["body"], case_id


DEVIATIONS = {"invalid/041": 200, "invalid/051": 200, "method/076": 400}


@pytest.mark.parametrize("case", STRICT, ids=[c["id"] for c in STRICT])
def test_strict_case_over_socket(echo_server, case):
    data = with_host(restored(case["request"]), case["messages"])
    if case["id"] in DEVIATIONS:
        line, _, rest = data.partition(b"\r\n")
        if line.endswith(b"HTTP/1.1") and b"\r\nhost:" not in data.lower():
            data = line + b"\r\nHost: corpus\r\n" + rest
        with connect(echo_server, timeout=4) as client:
            client.send(data)
            status, _, body = client.response()
            assert status == DEVIATIONS[case["id"]], (case["id"], status, body)
            if status == 200:
                assert json.loads(body)["method"] == line.split(b" ")[0].decode(), case["id"]
            else:
                assert client.closed(), case["id"]
        return
    policy = server_policy(case) if case["expect"] != "reject" else None
    with connect(echo_server, timeout=4) as client:
        client.send(data)
        if policy is not None:
            status, headers, _ = client.response()
            assert status == policy, (case["id"], status)
            assert client.closed(), case["id"]
            return
        if case["expect"] == "upgrade":  # an upgrade the server ignores: served as HTTP
            status, _, body = client.response()
            assert status == 200, case["id"]
            check_message(json.loads(body), case["messages"][0], case["id"])
            return
        for want in case["messages"]:
            status, headers, body = client.response(head_request=want["method"] == "HEAD")
            assert status == 200, (case["id"], status, body)
            if want["method"] == "HEAD":
                assert int(headers["content-length"]) > 0, case["id"]
                continue
            check_message(json.loads(body), want, case["id"])
        if case["expect"] == "reject":
            # Either an error response and close, or (data after a closing
            # message) just the close.
            if client.closed(timeout=3):
                assert not client.buf or client.buf[:10] in (b"HTTP/1.1 4", b"HTTP/1.1 5"), case[
                    "id"
                ]
            else:
                raise AssertionError(f"{case['id']}: connection left open after a bad request")
