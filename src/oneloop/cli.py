"""The `oneloop` command: parse options, then run the server.

Errors in the command line or in loading the app print one line naming the
problem and exit non-zero; no traceback wall.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from . import config as cfg
from . import selfcheck
from .config import OPTIONS, ConfigError
from .loading import AppLoadError

_METAVARS = {"bind": "ADDRESS", "pid": "FILE", "port": "PORT", "fd": "FD", "chdir": "DIR"}
_SIZES = {"limit_request_line", "limit_request_field_size", "limit_request_body"}


def _metavar(name: str, parse: Any) -> str:
    """SECONDS, BYTES or N by what the option means; else its last word."""
    if name in _METAVARS:
        return _METAVARS[name]
    if name in _SIZES:
        return "BYTES"
    if parse in (cfg._timeout, cfg._non_negative_float):
        return "SECONDS"
    if parse in (cfg._positive_int, cfg._non_negative_int):
        return "N"
    return name.split("_")[-1].upper()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oneloop",
        description="Serve a WSGI or ASGI app, with one event loop per worker for all its "
        "async code. Every option can also be set as an environment variable "
        "ONELOOP_<OPTION> (e.g. ONELOOP_THREADS=32).",
        argument_default=argparse.SUPPRESS,
        # No guessing: `--env FOO=1` is not `--env-file`, `--keep` is nothing.
        allow_abbrev=False,
    )
    parser.add_argument(
        "app", nargs="?", help="the app as MODULE:ATTRIBUTE (e.g. mysite.wsgi:application)"
    )
    parser.add_argument("--version", action="version", version=cfg.version_line())
    aliases = {name: alias for alias, name in cfg.ALIASES.items()}
    for name, (parse, help_text) in OPTIONS.items():
        flags = ["--" + name.replace("_", "-")]
        if name in cfg.SHORT_FLAGS:
            flags.insert(0, cfg.SHORT_FLAGS[name])
        if name in aliases:
            flags.append("--" + aliases[name].replace("_", "-"))
        kwargs: dict[str, Any] = {"dest": name, "help": help_text}
        if name in cfg.FLAGS:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = _metavar(name, parse)
            if name in cfg.LISTS:
                kwargs["action"] = "append"
            choices = getattr(parse, "choices", None)
            if choices:
                kwargs["choices"] = choices
                kwargs["type"] = str.lower  # --log-level INFO is info
                kwargs.pop("metavar")
        parser.add_argument(*flags, **kwargs)
    return parser


def arguments(argv: list[str] | None = None) -> dict[str, Any]:
    """The options given on the command line (argparse exits on bad usage)."""
    parser = _parser()
    args = vars(parser.parse_args(argv))
    args["_parser"] = parser
    return args


def resolve(args: dict[str, Any], environ: Mapping[str, str] | None = None) -> cfg.Config:
    """Command-line options over the environment (and --env-file); ConfigError
    on bad values. The supervisor calls it again on SIGHUP."""
    values = {k: v for k, v in args.items() if not k.startswith("_")}
    config = cfg.load(values, environ)
    if not config.app:
        raise ConfigError("the app is required, as MODULE:ATTRIBUTE (or set ONELOOP_APP)")
    return config


def parse(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> cfg.Config:
    args = arguments(argv)
    try:
        return resolve(args, environ)
    except ConfigError as exc:
        args["_parser"].error(str(exc))
        raise  # unreachable: parser.error exits


def main(argv: list[str] | None = None) -> int:
    try:  # before anything imports the C core, which needs these
        selfcheck.check_interpreter()
    except selfcheck.SelfCheckError as exc:
        print(f"oneloop: error: {exc}", file=sys.stderr)
        return 1
    args = arguments(argv)
    try:
        config = resolve(args)
    except ConfigError as exc:
        args["_parser"].error(str(exc))
    from .worker import run_config

    # SIGHUP reads the configuration again: relative --config and --env-file
    # paths, and ./pyproject.toml, from where oneloop started, not --chdir.
    started_in = os.getcwd()

    def reread(environ: dict[str, str]) -> cfg.Config:
        now_in = os.getcwd()
        os.chdir(started_in)
        try:
            return resolve(args, environ)
        finally:
            os.chdir(now_in)

    try:
        return run_config(config, reread)
    except AppLoadError as exc:
        if exc.details:
            print(exc.details, file=sys.stderr, end="")
        print(f"oneloop: error: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, OSError) as exc:
        print(f"oneloop: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
