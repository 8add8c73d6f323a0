"""The ASGI lifespan protocol: startup before serving, shutdown on the way out,
the state each request gets a copy of, failures, and --lifespan auto|on|off.

Apps are in apps/asgi_protocol_apps.py; lifespan_app appends "shutdown" (and
"request started" / "request done" for ?sleep requests) to the file in $LIFESPAN_MARKER.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

APP = "asgi_protocol_apps"
# A slow start of the in-flight test's client thread (a loaded machine); set
# it to prove the test does not depend on the client winning a race.
CLIENT_START_DELAY = float(os.environ.get("ONELOOP_TEST_CLIENT_START_DELAY", "0"))


def exit_status(server, timeout: float = 10.0) -> int | str:
    """The exit status of a server expected to fail at startup, or "serving"
    as soon as it logs that it serves (it will not exit on its own then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = server.proc.poll()
        if status is not None:
            return status
        if "Serving " in server.log():
            return "serving"
        time.sleep(0.02)
    raise AssertionError(f"server neither exited nor served:\n{server.log()}")


def test_startup_state_reaches_requests_and_shutdown_runs(serve, tmp_path):
    marker = tmp_path / "marker"
    server = serve(f"{APP}:lifespan_app", env={"LIFESPAN_MARKER": str(marker)})
    r = httpx.get(f"{server.url}/", timeout=5)
    assert r.status_code == 200
    data = r.json()
    assert data["scope_types"] == ["lifespan", "http"]
    assert data["started"] == "yes" and data["counter"] == 0
    assert data["same_loop"] is True, "startup ran on another loop than the requests"
    assert data["lifespan_scope"]["type"] == "lifespan"
    assert data["lifespan_scope"]["asgi"]["version"] == "3.0"
    assert "spec_version" in data["lifespan_scope"]["asgi"]
    assert not marker.exists(), "shutdown ran before the server was stopped"
    assert server.stop(signal.SIGTERM) == 0
    assert marker.read_text() == "shutdown\n"


def test_shutdown_runs_on_sigint(serve, tmp_path):
    marker = tmp_path / "marker"
    server = serve(f"{APP}:lifespan_app", env={"LIFESPAN_MARKER": str(marker)})
    assert httpx.get(f"{server.url}/", timeout=5).status_code == 200
    assert server.stop(signal.SIGINT) == 0
    assert marker.read_text() == "shutdown\n"


def test_shutdown_waits_for_in_flight_request(serve, tmp_path):
    """SIGTERM during a request: it completes, then shutdown runs. The signal
    goes only once the app has the request (its marker says so): a fixed
    sleep raced the client thread's start, and a SIGTERM that came first
    made the client's connect fail."""
    marker = tmp_path / "marker"
    server = serve(f"{APP}:lifespan_app", env={"LIFESPAN_MARKER": str(marker)})
    result: dict = {}

    def slow() -> None:
        time.sleep(CLIENT_START_DELAY)
        try:
            result["response"] = httpx.get(f"{server.url}/?sleep=0.5", timeout=5)
        except Exception as exc:
            result["error"] = exc

    t = threading.Thread(target=slow)
    t.start()
    deadline = time.monotonic() + 10
    while not (marker.exists() and "request started" in marker.read_text()):
        assert time.monotonic() < deadline, "the request never reached the app"
        assert "error" not in result, result
        time.sleep(0.01)
    assert server.stop(signal.SIGTERM) == 0
    t.join(5)
    assert "error" not in result, result
    assert result["response"].status_code == 200
    assert marker.read_text() == "request started\nrequest done\nshutdown\n"


def test_requests_wait_for_startup(serve):
    """A request that arrives while startup runs is served after it, with the
    state startup made."""
    server = serve(f"{APP}:lifespan_app", ready=False)
    r = httpx.get(f"{server.url}/", timeout=10)
    assert r.status_code == 200
    assert r.json()["started"] == "yes"


def test_state_is_copied_into_each_request(serve):
    """Each request gets its own shallow copy: keys a request sets or rebinds
    are not seen by the next request."""
    server = serve(f"{APP}:lifespan_app")
    with httpx.Client(base_url=server.url, timeout=5) as http:
        for _ in range(3):
            data = http.get("/").json()
            assert data["counter"] == 0
            assert data["added"] is None
            assert data["started"] == "yes"


def test_state_copy_is_shallow(serve):
    """Per the spec (and uvicorn) the copy is shallow: the values are the very
    objects startup made -- an asyncio.Event, a list a request appends to."""
    server = serve(f"{APP}:lifespan_app")
    with httpx.Client(base_url=server.url, timeout=5) as http:
        first, second = http.get("/").json(), http.get("/").json()
    assert first["same_event"] and second["same_event"]
    assert first["shared"] == [] and second["shared"] == ["x"]


def test_startup_failed_exits_with_status_3(serve):
    server = serve(f"{APP}:lifespan_startup_failed", ready=False)
    assert exit_status(server) == 3
    log = server.log()
    assert "database unreachable" in log
    assert "Serving" not in log


@pytest.mark.parametrize("error", ["RuntimeError", "KeyError", "ValueError"])
def test_startup_exception_exits_nonzero(serve, error):
    """The app took lifespan.startup and then raised: its startup failed, and
    the server must not serve an app whose startup did not run -- whatever the
    exception type (a KeyError from a missing setting is typical)."""
    server = serve(f"{APP}:lifespan_startup_raises", ready=False, env={"STARTUP_ERROR": error})
    assert exit_status(server) not in (0, "serving")
    log = server.log()
    assert "startup exploded" in log
    assert "Serving" not in log


def test_startup_exception_with_lifespan_on_exits_nonzero(serve):
    server = serve(f"{APP}:lifespan_startup_raises", "--lifespan", "on", ready=False)
    assert exit_status(server) not in (0, "serving")
    assert "startup exploded" in server.log()


def test_shutdown_failure_is_logged(serve):
    server = serve(f"{APP}:lifespan_shutdown_failed")
    assert httpx.get(f"{server.url}/", timeout=5).text == "ok"
    server.stop(signal.SIGTERM)
    assert "could not flush" in server.log()


def test_lifespan_off_never_calls_app_with_lifespan(serve, tmp_path):
    marker = tmp_path / "marker"
    server = serve(f"{APP}:lifespan_app", "--lifespan", "off", env={"LIFESPAN_MARKER": str(marker)})
    data = httpx.get(f"{server.url}/", timeout=5).json()
    assert data["scope_types"] == ["http"]
    assert data["started"] is None
    assert server.stop(signal.SIGTERM) == 0
    assert not marker.exists(), "shutdown ran with --lifespan off"


@pytest.mark.parametrize("app", ["http_only", "lifespan_returns"])
def test_lifespan_auto_serves_apps_without_lifespan(serve, app):
    server = serve(f"{APP}:{app}")
    r = httpx.get(f"{server.url}/", timeout=5)
    assert r.status_code == 200
    if app == "http_only":
        assert r.json()["scope_types"] == ["http"]
    assert server.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize("app", ["http_only", "lifespan_returns"])
def test_lifespan_on_refuses_apps_without_lifespan(serve, app):
    server = serve(f"{APP}:{app}", "--lifespan", "on", ready=False)
    assert exit_status(server) not in (0, "serving")
    log = server.log()
    assert "Serving" not in log
    assert "lifespan" in log.lower()


def test_lifespan_asgi2_app(serve):
    server = serve(f"{APP}:LifespanASGI2", "--interface", "asgi2")
    r = httpx.get(f"{server.url}/", timeout=5)
    assert r.status_code == 200
    assert r.json() == {"via": "asgi2 lifespan"}
