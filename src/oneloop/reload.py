"""--reload: which watched files changed, for the supervisor to reload.

Linux's inotify is used through ctypes: its file descriptor joins the
supervisor's select(), so watching needs neither a thread (the supervisor
forks, and must have none) nor a dependency. Where inotify is unavailable,
or its watch limit is reached, the tree is scanned for changed modification
times instead, twice a second.
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import os
import struct
import time
from collections.abc import Iterator

from .config import RELOAD_EXCLUDE, RELOAD_INCLUDE, Config
from .logs import error_log

_IN_MODIFY = 0x002
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_FROM = 0x040
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_IN_ONLYDIR = 0x01000000
_IN_ISDIR = 0x40000000
_MASK = (
    _IN_MODIFY
    | _IN_CLOSE_WRITE
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_ONLYDIR
)
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, length of the name

# Never worth watching, whatever the patterns say.
_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages"}
POLL_INTERVAL = 0.5


class Filter:
    """Which files matter: `*.py` and names matching --reload-include, but
    not names matching the default excludes (unless --reload-include names
    them: `.env`) nor, in any case, --reload-exclude. Directories matching
    an exclude are not entered."""

    def __init__(self, include: list[str], exclude: list[str]) -> None:
        self.include = include  # the user's
        self.exclude = exclude

    @classmethod
    def for_config(cls, config: Config) -> Filter:
        return cls(config.reload_include, config.reload_exclude)

    def wants_dir(self, path: str) -> bool:
        name = os.path.basename(path)
        if name in _SKIP_DIRS or os.path.exists(os.path.join(path, "pyvenv.cfg")):
            return False  # a virtualenv: thousands of files nobody edits
        return not self._excluded(name)

    def wants_file(self, path: str) -> bool:
        name = os.path.basename(path)
        if self._excluded(name):
            return False
        return _matches(name, self.include) or _matches(name, RELOAD_INCLUDE)

    def _excluded(self, name: str) -> bool:
        if _matches(name, self.exclude):
            return True
        return _matches(name, RELOAD_EXCLUDE) and not _matches(name, self.include)

    def walk(self, root: str) -> Iterator[tuple[str, list[str]]]:
        """(directory, file names) under root, pruned by the patterns."""
        for directory, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if self.wants_dir(os.path.join(directory, d))]
            yield directory, files


def _matches(name: str, patterns: list[str] | tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


class Watcher:
    """Changed files under some directories, by inotify or by polling."""

    def __init__(self, roots: list[str], filter: Filter) -> None:
        self.roots = [os.path.abspath(r) for r in roots]
        self.filter = filter
        self._fd: int | None = None
        self._dirs: dict[int, str] = {}  # watch descriptor -> directory
        self._snapshot: dict[str, tuple[int, int]] = {}
        self._next_scan = 0.0
        try:
            self._start_inotify()
        except OSError as exc:
            self._stop_inotify()
            error_log.warning("--reload: inotify unavailable (%s); polling instead", exc)
            self._snapshot = self._scan()
            self._next_scan = time.monotonic() + POLL_INTERVAL

    @classmethod
    def for_config(cls, config: Config) -> Watcher:
        roots = config.reload_dir or [config.app_dir]
        missing = [r for r in roots if not os.path.isdir(r)]
        if missing:
            error_log.warning("--reload-dir %s: not a directory", ", ".join(missing))
        watcher = cls([r for r in roots if os.path.isdir(r)], Filter.for_config(config))
        error_log.warning(
            "Reloading on changes under %s (development only)", ", ".join(watcher.roots)
        )
        return watcher

    def fileno(self) -> int | None:
        """A descriptor select() can wait on, or None when polling."""
        return self._fd

    def changes(self) -> list[str]:
        """Files changed since the last call (never blocks)."""
        if self._fd is not None:
            return self._read_events()
        now = time.monotonic()
        if now < self._next_scan:
            return []
        self._next_scan = now + POLL_INTERVAL
        before, self._snapshot = self._snapshot, self._scan()
        keys = before.keys() | self._snapshot.keys()
        return sorted(k for k in keys if before.get(k) != self._snapshot.get(k))

    def close(self) -> None:
        self._stop_inotify()

    # -- polling ----------------------------------------------------------

    def _scan(self) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        for root in self.roots:
            for directory, files in self.filter.walk(root):
                for name in files:
                    path = os.path.join(directory, name)
                    if not self.filter.wants_file(path):
                        continue
                    try:
                        st = os.stat(path)
                    except OSError:
                        continue
                    found[path] = (st.st_mtime_ns, st.st_size)
        return found

    # -- inotify ----------------------------------------------------------

    def _start_inotify(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._add_watch = libc.inotify_add_watch
        self._add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise _errno_error("inotify_init1")
        self._fd = fd
        for root in self.roots:
            for directory, _ in self.filter.walk(root):
                self._watch(directory)

    def _watch(self, directory: str) -> None:
        assert self._fd is not None
        wd = self._add_watch(self._fd, os.fsencode(directory), _MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                return  # gone already, or not ours to read
            raise _errno_error(f"watching {directory}")
        self._dirs[wd] = directory

    def _stop_inotify(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._dirs.clear()

    def _read_events(self) -> list[str]:
        assert self._fd is not None
        changed: list[str] = []
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return changed
            changed += self._parse(data)

    def _parse(self, data: bytes) -> list[str]:
        changed: list[str] = []
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, offset)
            raw = data[offset + _EVENT.size : offset + _EVENT.size + length]
            offset += _EVENT.size + length
            name = os.fsdecode(raw.rstrip(b"\0"))
            if mask & _IN_Q_OVERFLOW:
                changed.append("(many files)")
            elif mask & _IN_IGNORED:
                self._dirs.pop(wd, None)
            elif wd in self._dirs and name:
                changed += self._event(os.path.join(self._dirs[wd], name), mask)
        return changed

    def _event(self, path: str, mask: int) -> list[str]:
        if not mask & _IN_ISDIR:
            return [path] if self.filter.wants_file(path) else []
        if not mask & (_IN_CREATE | _IN_MOVED_TO) or not self.filter.wants_dir(path):
            return []
        # A new directory: watch it, and count the files already in it
        # (they may have arrived before the watch did).
        found: list[str] = []
        for directory, files in self.filter.walk(path):
            try:
                self._watch(directory)
            except OSError as exc:
                error_log.warning("--reload: %s", exc)
            found += [os.path.join(directory, f) for f in files]
        return [f for f in found if self.filter.wants_file(f)]


def _errno_error(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")
