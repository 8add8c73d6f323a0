"""The ASGI lifespan protocol: startup before the first request, shutdown after
the last, and the state dict that reaches every request scope."""

from __future__ import annotations

import asyncio
from typing import Any

from .logs import error_log


class LifespanFailure(Exception):
    """The app reported (or raised) a startup or shutdown failure."""


class Lifespan:
    def __init__(self, app: Any, interface: str, mode: str) -> None:
        self.app = app
        self.interface = interface
        self.mode = mode  # auto | on | off
        self.state: dict[str, Any] = {}
        self.supported = mode != "off" and interface != "wsgi"
        self._receive: asyncio.Queue[dict] = asyncio.Queue()
        self._events: asyncio.Queue[dict] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._error: BaseException | None = None
        self._received_startup = False

    async def _run(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {
                "version": "2.0" if self.interface == "asgi2" else "3.0",
                "spec_version": "2.0",
            },
            "state": self.state,
        }
        try:
            if self.interface == "asgi2":
                await self.app(scope)(self._app_receive, self._send)
            else:
                await self.app(scope, self._app_receive, self._send)
        except BaseException as exc:
            self._error = exc
        finally:
            await self._events.put({"type": "lifespan.returned"})

    async def _app_receive(self) -> dict:
        message = await self._receive.get()
        if message["type"] == "lifespan.startup":
            self._received_startup = True
        return message

    async def _send(self, message: dict) -> None:
        await self._events.put(message)

    async def startup(self) -> None:
        if not self.supported:
            return
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._receive.put({"type": "lifespan.startup"})
        event = await self._events.get()
        kind = event.get("type")
        if kind == "lifespan.startup.complete":
            return
        if kind == "lifespan.startup.failed":
            raise LifespanFailure(f"app startup failed: {event.get('message', '')}")
        # The app returned or raised without answering. Once it took the
        # startup message, an exception is a failed startup; before that
        # (typically `assert scope["type"] == "http"`), it means the app has
        # no lifespan support, which --lifespan auto tolerates.
        self.supported = False
        if self._received_startup and self._error is not None:
            raise LifespanFailure(f"app startup raised {self._error!r}") from self._error
        if self.mode == "on":
            if self._error is not None:
                raise LifespanFailure(f"app startup raised {self._error!r}") from self._error
            raise LifespanFailure("the app does not support the lifespan protocol (--lifespan on)")
        if self._error is not None:
            error_log.info(
                "ASGI lifespan unsupported by the app (%r); continuing without it", self._error
            )
        else:
            error_log.debug("the app does not support ASGI lifespan; continuing without it")

    async def shutdown(self) -> None:
        if not self.supported or self._task is None:
            return
        await self._receive.put({"type": "lifespan.shutdown"})
        event = await self._events.get()
        if event.get("type") == "lifespan.shutdown.failed":
            error_log.error("app shutdown failed: %s", event.get("message", ""))
        elif event.get("type") == "lifespan.returned" and self._error is not None:
            error_log.error("app shutdown raised", exc_info=self._error)
        await asyncio.wait([self._task], timeout=1)
