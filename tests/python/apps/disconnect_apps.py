"""A Starlette endpoint reading its body: when the client leaves mid-body,
Starlette raises its ClientDisconnect, which is the client's doing."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def upload(request: Request) -> PlainTextResponse:
    body = await request.body()
    return PlainTextResponse(f"{len(body)}")


app = Starlette(routes=[Route("/upload", upload, methods=["POST"])])


async def raw(scope, receive, send):
    """Raises Starlette's ClientDisconnect itself, as a framework without an
    error middleware lets it escape once receive() says http.disconnect."""
    from starlette.requests import ClientDisconnect

    if scope["type"] != "http":
        return
    while (await receive())["type"] != "http.disconnect":
        pass
    raise ClientDisconnect()
