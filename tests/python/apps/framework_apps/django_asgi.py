"""Django served through its ASGI handler."""

from django.core.asgi import get_asgi_application

from . import django_common  # noqa: F401 -- settings and URLs

application = get_asgi_application()
