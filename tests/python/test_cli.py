"""The `oneloop` command line: errors, options from the environment, app
loading and interface detection, proxy headers, the access log and the
oneloop.run() Python API -- all against the real server process.

The helpers at the top (run_cli, the `launch` fixture, free_port) start
`python -m oneloop` directly, for the cases the `serve` fixture cannot
express (no app argument, binding options, option errors); test_binding,
test_tls and test_frameworks use them too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import APPS, request, stop_process

ONELOOP = [sys.executable, "-m", "oneloop"]


# -- helpers -------------------------------------------------------------------


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ without anything that would configure oneloop, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ONELOOP_", "LISTEN_")) and k != "FORWARDED_ALLOW_IPS"
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None, timeout=30
) -> subprocess.CompletedProcess:
    """Run `python -m oneloop ARGS` to completion (for errors, --help, --version)."""
    return subprocess.run(
        [*ONELOOP, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=clean_env(env),
        cwd=cwd,
        start_new_session=True,
    )


def assert_cli_error(result: subprocess.CompletedProcess, *fragments: str, usage: bool = False):
    """Non-zero exit, no traceback, exactly one 'oneloop: error: ...' line naming
    the problem; only argparse's usage may come before it."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("oneloop: error:")]
    assert len(errors) == 1, output
    assert lines[-1] == errors[0], output
    if usage:
        assert lines[0].startswith("usage: oneloop"), output
        assert all(line.startswith(("usage:", " ")) for line in lines[:-1]), output
    else:
        assert lines == errors, output
    for fragment in fragments:
        assert fragment in errors[0], output
    return errors[0]


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Launched:
    proc: subprocess.Popen
    err_path: Path
    out_path: Path

    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_for(self, text: str, count: int = 1, timeout: float = 15.0, stream="err") -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            content = self.err() if stream == "err" else self.out()
            if content.count(text) >= count:
                return content
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(
            f"{text!r} x{count} not seen (exit {self.proc.poll()});\n"
            f"stderr:\n{self.err()}\nstdout:\n{self.out()}"
        )

    def serving_urls(self) -> list[str]:
        return re.findall(r"Serving \S+ app on (\S+) \(pid", self.err())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        return stop_process(self.proc, sig, timeout)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator:
    """launch(*args, env=..., wait="Serving ", count=1): `python -m oneloop ARGS`
    running in the background, stopped at the end of the test."""
    started: list[Launched] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        wait: str | None = "Serving ",
        count: int = 1,
        pass_fds: tuple[int, ...] = (),
        command: list[str] | None = None,
    ) -> Launched:
        n = len(started)
        err_path, out_path = tmp_path / f"launch{n}.err", tmp_path / f"launch{n}.out"
        cmd = [*(command or ONELOOP), *args]
        with open(err_path, "wb") as err, open(out_path, "wb") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=clean_env(env),
                cwd=cwd,
                pass_fds=pass_fds,
                start_new_session=True,
            )
        launched = Launched(proc, err_path, out_path)
        started.append(launched)
        if wait:
            launched.wait_for(wait, count)
        return launched

    yield start
    for launched in started:
        with contextlib.suppress(Exception):
            launched.stop(signal.SIGKILL if launched.proc.poll() is None else signal.SIGTERM, 5)


def get_json(url: str, **kwargs) -> dict:
    r = httpx.get(url, timeout=10, **kwargs)
    assert r.status_code == 200, r.text
    return r.json()


def access_lines(text: str) -> list[str]:
    """Lines of the default access log format ('... "GET / HTTP/1.1" 200 ...')."""
    return [line for line in text.splitlines() if re.search(r'"[A-Z]+ \S+ HTTP/1\.[01]"', line)]


# -- 1. command-line errors ----------------------------------------------------


def test_missing_app_is_a_usage_error():
    result = run_cli("--port", "0")
    assert result.returncode == 2
    assert_cli_error(result, "app is required", usage=True)


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("nocolon", ["MODULE:ATTRIBUTE", "nocolon"]),
        (":app", ["MODULE:ATTRIBUTE"]),
        ("cli_apps:", ["MODULE:ATTRIBUTE"]),
        ("oneloop_no_such_module:app", ["oneloop_no_such_module"]),
        ("cli_apps:no_such_attribute", ["cli_apps", "no_such_attribute"]),
        ("cli_apps:holder.inner.nope", ["holder.inner.nope"]),
        ("cli_apps:not_callable", ["not callable", "int"]),
    ],
)
def test_app_loading_errors_are_one_line(spec, fragments):
    result = run_cli("--app-dir", str(APPS), "--port", "0", spec)
    assert result.returncode == 1
    assert_cli_error(result, *fragments)


def _factory_line() -> str:
    """Where cli_apps.failing_factory raises, as "cli_apps.py:N"."""
    lines = (APPS / "cli_apps.py").read_text().splitlines()
    n = next(
        i for i, text in enumerate(lines, 1) if 'raise RuntimeError("factory exploded")' in text
    )
    return f"cli_apps.py:{n}"


def assert_app_traceback(result: subprocess.CompletedProcess, line: str, *fragments: str):
    """Where the app's own code raised: its traceback, as Python prints it
    and with the app's frames only (none of oneloop's or importlib's), the
    last one at `line` ("file.py:N"); then the one error line."""
    err = result.stderr.rstrip("\n")
    assert result.returncode == 1, err
    head, _, last = err.rpartition("\n")
    assert last.startswith("oneloop: error:"), err
    assert all(f in last for f in fragments), err
    # (at --log-level debug, log lines about booting may come first)
    assert "Traceback (most recent call last):\n" in head, err
    head = head[head.index("Traceback (most recent call last):\n") :]
    frames = [f"{Path(f).name}:{n}" for f, n in re.findall(r'File "([^"]+)", line (\d+)', head)]
    assert frames and frames[-1] == line, err
    assert all(f.split(":")[0] == line.split(":")[0] for f in frames), err


@pytest.mark.parametrize("log_level", ["info", "debug"])
@pytest.mark.parametrize(
    ("spec", "line", "fragments"),
    [
        ("cli_broken_import:app", "cli_broken_import.py:3", ["ValueError", "boom at import"]),
        (
            "cli_missing_dependency:app",
            "cli_missing_dependency.py:3",
            ["cli_missing_dependency", "oneloop_no_such_dependency"],
        ),
        ("cli_apps:failing_factory()", _factory_line(), ["factory exploded"]),
    ],
)
def test_app_that_raises_at_import_shows_its_traceback(spec, line, fragments, log_level):
    result = run_cli("--app-dir", str(APPS), "--port", "0", "--log-level", log_level, spec)
    assert_app_traceback(result, line, *fragments)


def test_factory_that_raises_shows_its_traceback():
    result = run_cli("--app-dir", str(APPS), "--port", "0", "--factory", "cli_apps:failing_factory")
    assert_app_traceback(result, _factory_line(), "factory exploded")


def test_app_whose_interface_cannot_be_told_is_one_line():
    result = run_cli("--app-dir", str(APPS), "--port", "0", "cli_apps:dual")
    assert_cli_error(result, "--interface")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--port", "abc"], ["--port", "abc"]),
        (["--port", "-1"], ["--port"]),
        (["--threads", "0"], ["--threads", "0"]),
        (["--threads", "many"], ["--threads", "many"]),
        (["--loop", "nope"], ["--loop", "nope"]),
        (["--interface", "cgi"], ["--interface", "cgi"]),
        (["--lifespan", "maybe"], ["--lifespan", "maybe"]),
        (["--backlog", "0"], ["--backlog"]),
        (["--timeout-keep-alive", "-1"], ["--timeout-keep-alive"]),
        (["--limit-request-line", "x"], ["--limit-request-line"]),
        (["--ssl-cert-reqs", "always"], ["--ssl-cert-reqs"]),
        (["--frobnicate"], ["--frobnicate"]),
    ],
)
def test_bad_option_values_are_usage_errors(args, fragments):
    result = run_cli("--app-dir", str(APPS), *args, "cli_apps:asgi_fn")
    assert result.returncode == 2
    assert_cli_error(result, *fragments, usage=True)


def test_bad_value_from_the_environment_is_a_usage_error():
    result = run_cli("--app-dir", str(APPS), "cli_apps:asgi_fn", env={"ONELOOP_THREADS": "zero"})
    assert result.returncode == 2
    assert_cli_error(result, "--threads", "zero", usage=True)


def test_bad_boolean_from_the_environment_is_a_usage_error():
    result = run_cli(
        "--app-dir", str(APPS), "cli_apps:asgi_fn", env={"ONELOOP_ACCESS_LOG": "perhaps"}
    )
    assert_cli_error(result, "perhaps", usage=True)


def test_tls_key_without_certificate(tmp_path):
    key = tmp_path / "key.pem"
    key.write_text("not used")
    result = run_cli("--app-dir", str(APPS), "--ssl-keyfile", str(key), "cli_apps:asgi_fn")
    assert_cli_error(result, "--ssl-keyfile", "--ssl-certfile", usage=True)


def test_missing_certificate_file_names_the_file(tmp_path):
    missing = tmp_path / "no-such-cert.pem"
    result = run_cli(
        "--app-dir", str(APPS), "--port", "0", "--ssl-certfile", str(missing), "cli_apps:wsgi_fn"
    )
    # Which file is missing must be in the message, not just "No such file".
    assert_cli_error(result, "TLS", "no-such-cert.pem")


@pytest.mark.parametrize("app", ["cli_apps:wsgi_fn", "cli_apps:asgi_fn"])
def test_port_in_use_is_one_line(app):
    """asgi_fn supports the lifespan protocol, which starts before binding."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = run_cli("--app-dir", str(APPS), "--port", str(port), app)
    assert result.returncode == 1
    assert_cli_error(result, f"127.0.0.1:{port}", "in use")


def test_missing_log_config_file_is_one_line(tmp_path):
    result = run_cli(
        "--app-dir",
        str(APPS),
        "--port",
        "0",
        "--log-config",
        str(tmp_path / "nope.json"),
        "cli_apps:asgi_fn",
    )
    assert_cli_error(result, "nope.json")


def test_broken_log_config_is_one_line(tmp_path):
    config = tmp_path / "broken.json"
    config.write_text('{"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}')
    result = run_cli(
        "--app-dir", str(APPS), "--port", "0", "--log-config", str(config), "cli_apps:asgi_fn"
    )
    assert_cli_error(result, "broken.json")


def test_version():
    import oneloop

    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"oneloop {oneloop.__version__} ")
    assert "Python" in result.stdout
    assert result.stderr == ""


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "oneloop"
    assert script.exists(), f"no oneloop command next to {sys.executable}"
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=30, env=clean_env()
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("oneloop ")


def test_help_lists_every_option():
    from oneloop.config import FLAGS, OPTIONS

    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "usage: oneloop" in text
    assert "ONELOOP_" in text  # says options also come from the environment
    for name in OPTIONS:
        flag = "--" + name.replace("_", "-")
        assert flag in text, flag
        if name in FLAGS:
            assert "--no-" + name.replace("_", "-") in text
    assert "-b ADDRESS" in text
    assert "--version" in text
    # --threads documents its default
    options_part = text.split("options:", 1)[1]
    threads_help = " ".join(options_part.split("--threads N", 1)[1].split("--root-path")[0].split())
    assert "default: 16" in threads_help


# -- 2. options from the environment --------------------------------------------


def test_env_threads(serve):
    server = serve("cli_apps:wsgi_fn", env={"ONELOOP_THREADS": "3"})
    info = get_json(server.url + "/")
    assert info["wsgi_threads"] == ["oneloop-wsgi-0", "oneloop-wsgi-1", "oneloop-wsgi-2"]
    assert info["thread"] in info["wsgi_threads"]


def test_default_threads(serve):
    server = serve("cli_apps:wsgi_fn")
    info = get_json(server.url + "/")
    assert len(info["wsgi_threads"]) == 16


def test_command_line_overrides_env_threads(serve):
    server = serve("cli_apps:wsgi_fn", "--threads", "2", env={"ONELOOP_THREADS": "5"})
    info = get_json(server.url + "/")
    assert info["wsgi_threads"] == ["oneloop-wsgi-0", "oneloop-wsgi-1"]


def test_env_root_path_asgi(serve):
    server = serve("cli_apps:asgi_fn", env={"ONELOOP_ROOT_PATH": "/mnt"})
    info = get_json(server.url + "/mnt/page")
    assert info["root_path"] == "/mnt"


def test_env_root_path_wsgi(serve):
    server = serve("cli_apps:wsgi_fn", env={"ONELOOP_ROOT_PATH": "/mnt"})
    info = get_json(server.url + "/mnt/page")
    assert info["SCRIPT_NAME"] == "/mnt"
    assert info["PATH_INFO"] == "/page"


def test_command_line_overrides_env_root_path(serve):
    server = serve("cli_apps:asgi_fn", "--root-path", "/cli", env={"ONELOOP_ROOT_PATH": "/env"})
    assert get_json(server.url + "/cli/x")["root_path"] == "/cli"


def test_env_access_log_false(serve):
    server = serve("cli_apps:asgi_fn", env={"ONELOOP_ACCESS_LOG": "false"})
    for _ in range(3):
        get_json(server.url + "/quiet")
    # a request the server is sure to have logged by now if it logged at all
    get_json(server.url + "/last")
    time.sleep(0.2)
    assert server.stop() == 0
    assert "/quiet" not in server.out() + server.log()
    assert access_lines(server.out()) == []


def test_command_line_overrides_env_access_log(serve):
    server = serve("cli_apps:asgi_fn", "--access-log", env={"ONELOOP_ACCESS_LOG": "0"})
    get_json(server.url + "/loud")
    server.wait_log('"GET /loud HTTP/1.1" 200')


def test_env_app(launch):
    port = free_port()
    server = launch(
        "--port",
        str(port),
        env={"ONELOOP_APP": "cli_apps:asgi_fn", "ONELOOP_APP_DIR": str(APPS)},
    )
    assert get_json(f"http://127.0.0.1:{port}/")["kind"] == "asgi3-function"
    assert server.stop() == 0


def test_command_line_app_overrides_env_app(serve):
    server = serve("cli_apps:wsgi_fn", env={"ONELOOP_APP": "cli_apps:asgi_fn"})
    assert get_json(server.url + "/")["kind"] == "wsgi-function"


def test_env_interface(serve):
    server = serve("cli_apps:dual", env={"ONELOOP_INTERFACE": "wsgi"})
    assert httpx.get(server.url + "/").text == "served as wsgi"


def test_env_port_and_host(launch):
    port = free_port()
    launch(
        "--app-dir",
        str(APPS),
        "cli_apps:asgi_fn",
        env={"ONELOOP_PORT": str(port), "ONELOOP_HOST": "127.0.0.1"},
    )
    assert get_json(f"http://127.0.0.1:{port}/")["server"] == ["127.0.0.1", port]


def test_env_forwarded_allow_ips(serve):
    server = serve("cli_apps:asgi_fn", env={"FORWARDED_ALLOW_IPS": "10.0.0.1"})
    info = get_json(server.url + "/", headers=FORWARDED)
    assert info["client"][0] == "127.0.0.1"
    assert info["scheme"] == "http"


def test_command_line_overrides_env_forwarded_allow_ips(serve):
    server = serve(
        "cli_apps:asgi_fn",
        "--forwarded-allow-ips",
        "127.0.0.1",
        env={"FORWARDED_ALLOW_IPS": "10.0.0.1"},
    )
    info = get_json(server.url + "/", headers=FORWARDED)
    assert info["client"][0] == "203.0.113.7"
    assert info["scheme"] == "https"


def test_env_proxy_headers_off(serve):
    server = serve("cli_apps:asgi_fn", env={"ONELOOP_PROXY_HEADERS": "off"})
    info = get_json(server.url + "/", headers=FORWARDED)
    assert info["client"][0] == "127.0.0.1"
    assert info["scheme"] == "http"


# -- 3. app loading and interface detection --------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind", "interface"),
    [
        ("cli_apps:asgi_fn", "asgi3-function", "ASGI3"),
        ("cli_apps:asgi_instance", "asgi3-instance", "ASGI3"),
        ("cli_apps:Asgi2App", "asgi2-class", "ASGI2"),
        ("cli_apps:asgi2_fn", "asgi2-function", "ASGI2"),
        ("cli_apps:wsgi_fn", "wsgi-function", "WSGI"),
        ("cli_apps:holder.inner.app", "asgi3-function", "ASGI3"),
        ("cli_apps:holder.wsgi", "wsgi-function", "WSGI"),
    ],
)
def test_interface_auto_detection(serve, spec, kind, interface):
    server = serve(spec)
    assert f"Serving {interface} app on " in server.log()
    assert get_json(server.url + "/")["kind"] == kind
    r = httpx.post(server.url + "/", content=b"abc")
    assert r.json()["body_len"] == 3


def test_asgi2_scope_says_version_2(serve):
    server = serve("cli_apps:Asgi2App")
    assert get_json(server.url + "/")["asgi"]["version"] == "2.0"


def test_asgi3_instance_is_one_object(serve):
    server = serve("cli_apps:asgi_instance")
    counts = [get_json(server.url + "/")["count"] for _ in range(3)]
    assert counts == [1, 2, 3]


def test_factory_option(serve):
    server = serve("cli_apps:create_app", "--factory")
    info = get_json(server.url + "/")
    assert info == {"kind": "factory-made", "factory_calls": 1}
    info = get_json(server.url + "/")
    assert info["factory_calls"] == 1  # called once, not per request


def test_factory_call_syntax(serve):
    server = serve("cli_apps:create_app()")
    assert get_json(server.url + "/") == {"kind": "factory-made", "factory_calls": 1}


def test_factory_returning_wsgi(serve):
    server = serve("cli_apps:create_wsgi", "--factory")
    assert "Serving WSGI app" in server.log()
    assert httpx.get(server.url + "/").text == "wsgi from a factory"


def test_zero_argument_callable_without_factory_is_rejected(serve):
    """create_app() takes no arguments; without --factory it is not an app."""
    server = serve("cli_apps:create_app", ready=False)
    try:
        rc = server.proc.wait(15)
    except subprocess.TimeoutExpired:
        rc = None
    assert rc not in (None, 0), "a zero-argument callable was accepted as an app"
    assert "Traceback" not in server.log()
    assert server.log().strip().startswith("oneloop: error:")


def test_app_dir(serve, tmp_path):
    appdir = tmp_path / "elsewhere"
    appdir.mkdir()
    (appdir / "cli_appdir_module.py").write_text(
        textwrap.dedent(
            """
            def app(environ, start_response):
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"from the app dir"]
            """
        )
    )
    # the later --app-dir wins over the one the fixture passes
    server = serve("cli_appdir_module:app", "--app-dir", str(appdir))
    assert httpx.get(server.url + "/").text == "from the app dir"


def test_app_dir_relative_and_default(launch, tmp_path):
    pkg = tmp_path / "proj" / "src"
    pkg.mkdir(parents=True)
    (pkg / "cli_relative_module.py").write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'relative'})\n"
    )
    port = free_port()
    launch(
        "--app-dir", "src", "--port", str(port), "cli_relative_module:app", cwd=tmp_path / "proj"
    )
    assert httpx.get(f"http://127.0.0.1:{port}/").text == "relative"
    port2 = free_port()
    launch("--port", str(port2), "cli_relative_module:app", cwd=pkg)  # default: the current dir
    assert httpx.get(f"http://127.0.0.1:{port2}/").text == "relative"


def test_interface_forcing(serve):
    wsgi = serve("cli_apps:dual", "--interface", "wsgi")
    asgi3 = serve("cli_apps:dual", "--interface", "asgi3")
    asgi = serve("cli_apps:dual", "--interface", "asgi")
    assert "Serving WSGI app" in wsgi.log()
    assert httpx.get(wsgi.url + "/").text == "served as wsgi"
    assert "Serving ASGI3 app" in asgi3.log()
    assert httpx.get(asgi3.url + "/").text == "served as asgi3"
    assert httpx.get(asgi.url + "/").text == "served as asgi3"


def test_interface_asgi2_forced(serve):
    server = serve("cli_apps:Asgi2App", "--interface", "asgi2")
    assert get_json(server.url + "/")["kind"] == "asgi2-class"


def test_sigterm_exits_zero(serve):
    server = serve("cli_apps:asgi_fn")
    get_json(server.url + "/")
    started = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 5


def test_sigint_exits_promptly(serve):
    server = serve("cli_apps:wsgi_fn")
    get_json(server.url + "/")
    started = time.monotonic()
    rc = server.stop(signal.SIGINT)
    assert rc in (0, 130), rc
    assert time.monotonic() - started < 5
    assert "Traceback" not in server.log()


# -- 6. proxy headers -----------------------------------------------------------

FORWARDED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


def test_proxy_headers_from_trusted_peer_asgi(serve):
    server = serve("cli_apps:asgi_fn")  # default trusts 127.0.0.1
    info = get_json(server.url + "/", headers=FORWARDED)
    assert info["client"][0] == "203.0.113.7"
    assert info["scheme"] == "https"
    plain = get_json(server.url + "/")
    assert plain["client"][0] == "127.0.0.1"
    assert plain["scheme"] == "http"


def test_proxy_headers_from_trusted_peer_wsgi(serve):
    server = serve("cli_apps:wsgi_fn")
    info = get_json(server.url + "/", headers=FORWARDED)
    assert info["REMOTE_ADDR"] == "203.0.113.7"
    assert info["wsgi.url_scheme"] == "https"
    assert info["HTTP_X_FORWARDED_FOR"] == "203.0.113.7"  # the header itself stays
    plain = get_json(server.url + "/")
    assert plain["REMOTE_ADDR"] == "127.0.0.1"
    assert plain["wsgi.url_scheme"] == "http"


def test_proxy_headers_only_proto(serve):
    server = serve("cli_apps:wsgi_fn")
    info = get_json(server.url + "/", headers={"X-Forwarded-Proto": "https"})
    assert info["REMOTE_ADDR"] == "127.0.0.1"
    assert info["wsgi.url_scheme"] == "https"


@pytest.mark.parametrize("app", ["cli_apps:asgi_fn", "cli_apps:wsgi_fn"])
def test_proxy_headers_from_untrusted_peer_ignored(serve, app):
    server = serve(app, "--forwarded-allow-ips", "10.0.0.1")
    info = get_json(server.url + "/", headers=FORWARDED)
    if "client" in info:
        assert info["client"][0] == "127.0.0.1"
        assert info["scheme"] == "http"
    else:
        assert info["REMOTE_ADDR"] == "127.0.0.1"
        assert info["wsgi.url_scheme"] == "http"


@pytest.mark.parametrize("app", ["cli_apps:asgi_fn", "cli_apps:wsgi_fn"])
def test_no_proxy_headers_ignores_them(serve, app):
    server = serve(app, "--no-proxy-headers")
    info = get_json(server.url + "/", headers=FORWARDED)
    if "client" in info:
        assert info["client"][0] == "127.0.0.1"
        assert info["scheme"] == "http"
    else:
        assert info["REMOTE_ADDR"] == "127.0.0.1"
        assert info["wsgi.url_scheme"] == "http"


def test_proxy_chain_takes_the_rightmost_untrusted_hop(serve):
    chain = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7, 127.0.0.1"}
    server = serve("cli_apps:asgi_fn")
    assert get_json(server.url + "/", headers=chain)["client"][0] == "203.0.113.7"
    trusting = serve("cli_apps:asgi_fn", "--forwarded-allow-ips", "127.0.0.1,203.0.113.7")
    assert get_json(trusting.url + "/", headers=chain)["client"][0] == "198.51.100.1"


def test_proxy_trust_everyone_takes_the_first_hop(serve):
    server = serve("cli_apps:asgi_fn", "--forwarded-allow-ips", "*")
    info = get_json(server.url + "/", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"})
    assert info["client"][0] == "198.51.100.1"


def test_proxy_trusted_network(serve):
    server = serve("cli_apps:wsgi_fn", "--forwarded-allow-ips", "10.0.0.0/8, 127.0.0.0/8")
    info = get_json(server.url + "/", headers=FORWARDED)
    assert info["REMOTE_ADDR"] == "203.0.113.7"


def test_proxy_bogus_proto_is_ignored(serve):
    server = serve("cli_apps:asgi_fn")
    info = get_json(server.url + "/", headers={"X-Forwarded-Proto": "javascript"})
    assert info["scheme"] == "http"


def test_proxy_client_shows_in_access_log(serve):
    server = serve("cli_apps:asgi_fn", "--access-logformat", "who=%(h)s")
    get_json(server.url + "/", headers=FORWARDED)
    server.wait_log("who=203.0.113.7")


# -- 7. access log --------------------------------------------------------------


def test_default_access_log_line(serve):
    server = serve("cli_apps:asgi_fn")
    r = httpx.get(server.url + "/path?q=1")
    size = len(r.content)
    server.wait_log('"GET /path?q=1 HTTP/1.1" 200')
    line = next(line for line in access_lines(server.out()) if "/path?q=1" in line)
    assert "127.0.0.1" in line
    # status, size, duration, referer, user agent
    assert re.search(rf'" 200 {size} \d+ms "-" "python-httpx/[\d.]+"$', line.rstrip()), line
    # the access log goes to stdout, not to the error log on stderr
    assert "/path?q=1" not in server.log()


def test_access_log_statuses_and_methods(serve):
    server = serve("cli_apps:wsgi_fn")
    httpx.post(server.url + "/submit", content=b"x" * 10)
    httpx.head(server.url + "/head")
    server.wait_log('"POST /submit HTTP/1.1" 200')
    server.wait_log('"HEAD /head HTTP/1.1" 200')
    asgi = serve("cli_apps:asgi_fn")
    assert httpx.get(asgi.url + "/missing").status_code == 404
    asgi.wait_log('"GET /missing HTTP/1.1" 404')


def test_access_log_http10(serve):
    server = serve("cli_apps:asgi_fn")
    status, _, _ = request(server, b"GET /old HTTP/1.0\r\n\r\n")
    assert status == 200
    server.wait_log('"GET /old HTTP/1.0" 200')


def test_access_logformat_atoms(serve):
    fmt = "ATOMS|%(h)s|%(r)s|%(s)s|%(b)s|%({user-agent}i)s|%(D)s|%(m)s|%(U)s|%(q)s|%(H)s|%(B)s"
    server = serve("cli_apps:asgi_fn", "--access-logformat", fmt)
    r = httpx.get(server.url + "/sleep/60?a=b", headers={"User-Agent": "atom-test/1.0"})
    size = len(r.content)
    server.wait_log("ATOMS|")
    line = next(line for line in server.out().splitlines() if "ATOMS|" in line)
    fields = line.split("ATOMS|", 1)[1].split("|")
    h, r_, s, b, ua, d, m, u, q, hv, big_b = fields
    assert h == "127.0.0.1"  # gunicorn: %(h)s is the remote address alone
    assert r_ == "GET /sleep/60?a=b HTTP/1.1"
    assert s == "200"
    assert b == str(size)
    assert big_b == str(size)
    assert ua == "atom-test/1.0"
    assert 60_000 <= int(d) < 5_000_000  # microseconds: the app slept 60 ms
    assert (m, u, q, hv) == ("GET", "/sleep/60", "a=b", "HTTP/1.1")


@pytest.mark.parametrize("app", ["cli_apps:asgi_fn", "cli_apps:wsgi_fn"])
def test_access_log_request_header_atoms(serve, app):
    """WSGI too (its headers live in the environ): they once printed '-'."""
    fmt = "HDRS|%(a)s|%(f)s|%({x-request-id}i)s|%({content-type}i)s|%({x-absent}i)s"
    server = serve(app, "--access-logformat", fmt)
    headers = {
        "User-Agent": "ua/1.0",
        "Referer": "http://example.com/from",
        "X-Request-Id": "req-42",
        "Content-Type": "text/plain",
    }
    httpx.post(server.url + "/", content=b"x", headers=headers)
    server.wait_log("HDRS|ua/1.0|http://example.com/from|req-42|text/plain|-")


def test_access_log_combined_and_json_formats(serve):
    """Named formats are the whole line: no second timestamp before them."""
    combined = serve("cli_apps:asgi_fn", "--access-logformat", "combined")
    httpx.get(combined.url + "/c?x=1", headers={"User-Agent": "ua/2", "Referer": "http://r/"})
    combined.wait_log("/c?x=1")
    line = next(x for x in combined.out().splitlines() if "/c?x=1" in x)
    pattern = (
        r"127\.0\.0\.1 - - \[\d\d/\w+/\d{4}:[\d:]+ [+-]\d{4}\] "
        r'"GET /c\?x=1 HTTP/1\.1" 200 \d+ "http://r/" "ua/2"'
    )
    assert re.fullmatch(pattern, line), line
    js = serve("cli_apps:wsgi_fn", "--access-logformat", "json")
    httpx.post(js.url + "/j?y=2", content=b"abc", headers={"User-Agent": "ua/3"})
    js.wait_log('"/j"')
    entry = json.loads(next(x for x in js.out().splitlines() if '"/j"' in x))
    assert entry["method"] == "POST" and entry["path"] == "/j" and entry["query"] == "y=2"
    assert entry["status"] == 200 and entry["user_agent"] == "ua/3" and entry["referer"] == "-"
    assert isinstance(entry["duration_ms"], float) and entry["bytes"] > 0
    assert entry["remote"] == "127.0.0.1" and entry["pid"] > 0 and entry["time"][:2] == "20"


def _leave_mid_body(server, path: str = "/upload") -> None:
    """A client that goes away in the middle of its body: its connection is
    reset (a clean half-close there is a cut body, answered 400)."""
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode())
        s.sendall(b"0123456789")
        time.sleep(0.2)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.parametrize("app", ["cli_apps:asgi_stream", "cli_apps:wsgi_stream"])
def test_access_log_line_for_a_stream_its_client_left(serve, app):
    server = serve(app)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")
        time.sleep(0.1)
    server.wait_log('"GET /stream HTTP/1.1" 200 ')


@pytest.mark.parametrize("app", ["cli_apps:asgi_fn", "cli_apps:wsgi_fn"])
def test_access_log_499_for_a_client_gone_before_the_response(serve, app):
    server = serve(app)
    _leave_mid_body(server)
    server.wait_log('"POST /upload HTTP/1.1" 499 ')
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("app", ["disconnect_apps:app", "disconnect_apps:raw"])
def test_framework_disconnect_exception_is_a_debug_line_naming_the_request(serve, app):
    """A Starlette endpoint whose client leaves mid-body, and Starlette's
    ClientDisconnect escaping an app: no ERROR, no traceback."""
    server = serve(app, "--log-level", "debug")
    _leave_mid_body(server)
    server.wait_log('"POST /upload HTTP/1.1" 499 ')
    log = server.wait_log("ASGI application (POST /upload) ended after its client left")
    assert "ERROR" not in log and "Exception in ASGI application" not in log, log


def test_access_logformat_missing_header_and_response_header(serve):
    fmt = "HDR %({x-absent}i)s %({content-type}o)s %(s)s"
    server = serve("cli_apps:asgi_fn", "--access-logformat", fmt)
    httpx.get(server.url + "/")
    server.wait_log("HDR - application/json 200")


@pytest.mark.parametrize("app", ["cli_apps:asgi_raises", "cli_apps:wsgi_raises"])
def test_failing_app_gives_500_logged_with_traceback(serve, app):
    server = serve(app, "--access-logformat", "STATUS %(s)s %(U)s")
    r = httpx.get(server.url + "/fail")
    assert r.status_code == 500
    server.wait_log("STATUS 500 /fail")
    log = server.wait_log("app failed before responding")
    assert "Traceback" in log and "RuntimeError" in log
    assert httpx.get(server.url + "/again").status_code == 500  # still serving


def test_no_access_log(serve):
    server = serve("cli_apps:asgi_fn", "--no-access-log")
    for i in range(3):
        get_json(server.url + f"/n{i}")
    time.sleep(0.3)
    assert server.stop() == 0
    assert access_lines(server.out()) == []
    assert "/n0" not in server.out() + server.log()
    assert "Serving ASGI3 app" in server.log()  # the error log still works


def test_log_level_warning_silences_info(launch):
    port = free_port()
    server = launch(
        "--app-dir",
        str(APPS),
        "--port",
        str(port),
        "--log-level",
        "warning",
        "cli_apps:asgi_fn",
        wait=None,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            info = get_json(f"http://127.0.0.1:{port}/")
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline and server.proc.poll() is None, server.err()
            time.sleep(0.05)
    assert info["kind"] == "asgi3-function"
    time.sleep(0.2)
    assert "Serving" not in server.err()
    assert access_lines(server.out()) == []


def test_log_config_json_routes_access_log_to_a_file(serve, tmp_path):
    access_file = tmp_path / "access.log"
    error_file = tmp_path / "error.log"
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "JSONCFG %(name)s %(message)s"}},
        "handlers": {
            "access": {
                "class": "logging.FileHandler",
                "filename": str(access_file),
                "formatter": "plain",
            },
            "error": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "plain",
            },
            "errorfile": {
                "class": "logging.FileHandler",
                "filename": str(error_file),
                "formatter": "plain",
            },
        },
        "loggers": {
            "oneloop.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "oneloop.error": {
                "handlers": ["error", "errorfile"],
                "level": "INFO",
                "propagate": False,
            },
        },
    }
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(config))
    server = serve("cli_apps:asgi_fn", "--log-config", str(path))
    assert "JSONCFG oneloop.error Serving ASGI3 app" in server.log()
    httpx.get(server.url + "/to-file")
    deadline = time.monotonic() + 5
    while "/to-file" not in (access_file.read_text() if access_file.exists() else ""):
        assert time.monotonic() < deadline, "access line not written to the file"
        time.sleep(0.02)
    line = access_file.read_text().strip().splitlines()[-1]
    assert line.startswith("JSONCFG oneloop.access ")
    assert '"GET /to-file HTTP/1.1" 200' in line
    assert "/to-file" not in server.out()
    assert "Serving ASGI3 app" in error_file.read_text()


def test_log_config_ini(serve, tmp_path):
    access_file = tmp_path / "access-ini.log"
    path = tmp_path / "logging.ini"
    path.write_text(
        textwrap.dedent(
            f"""
            [loggers]
            keys=root,access

            [handlers]
            keys=file,console

            [formatters]
            keys=plain

            [logger_root]
            level=INFO
            handlers=console

            [logger_access]
            level=INFO
            handlers=file
            propagate=0
            qualname=oneloop.access

            [handler_file]
            class=FileHandler
            args=({str(access_file)!r},)
            formatter=plain

            [handler_console]
            class=StreamHandler
            args=(sys.stderr,)
            formatter=plain

            [formatter_plain]
            format=INICFG %(name)s %(message)s
            """
        )
    )
    server = serve("cli_apps:asgi_fn", "--log-config", str(path))
    assert "INICFG oneloop.error Serving" in server.log()
    httpx.get(server.url + "/ini")
    deadline = time.monotonic() + 5
    while "/ini" not in (access_file.read_text() if access_file.exists() else ""):
        assert time.monotonic() < deadline, "access line not written to the file"
        time.sleep(0.02)
    assert "INICFG oneloop.access" in access_file.read_text()
    assert "/ini" not in server.out()


def test_app_exception_is_logged_with_traceback_and_500(serve):
    server = serve("framework_apps.starlette_app:app")
    r = httpx.get(server.url + "/boom")
    assert r.status_code == 500
    log = server.wait_log("starlette endpoint failed")
    assert "RuntimeError" in log
    server.wait_log('"GET /boom HTTP/1.1" 500')


# -- 9. the Python API -------------------------------------------------------------

RUN_SCRIPT = """
import sys
import oneloop

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    body = b"from oneloop.run " + scope["path"].encode()
    await send({"type": "http.response.body", "body": body})

def wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi via run"]

which = sys.argv[1]
port = int(sys.argv[2])
if which == "asgi":
    rc = oneloop.run(app, host="127.0.0.1", port=port, access_log=False)
elif which == "wsgi":
    rc = oneloop.run(wsgi, host="127.0.0.1", port=port, threads=2)
else:
    rc = oneloop.run("cli_apps:asgi_fn", app_dir=sys.argv[3], host="127.0.0.1", port=port)
print("run returned", rc, flush=True)
sys.exit(rc)
"""


@pytest.mark.parametrize("which", ["asgi", "wsgi", "string"])
def test_python_api_run(launch, tmp_path, which):
    script = tmp_path / "run_it.py"
    script.write_text(RUN_SCRIPT)
    port = free_port()
    server = launch(str(script), which, str(port), str(APPS), command=[sys.executable])
    url = f"http://127.0.0.1:{port}/hi"
    if which == "asgi":
        assert httpx.get(url).text == "from oneloop.run /hi"
        assert access_lines(server.out()) == []
    elif which == "wsgi":
        assert httpx.get(url).text == "wsgi via run"
        assert "Serving WSGI app" in server.err()
    else:
        assert get_json(url)["kind"] == "asgi3-function"
    assert server.stop() == 0
    assert "run returned 0" in server.out()


def test_python_api_rejects_bad_options():
    import oneloop
    from oneloop.config import ConfigError

    async def app(scope, receive, send):  # never served: the options are refused first
        raise AssertionError("served")

    with pytest.raises(ConfigError, match="bogus"):
        oneloop.run(app, bogus=1)
    with pytest.raises(ConfigError, match="--threads"):
        oneloop.run(app, threads=0)


def test_option_abbreviations_are_refused():
    """`--env FOO=1` once meant `--env-file FOO=1` (argparse's prefix matching)."""
    result = run_cli("--app-dir", str(APPS), "--env", "FOO=1", "cli_apps:app")
    assert result.returncode == 2
    assert_cli_error(result, "unrecognized arguments: --env", usage=True)


def test_gunicorn_spellings_and_any_case_are_accepted():
    from oneloop.cli import parse

    config = parse(
        ["--log-level", "INFO", "--keep-alive", "3", "--log-file", "-", "--loop", "AsyncIO", "a:b"],
        {},
    )
    assert (config.log_level, config.timeout_keep_alive) == ("info", 3.0)
    assert (config.error_logfile, config.loop) == ("-", "asyncio")


# -- configuration files ------------------------------------------------------------

GUNICORN_CONF = """
import multiprocessing

bind = "127.0.0.1:{port}"
workers = 2
threads = 4
timeout = 20
keepalive = 3
accesslog = "{access}"
loglevel = "debug"
max_requests = 1000
_private = "ignored"


def cpu_count():
    return multiprocessing.cpu_count()
"""


def test_gunicorn_conf_py_settings_are_read(tmp_path, launch):
    port = free_port()
    access = tmp_path / "access.log"
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(GUNICORN_CONF.format(port=port, access=access))
    server = launch("--app-dir", str(APPS), "-c", str(conf), "cli_apps:asgi_fn", wait=None)
    log = server.wait_for("2 workers serving")
    assert "[DEBUG]" in log  # loglevel
    assert httpx.get(f"http://127.0.0.1:{port}/from-conf").status_code == 200
    deadline = time.monotonic() + 5
    while "/from-conf" not in (access.read_text() if access.exists() else ""):
        assert time.monotonic() < deadline, "accesslog not written"
        time.sleep(0.05)


def test_config_file_precedence_cli_over_env_over_file(tmp_path):
    from oneloop.cli import parse

    conf = tmp_path / "settings.py"
    conf.write_text("keepalive = 3\nthreads = 7\nworkers = 3\n")
    config = parse(["-c", str(conf), "--keep-alive", "5", "a:b"], {"ONELOOP_THREADS": "9"})
    assert (config.timeout_keep_alive, config.threads, config.workers) == (5.0, 9, 3)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("wrokers = 2\n", ["unknown setting 'wrokers'"]),
        ("worker_class = 'gevent'\n", ["gunicorn's setting 'worker_class'", "no oneloop"]),
        ("def pre_exec(server):\n    pass\n", ["server hook 'pre_exec'"]),
        ("workers = 'many'\n", ["workers"]),
        ("raise RuntimeError('typo')\n", ["settings.py", "typo"]),
    ],
)
def test_config_file_mistakes_are_named(tmp_path, text, fragments):
    conf = tmp_path / "settings.py"
    conf.write_text(text)
    result = run_cli("--app-dir", str(APPS), "-c", str(conf), "cli_apps:asgi_fn")
    assert_cli_error(result, *fragments, usage=True)


def test_pyproject_tool_oneloop_table(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.oneloop]\nworkers = 3\ntimeout-keep-alive = 2.5\n'
        'access-logformat = "json"\n'
    )
    code = (
        "from oneloop.cli import parse; c = parse(['a:b'], {}); "
        "print(c.workers, c.timeout_keep_alive, c.access_logformat)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=clean_env()
    )
    assert result.stdout.split() == ["3", "2.5", "json"], result.stderr
    (tmp_path / "pyproject.toml").write_text("[tool.oneloop]\nwrokers = 3\n")
    result = run_cli("--app-dir", str(APPS), "cli_apps:asgi_fn", cwd=tmp_path)
    assert_cli_error(
        result, "pyproject.toml [tool.oneloop]", "unknown setting 'wrokers'", usage=True
    )
