"""Configuration: every option in one table, resolved once into a Config.

Each option can be given on the command line, as an environment variable
ONELOOP_<NAME> (for example ONELOOP_TIMEOUT_KEEP_ALIVE=10), in --env-file,
or as a keyword to oneloop.run(). The command line wins over the
environment, which wins over the env file, which wins over the defaults.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from . import __version__


class ConfigError(Exception):
    """A bad option value; the CLI prints it as one line and exits 2."""


def _positive_int(value: Any) -> int:
    n = int(value)
    if n < 1:
        raise ValueError("must be at least 1")
    return n


def _non_negative_int(value: Any) -> int:
    n = int(value)
    if n < 0:
        raise ValueError("must not be negative")
    return n


def _health_path(value: Any) -> str:
    path = str(value)
    if not path.startswith("/") or any(c in path for c in "? #") or not path.isprintable():
        raise ValueError("must be a path starting with '/', without a query")
    return path


def _umask(value: Any) -> int:
    """A file mode creation mask: octal as in a shell (022, 0o022) or an int."""
    if isinstance(value, int):
        n = value
    else:
        text = str(value).strip().lower().removeprefix("0o")
        n = int(text, 8)
    if not 0 <= n <= 0o777:
        raise ValueError("must be an octal mask between 000 and 777")
    return n


def _non_negative_float(value: Any) -> float:
    n = float(value)
    if n < 0:
        raise ValueError("must not be negative")
    return n


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _range(low: int, high: int):
    def parse(value: Any) -> int:
        n = _positive_int(value)
        if not low <= n <= high:
            raise ValueError(f"must be between {low} and {high}")
        return n

    return parse


def _choice(*choices: str):
    def parse(value: Any) -> str:
        text = str(value).lower()
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    parse.choices = choices  # type: ignore[attr-defined]
    return parse


def _csv(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def _csv_list(value: Any) -> list[str]:
    """A repeatable option: each value may itself be comma-separated."""
    items = value if isinstance(value, list | tuple) else [value]
    return [part for item in items for part in _csv(item)]


def _timeout(value: Any) -> float:
    n = _non_negative_float(value)
    if 0 < n < 0.5:
        raise ValueError("must be 0 (off) or at least 0.5 seconds")
    return n


def _default_threads() -> int:
    return 16


# What --reload watches by default: Python sources, not editor droppings,
# bytecode or version-control internals (uvicorn's defaults, plus caches).
RELOAD_INCLUDE = ("*.py",)
RELOAD_EXCLUDE = (".*", ".py[cod]", ".sw.*", "~*", "__pycache__")


@dataclass
class Config:
    """Resolved options of one oneloop server (see `oneloop --help`)."""

    app: Any = None
    factory: bool = False
    app_dir: str = "."
    interface: str = "auto"
    # Binding
    host: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None
    fd: int | None = None
    bind: list[str] = field(default_factory=list)
    backlog: int = 2048
    reuse_port: bool = False
    # TLS
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_keyfile_password: str | None = None
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: str = "none"
    ssl_ciphers: str | None = None
    # Event loop and app
    loop: str = "auto"
    lifespan: str = "auto"
    threads: int = field(default_factory=_default_threads)
    root_path: str = ""
    # Proxies
    proxy_headers: bool = True
    forwarded_allow_ips: list[str] = field(default_factory=lambda: ["127.0.0.1", "::1"])
    # Logging
    log_level: str = "info"
    log_config: str | None = None
    access_log: bool = True
    access_logformat: str = "default"
    # HTTP
    server_header: bool = True
    date_header: bool = True
    limit_request_line: int = 8190
    limit_request_fields: int = 100
    limit_request_field_size: int = 8190
    limit_request_body: int = 0
    timeout_keep_alive: float = 5.0
    timeout_request_head: float = 10.0
    timeout_request_body: float = 30.0
    timeout_send: float = 60.0
    timeout_graceful_shutdown: float = 30.0
    timeout_async: float = 0.0
    loop_stall_warning: float = 0.5
    max_keep_alive_requests: int = 0
    limit_concurrency: int = 0
    health_path: str | None = None
    metrics_bind: str | None = None
    # WebSockets
    ws: str = "auto"
    ws_max_size: int = 16 * 1024 * 1024
    ws_max_queue: int = 32
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 20.0
    ws_per_message_deflate: bool = True
    # HTTP/2
    http: str = "auto"
    h2_max_concurrent_streams: int = 100
    h2_initial_window_size: int = 262144
    h2_max_frame_size: int = 16384
    h2_max_header_list_size: int = 65536
    # Process model
    workers: int = 1
    timeout: float = 30.0
    max_requests: int = 0
    max_requests_jitter: int = 0
    workers_max_rss: int = 0
    workers_lifetime: float = 0.0
    pid: str | None = None
    umask: int | None = None
    user: str | None = None
    group: str | None = None
    initgroups: bool = False
    chdir: str | None = None
    reload: bool = False
    reload_dir: list[str] = field(default_factory=list)
    reload_include: list[str] = field(default_factory=list)
    reload_exclude: list[str] = field(default_factory=list)
    env_file: str | None = None
    config: str | None = None
    error_logfile: str | None = None
    access_logfile: str | None = None
    # Variables --env-file added to the environment (not an option).
    env_file_vars: dict[str, str] = field(default_factory=dict)
    hooks: dict[str, Any] = field(default_factory=dict)  # from --config (hooks.py)

    def listen_urls(self) -> list[str]:
        scheme = "https" if self.ssl_certfile else "http"
        if self.bind:
            return [b if "://" in b else f"{scheme}://{b}" for b in self.bind]
        if self.uds:
            return [f"unix:{self.uds}"]
        if self.fd is not None:
            return [f"fd://{self.fd}"]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return [f"{scheme}://{host}:{self.port}"]


# name -> (parser, help). The order is the order of `oneloop --help`.
OPTIONS: dict[str, tuple[Any, str]] = {
    "factory": (_bool, "treat APP as a factory: call it with no arguments to get the app"),
    "app_dir": (str, "directory to import the app from (default: the current one)"),
    "interface": (
        _choice("auto", "asgi", "asgi3", "asgi2", "wsgi"),
        "application interface (default: auto, detected from the app)",
    ),
    "host": (str, "address to bind (default: 127.0.0.1; '::' for all IPv6 and IPv4)"),
    "port": (_non_negative_int, "port to bind (default: 8000)"),
    "uds": (str, "bind to this UNIX domain socket path instead"),
    "fd": (_non_negative_int, "serve on this already-listening file descriptor"),
    "bind": (
        str,
        "HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N; repeatable, overrides --host/--port",
    ),
    "backlog": (_positive_int, "listen backlog (default: 2048)"),
    "reuse_port": (_bool, "set SO_REUSEPORT on listening sockets"),
    "ssl_certfile": (str, "TLS certificate file (PEM); enables HTTPS"),
    "ssl_keyfile": (str, "TLS private key file (PEM)"),
    "ssl_keyfile_password": (str, "password of the private key"),
    "ssl_ca_certs": (str, "CA certificates for verifying client certificates"),
    "ssl_cert_reqs": (
        _choice("none", "optional", "required"),
        "client certificate requirement (default: none)",
    ),
    "ssl_ciphers": (str, "OpenSSL cipher list"),
    "loop": (
        _choice("auto", "asyncio", "uvloop"),
        "event loop (default: auto = uvloop when installed); asyncio: the stdlib loop, gated: "
        "WSGI threads run async calls that need no wait themselves (docs/one-loop.md)",
    ),
    "lifespan": (_choice("auto", "on", "off"), "ASGI lifespan protocol (default: auto)"),
    "threads": (
        _positive_int,
        "WSGI threads per worker (default: 16); one thread serves while views are fast",
    ),
    "root_path": (str, "mount point of the app: ASGI root_path, WSGI SCRIPT_NAME"),
    "proxy_headers": (
        _bool,
        "trust X-Forwarded-For/-Proto from --forwarded-allow-ips (default: on)",
    ),
    "forwarded_allow_ips": (
        _csv,
        "comma-separated proxy addresses or networks to trust, or '*' "
        "(default: 127.0.0.1,::1; env FORWARDED_ALLOW_IPS also works)",
    ),
    "log_level": (
        _choice("critical", "error", "warning", "info", "debug"),
        "log level (default: info)",
    ),
    "log_config": (str, "logging configuration file: .json (dictConfig) or .ini (fileConfig)"),
    "access_log": (_bool, "log each request (default: on)"),
    "access_logformat": (
        str,
        "access log line: default, common, combined (= gunicorn's default), json, or a "
        "format of gunicorn's atoms, e.g. '%%(h)s \"%%(r)s\" %%(s)s %%(M)sms'",
    ),
    "server_header": (_bool, "send 'Server: oneloop' (default: on)"),
    "date_header": (_bool, "send a Date header (default: on)"),
    "limit_request_line": (
        _positive_int,
        "longest request line in bytes, else 414 (default: 8190)",
    ),
    "limit_request_fields": (_positive_int, "most header fields, else 431 (default: 100)"),
    "limit_request_field_size": (
        _positive_int,
        "longest header field in bytes, else 431 (default: 8190)",
    ),
    "limit_request_body": (
        _non_negative_int,
        "largest request body in bytes, else 413 (default: 0 = no limit)",
    ),
    "timeout_keep_alive": (
        _non_negative_float,
        "seconds an idle keep-alive connection is kept (default: 5; 0 = no keep-alive: "
        "every response closes its connection)",
    ),
    "timeout_request_head": (
        _non_negative_float,
        "seconds to receive a whole request head, however slowly it trickles "
        "(default: 10; 0 = no limit)",
    ),
    "timeout_request_body": (
        _non_negative_float,
        "seconds to wait for more of a request body (default: 30; 0 = no limit)",
    ),
    "timeout_send": (
        _non_negative_float,
        "seconds a client may take to accept response bytes (default: 60; 0 = no limit)",
    ),
    "timeout_graceful_shutdown": (
        _non_negative_float,
        "seconds to let in-flight requests finish on shutdown (default: 30)",
    ),
    "timeout_async": (
        _non_negative_float,
        "seconds an async call made from WSGI code (a Flask async view, async_to_sync) may "
        "run before it is cancelled (default: 0 = no limit)",
    ),
    "loop_stall_warning": (
        _non_negative_float,
        "warn when something blocks the event loop this many seconds, naming the request "
        "and coroutine (default: 0.5; 0 = off)",
    ),
    "max_keep_alive_requests": (
        _non_negative_int,
        "requests per connection before closing it (default: 0 = no limit)",
    ),
    "limit_concurrency": (
        _non_negative_int,
        "requests (and WebSocket sessions) in the app at once per worker; beyond, the core "
        "answers 503 with Retry-After without calling the app (default: 0 = no limit)",
    ),
    "health_path": (
        _health_path,
        "answer GET/HEAD of this path (e.g. /healthz) in the core, without calling the app: "
        "200 while the worker serves, 503 once it drains (default: none)",
    ),
    "metrics_bind": (
        str,
        "serve Prometheus metrics of all workers on this HOST:PORT or unix:PATH, from the "
        "supervisor, at /metrics (default: none)",
    ),
    "ws": (
        _choice("auto", "on", "off"),
        "WebSocket upgrades (default: auto = on): ASGI apps get the websocket scope, WSGI "
        "apps take the connection over (flask-sock); off: an upgrade request is served as "
        "plain HTTP",
    ),
    "ws_max_size": (
        _positive_int,
        "largest WebSocket message in bytes, after decompression; a larger one closes the "
        "connection with 1009 (default: 16777216)",
    ),
    "ws_max_queue": (
        _positive_int,
        "WebSocket messages received and not yet taken by the app before reading pauses "
        "(default: 32)",
    ),
    "ws_ping_interval": (
        _non_negative_float,
        "seconds between keepalive pings on an idle WebSocket (default: 20; 0 = none)",
    ),
    "ws_ping_timeout": (
        _non_negative_float,
        "seconds to wait for the pong (and for the client's close frame) before the "
        "connection is closed (default: 20; 0 = no limit)",
    ),
    "ws_per_message_deflate": (
        _bool,
        "accept permessage-deflate compression (RFC 7692) when the client offers it (default: on)",
    ),
    "http": (
        _choice("auto", "1", "2"),
        "HTTP versions served (default: auto = HTTP/1.1, and HTTP/2 to ASGI apps: by ALPN "
        "over TLS, with prior knowledge (h2c) in cleartext); 1 = HTTP/1.1 only; 2 = HTTP/2 only",
    ),
    "h2_max_concurrent_streams": (
        _range(1, 1 << 20),
        "HTTP/2 streams a client may have open at once; more are refused (default: 100)",
    ),
    "h2_initial_window_size": (
        _range(1024, 2**31 - 1),
        "HTTP/2 flow-control window per stream in bytes: request body a client may send "
        "ahead of the app reading it (default: 262144)",
    ),
    "h2_max_frame_size": (
        _range(16384, 2**24 - 1),
        "largest HTTP/2 frame payload the server accepts (default: 16384)",
    ),
    "h2_max_header_list_size": (
        _range(1024, 1 << 24),
        "largest HTTP/2 request header list (decoded, RFC 9113 sizes); larger gets 431 "
        "(default: 65536)",
    ),
    "workers": (
        _non_negative_int,
        "worker processes, each with its own event loop, under a supervisor "
        "(default: $WEB_CONCURRENCY, else 1); 0 = serve in this process, no supervisor",
    ),
    "timeout": (
        _timeout,
        "seconds a worker's event loop may stay blocked (or a worker may take to boot) "
        "before the supervisor kills it with a stack dump and starts another "
        "(default: 30; 0 = never)",
    ),
    "max_requests": (
        _non_negative_int,
        "requests after which a worker is replaced, gracefully (default: 0 = never)",
    ),
    "max_requests_jitter": (
        _non_negative_int,
        "add a random 0..N to --max-requests for each worker, so they do not all "
        "restart at once (default: 0)",
    ),
    "workers_max_rss": (
        _non_negative_int,
        "replace a worker, gracefully, once its resident memory has stayed above this many "
        "MiB for 3 seconds (default: 0 = never)",
    ),
    "workers_lifetime": (
        _non_negative_float,
        "replace each worker, gracefully, after this many seconds plus a random 0-10%% so "
        "they do not all go at once (default: 0 = never)",
    ),
    "pid": (str, "write the process id of the supervisor (or lone worker) to this file"),
    "umask": (
        _umask,
        "file mode creation mask of the server's processes, in octal (e.g. 027); a UNIX "
        "socket is created with mode 666 minus it (default: 666, so a proxy running as "
        "another user can connect; the process's mask is left as it is)",
    ),
    "user": (
        str,
        "run the workers as this user (a name or a numeric id): the supervisor binds the "
        "listeners as root, each worker drops to this user before it imports the app; needs "
        "root (default: the user oneloop runs as)",
    ),
    "group": (
        str,
        "run the workers in this group (a name or a numeric id; default: --user's primary "
        "group); needs root",
    ),
    "initgroups": (
        _bool,
        "with --user, give the workers the user's supplementary groups from /etc/group "
        "(default: off, the workers are in --group only)",
    ),
    "chdir": (
        str,
        "change to this directory before loading the app (relative --app-dir, --pid, log "
        "and socket paths are then relative to it)",
    ),
    "reload": (
        _bool,
        "development: restart the workers when a source file changes (not for production)",
    ),
    "reload_dir": (
        _csv_list,
        "directory to watch with --reload; repeatable (default: the --app-dir)",
    ),
    "reload_include": (
        _csv_list,
        "glob of file names that trigger --reload, besides *.py, even if a default "
        "exclude matches (e.g. .env); repeatable",
    ),
    "reload_exclude": (
        _csv_list,
        "glob of file and directory names --reload ignores, besides .*, .py[cod], "
        ".sw.*, ~* and __pycache__; repeatable",
    ),
    "config": (
        str,
        "settings file: Python as gunicorn's (globals named after settings: bind, workers, "
        "threads, timeout, keepalive, accesslog, ...) or TOML with a [tool.oneloop] table; "
        "without it, ./pyproject.toml's [tool.oneloop] is read if there is one. The command "
        "line and ONELOOP_* variables win over it",
    ),
    "env_file": (
        str,
        "KEY=VALUE lines added to the environment (the real environment wins); "
        "ONELOOP_* options included. Read again on SIGHUP",
    ),
    "error_logfile": (str, "write the error log to this file ('-': stderr); reopened on SIGUSR1"),
    "access_logfile": (
        str,
        "write the access log to this file ('-': stdout); reopened on SIGUSR1",
    ),
}

# Second names of options, as gunicorn spells them.
ALIASES = {
    "graceful_timeout": "timeout_graceful_shutdown",
    "keep_alive": "timeout_keep_alive",
    "log_file": "error_logfile",
}

# Short flags on the command line.
SHORT_FLAGS = {"bind": "-b", "workers": "-w", "timeout": "-t", "config": "-c"}

# Options that may be given more than once on the command line.
LISTS = {"bind", "reload_dir", "reload_include", "reload_exclude"}

# Options that take no value on the command line (--flag / --no-flag).
FLAGS = {
    "factory",
    "reuse_port",
    "proxy_headers",
    "access_log",
    "server_header",
    "date_header",
    "reload",
    "ws_per_message_deflate",
    "initgroups",
}


def env_name(option: str) -> str:
    return "ONELOOP_" + option.upper()


def from_environ(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Options set through ONELOOP_* variables (and FORWARDED_ALLOW_IPS,
    WEB_CONCURRENCY, as gunicorn and uvicorn read them)."""
    environ = os.environ if environ is None else environ
    found: dict[str, Any] = {}
    if "FORWARDED_ALLOW_IPS" in environ:
        found["forwarded_allow_ips"] = environ["FORWARDED_ALLOW_IPS"]
    if "WEB_CONCURRENCY" in environ:
        found["workers"] = environ["WEB_CONCURRENCY"]
    for alias, name in ALIASES.items():
        if env_name(alias) in environ:
            found[name] = environ[env_name(alias)]
    for name in OPTIONS:
        key = env_name(name)
        if key in environ:
            found[name] = environ[key]
    if "ONELOOP_APP" in environ:
        found["app"] = environ["ONELOOP_APP"]
    return found


def build(values: dict[str, Any]) -> Config:
    """A Config from raw values (strings or Python values); ConfigError on bad ones."""
    config = Config()
    known = {f.name for f in fields(Config)}
    for name, raw in values.items():
        name = ALIASES.get(name, name)
        if name not in known:
            raise ConfigError(f"unknown option {name!r}")
        if raw is None:
            continue
        parser = OPTIONS.get(name, (lambda v: v, ""))[0]
        try:
            if name == "bind":
                value = [raw] if isinstance(raw, str) else list(raw)
            else:
                value = parser(raw)
        except (TypeError, ValueError) as exc:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"invalid value for {flag}: {raw!r} ({exc})") from None
        setattr(config, name, value)
    if config.ssl_keyfile and not config.ssl_certfile:
        raise ConfigError("--ssl-keyfile needs --ssl-certfile")
    if config.metrics_bind and config.workers == 0:
        raise ConfigError("--metrics-bind needs the supervisor: use --workers 1 or more")
    if config.reload and config.workers == 0:
        raise ConfigError("--reload needs the supervisor: use --workers 1 or more")
    return config


def load(args: dict[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """A Config from command-line values over the environment, itself over
    --env-file. The supervisor calls it again on SIGHUP with the environment
    it started with, so an edited env file takes effect."""
    environ = dict(os.environ if environ is None else environ)
    path = args.get("env_file") or environ.get(env_name("env_file"))
    file_vars = read_env_file(path) if path else {}
    values = from_config_file(args.get("config") or environ.get(env_name("config")))
    hooks = values.pop("hooks", {})
    values.update(from_environ({**file_vars, **environ}))
    values.update(args)
    config = build(values)
    config.env_file_vars = {k: v for k, v in file_vars.items() if k not in environ}
    config.hooks = hooks
    return config


def from_config_file(path: str | None) -> dict[str, Any]:
    """Settings of --config FILE, or of ./pyproject.toml's [tool.oneloop]."""
    from . import config_file

    if path:
        return config_file.read(path)
    return config_file.pyproject_table("pyproject.toml") or {}


def read_env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines; blank lines, # comments and an `export ` prefix are
    allowed; a value may be quoted: '...' literally, "..." with backslash
    escapes (\\n, \\t, \\", \\\\)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ConfigError(f"--env-file {path}: {exc.strerror}") from None
    found: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, sep, value = text.removeprefix("export ").partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise ConfigError(f"--env-file {path}, line {number}: expected KEY=VALUE")
        found[key] = _env_value(value.strip())
    return found


def _env_value(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[0]), value[1:-1])
    return value.split(" #", 1)[0].rstrip()


_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


def version_line() -> str:
    import platform

    return f"oneloop {__version__} ({platform.python_implementation()} {platform.python_version()})"
