"""The `oneloop` command: parse options, then run the server.

Errors in the command line or in loading the app print one line naming the
problem and exit non-zero; no traceback wall.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import config as cfg
from .config import OPTIONS, ConfigError
from .loading import AppLoadError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oneloop",
        description="Serve a WSGI or ASGI app, with one event loop per worker for all its "
        "async code. Every option can also be set as an environment variable "
        "ONELOOP_<OPTION> (e.g. ONELOOP_THREADS=32).",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "app", nargs="?", help="the app as MODULE:ATTRIBUTE (e.g. mysite.wsgi:application)"
    )
    parser.add_argument("--version", action="version", version=cfg.version_line())
    for name, (parse, help_text) in OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        if name in cfg.FLAGS:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, help=help_text
            )
        elif name == "bind":
            parser.add_argument(
                "-b", flag, dest=name, action="append", metavar="ADDRESS", help=help_text
            )
        else:
            kwargs: dict[str, Any] = {
                "dest": name,
                "help": help_text,
                "metavar": name.split("_")[-1].upper(),
            }
            choices = getattr(parse, "choices", None)
            if choices:
                kwargs["choices"] = choices
                kwargs.pop("metavar")
            parser.add_argument(flag, **kwargs)
    return parser


def parse(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> cfg.Config:
    parser = _parser()
    args = vars(parser.parse_args(argv))
    values = cfg.from_environ(environ)
    values.update(args)
    if not values.get("app"):
        parser.error("the app is required, as MODULE:ATTRIBUTE (or set ONELOOP_APP)")
    try:
        return cfg.build(values)
    except ConfigError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits


def main(argv: list[str] | None = None) -> int:
    config = parse(argv)
    from .worker import run_config

    try:
        return run_config(config)
    except (ConfigError, AppLoadError) as exc:
        print(f"oneloop: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"oneloop: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
