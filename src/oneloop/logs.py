"""Logging: the error log ("oneloop.error"), the access log ("oneloop.access")
with gunicorn's format atoms, and the hooks the C core calls."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import logging.config
import os
import sys
import threading
import time
from typing import Any

from .config import Config, ConfigError

error_log = logging.getLogger("oneloop.error")
access_log = logging.getLogger("oneloop.access")

DEFAULT_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"

# --access-logformat by name. `default` is oneloop's, its line after the
# same [time] [pid] [INFO] prefix as the error log's; any other format,
# named or written out, is the whole line, as in gunicorn (so a format with
# %(t)s does not print two timestamps). `json`: one object per line.
ACCESS_FORMATS = {
    "default": '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(f)s" "%(a)s"',
    "common": '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s',
    "combined": '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',
    "gunicorn": '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',
    "json": "json",
}
# The fields of the json format: name in the object, atom.
_JSON_FIELDS = (
    ("time", "iso"),
    ("remote", "h"),
    ("method", "m"),
    ("path", "U"),
    ("query", "q"),
    ("protocol", "H"),
    ("status", "s"),
    ("bytes", "B"),
    ("duration_ms", "ms_float"),
    ("referer", "f"),
    ("user_agent", "a"),
    ("pid", "pid"),
)


def configure(config: Config) -> None:
    """Set up logging from --log-config, or --error-logfile/--access-logfile
    and the defaults. Safe to call again (the supervisor does on SIGHUP)."""
    level = getattr(logging, config.log_level.upper())
    if config.log_config:
        _load_config_file(config.log_config)
    else:
        _default_handlers(config)
    error_log.setLevel(level)
    access_log.setLevel(logging.INFO if config.access_log else logging.CRITICAL + 1)
    if level > logging.INFO:
        access_log.setLevel(max(level, access_log.level))


# The handlers _default_handlers installed, replaced when it runs again.
_installed: dict[str, logging.Handler] = {}


def _default_handlers(config: Config) -> None:
    targets = (
        (error_log, config.error_logfile, sys.stderr, "--error-logfile"),
        (access_log, config.access_logfile, sys.stdout, "--access-logfile"),
    )
    for logger, path, stream, option in targets:
        old = _installed.pop(logger.name, None)
        if old is not None:
            logger.removeHandler(old)
            if isinstance(old, logging.FileHandler):
                old.close()
        if logger.handlers:
            continue  # set up by the embedding program (oneloop.run, gunicorn)
        handler = _file_handler(path, option) if path and path != "-" else None
        handler = handler or logging.StreamHandler(stream)
        bare = logger is access_log and config.access_logformat != "default"
        handler.setFormatter(
            logging.Formatter("%(message)s" if bare else DEFAULT_FORMAT, "%Y-%m-%d %H:%M:%S %z")
        )
        logger.addHandler(handler)
        logger.propagate = False
        _installed[logger.name] = handler


def _file_handler(path: str, option: str) -> logging.FileHandler:
    try:
        return logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{option} {path}: {exc.strerror}") from None


def reopen_files() -> None:
    """SIGUSR1: reopen every log file by name, after logrotate moved it."""
    loggers = [logging.getLogger()]
    loggers += [
        v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)
    ]
    handlers = {h for logger in loggers for h in logger.handlers}
    for handler in handlers:
        if not isinstance(handler, logging.FileHandler):
            continue
        try:
            # The handler owns the new stream; the old one is closed below.
            stream = open(  # noqa: SIM115
                handler.baseFilename, "a", encoding=handler.encoding, errors=handler.errors
            )
        except OSError as exc:
            error_log.error("cannot reopen %s: %s", handler.baseFilename, exc.strerror)
            continue
        old = handler.setStream(stream)
        if old is not None:
            old.close()


def _load_config_file(path: str) -> None:
    if not os.path.exists(path):
        raise ConfigError(f"--log-config: no such file: {path}")
    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                logging.config.dictConfig(json.load(f))
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except Exception as exc:
        raise ConfigError(f"--log-config {path}: {exc}") from exc


def on_error(level: str, message: str, exc: BaseException | None) -> None:
    """Hook of the C core for server-side events; exc carries a traceback."""
    if level in ("debug", "info"):
        log = error_log.debug if level == "debug" else error_log.info
        if exc is not None:
            log("%s: %r", message, exc)
        else:
            log("%s", message)
        return
    if exc is not None:
        error_log.error("%s", message, exc_info=(type(exc), exc, exc.__traceback__))
    else:
        error_log.error("%s", message)


class _Atoms(dict):
    """gunicorn's access-log atoms, computed when a format asks for them."""

    def __init__(self, request: Any) -> None:
        super().__init__()
        self.request = request

    def __missing__(self, key: str) -> str:
        value = self._compute(key)
        self[key] = value
        return value

    def _request_header(self, name: str) -> str:
        r = self.request
        if r.request_headers is not None:
            return self._header(r.request_headers, name)
        environ = r.environ  # WSGI: the headers are HTTP_* keys there
        if environ is None:
            return "-"
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        return environ.get(key, "-")

    def _header(self, pairs: Any, name: str) -> str:
        wanted = name.lower().encode("latin-1")
        for k, v in pairs or ():
            key = k if isinstance(k, bytes) else str(k).encode("latin-1")
            if key.lower() == wanted:
                return v.decode("latin-1") if isinstance(v, bytes) else str(v)
        return "-"

    def _compute(self, key: str) -> str:
        r = self.request
        if key.startswith("{") and key.endswith("}i"):
            return self._request_header(key[1:-2])
        if key.startswith("{") and key.endswith("}o"):
            return self._header(r.response_headers, key[1:-2])
        target = r.target.decode("latin-1") if r.target else "-"
        path, _, query = target.partition("?")
        client = r.client
        duration = r.duration
        simple = {
            "h": client[0] if client else "-",
            "l": "-",
            "u": "-",
            "t": time.strftime("[%d/%b/%Y:%H:%M:%S %z]"),
            "r": f"{r.method} {target} HTTP/{r.http_version}",
            "m": r.method or "-",
            "U": path,
            "q": query,
            "H": f"HTTP/{r.http_version}",
            "s": str(r.status),
            "B": str(r.sent),
            "b": str(r.sent) if r.sent else "-",
            "f": self._request_header("referer"),
            "a": self._request_header("user-agent"),
            "T": str(int(duration)),
            "D": str(int(duration * 1_000_000)),
            "M": str(int(duration * 1000)),
            "L": f"{duration:.6f}",
            "p": f"<{os.getpid()}>",
            # for the json format
            "iso": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "ms_float": f"{duration * 1000:.3f}",
            "pid": str(os.getpid()),
        }
        return simple.get(key, "-")


def make_access_hook(config: Config, logger: logging.Logger = access_log):
    """The C core's on_access hook, or None when access logging is off."""
    if not config.access_log or not logger.isEnabledFor(logging.INFO):
        return None
    fmt = ACCESS_FORMATS.get(config.access_logformat, config.access_logformat)

    def on_access(request: Any) -> None:
        try:
            logger.info(fmt % _Atoms(request))
        except Exception:
            error_log.exception("cannot format the access log line with %r", fmt)

    def on_access_json(request: Any) -> None:
        atoms = _Atoms(request)
        line = {name: atoms[atom] for name, atom in _JSON_FIELDS}
        for name in ("status", "bytes", "pid"):
            line[name] = int(line[name])
        line["duration_ms"] = float(line["duration_ms"])
        logger.info(json.dumps(line))

    return on_access_json if fmt == "json" else on_access


_COROUTINE_FLAGS = inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _innermost_coroutine_code(frame: Any) -> Any:
    while frame is not None:
        if frame.f_code.co_flags & _COROUTINE_FLAGS:
            return frame.f_code
        frame = frame.f_back
    return None


# Frames that only lead to the app's code: the worker, the supervisor, the
# event loop's machinery.
_MACHINERY = (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
    os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep,
    os.path.abspath(threading.__file__),
    "<frozen runpy>",
)


def _app_stack(frame: Any, limit: int = 12) -> str:
    """The loop thread's stack from the first frame that is not oneloop's
    or asyncio's (the app's view, or what it called), innermost `limit`."""
    import traceback

    frames = traceback.extract_stack(frame)  # outermost first
    first = next((i for i, f in enumerate(frames) if not f.filename.startswith(_MACHINERY)), 0)
    return "".join(traceback.format_list(frames[first:][-limit:]))


def on_stall(seconds: float, driver: Any, loop_thread: int) -> None:
    """Hook of the watchdog: the event loop has been blocked `seconds`."""
    frame = sys._current_frames().get(loop_thread)
    # The coroutine that blocks: the innermost on the loop thread's stack
    # (a view run by the core, or by asgiref's async_to_sync for Django).
    what = ""
    coroutine_code = _innermost_coroutine_code(frame)
    if coroutine_code is None and driver is not None:
        coro = driver.coroutine
        coroutine_code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    if coroutine_code is not None:
        what = f" in {coroutine_code.co_qualname!r}"
    where = ""
    if driver is not None:
        owner = driver.owner
        request = getattr(owner, "request", owner)
        if request is not None and getattr(request, "method", None):
            target = request.target.decode("latin-1", "replace") if request.target else ""
            where = f" serving {request.method} {target}"
    stack = _app_stack(frame) if frame is not None else ""
    error_log.warning(
        "The event loop has been blocked for %.2fs%s%s: blocking code in async views "
        "stalls every async view of this worker. Loop thread:\n%s",
        seconds,
        what,
        where,
        stack.rstrip(),
    )
