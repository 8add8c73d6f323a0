"""Helpers for the apps: append one line per event to the file named by an
env var (several threads at once: one write(2) per line on an O_APPEND
file), and the id of the loop an app sees at import."""

import asyncio
import os


def record(env_var: str, line: str) -> None:
    path = os.environ.get(env_var)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def import_loop_id() -> int | None:
    """id(asyncio.get_event_loop()) for an app to call at import: in a
    oneloop worker, the worker's loop. None where this thread has no loop
    (an in-process test importing the app after one_loop() reset it)."""
    try:
        return id(asyncio.get_event_loop())
    except RuntimeError:
        return None


def stack_versions() -> dict:
    """The Flask and asgiref versions the app really imported (the tests run
    the apps against the oldest and the newest supported)."""
    from importlib.metadata import version

    return {"flask": version("flask"), "asgiref": version("asgiref")}


def add_stack_route(app) -> None:
    app.add_url_rule("/_stack", "stack", stack_versions)
