"""Real frameworks' WebSocket endpoints served end to end: FastAPI,
Starlette, Quart and Django Channels (in-memory channel layer), with the
websockets and aiohttp clients; a FastAPI broadcast to 1,000 clients
connected at once. Apps live in tests/python/apps/framework_apps/ws_*.py;
servers are started as in test_websocket.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import resource
import signal

import aiohttp
import pytest
from conftest import Client, stop_process
from test_websocket import run, start, upgrade, url
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.timeout(60)

BROADCAST_CLIENTS = 1000


def enough_files(n: int) -> None:
    """RLIMIT_NOFILE of at least n (servers started after inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            raise RuntimeError(f"RLIMIT_NOFILE hard limit {hard} < {n}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def framework_server(tmp_path_factory, app: str):
    return start(tmp_path_factory.mktemp("ws-framework"), app)


def status_of(server, path: str) -> tuple[int, dict, bytes]:
    """The HTTP answer to an upgrade the app refuses."""
    with Client(server.connect()) as c:
        c.send(upgrade(path))
        return c.response()


async def closed_by_server(ws) -> ConnectionClosed:
    with pytest.raises(ConnectionClosed) as info:
        await ws.recv()
    return info.value


# -- FastAPI ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fastapi_server(tmp_path_factory):
    enough_files(4 * BROADCAST_CLIENTS + 1024)  # clients and server, both ends here
    server = framework_server(tmp_path_factory, "framework_apps.ws_fastapi:app")
    yield server
    stop_process(server.proc, signal.SIGKILL)


def test_fastapi_text_bytes_json(fastapi_server):
    async def main():
        async with ws_connect(url(fastapi_server, "/ws/text"), proxy=None) as ws:
            await ws.send("hello fastapi")
            assert await ws.recv() == "HELLO FASTAPI"
            await ws.send("é" * 100_000)
            assert await ws.recv() == "É" * 100_000
        async with ws_connect(url(fastapi_server, "/ws/bytes"), proxy=None) as ws:
            await ws.send(b"\x00\x01\x02")
            assert await ws.recv() == b"\x02\x01\x00"
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url(fastapi_server, "/ws/json")) as ws,
        ):
            await ws.send_json({"numbers": [1, 2, 3.5], "name": "x"})
            assert await ws.receive_json() == {"sum": 6.5, "name": "x"}
            await ws.send_json({"numbers": list(range(1000)), "name": "many"})
            assert await ws.receive_json() == {"sum": 499500, "name": "many"}

    run(main())


def test_fastapi_parameters_dependency_and_close(fastapi_server):
    async def main():
        target = "/ws/items/42?token=secret&q=hi"
        async with ws_connect(url(fastapi_server, target), proxy=None) as ws:
            data = json.loads(await ws.recv())
            closed = await closed_by_server(ws)
        return data, closed

    data, closed = run(main())
    assert data == {"item_id": 42, "q": "hi", "token": "secret"}
    assert (closed.rcvd.code, closed.rcvd.reason) == (4000, "that is all")
    # The dependency refuses before accepting: websocket.close -> 403.
    assert status_of(fastapi_server, "/ws/items/42?token=wrong")[0] == 403


def test_fastapi_broadcast_to_1000_clients(fastapi_server):
    """1,000 clients connected at once; one message from one of them reaches
    every one."""
    enough_files(4 * BROADCAST_CLIENTS + 1024)

    async def member(i: int, joined: asyncio.Event, everyone: asyncio.Event, got: list):
        async with ws_connect(
            url(fastapi_server, "/ws/broadcast"), proxy=None, open_timeout=30, compression=None
        ) as ws:
            json.loads(await ws.recv())  # {"members": n}
            joined.set()
            await everyone.wait()
            if i == 0:
                await ws.send("hello, all 1000")
            got[i] = await asyncio.wait_for(ws.recv(), 20)

    async def main():
        got = [None] * BROADCAST_CLIENTS
        joined = [asyncio.Event() for _ in range(BROADCAST_CLIENTS)]
        everyone = asyncio.Event()
        tasks = [
            asyncio.create_task(member(i, joined[i], everyone, got))
            for i in range(BROADCAST_CLIENTS)
        ]
        waiting = asyncio.gather(*(e.wait() for e in joined))
        done, _ = await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
        assert waiting in done, [t.exception() for t in tasks if t.done()][:3]
        everyone.set()
        await asyncio.gather(*tasks)
        return got

    got = run(main(), timeout=50)
    assert got == ["hello, all 1000"] * BROADCAST_CLIENTS


# -- Starlette ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def starlette_server(tmp_path_factory):
    server = framework_server(tmp_path_factory, "framework_apps.ws_starlette:app")
    yield server
    stop_process(server.proc, signal.SIGKILL)


def test_starlette_endpoints(starlette_server):
    async def main():
        async with ws_connect(url(starlette_server, "/ws/echo"), proxy=None) as ws:
            await ws.send("one")
            assert await ws.recv() == "echo: one"
            await ws.send("two")
            assert await ws.recv() == "echo: two"
        async with ws_connect(url(starlette_server, "/ws/totals"), proxy=None) as ws:
            assert json.loads(await ws.recv()) == {"greeting": "hello from lifespan"}
            await ws.send(json.dumps([1, 2, 3]))
            assert json.loads(await ws.recv()) == {"total": 6}
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url(starlette_server, "/ws/digests")) as ws,
        ):
            for size in (0, 10, 200_000):
                data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
                await ws.send_bytes(data)
                assert await ws.receive_bytes() == hashlib.sha256(data).digest()

    run(main())


def test_starlette_accept_and_denial(starlette_server):
    async def main():
        target = url(starlette_server, "/ws/guarded/ada?token=secret")
        async with ws_connect(target, subprotocols=["v1", "v2"], proxy=None) as ws:
            headers, subprotocol = ws.response.headers, ws.subprotocol
            welcome = await ws.recv()
            closed = await closed_by_server(ws)
        return headers, subprotocol, welcome, closed

    headers, subprotocol, welcome, closed = run(main())
    assert subprotocol == "v2" and headers["X-Welcome"] == "yes"
    assert welcome == "welcome ada"
    assert (closed.rcvd.code, closed.rcvd.reason) == (4000, "goodbye")
    # send_denial_response: the websocket.http.response extension.
    status, headers, body = status_of(starlette_server, "/ws/guarded/ada?token=no")
    assert (status, body) == (401, b"no entry")
    assert headers["x-reason"] == "token"


# -- Quart --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quart_server(tmp_path_factory):
    server = framework_server(tmp_path_factory, "framework_apps.ws_quart:app")
    yield server
    stop_process(server.proc, signal.SIGKILL)


def test_quart_websocket(quart_server):
    async def main():
        async with ws_connect(url(quart_server, "/ws/echo"), proxy=None) as ws:
            for message in ("text", b"\x00bytes", "ü" * 50_000):
                await ws.send(message)
                assert await ws.recv() == message
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url(quart_server, "/ws/json")) as ws,
        ):
            await ws.send_json({"items": [1, "two", None]})
            assert await ws.receive_json() == {"reversed": [None, "two", 1]}
        target = url(quart_server, "/ws/guarded?token=secret&x=1")
        async with ws_connect(target, subprotocols=["v2"], proxy=None) as ws:
            return ws.subprotocol, ws.response.headers["X-Welcome"], json.loads(await ws.recv())

    subprotocol, welcome, info = run(main())
    assert (subprotocol, welcome) == ("v2", "yes")
    assert info == {"path": "/ws/guarded", "args": {"token": "secret", "x": "1"}, "scheme": "ws"}


def test_quart_refusal_is_http(quart_server):
    """Quart answers a handler's response with websocket.http.response when
    the scope lists the extension."""
    status, headers, body = status_of(quart_server, "/ws/guarded?token=no")
    assert (status, body) == (401, b"no entry")
    assert headers["x-reason"] == "token"

    async def main():
        async with ws_connect(url(quart_server, "/ws/guarded"), proxy=None):
            pass

    with pytest.raises(InvalidStatus) as info:
        run(main())
    assert info.value.response.status_code == 401


# -- Django Channels ----------------------------------------------------------------


@pytest.fixture(scope="module")
def channels_server(tmp_path_factory):
    server = framework_server(tmp_path_factory, "framework_apps.ws_channels:application")
    yield server
    stop_process(server.proc, signal.SIGKILL)


def test_channels_consumers(channels_server):
    async def main():
        async with ws_connect(url(channels_server, "/ws/echo/"), proxy=None) as ws:
            for message in ("hi channels", b"\xffbinary"):
                await ws.send(message)
                assert await ws.recv() == message
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url(channels_server, "/ws/sync/")) as ws,
        ):
            await ws.send_str("sync hi")
            reply = await ws.receive_str()
            async with session.get(url(channels_server, "/", "http")) as r:
                page = await r.text()
        return reply, page

    reply, page = run(main())
    assert reply.startswith("sync hi from ")
    assert page == "Hello from Django with Channels"


def test_channels_chat_room(channels_server):
    """Two members of a room and one of another: the channel layer carries
    a message to the room's members only."""

    async def main():
        room = url(channels_server, "/ws/chat/lobby/")
        other = url(channels_server, "/ws/chat/elsewhere/")
        async with (
            ws_connect(room, proxy=None) as ada,
            ws_connect(room, proxy=None) as bob,
            ws_connect(other, proxy=None) as eve,
        ):
            await ada.send(json.dumps({"text": "hi bob", "by": "ada"}))
            got = [json.loads(await ada.recv()), json.loads(await bob.recv())]
            await eve.send(json.dumps({"text": "anyone?", "by": "eve"}))
            got.append(json.loads(await eve.recv()))
            # bob gets nothing from elsewhere: his next message is the room's
            await bob.send(json.dumps({"text": "hi ada", "by": "bob"}))
            got.append(json.loads(await bob.recv()))
        return got

    got = run(main())
    assert got == [
        {"text": "hi bob", "by": "ada"},
        {"text": "hi bob", "by": "ada"},
        {"text": "anyone?", "by": "eve"},
        {"text": "hi ada", "by": "bob"},
    ]


def test_channels_refusal_and_close_code(channels_server):
    assert status_of(channels_server, "/ws/guarded/")[0] == 403

    async def main():
        async with ws_connect(url(channels_server, "/ws/guarded/?token=secret"), proxy=None) as ws:
            await ws.send("close please")
            return await closed_by_server(ws)

    assert run(main()).rcvd.code == 4321
