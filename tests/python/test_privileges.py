"""--user, --group, --initgroups, --chdir and --umask, with real processes:
oneloop started as root binds a privileged port, and every worker gives
root up before it imports the app. What each process became is read from
/proc/<pid>/status and /proc/<pid>/cwd, and from the app itself (which
also notes whom it was imported as).

Switching users needs root: these tests run as root (as CI does) and make
a system user and group of their own. A worker running as that user must
be able to read the Python it runs on and the app: the app is copied to a
0755 directory, and when the interpreter or the virtualenv sits under a
directory others cannot enter (pyenv under /root, mode 0700), its
ancestors get o+x for the duration of the tests and their modes back after.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="switching users needs root (CI runs these as root)"
)

USER = "oneloop-test"
GROUP = "oneloop-test-extra"  # a group besides the user's own

APP_SOURCE = """
import json, os

# Whom the app was imported as: the drop must come first.
IMPORTED_AS = [os.getuid(), os.geteuid(), os.getgid(), os.getegid()]


def _me():
    return json.dumps({
        "pid": os.getpid(),
        "imported_as": IMPORTED_AS,
        "uid": [os.getuid(), os.geteuid()],
        "gid": [os.getgid(), os.getegid()],
        "groups": sorted(os.getgroups()),
        "cwd": os.getcwd(),
    }).encode()


def wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [_me()]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    body = _me()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
"""


# -- the test user, and a Python it can run -------------------------------------------


@pytest.fixture(scope="module")
def account() -> Iterator[tuple[pwd.struct_passwd, grp.struct_group]]:
    """A system user with a group of its own, and a second group it is a
    member of (for --initgroups); removed afterwards if made here."""
    made: list[list[str]] = []
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        subprocess.run(["groupadd", "--system", GROUP], check=True)
        made.append(["groupdel", GROUP])
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--groups",
                GROUP,
                USER,
            ],
            check=True,
        )
        made.append(["userdel", USER])
    subprocess.run(["usermod", "--append", "--groups", GROUP, USER], check=True)
    try:
        yield pwd.getpwnam(USER), grp.getgrnam(GROUP)
    finally:
        for command in reversed(made):
            subprocess.run(command, check=False)


@pytest.fixture(scope="module", autouse=True)
def python_reachable(account) -> Iterator[None]:
    """Every directory on this Python's path (the standard library, the
    virtualenv, oneloop itself) readable by others, and its ancestors
    searchable; modes put back afterwards."""
    changed: dict[Path, int] = {}

    def grant(path: Path, bits: int) -> None:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & bits != bits:
            changed.setdefault(path, mode)
            os.chmod(path, mode | bits)

    import oneloop

    places = {Path(p).resolve() for p in sys.path if p and Path(p).is_dir()}
    places.add(Path(oneloop.__file__).resolve().parent)
    places.add(Path(sys.executable).resolve().parent)
    for place in places:
        for ancestor in place.parents:
            grant(ancestor, stat.S_IXOTH)
        grant(place, stat.S_IROTH | stat.S_IXOTH)
    try:
        yield
    finally:
        for path, mode in changed.items():
            os.chmod(path, mode)


@pytest.fixture
def app_dir() -> Iterator[Path]:
    """The app, in a directory of its own that any user may read (pytest's
    tmp_path is under a 0700 directory)."""
    directory = Path(tempfile.mkdtemp(prefix="oneloop-priv-", dir="/tmp"))
    os.chmod(directory, 0o755)
    (directory / "privapp.py").write_text(APP_SOURCE)
    os.chmod(directory / "privapp.py", 0o644)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def privileged_port() -> int:
    """A free port below 1024 on 127.0.0.1 (bound and released here, as root)."""
    for port in random.sample(range(600, 1024), 424):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 1024")


# -- running oneloop -------------------------------------------------------------------


class Running:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log_path = proc, port, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[int]:
        pid = self.proc.pid
        with contextlib.suppress(FileNotFoundError):
            return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        return []

    def get(self) -> dict:
        return httpx.get(self.url + "/", timeout=5).json()


@pytest.fixture
def oneloop(tmp_path: Path) -> Iterator:
    started: list[Running] = []

    def start(*args: str, port: int | None = None, cwd: str | Path = "/", ready: int = 1):
        port = privileged_port() if port is None else port
        log = tmp_path / f"oneloop{len(started)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "oneloop", "-b", f"127.0.0.1:{port}", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                env={k: v for k, v in os.environ.items() if not k.startswith("ONELOOP_")},
                start_new_session=True,
            )
        running = Running(proc, port, log)
        started.append(running)
        deadline = time.monotonic() + 15
        while len(re.findall(r"Serving \S+ app on", running.log())) < ready:
            assert proc.poll() is None, running.log()
            assert time.monotonic() < deadline, running.log()
            time.sleep(0.02)
        return running

    yield start
    for running in started:
        if running.proc.poll() is None:
            running.proc.send_signal(signal.SIGTERM)
            try:
                running.proc.wait(10)
            except subprocess.TimeoutExpired:
                running.proc.kill()
                running.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.proc.pid, signal.SIGKILL)


def status(pid: int) -> dict[str, list[int]]:
    """Uid, Gid (real, effective, saved, filesystem), Groups and Umask of a process."""
    text = Path(f"/proc/{pid}/status").read_text()
    found = {}
    for key in ("Uid", "Gid", "Groups"):
        found[key] = [int(x) for x in re.search(rf"^{key}:(.*)$", text, re.M)[1].split()]
    found["Umask"] = [int(re.search(r"^Umask:\s+(\d+)", text, re.M)[1], 8)]
    return found


def as_user(uid: int | None) -> dict:
    """subprocess arguments to run as `uid` with its own group only (not
    root's group, whose bits would then apply to root's files)."""
    if uid is None:
        return {}
    return {"user": uid, "group": pwd.getpwuid(uid).pw_gid, "extra_groups": []}


def run_cli(*args: str, user: int | None = None, cwd: str = "/") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "oneloop", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        **as_user(user),
        stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("ONELOOP_")},
    )


def one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("oneloop: error:")]
    assert len(errors) == 1, output
    for fragment in fragments:
        assert fragment in errors[0], output
    return errors[0]


# -- the drop ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "app"),
    [("-w2", "privapp:wsgi"), ("-w2", "privapp:asgi"), ("-w0", "privapp:asgi")],
    ids=["wsgi-supervised", "asgi-supervised", "asgi-lone"],
)
def test_workers_bind_a_privileged_port_as_root_then_drop_before_importing(
    oneloop, account, app_dir, mode, app
):
    user, extra = account
    workers = int(mode[2:])
    args = ["--user", USER, "--group", GROUP, "--chdir", str(app_dir), "--umask", "027", mode, app]
    server = oneloop(*args, ready=max(workers, 1))
    assert server.port < 1024
    seen = {}
    deadline = time.monotonic() + 10
    while len(seen) < max(workers, 1):  # a request to each worker
        answer = server.get()
        seen[answer["pid"]] = answer
        assert time.monotonic() < deadline, seen
    for pid, answer in seen.items():
        # The app was imported (and serves) as the user, in the group only.
        ids = [user.pw_uid, user.pw_uid, extra.gr_gid, extra.gr_gid]
        assert answer["imported_as"] == ids, answer
        assert answer["uid"] == [user.pw_uid] * 2 and answer["gid"] == [extra.gr_gid] * 2
        assert answer["groups"] == [extra.gr_gid], answer
        assert answer["cwd"] == str(app_dir)
        # ... as the kernel sees it: real, effective, saved and filesystem ids.
        st = status(pid)
        assert st["Uid"] == [user.pw_uid] * 4, st
        assert st["Gid"] == [extra.gr_gid] * 4, st
        assert st["Groups"] == [extra.gr_gid], st
        assert st["Umask"] == [0o027], st
        assert os.readlink(f"/proc/{pid}/cwd") == str(app_dir)
    if workers:
        # The supervisor stays root (it never imports the app), in --chdir too.
        assert set(seen) <= set(server.children())
        st = status(server.proc.pid)
        assert st["Uid"] == [0] * 4 and st["Gid"] == [0] * 4, st
        assert os.readlink(f"/proc/{server.proc.pid}/cwd") == str(app_dir)
    else:
        assert set(seen) == {server.proc.pid}
    # The port was privileged: the user could not have bound it itself.
    start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    if server.port < start:
        probe = run_cli("--version", user=user.pw_uid)  # the user runs this Python at all
        assert probe.returncode == 0, probe.stderr
        bind = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import socket; socket.socket().bind(('127.0.0.2', {server.port}))",
            ],
            capture_output=True,
            text=True,
            **as_user(user.pw_uid),
        )
        assert "PermissionError" in bind.stderr, bind
    assert server.proc.poll() is None
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(10) == 0, server.log()


@pytest.mark.parametrize("numeric", [False, True], ids=["names", "ids"])
def test_group_defaults_to_the_users_primary_group(oneloop, account, app_dir, numeric):
    user, _ = account
    who = str(user.pw_uid) if numeric else USER
    server = oneloop("--user", who, "--app-dir", str(app_dir), "-w1", "privapp:wsgi")
    answer = server.get()
    assert answer["uid"] == [user.pw_uid] * 2
    assert answer["gid"] == [user.pw_gid] * 2 and answer["groups"] == [user.pw_gid], answer
    assert status(answer["pid"])["Gid"] == [user.pw_gid] * 4


def test_initgroups_gives_the_users_supplementary_groups(oneloop, account, app_dir):
    user, extra = account
    server = oneloop("--user", USER, "--initgroups", "--app-dir", str(app_dir), "privapp:wsgi")
    answer = server.get()
    assert answer["groups"] == sorted({user.pw_gid, extra.gr_gid}), answer
    assert sorted(status(answer["pid"])["Groups"]) == sorted({user.pw_gid, extra.gr_gid})


def test_config_file_names_as_gunicorns(oneloop, account, app_dir, tmp_path):
    """user, group, chdir and umask in a gunicorn.conf.py, as gunicorn spells them."""
    user, extra = account
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(
        f"workers = 2\nuser = {USER!r}\ngroup = {extra.gr_gid}\nchdir = {str(app_dir)!r}\n"
        "umask = 0o007\n"
    )
    server = oneloop("-c", str(conf), "privapp:asgi", ready=2)
    answer = server.get()
    assert answer["imported_as"] == [user.pw_uid] * 2 + [extra.gr_gid] * 2
    assert answer["cwd"] == str(app_dir)
    assert status(answer["pid"])["Umask"] == [0o007]


def test_pyproject_tool_oneloop_table(oneloop, account, app_dir, tmp_path):
    user, _ = account
    project = Path(tempfile.mkdtemp(prefix="oneloop-proj-", dir="/tmp"))
    try:
        (project / "pyproject.toml").write_text(
            f'[tool.oneloop]\nuser = "{USER}"\nchdir = "{app_dir}"\nworkers = 1\n'
        )
        server = oneloop("privapp:wsgi", cwd=project)
        answer = server.get()
        assert answer["uid"] == [user.pw_uid] * 2 and answer["cwd"] == str(app_dir)
    finally:
        shutil.rmtree(project, ignore_errors=True)


def test_unix_socket_and_log_files_belong_to_the_workers(oneloop, account, app_dir, tmp_path):
    """As gunicorn: the UNIX socket is chowned to --user/--group (so
    `--group www-data --umask 007` lets nginx in), and so are the log files,
    which the workers reopen after a rotation (SIGUSR1)."""
    user, extra = account
    logs = Path(tempfile.mkdtemp(prefix="oneloop-logs-", dir="/tmp"))
    os.chmod(logs, 0o755)  # as /var/log/app: root's, which others may enter
    try:
        sock = logs / "app.sock"
        error_log, access_log = logs / "error.log", logs / "access.log"
        server = oneloop(
            "-b", f"unix:{sock}", "--user", USER, "--group", GROUP, "--umask", "007",
            "--error-logfile", str(error_log), "--access-logfile", str(access_log),
            "--app-dir", str(app_dir), "privapp:wsgi",
            ready=0,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while "Serving" not in (error_log.read_text() if error_log.exists() else ""):
            assert time.monotonic() < deadline and server.proc.poll() is None, server.log()
            time.sleep(0.02)
        st = os.stat(sock)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
            user.pw_uid,
            extra.gr_gid,
            0o660,
        )
        for path in (error_log, access_log):
            assert (os.stat(path).st_uid, os.stat(path).st_gid) == (user.pw_uid, extra.gr_gid)
        # logrotate: move the files away, then USR1; root makes the new ones
        # and hands them over, then the workers reopen theirs.
        for path in (error_log, access_log):
            path.rename(f"{path}.1")
        os.kill(server.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not (error_log.exists() and access_log.exists()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.5)  # the workers reopen theirs
        for path in (error_log, access_log):
            assert (os.stat(path).st_uid, os.stat(path).st_gid) == (user.pw_uid, extra.gr_gid)
        transport = httpx.HTTPTransport(uds=str(sock))
        with httpx.Client(transport=transport) as client:
            assert client.get("http://x/").json()["uid"] == [user.pw_uid] * 2
        deadline = time.monotonic() + 5
        while '"GET / HTTP/1.1" 200' not in access_log.read_text():
            everything = "".join(p.read_text() for p in logs.glob("*.log*")) + server.log()
            assert time.monotonic() < deadline, everything
            time.sleep(0.02)
        everything = "".join(p.read_text() for p in logs.glob("*.log*")) + server.log()
        assert "cannot reopen" not in everything, everything
    finally:
        shutil.rmtree(logs, ignore_errors=True)


# -- mistakes, as one-line errors -------------------------------------------------------


def test_unknown_user_and_group_are_named(account, app_dir):
    result = run_cli("--user", "no-such-user-x", "--app-dir", str(app_dir), "privapp:wsgi")
    one_error_line(result, "--user no-such-user-x: no such user")
    result = run_cli("--group", "no-such-group-x", "--app-dir", str(app_dir), "privapp:wsgi")
    one_error_line(result, "--group no-such-group-x: no such group")
    result = run_cli("--user", "4000000000", "--app-dir", str(app_dir), "privapp:wsgi")
    one_error_line(result, "--user 4000000000", "give --group too")


def test_chdir_to_a_missing_directory(app_dir):
    result = run_cli("--chdir", "/nonexistent/oneloop-dir", "privapp:wsgi")
    one_error_line(result, "--chdir /nonexistent/oneloop-dir: no such directory")


def test_switching_user_without_root_is_refused(account, app_dir):
    user, _ = account
    result = run_cli("--user", "root", "--app-dir", str(app_dir), "privapp:wsgi", user=user.pw_uid)
    one_error_line(result, "--user root: switching user or group needs root", f"uid {user.pw_uid}")


@pytest.mark.parametrize("workers", ["1", "0"])
def test_an_app_the_user_cannot_read_is_named(account, workers):
    """The usual deployment slip (the app, or a virtualenv, under /root):
    the worker says which directory the user cannot read, rather than
    failing an import far from the cause."""
    secret = Path(tempfile.mkdtemp(prefix="oneloop-secret-", dir="/tmp"))  # mode 0700
    try:
        (secret / "privapp.py").write_text(APP_SOURCE)
        port = str(privileged_port())
        result = run_cli(
            "-b", f"127.0.0.1:{port}", "--user", USER, "--chdir", str(secret), "-w", workers,
            "privapp:wsgi",
        )  # fmt: skip
        one_error_line(result, f"--user {USER}", f"cannot read the app directory, {secret}")
    finally:
        shutil.rmtree(secret, ignore_errors=True)


def test_workers_of_a_killed_supervisor_still_stop(oneloop, account, app_dir):
    """kill -9 of the supervisor ends workers running as another user too (a
    credential change clears the parent-death signal, so they ask for it
    again after the drop; their heartbeat's getppid() check backs it up)."""
    server = oneloop("--user", USER, "--app-dir", str(app_dir), "-w2", "privapp:wsgi", ready=2)
    workers = server.children()
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(5)
    deadline = time.monotonic() + 5
    for pid in workers:
        while Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
            assert time.monotonic() < deadline, pid
            time.sleep(0.02)


def _state(pid: int) -> str:
    with contextlib.suppress(FileNotFoundError):
        return re.search(r"^State:\s+(\S)", Path(f"/proc/{pid}/status").read_text(), re.M)[1]
    return "Z"
