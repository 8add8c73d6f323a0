"""Django served through its WSGI handler."""

from django.core.wsgi import get_wsgi_application

from . import django_common  # noqa: F401 -- settings and URLs

application = get_wsgi_application()
