"""--user, --group, --initgroups and --chdir, as gunicorn has them.

oneloop started as root binds its listeners (port 80, 443) as root, then
each worker gives root up before it imports the app: supplementary groups
(setgroups, or initgroups with --initgroups), then the group (setgid), then
the user (setuid) -- in that order, since each needs the privilege the next
one drops. The app's code, and everything it imports, never runs as root.

The supervisor stays root, as gunicorn's arbiter does. It never imports the
app, and it needs root for what it does after the start: on SIGHUP it reads
the configuration and the TLS key files again (a key is typically readable
by root only), on SIGUSR1 it reopens log files in root's directories, and at
exit it removes the pid file and the UNIX socket it made there. A lone
worker (`--workers 0`) binds, drops privileges, then imports the app; it
cannot reopen such files any more, which is why the supervisor is the
recommended way to use --user.

Names are resolved once, at start, so that a mistake (an unknown user, a
switch asked for without root) stops the start with a one-line error
before anything is bound.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
from dataclasses import dataclass

from .config import Config, ConfigError


@dataclass(frozen=True)
class Identity:
    """Whom the workers run as."""

    uid: int
    gid: int
    user: str | None  # the user's name, for initgroups (None: not in the password database)
    initgroups: bool

    def describe(self) -> str:
        return f"uid {self.uid}, gid {self.gid}"


def resolve(config: Config) -> Identity | None:
    """The identity --user/--group ask for, or None when neither is given;
    ConfigError naming the problem when it cannot be had."""
    if config.user is None and config.group is None:
        return None
    uid, user, primary = _user(config.user)
    if config.group is not None:
        gid = _group(config.group)
    elif primary is not None:
        gid = primary
    elif config.user is not None:
        raise ConfigError(
            f"--user {config.user}: no such user in the password database, so no primary "
            "group to take: give --group too"
        )
    else:
        gid = os.getegid()
    if os.geteuid() != 0 and (uid != os.geteuid() or gid != os.getegid()):
        asked = []
        if config.user is not None:
            asked.append(f"--user {config.user}")
        if config.group is not None:
            asked.append(f"--group {config.group}")
        raise ConfigError(
            f"{' '.join(asked)}: switching user or group needs root "
            f"(oneloop runs as uid {os.geteuid()}, gid {os.getegid()})"
        )
    if config.initgroups and user is None:
        raise ConfigError("--initgroups needs --user naming a user of the password database")
    return Identity(uid, gid, user, config.initgroups)


def _user(spec: str | None) -> tuple[int, str | None, int | None]:
    """(uid, name, primary gid) of a user name or numeric id (None: this process's)."""
    if spec is None:
        uid = os.geteuid()
        with contextlib.suppress(KeyError):
            entry = pwd.getpwuid(uid)
            return uid, entry.pw_name, None
        return uid, None, None
    text = str(spec).strip()
    if text.isdigit():
        uid = int(text)
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            return uid, None, None
        return uid, entry.pw_name, entry.pw_gid
    try:
        entry = pwd.getpwnam(text)
    except KeyError:
        raise ConfigError(f"--user {text}: no such user") from None
    return entry.pw_uid, entry.pw_name, entry.pw_gid


def _group(spec: str) -> int:
    text = str(spec).strip()
    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise ConfigError(f"--group {text}: no such group") from None


def drop(identity: Identity | None, app_dir: str = ".") -> None:
    """Become `identity` for good: groups, then gid, then uid. Raises
    OSError if the system refuses, so that a worker never serves as root
    when it was told not to; ConfigError when the new user cannot read the
    Python installation or `app_dir`."""
    if identity is None:
        return
    if os.geteuid() == 0:
        if identity.initgroups and identity.user is not None:
            os.initgroups(identity.user, identity.gid)
        else:
            os.setgroups([identity.gid])
    if os.getegid() != identity.gid or os.getgid() != identity.gid:
        os.setgid(identity.gid)
    if os.geteuid() != identity.uid or os.getuid() != identity.uid:
        os.setuid(identity.uid)
    if identity.uid != 0 and _can_regain_root():
        raise OSError(f"still able to become root after switching to {identity.describe()}")
    _check_reachable(identity, app_dir)


def _check_reachable(identity: Identity, app_dir: str) -> None:
    """A Python or an app the new user cannot read fails at its first
    import, with a ModuleNotFoundError far from the cause: say it here.
    (pyenv and virtualenvs under /root, mode 0700, are the usual case.)"""
    who = f"--user {identity.user}" if identity.user else f"uid {identity.uid}"
    places = [("the Python standard library", os.path.dirname(os.__file__))]
    places.append(("the app directory", os.path.abspath(app_dir)))
    for what, path in places:
        if not os.access(path, os.R_OK | os.X_OK):
            raise ConfigError(
                f"{who} ({identity.describe()}) cannot read {what}, {path}: make it and every "
                "directory above it readable and searchable by that user"
            )


def _can_regain_root() -> bool:
    try:
        os.setuid(0)
    except PermissionError:
        return False
    return True


def give(identity: Identity | None, paths: list[str | None]) -> None:
    """Hand files the workers reopen or own to the workers' user and group
    (log files, reopened on SIGUSR1; the UNIX socket), as gunicorn does."""
    if identity is None or os.geteuid() != 0:
        return
    for path in paths:
        if path and path != "-":
            with contextlib.suppress(OSError):  # not there (yet): nothing to hand over
                os.chown(path, identity.uid, identity.gid)


def change_dir(path: str | None) -> None:
    """--chdir: before the app is imported (and before relative paths are used)."""
    if not path:
        return
    try:
        os.chdir(path)
    except FileNotFoundError:
        raise ConfigError(f"--chdir {path}: no such directory") from None
    except NotADirectoryError:
        raise ConfigError(f"--chdir {path}: not a directory") from None
    except OSError as exc:
        raise ConfigError(f"--chdir {path}: {exc.strerror}") from None
