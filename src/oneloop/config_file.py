"""Settings from a file: a gunicorn-style Python file (`-c gunicorn.conf.py`)
or the `[tool.oneloop]` table of a TOML file (pyproject.toml).

A Python file is run as gunicorn runs it: its module globals named after
settings are the settings, by oneloop's names or gunicorn's (`bind`,
`workers`, `keepalive`, `accesslog`, ...). Imports, functions, classes,
UPPER_CASE constants and names starting with `_` are the file's own. Any other global must
be a setting: an unknown name is an error that names it, and a gunicorn
setting oneloop does not have is named as such -- never silently ignored,
since a forgotten `worker_class` or `preload_app` changes how an app runs.
gunicorn's server hooks are called with gunicorn's arguments (hooks.py);
the few oneloop does not call yet are refused the same way: a hook that
resets a database pool must not be skipped without a word.
"""

from __future__ import annotations

import runpy
import tomllib
import types
from typing import Any

from .config import ALIASES, OPTIONS, ConfigError

# gunicorn's names for settings oneloop has, where they differ.
GUNICORN_NAMES = {
    "keepalive": "timeout_keep_alive",
    "graceful_timeout": "timeout_graceful_shutdown",
    "errorlog": "error_logfile",
    "loglevel": "log_level",
    "access_log_format": "access_logformat",
    "certfile": "ssl_certfile",
    "keyfile": "ssl_keyfile",
    "ca_certs": "ssl_ca_certs",
    "ciphers": "ssl_ciphers",
    "pidfile": "pid",
    "wsgi_app": "app",
    "logconfig": "log_config",
}

# gunicorn settings with no oneloop equivalent.
GUNICORN_ONLY = {
    "worker_class",
    "worker_connections",
    "daemon",
    "preload_app",
    "sendfile",
    "proc_name",
    "default_proc_name",
    "raw_env",
    "statsd_host",
    "statsd_prefix",
    "dogstatsd_tags",
    "syslog",
    "syslog_addr",
    "syslog_prefix",
    "syslog_facility",
    "enable_stdio_inheritance",
    "capture_output",
    "logger_class",
    "paste",
    "pythonpath",
    "reload_engine",
    "reload_extra_files",
    "spew",
    "check_config",
    "print_config",
    "tmp_upload_dir",
    "secure_scheme_headers",
    "proxy_protocol",
    "proxy_allow_ips",
    "worker_tmp_dir",
    "strip_header_spaces",
    "permit_unconventional_http_method",
    "permit_unconventional_http_version",
    "casefold_http_method",
    "header_map",
    "do_handshake_on_connect",
    "suppress_ragged_eofs",
    "ssl_version",
    "cert_reqs",
    "keyfile_password",
    "disable_redirect_access_to_syslog",
}

# gunicorn's server hooks that oneloop calls, with gunicorn's arguments
# (hooks.py says when), and those it does not call yet.
HOOKS = {
    "on_starting",
    "on_reload",
    "when_ready",
    "pre_fork",
    "post_fork",
    "post_worker_init",
    "child_exit",
    "worker_exit",
    "nworkers_changed",
    "on_exit",
    "pre_request",
    "post_request",
    "worker_int",
    "worker_abort",
}
UNSUPPORTED_HOOKS = {
    "pre_exec",
    "ssl_context",
}
GUNICORN_HOOKS = HOOKS | UNSUPPORTED_HOOKS


def read(path: str) -> dict[str, Any]:
    """The settings of a file, by oneloop's option names; ConfigError when
    the file cannot be read or names what oneloop does not have."""
    if path.endswith(".toml"):
        return _read_toml(path)
    return _read_python(path)


def pyproject_table(path: str) -> dict[str, Any] | None:
    """The [tool.oneloop] table of a pyproject.toml, or None if it has none."""
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    table = document.get("tool", {}).get("oneloop")
    if table is None:
        return None
    return _settings(path, table.items(), "[tool.oneloop]")


def _read_toml(path: str) -> dict[str, Any]:
    table = pyproject_table(path)
    if table is None:
        raise ConfigError(f"--config {path}: no [tool.oneloop] table")
    return table


def _read_python(path: str) -> dict[str, Any]:
    try:
        namespace = runpy.run_path(path, run_name="__config__")
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except Exception as exc:
        raise ConfigError(f"--config {path} failed: {exc!r}") from exc
    items = [
        (name, value)
        for name, value in namespace.items()
        if not name.startswith("_") and not _is_the_files_own(name, value)
    ]
    return _settings(path, items, "")


def _is_the_files_own(name: str, value: Any) -> bool:
    """Imports, helpers, classes and CONSTANTS (settings are lower case); a
    hook is a function too, but named."""
    if name in GUNICORN_HOOKS:
        return False
    if name.isupper():
        return True
    return isinstance(value, types.ModuleType | type) or callable(value)


def _settings(path: str, items: Any, where: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    place = f"{path}{' ' + where if where else ''}"
    for raw_name, value in items:
        name = str(raw_name).replace("-", "_")
        if name in HOOKS and callable(value):
            found.setdefault("hooks", {})[name] = value
            continue
        if name in GUNICORN_HOOKS:
            raise ConfigError(
                f"{place}: the server hook {name!r} is not supported by oneloop; remove it "
                "(see docs/deployment.md, 'Configuration files')"
            )
        if name == "accesslog":  # gunicorn: a path, '-', or None for no access log
            found["access_log"] = value is not None
            if value is not None:
                found["access_logfile"] = value
            continue
        name = GUNICORN_NAMES.get(name, ALIASES.get(name, name))
        if name in OPTIONS or name == "app":
            found[name] = value
        elif name in GUNICORN_ONLY:
            raise ConfigError(f"{place}: gunicorn's setting {raw_name!r} has no oneloop equivalent")
        else:
            raise ConfigError(f"{place}: unknown setting {raw_name!r}")
    return found
