"""The private asyncio names oneloop reads (oneloop.selfcheck): present on
this Python, and when one is not, start-up refuses in one clear line (the
core's) or falls back to the public path (the gate's, the policy's).

Run on every supported Python by scripts/test-py-versions.sh, so the first
test is the record of which versions each path was tested on.
"""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
from conftest import APPS

from oneloop import selfcheck
from oneloop.loops import GatedEventLoop

sys.path.insert(0, str(APPS))

from one_loop.load import assert_all, hammer

VERSION = f"CPython {platform.python_version()}"


def test_every_private_oneloop_reads_is_here_on_this_python():
    selfcheck.check_interpreter()
    loop = GatedEventLoop()
    try:
        assert selfcheck.gate_missing(loop) is None
        assert selfcheck.gate_problem(loop) is None
    finally:
        loop.close()
    assert selfcheck.policy_problem() is None


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ
    )


@pytest.mark.parametrize("module,name", selfcheck.REQUIRED)
def test_a_missing_required_private_refuses_start_up_in_one_line(module, name):
    remove = f"import importlib; delattr(importlib.import_module({module!r}), {name!r})\n"
    expected = f"{module}.{name} is missing on {VERSION}"
    # The command line: one line, no traceback, exit status 1.
    cli = run_python(remove + "import sys; from oneloop.cli import main; sys.exit(main(['x:app']))")
    assert cli.returncode == 1, cli
    assert cli.stderr.startswith(f"oneloop: error: {expected}: "), cli.stderr
    assert cli.stderr.count("\n") == 1, cli.stderr
    # Library use (oneloop.run, the gunicorn worker) imports the core: the
    # same words, as a RuntimeError.
    lib = run_python(remove + "import oneloop._core")
    assert lib.returncode == 1
    assert f"RuntimeError: {expected}: " in lib.stderr, lib.stderr


@pytest.mark.parametrize("name", selfcheck.GATE)
def test_gate_check_finds_each_missing_attribute(name):
    loop = GatedEventLoop()
    try:

        class Renamed:  # the loop as a Python that renamed `name` would show it
            def __getattr__(self, attr):
                if attr == name:
                    raise AttributeError(attr)
                return getattr(loop, attr)

        assert selfcheck.gate_missing(Renamed()) == name
        problem = selfcheck.gate_problem(Renamed())
        assert problem is not None and name in problem and VERSION in problem
    finally:
        loop.close()


def test_policy_check_sees_a_policy_without_its_thread_local(monkeypatch):
    # 3.14 added the private getter (the public one warns there); older
    # versions have only the public one.
    monkeypatch.setattr(asyncio.events, "_get_event_loop_policy", object, raising=False)
    monkeypatch.setattr(asyncio, "get_event_loop_policy", object)
    problem = selfcheck.policy_problem()
    assert problem is not None and "_local" in problem and VERSION in problem


def test_without_the_gate_attributes_the_worker_serves_ungated(serve, tmp_path: Path):
    """A worker on a Python whose asyncio loop lacks what the gate needs
    (simulated: the check asks for one more attribute than any loop has)
    says so once and serves every async call of WSGI code on the loop's own
    thread -- the path uvloop always takes -- instead of failing."""
    (tmp_path / "sitecustomize.py").write_text(
        "import oneloop.selfcheck as s\ns.GATE = s.GATE + ('_renamed_by_a_future_python',)\n"
    )
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    server = serve(
        "one_loop.gate_app:app", "--no-access-log", "--loop", "asyncio", env={"PYTHONPATH": path}
    )
    results = hammer(lambda c, i: c.get(server.url + "/first-step"), n=64)
    assert_all(results)
    places = Counter(
        "request thread" if step["thread"] == r.json["wsgi_thread"] else step["thread"]
        for r in results
        for step in (r.json["hook"], r.json["view"])
    )
    assert places == {"MainThread": 2 * len(results)}, places
    assert server.stop() == 0
    log = server.log()
    warning = (
        f"asyncio loop attribute _renamed_by_a_future_python is missing on {VERSION}: "
        "the loop is not gated"
    )
    assert log.count(warning) == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def broken_uvloop(tmp_path: Path) -> dict:
    """An environment where `import uvloop` fails the way uvloop releases
    that predate a Python do (0.21 on 3.14: asyncio.AbstractChildWatcher is
    gone), rather than with ImportError."""
    package = tmp_path / "uvloop"
    package.mkdir()
    (package / "__init__.py").write_text(
        "raise AttributeError(\"module 'asyncio' has no attribute 'AbstractChildWatcher'\")\n"
    )
    return {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    }


def test_loop_auto_falls_back_when_uvloop_cannot_be_imported(serve, tmp_path: Path):
    server = serve("asgi_apps:hello", "--loop", "auto", env=broken_uvloop(tmp_path))
    with httpx.Client(timeout=10) as c:
        assert c.get(server.url + "/").status_code == 200
    assert server.stop() == 0
    log = server.log()
    assert log.count("uvloop cannot be imported") == 1, log[-3000:]
    assert "AbstractChildWatcher" in log and "Traceback" not in log, log[-3000:]


def test_loop_uvloop_refuses_in_one_line_when_uvloop_cannot_be_imported(tmp_path: Path):
    env = {**os.environ, **broken_uvloop(tmp_path)}
    cmd = [sys.executable, "-m", "oneloop", "--app-dir", str(APPS), "--loop", "uvloop"]
    cmd += ["--workers", "0", "--port", "0", "asgi_apps:hello"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1, proc
    error = [line for line in proc.stderr.splitlines() if "oneloop: error:" in line]
    assert error == [
        f"oneloop: error: --loop uvloop: uvloop cannot be imported on {VERSION}: "
        "AttributeError(\"module 'asyncio' has no attribute 'AbstractChildWatcher'\")"
    ], proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
