"""A module importing a dependency that is not installed."""

import oneloop_no_such_dependency  # noqa: F401


def app(environ, start_response):
    pass
