"""A Django project in one module, served as WSGI, with async views that use
module-level async clients (redis.asyncio and an aiohttp session created at
import) and sync_to_async. Django runs async views under WSGI through
asgiref's async_to_sync. REDIS_URL, UPSTREAMS: the services.
"""

import asyncio
import os
import threading

import aiohttp
import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="oneloop-tests-not-secret",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    INSTALLED_APPS=[],
    MIDDLEWARE=[f"{__name__}.ThreadMiddleware"],
    USE_TZ=True,
    DATABASES={},
    LOGGING_CONFIG=None,
)
django.setup()

import redis.asyncio as aioredis  # noqa: E402
from asgiref.sync import sync_to_async  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

IMPORT_LOOP = asyncio.get_event_loop()
UPSTREAM = os.environ["UPSTREAMS"].split(",")[0]
r = aioredis.Redis.from_url(os.environ["REDIS_URL"])
session = aiohttp.ClientSession(loop=IMPORT_LOOP)


class ThreadMiddleware:
    """Sync middleware: notes the WSGI thread that serves the request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.wsgi_thread = threading.current_thread().name
        return self.get_response(request)


def thread_name() -> str:
    return threading.current_thread().name


async def incr(request, key):
    value = await r.incr(key)
    async with session.get(f"{UPSTREAM}/data", params={"delay": "0"}) as response:
        upstream = (await response.json())["upstream"]
    sync_thread = await sync_to_async(thread_name)()  # thread_sensitive: the WSGI thread
    return JsonResponse(
        {
            "value": value,
            "upstream": upstream,
            "loop": id(asyncio.get_running_loop()),
            "import_loop": id(IMPORT_LOOP),
            "wsgi_thread": request.wsgi_thread,
            "sync_thread": sync_thread,
            "view_thread": threading.current_thread().name,
        }
    )


async def block_the_loop(request):
    import time

    time.sleep(0.8)  # wrong in an async view: the watchdog names this view
    return JsonResponse({"blocked": 0.8})


urlpatterns = [path("dj/incr/<str:key>", incr), path("dj/block", block_the_loop)]

application = get_wsgi_application()
