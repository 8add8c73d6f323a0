"""pytest fixtures for apps served by oneloop (registered as the "oneloop"
pytest plugin when the package is installed).

``oneloop_loop``
    Runs the test inside :func:`oneloop.testing.one_loop`: async views and
    ``async_to_sync`` calls share one persistent loop, so ``app.test_client()``
    works with apps that keep async clients across requests.

``oneloop_serve``
    A factory: ``url = oneloop_serve("myapp:app", threads=4)`` runs the real
    server on a free loopback port for the rest of the test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .testing import one_loop, serve


@pytest.fixture
def oneloop_loop() -> Iterator[Any]:
    with one_loop() as loop:
        yield loop


@pytest.fixture
def oneloop_serve() -> Iterator[Callable[..., str]]:
    with contextlib.ExitStack() as stack:

        def start(app: str, **options: Any) -> str:
            return stack.enter_context(serve(app, **options))

        yield start
