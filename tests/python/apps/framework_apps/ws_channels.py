"""A Django Channels project: async, sync and JSON consumers, a chat room
over the in-memory channel layer, and a consumer that refuses, next to a
plain Django view. Settings: framework_apps/ws_channels_settings.py."""

import os
import threading

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "framework_apps.ws_channels_settings")

from django.core.asgi import get_asgi_application

django_app = get_asgi_application()  # sets Django up before the imports below

from channels.generic.websocket import (  # noqa: E402
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    WebsocketConsumer,
)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        if text_data is not None:
            await self.send(text_data=text_data)
        else:
            await self.send(bytes_data=bytes_data)


class SyncEcho(WebsocketConsumer):
    """A sync consumer: its handlers run in a thread."""

    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=f"{text_data} from {threading.current_thread().name}")


class Chat(AsyncJsonWebsocketConsumer):
    """Members of a room get every message sent to it (the channel layer)."""

    async def connect(self):
        self.room = "chat-" + self.scope["url_route"]["kwargs"]["room"]
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.room, self.channel_name)

    async def receive_json(self, content):
        await self.channel_layer.group_send(
            self.room, {"type": "chat.message", "text": content["text"], "by": content["by"]}
        )

    async def chat_message(self, event):
        await self.send_json({"text": event["text"], "by": event["by"]})


class Guarded(AsyncWebsocketConsumer):
    async def connect(self):
        if self.scope["query_string"] != b"token=secret":
            await self.close()
            return
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        await self.close(code=4321)


def index(request):
    return HttpResponse("Hello from Django with Channels", content_type="text/plain")


urlpatterns = [path("", index)]

application = ProtocolTypeRouter(
    {
        "http": django_app,
        "websocket": URLRouter(
            [
                path("ws/echo/", Echo.as_asgi()),
                path("ws/sync/", SyncEcho.as_asgi()),
                path("ws/chat/<str:room>/", Chat.as_asgi()),
                path("ws/guarded/", Guarded.as_asgi()),
            ]
        ),
    }
)
