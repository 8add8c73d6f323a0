"""A Django project in one module: settings, views and URLs.

django_wsgi and django_asgi build the WSGI and ASGI handlers on top of it.
"""

import asyncio
import json
import threading

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="oneloop-tests-not-secret",
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=[],
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        USE_TZ=True,
        DATABASES={},
        LOGGING_CONFIG=None,
    )
    django.setup()

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


def index(request):
    return HttpResponse("Hello from Django", content_type="text/plain")


def as_json(request):
    return JsonResponse(
        {
            "framework": "django",
            "method": request.method,
            "get": request.GET.dict(),
            "scheme": request.scheme,
            "is_secure": request.is_secure(),
            "remote_addr": request.META.get("REMOTE_ADDR"),
            "absolute": request.build_absolute_uri("/x"),
            "script_name": request.META.get("SCRIPT_NAME"),
            "path": request.path,
            "path_info": request.path_info,
            "thread": threading.current_thread().name,
        }
    )


def item(request, item_id):
    return JsonResponse({"item": item_id, "type": type(item_id).__name__})


@csrf_exempt
def form(request):
    if request.method != "POST":
        return HttpResponse(status=405)
    return JsonResponse({"post": {k: request.POST.getlist(k) for k in request.POST}})


@csrf_exempt
def upload(request):
    f = request.FILES["file"]
    return JsonResponse(
        {"filename": f.name, "size": len(f.read()), "note": request.POST.get("note")}
    )


@csrf_exempt
def json_echo(request):
    payload = json.loads(request.body)
    return JsonResponse({"received": payload, "length": len(request.body)}, status=201)


def stream(request):
    return StreamingHttpResponse((f"line {i}\n" for i in range(4)), content_type="text/plain")


def boom(request):
    raise RuntimeError("django view failed")


async def async_view(request):
    await asyncio.sleep(0)
    try:
        loop = id(asyncio.get_running_loop())
    except RuntimeError:
        loop = None
    return JsonResponse({"async": True, "loop": loop})


urlpatterns = [
    path("", index),
    path("json", as_json),
    path("items/<int:item_id>", item),
    path("form", form),
    path("upload", upload),
    path("json-echo", json_echo),
    path("stream", stream),
    path("boom", boom),
    path("async", async_view),
]
