"""Process chores shared by the supervisor and a lone worker: the pid file,
the --env-file variables, dying with the parent, and the names `ps` shows."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Iterator

from .config import ConfigError

_PR_SET_PDEATHSIG = 1


@contextlib.contextmanager
def pidfile(path: str | None) -> Iterator[None]:
    """Write this process's id to `path` for the duration (none: no file).
    The file is written whole under a temporary name, then renamed, so a
    reader never sees it half written; it is removed only if still ours."""
    if not path:
        yield
        return
    pid = str(os.getpid())
    temporary = f"{path}.{pid}.tmp"
    try:
        with open(temporary, "w", encoding="ascii") as f:
            f.write(pid + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        raise ConfigError(f"--pid {path}: {exc.strerror}") from None
    try:
        yield
    finally:
        _remove_if_ours(path, pid)


def _remove_if_ours(path: str, pid: str) -> None:
    try:
        with open(path, encoding="ascii") as f:
            if f.read().strip() == pid:
                os.unlink(path)
    except OSError:
        pass


# The --env-file variables this process has put into its environment.
_applied: set[str] = set()


def apply_env_file(variables: dict[str, str]) -> None:
    """Put --env-file's variables into os.environ (where workers and the app
    read them), dropping those an earlier reading added and this one lacks."""
    for name in _applied - variables.keys():
        os.environ.pop(name, None)
    os.environ.update(variables)
    _applied.clear()
    _applied.update(variables)


def die_with_parent(parent: int) -> bool:
    """Ask Linux to send SIGTERM when the parent dies, so a worker whose
    supervisor was killed does not serve on unsupervised. False if the
    parent is already gone. (The worker's heartbeat also checks getppid(),
    for systems without prctl.)"""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    return os.getppid() == parent


def rss_mib(pid: int) -> int | None:
    """Resident memory of a process in MiB (from /proc), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            resident = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident * os.sysconf("SC_PAGE_SIZE") // (1 << 20)


_PR_SET_NAME = 15


def set_name(name: str) -> None:
    """The process's name as ps -o comm, top, pstree and pkill show it
    (Linux keeps 15 bytes): the supervisor and each worker told apart
    without a dependency. Called after set_title, which sets it too."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def set_title(title: str) -> None:
    """The command line `ps`, `ps aux` and `top -c` show, as gunicorn sets
    it (`oneloop: worker 2 [mysite.wsgi:application]`), with the
    setproctitle package. Without it the command line stays as it was and
    set_name's short name is all there is."""
    try:
        import setproctitle
    except ImportError:
        return
    with contextlib.suppress(Exception):  # cosmetic: never a reason not to serve
        setproctitle.setproctitle(title)
