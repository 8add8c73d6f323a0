"""The ASGI http scope: every key, as the spec and real clients expect."""

import json

import httpx
from conftest import request


def test_scope_is_complete(serve):
    server = serve("asgi_apps:scope", "--root-path", "/mnt")
    r = httpx.get(
        f"{server.url}/mnt/a%20b/%E2%82%AC?x=1&y=%20", headers={"X-Test": "Ab", "x-dup": "1"}
    )
    assert r.status_code == 200
    s = r.json()
    assert s["type"] == "http"
    assert s["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert s["http_version"] == "1.1"
    assert s["method"] == "GET"
    assert s["scheme"] == "http"
    assert s["root_path"] == "/mnt"
    assert s["path"] == "/mnt/mnt/a b/\u20ac"
    assert s["raw_path"] == "/mnt/mnt/a%20b/%E2%82%AC"
    assert s["query_string"] == "x=1&y=%20"
    assert s["client"][0] == "127.0.0.1" and isinstance(s["client"][1], int)
    assert s["server"] == ["127.0.0.1", server.port]
    names = [h[0] for h in s["headers"]]
    assert names == [n.lower() for n in names]
    assert ["x-test", "Ab"] in s["headers"]
    assert s["state_keys"] == []


def test_headers_keep_order_and_repeats(serve):
    server = serve("asgi_apps:scope")
    _, _, body = request(server, b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-B: 2\r\nX-A: 3\r\n\r\n")
    headers = json.loads(body)["headers"]
    assert headers == [["host", "h"], ["x-a", "1"], ["x-b", "2"], ["x-a", "3"]]


def test_http10_and_absolute_form(serve):
    server = serve("asgi_apps:scope")
    _, headers, body = request(server, b"GET http://example.com/p/q?r=s HTTP/1.0\r\n\r\n")
    s = json.loads(body)
    assert s["http_version"] == "1.0"
    assert s["path"] == "/p/q" and s["raw_path"] == "/p/q" and s["query_string"] == "r=s"
    assert headers.get("connection") == "close"


def test_request_body_chunks(serve):
    server = serve("asgi_apps:scope")
    r = httpx.post(f"{server.url}/", content=b"x" * 100_000)
    s = r.json()
    assert len(s["body"]) == 100_000
    assert s["chunks"][-1][1] is False
    assert all(more for _, more in s["chunks"][:-1])
