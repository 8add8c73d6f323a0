"""oneloop: an HTTP server for WSGI and ASGI apps with a C core and one
long-lived event loop per worker."""

__version__ = "0.1.0"
