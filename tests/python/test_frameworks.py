"""Real frameworks served end to end by oneloop with interface auto-detection:
Flask, Django (WSGI and ASGI), Starlette, FastAPI and Quart. Apps live in
tests/python/apps/framework_apps/."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time

import httpx
import pytest

FORWARDED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}


def serving(server, interface: str) -> None:
    assert f"Serving {interface} app on " in server.log(), server.log()


# -- Flask ---------------------------------------------------------------------------


@pytest.fixture
def flask_server(serve):
    server = serve("framework_apps.flask_app:app")
    serving(server, "WSGI")
    return server


def test_flask_routes(flask_server):
    url = flask_server.url
    r = httpx.get(url + "/")
    assert (r.status_code, r.text) == (200, "Hello from Flask")
    assert r.headers["content-type"].startswith("text/html")
    info = httpx.get(url + "/json?a=1&b=two").json()
    assert info["framework"] == "flask"
    assert info["args"] == {"a": "1", "b": "two"}
    assert info["scheme"] == "http"
    assert info["remote_addr"] == "127.0.0.1"
    assert info["host"] == f"127.0.0.1:{flask_server.port}"
    assert info["url"] == f"{url}/json?a=1&b=two"
    assert info["thread"].startswith("oneloop-wsgi-")
    assert httpx.get(url + "/user/h%C3%A9l%C3%A8ne").json() == {"user": "hélène"}


def test_flask_forms_uploads_and_json(flask_server):
    url = flask_server.url
    r = httpx.post(url + "/form", data={"name": "Zoë", "tags": ["a", "b"]})
    assert r.json() == {"form": {"name": ["Zoë"], "tags": ["a", "b"]}}
    payload = b"\x00\x01binary\xff" * 50_000
    r = httpx.post(
        url + "/upload",
        files={"file": ("data.bin", payload, "application/octet-stream")},
        data={"note": "hi"},
    )
    assert r.json() == {"filename": "data.bin", "size": len(payload), "note": "hi"}
    r = httpx.post(url + "/json-echo", json={"items": [1, 2, 3], "name": "x"})
    assert r.status_code == 201
    assert r.json() == {"received": {"items": [1, 2, 3], "name": "x"}, "count": 3}


def test_flask_redirect_cookie_stream(flask_server):
    url = flask_server.url
    r = httpx.get(url + "/redirect")
    assert r.status_code == 302
    assert r.headers["location"] == "/json?from=redirect"
    r = httpx.get(url + "/redirect", follow_redirects=True)
    assert r.json()["args"] == {"from": "redirect"}
    with httpx.Client() as client:
        first = client.get(url + "/cookie")
        assert "flavour=oatmeal" in first.headers["set-cookie"]
        assert first.json() == {"seen": None}
        client.cookies.set("flavour", "oatmeal")
        assert client.get(url + "/cookie").json() == {"seen": "oatmeal"}
    r = httpx.get(url + "/stream")
    assert r.text == "".join(f"part {i}\n" for i in range(5))


def test_flask_404_and_500(flask_server):
    r = httpx.get(flask_server.url + "/nope")
    assert r.status_code == 404
    r = httpx.get(flask_server.url + "/boom")
    assert r.status_code == 500
    assert "Internal Server Error" in r.text
    log = flask_server.wait_log("flask view failed")
    assert "RuntimeError" in log
    assert httpx.get(flask_server.url + "/").status_code == 200
    flask_server.wait_log('"GET /boom HTTP/1.1" 500')


def test_flask_behind_proxy(flask_server):
    info = httpx.get(flask_server.url + "/json", headers=FORWARDED).json()
    assert info["remote_addr"] == "203.0.113.9"
    assert info["scheme"] == "https"


def test_flask_root_path(serve):
    server = serve("framework_apps.flask_app:app", "--root-path", "/shop")
    info = httpx.get(server.url + "/shop/json").json()
    assert info["script_root"] == "/shop"
    assert info["url"] == f"http://127.0.0.1:{server.port}/shop/json"


def test_flask_concurrent_requests(flask_server):
    def get(i):
        return httpx.get(flask_server.url + f"/json?i={i}", timeout=30).json()["args"]["i"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(get, range(40)), key=int) == [str(i) for i in range(40)]


# -- Django --------------------------------------------------------------------------


@pytest.fixture(params=["wsgi", "asgi"])
def django_server(request, serve):
    if request.param == "wsgi":
        server = serve("framework_apps.django_wsgi:application")
        serving(server, "WSGI")
    else:
        server = serve("framework_apps.django_asgi:application")
        serving(server, "ASGI3")
    server.extra["interface"] = request.param
    return server


def test_django_routes(django_server):
    url = django_server.url
    r = httpx.get(url + "/")
    assert (r.status_code, r.text) == (200, "Hello from Django")
    info = httpx.get(url + "/json?x=1").json()
    assert info["framework"] == "django"
    assert info["get"] == {"x": "1"}
    assert info["scheme"] == "http"
    assert info["remote_addr"] == "127.0.0.1"
    assert info["absolute"] == f"http://127.0.0.1:{django_server.port}/x"
    assert httpx.get(url + "/items/42").json() == {"item": 42, "type": "int"}
    if django_server.extra["interface"] == "wsgi":
        assert info["thread"].startswith("oneloop-wsgi-")


def test_django_forms_uploads_json(django_server):
    url = django_server.url
    r = httpx.post(url + "/form", data={"a": "1", "b": ["x", "y"]})
    assert r.json() == {"post": {"a": ["1"], "b": ["x", "y"]}}
    payload = os.urandom(300_000)
    r = httpx.post(url + "/upload", files={"file": ("f.bin", payload)}, data={"note": "n"})
    assert r.json() == {"filename": "f.bin", "size": len(payload), "note": "n"}
    body = {"k": ["v"] * 1000}
    r = httpx.post(url + "/json-echo", json=body)
    assert r.status_code == 201
    assert r.json()["received"] == body


def test_django_stream_and_async_view(django_server):
    assert httpx.get(django_server.url + "/stream").text == "".join(f"line {i}\n" for i in range(4))
    r = httpx.get(django_server.url + "/async")
    assert r.status_code == 200
    assert r.json()["async"] is True


def test_django_over_http2(django_server):
    """The same Django project, ASGI and WSGI, over HTTP/2 with prior knowledge."""
    url = django_server.url
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        r = client.get(url + "/")
        assert (r.http_version, r.status_code, r.text) == ("HTTP/2", 200, "Hello from Django")
        info = client.get(url + "/json?x=1").json()
        assert info["get"] == {"x": "1"} and info["absolute"] == f"{url}/x"
        payload = os.urandom(300_000)
        r = client.post(url + "/upload", files={"file": ("f.bin", payload)}, data={"note": "n"})
        assert r.json() == {"filename": "f.bin", "size": len(payload), "note": "n"}
        r = client.post(url + "/form", data={"a": "1", "b": ["x", "y"]})
        assert r.json() == {"post": {"a": ["1"], "b": ["x", "y"]}}
        assert client.get(url + "/stream").text == "".join(f"line {i}\n" for i in range(4))
        assert client.get(url + "/async").json()["async"] is True
        assert client.get(url + "/boom").status_code == 500
        # (Not from threads: httpx's threads can send HEADERS out of stream-id
        # order, which RFC 9113 makes a connection error.)
        assert [client.get(url + "/").text for _ in range(32)] == ["Hello from Django"] * 32
    django_server.wait_log('"GET /boom HTTP/2" 500')


def test_django_404_and_500(django_server):
    r = httpx.get(django_server.url + "/nope")
    assert r.status_code == 404
    r = httpx.get(django_server.url + "/items/abc")  # the int converter does not match
    assert r.status_code == 404
    r = httpx.get(django_server.url + "/boom")
    assert r.status_code == 500
    assert "Server Error" in r.text
    assert httpx.get(django_server.url + "/").status_code == 200
    django_server.wait_log('"GET /boom HTTP/1.1" 500')


def test_django_behind_proxy(django_server):
    info = httpx.get(django_server.url + "/json", headers=FORWARDED).json()
    assert info["remote_addr"] == "203.0.113.9"
    assert info["scheme"] == "https"
    assert info["is_secure"] is True
    assert info["absolute"].startswith("https://")


def test_django_root_path(serve):
    """--root-path follows each interface's reference server: for WSGI (gunicorn)
    SCRIPT_NAME is the root path and PATH_INFO loses the prefix when the proxy
    left it on; for ASGI (uvicorn) the proxy strips the prefix and scope["path"]
    is root_path + the path received."""
    wsgi = serve("framework_apps.django_wsgi:application", "--root-path", "/site")
    for path in ("/site/json", "/json"):
        info = httpx.get(wsgi.url + path).json()
        assert (info["script_name"], info["path"], info["path_info"]) == (
            "/site",
            "/site/json",
            "/json",
        ), path
    asgi = serve("framework_apps.django_asgi:application", "--root-path", "/site")
    info = httpx.get(asgi.url + "/json").json()
    assert (info["script_name"], info["path"], info["path_info"]) == (
        "/site",
        "/site/json",
        "/json",
    )
    assert info["absolute"] == f"http://127.0.0.1:{asgi.port}/x"


# -- Starlette ---------------------------------------------------------------------------


@pytest.fixture
def starlette_server(serve):
    server = serve("framework_apps.starlette_app:app")
    serving(server, "ASGI3")
    return server


def test_starlette_routes_and_lifespan_state(starlette_server):
    url = starlette_server.url
    r = httpx.get(url + "/")
    assert (r.status_code, r.text) == (200, "Hello from Starlette")
    info = httpx.get(url + "/json?q=z").json()
    assert info["framework"] == "starlette"
    assert info["query"] == {"q": "z"}
    assert info["client"] == "127.0.0.1"
    assert info["state_started"] == "yes"  # from the lifespan's state
    assert info["same_loop"] is True  # lifespan and requests share the loop
    assert httpx.get(url + "/items/7").json() == {"item": 7}


def test_starlette_bodies_and_streaming(starlette_server):
    url = starlette_server.url
    r = httpx.post(url + "/json-echo", json={"a": [1, {"b": None}]})
    assert r.status_code == 201
    assert r.json() == {"received": {"a": [1, {"b": None}]}}
    r = httpx.post(url + "/size", content=b"z" * 3_000_000)
    assert r.json() == {"size": 3_000_000}
    r = httpx.get(url + "/stream")
    assert r.headers.get("transfer-encoding") == "chunked"
    assert r.text == "".join(f"chunk {i}\n" for i in range(5))


def test_starlette_errors(starlette_server):
    url = starlette_server.url
    assert httpx.get(url + "/nope").status_code == 404
    r = httpx.get(url + "/items/0")
    assert r.status_code == 404
    assert r.text == "no item zero"
    assert httpx.get(url + "/items/x").status_code == 404
    assert httpx.post(url + "/").status_code == 405
    r = httpx.get(url + "/boom")
    assert r.status_code == 500
    starlette_server.wait_log("starlette endpoint failed")
    assert httpx.get(url + "/").status_code == 200


def test_starlette_behind_proxy(starlette_server):
    info = httpx.get(starlette_server.url + "/json", headers=FORWARDED).json()
    assert info["client"] == "203.0.113.9"
    assert info["scheme"] == "https"


# -- FastAPI -------------------------------------------------------------------------------


@pytest.fixture
def fastapi_server(serve):
    server = serve("framework_apps.fastapi_app:app")
    serving(server, "ASGI3")
    return server


def test_fastapi_routes_and_dependency(fastapi_server):
    url = fastapi_server.url
    assert httpx.get(url + "/").json() == {"hello": "fastapi"}
    first = httpx.get(url + "/items/5?q=hat").json()
    assert first["item_id"] == 5 and first["q"] == "hat"
    second = httpx.get(url + "/items/6").json()
    assert second["session"] == first["session"] + 1  # a new session per request
    sessions = httpx.get(url + "/sessions").json()
    assert sessions["opened"] == sessions["closed"] >= 2  # yield dependencies were closed


def test_fastapi_body_validation(fastapi_server):
    url = fastapi_server.url
    r = httpx.post(
        url + "/items",
        json={"name": "pen", "price": 1.5, "tags": ["x"]},
        headers={"User-Agent": "ua-test"},
    )
    assert r.status_code == 201
    assert r.json() == {
        "item": {"name": "pen", "price": 1.5, "tags": ["x"]},
        "total": 3.0,
        "ua": "ua-test",
    }
    r = httpx.post(url + "/items", json={"name": "pen"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "price"]
    assert httpx.get(url + "/items/notanint").status_code == 422
    assert httpx.post(url + "/items", content=b"{not json").status_code == 422


def test_fastapi_sync_endpoint_runs_in_a_thread(fastapi_server):
    url = fastapi_server.url
    info = httpx.get(url + "/sync").json()
    assert info["is_main"] is False
    # while a sync endpoint sleeps in its thread, the loop keeps answering
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(httpx.get, url + "/sync?delay=0.8", timeout=10)
        time.sleep(0.1)
        started = time.monotonic()
        fast = httpx.get(url + "/fast", timeout=10)
        fast_elapsed = time.monotonic() - started
        assert fast.json() == {"fast": True}
        assert slow.result().json()["is_main"] is False
    assert fast_elapsed < 0.6


def test_fastapi_parallel_sync_endpoints(fastapi_server):
    url = fastapi_server.url
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: httpx.get(url + "/sync?delay=0.5", timeout=10), range(4)))
    elapsed = time.monotonic() - started
    assert all(r.status_code == 200 for r in results)
    assert elapsed < 1.8  # run side by side in the thread pool, not one after another


def test_fastapi_errors(fastapi_server):
    url = fastapi_server.url
    r = httpx.get(url + "/items/0")
    assert r.status_code == 404
    assert r.json() == {"detail": "item zero does not exist"}
    assert httpx.get(url + "/nope").status_code == 404
    r = httpx.get(url + "/boom")
    assert r.status_code == 500
    fastapi_server.wait_log("fastapi endpoint failed")
    assert httpx.get(url + "/").status_code == 200


def test_fastapi_openapi(fastapi_server):
    schema = httpx.get(fastapi_server.url + "/openapi.json").json()
    assert "/items/{item_id}" in schema["paths"]
    assert httpx.get(fastapi_server.url + "/docs").status_code == 200


# -- Quart ----------------------------------------------------------------------------------


def test_quart_lifespan_resource(serve, tmp_path):
    marker = tmp_path / "quart-shutdown.txt"
    server = serve("framework_apps.quart_app:app", env={"QUART_SHUTDOWN_MARKER": str(marker)})
    serving(server, "ASGI3")
    url = server.url
    assert httpx.get(url + "/").text == "Hello from Quart"
    first = httpx.get(url + "/resource")
    assert first.status_code == 200, first.text  # before_serving ran before the first request
    assert first.json() == {"opened": True, "same_loop": True, "items": 1}
    assert httpx.get(url + "/resource").json()["items"] == 2
    r = httpx.post(url + "/form", data={"k": ["1", "2"]})
    assert r.json() == {"form": {"k": ["1", "2"]}}
    r = httpx.post(url + "/json-echo", json={"deep": {"x": [1]}})
    assert (r.status_code, r.json()) == (201, {"received": {"deep": {"x": [1]}}})
    assert httpx.get(url + "/nope").status_code == 404
    assert httpx.get(url + "/boom").status_code == 500
    server.wait_log("quart view failed")
    assert not marker.exists()
    assert server.stop(signal.SIGTERM) == 0
    assert marker.read_text() == "closed after 2 items"  # after_serving ran at shutdown


def test_quart_concurrent(serve):
    server = serve("framework_apps.quart_app:app")

    def get(_):
        return httpx.get(server.url + "/resource", timeout=30).json()["items"]

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        items = sorted(pool.map(get, range(30)))
    assert items == list(range(1, 31))


# -- detection is what drives all of the above ------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "interface"),
    [
        ("framework_apps.flask_app:app", "WSGI"),
        ("framework_apps.django_wsgi:application", "WSGI"),
        ("framework_apps.django_asgi:application", "ASGI3"),
        ("framework_apps.starlette_app:app", "ASGI3"),
        ("framework_apps.fastapi_app:app", "ASGI3"),
        ("framework_apps.quart_app:app", "ASGI3"),
    ],
)
def test_framework_interface_detection(serve, spec, interface):
    server = serve(spec, "--no-access-log")
    serving(server, interface)
    r = httpx.get(server.url + "/")
    assert r.status_code == 200
    assert "Hello" in r.text or json.loads(r.text) == {"hello": "fastapi"}
