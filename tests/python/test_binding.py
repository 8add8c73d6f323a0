"""Listening sockets: --host/--port, IPv6, --uds, -b (repeatable), fd://,
--fd, systemd socket activation, --reuse-port -- and that scope["server"] /
SERVER_NAME describe the listener a request came in on."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import subprocess
import sys

import httpx
import test_cli
from conftest import APPS, Client
from test_cli import ONELOOP, assert_cli_error, clean_env, free_port, get_json, run_cli

launch = test_cli.launch  # the fixture that starts `python -m oneloop ARGS`

APP = ["--app-dir", str(APPS)]


def has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def uds_get(path: str, url_path: str = "/", **kwargs) -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), timeout=10) as client:
        return client.get("http://uds.test" + url_path, **kwargs)


# -- --host / --port --------------------------------------------------------------


def test_host_and_port(launch):
    port = free_port()
    server = launch(*APP, "--host", "127.0.0.1", "--port", str(port), "cli_apps:asgi_fn")
    assert server.serving_urls() == [f"http://127.0.0.1:{port}"]
    info = get_json(f"http://127.0.0.1:{port}/")
    assert info["server"] == ["127.0.0.1", port]
    assert info["client"][0] == "127.0.0.1"
    assert server.stop() == 0


def test_port_wsgi_server_name(launch):
    port = free_port()
    launch(*APP, "--port", str(port), "cli_apps:wsgi_fn")
    info = get_json(f"http://127.0.0.1:{port}/")
    assert info["SERVER_NAME"] == "127.0.0.1"
    assert info["SERVER_PORT"] == str(port)
    assert info["REMOTE_ADDR"] == "127.0.0.1"
    # without a Host header (HTTP/1.0) SERVER_NAME/SERVER_PORT come from the listener
    with Client(socket.create_connection(("127.0.0.1", port))) as c:
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        status, _, body = c.response()
    assert status == 200
    info = json.loads(body)
    assert info["HTTP_HOST"] is None
    assert (info["SERVER_NAME"], info["SERVER_PORT"]) == ("127.0.0.1", str(port))


def test_all_interfaces(launch):
    port = free_port("0.0.0.0")
    server = launch(*APP, "--host", "0.0.0.0", "--port", str(port), "cli_apps:asgi_fn")
    assert server.serving_urls() == [f"http://0.0.0.0:{port}"]
    assert get_json(f"http://127.0.0.1:{port}/")["server"] == ["0.0.0.0", port]


def test_ipv6_loopback(launch):
    if has_ipv6_loopback():
        port = free_port("::1")
        server = launch(*APP, "--host", "::1", "--port", str(port), "cli_apps:asgi_fn")
        assert server.serving_urls() == [f"http://[::1]:{port}"]
        info = get_json(f"http://[::1]:{port}/")
        assert info["server"] == ["::1", port]
        assert info["client"][0] == "::1"
    else:
        result = run_cli(*APP, "--host", "::1", "--port", "0", "cli_apps:asgi_fn")
        assert_cli_error(result, "::1")


def test_ipv6_bind_syntax_and_wsgi(launch):
    if has_ipv6_loopback():
        port = free_port("::1")
        server = launch(*APP, "-b", f"[::1]:{port}", "cli_apps:wsgi_fn")
        assert server.serving_urls() == [f"http://[::1]:{port}"]
        info = get_json(f"http://[::1]:{port}/")
        assert info["REMOTE_ADDR"] == "::1"
        assert info["SERVER_NAME"] == "[::1]" or info["SERVER_NAME"] == "::1"
        assert info["SERVER_PORT"] == str(port)
    else:
        result = run_cli(*APP, "-b", "[::1]:0", "cli_apps:wsgi_fn")
        assert_cli_error(result, "::1")


def test_trusted_ipv6_proxy(launch):
    """The default --forwarded-allow-ips trusts ::1 as well as 127.0.0.1."""
    if has_ipv6_loopback():
        port = free_port("::1")
        launch(*APP, "--host", "::1", "--port", str(port), "cli_apps:asgi_fn")
        info = get_json(
            f"http://[::1]:{port}/",
            headers={"X-Forwarded-For": "2001:db8::5", "X-Forwarded-Proto": "https"},
        )
        assert info["client"][0] == "2001:db8::5"
        assert info["scheme"] == "https"
    else:
        result = run_cli(*APP, "--host", "::1", "--port", "0", "cli_apps:asgi_fn")
        assert_cli_error(result, "::1")


def test_dual_stack_any_address(launch):
    """--host '::' serves IPv6 and IPv4 ("all IPv6 and IPv4", says --help). A
    local proxy reaching it over IPv4 arrives as ::ffff:127.0.0.1, which is
    127.0.0.1 and must be trusted by the default --forwarded-allow-ips."""
    if not has_ipv6_loopback():
        result = run_cli(*APP, "--host", "::", "--port", "0", "cli_apps:wsgi_fn")
        assert_cli_error(result, "::")
        return
    port = free_port("::")
    server = launch(*APP, "--host", "::", "--port", str(port), "cli_apps:wsgi_fn")
    assert server.serving_urls() == [f"http://[::]:{port}"]
    over_v6 = get_json(f"http://[::1]:{port}/")
    assert over_v6["REMOTE_ADDR"] == "::1"
    over_v4 = get_json(f"http://127.0.0.1:{port}/")
    assert over_v4["REMOTE_ADDR"] in ("127.0.0.1", "::ffff:127.0.0.1")
    proxied = get_json(f"http://127.0.0.1:{port}/", headers={"X-Forwarded-For": "203.0.113.3"})
    assert proxied["REMOTE_ADDR"] == "203.0.113.3"


# -- --uds -------------------------------------------------------------------------


def test_uds(launch, tmp_path):
    path = tmp_path / "oneloop.sock"
    server = launch(*APP, "--uds", str(path), "cli_apps:asgi_fn")
    assert server.serving_urls() == [f"unix:{path}"]
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    r = uds_get(path, "/via-uds")
    assert r.status_code == 200
    info = r.json()
    assert info["path"] == "/via-uds"
    assert info["client"] is None
    assert info["server"] == [str(path), None]
    assert server.stop() == 0


def test_uds_wsgi(launch, tmp_path):
    path = tmp_path / "wsgi.sock"
    launch(*APP, "--uds", str(path), "cli_apps:wsgi_fn")
    info = uds_get(path, "/w").json()
    assert info["PATH_INFO"] == "/w"
    assert info["REMOTE_ADDR"] == ""
    assert info["SERVER_NAME"] == "uds.test"  # from the Host header


def test_uds_file_removed_at_shutdown(launch, tmp_path):
    """The server created the socket file, so it removes it when it exits (as
    gunicorn does, and asyncio's unix servers since Python 3.13)."""
    path = tmp_path / "cleanup.sock"
    server = launch(*APP, "--uds", str(path), "cli_apps:asgi_fn")
    assert uds_get(path).status_code == 200
    assert server.stop() == 0
    assert not path.exists()


def test_uds_replaces_a_stale_socket(launch, tmp_path):
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    launch(*APP, "--uds", str(path), "cli_apps:asgi_fn")
    assert uds_get(path).json()["kind"] == "asgi3-function"


def test_uds_does_not_remove_a_regular_file(tmp_path):
    path = tmp_path / "precious.txt"
    path.write_text("keep me")
    result = run_cli(*APP, "--uds", str(path), "cli_apps:wsgi_fn")
    assert_cli_error(result, str(path))
    assert path.read_text() == "keep me"


def test_uds_in_a_missing_directory(tmp_path):
    path = tmp_path / "no" / "such" / "dir.sock"
    result = run_cli(*APP, "--uds", str(path), "cli_apps:wsgi_fn")
    assert_cli_error(result, str(path))


# -- -b / --bind ---------------------------------------------------------------------


def test_bind_twice_tcp_and_unix(launch, tmp_path):
    port = free_port()
    path = tmp_path / "both.sock"
    server = launch(
        *APP, "-b", f"127.0.0.1:{port}", "--bind", f"unix:{path}", "cli_apps:asgi_fn", count=2
    )
    assert sorted(server.serving_urls()) == sorted([f"http://127.0.0.1:{port}", f"unix:{path}"])
    tcp = get_json(f"http://127.0.0.1:{port}/tcp")
    unix = uds_get(path, "/unix").json()
    assert tcp["server"] == ["127.0.0.1", port]
    assert tcp["path"] == "/tcp"
    assert unix["server"] == [str(path), None]
    assert unix["path"] == "/unix"
    assert tcp["pid"] == unix["pid"]  # one process serves both
    assert server.stop() == 0


def test_bind_two_tcp_ports_wsgi(launch):
    port1, port2 = free_port(), free_port()
    launch(
        *APP, "-b", f"127.0.0.1:{port1}", "-b", f"127.0.0.1:{port2}", "cli_apps:wsgi_fn", count=2
    )
    one = get_json(f"http://127.0.0.1:{port1}/")
    two = get_json(f"http://127.0.0.1:{port2}/")
    assert one["SERVER_PORT"] == str(port1)
    assert two["SERVER_PORT"] == str(port2)


def test_bind_overrides_host_and_port(launch):
    port, ignored = free_port(), free_port()
    server = launch(*APP, "--port", str(ignored), "-b", f"127.0.0.1:{port}", "cli_apps:asgi_fn")
    assert server.serving_urls() == [f"http://127.0.0.1:{port}"]
    assert get_json(f"http://127.0.0.1:{port}/")["kind"] == "asgi3-function"
    try:
        httpx.get(f"http://127.0.0.1:{ignored}/", timeout=2)
        reached = True
    except httpx.ConnectError:
        reached = False
    assert not reached


def test_bind_fd(launch):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    fd = sock.fileno()
    server = launch(*APP, "-b", f"fd://{fd}", "cli_apps:asgi_fn", pass_fds=(fd,))
    sock.close()
    assert server.serving_urls() == [f"http://127.0.0.1:{port}"]
    assert get_json(f"http://127.0.0.1:{port}/")["server"] == ["127.0.0.1", port]


def test_fd_option_scope_server(serve):
    server = serve("cli_apps:asgi_fn")  # the fixture passes --fd
    assert get_json(server.url + "/")["server"] == ["127.0.0.1", server.port]


def test_fd_unix_socket(launch, tmp_path):
    path = tmp_path / "passed.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(16)
    fd = sock.fileno()
    launch(*APP, "--fd", str(fd), "cli_apps:asgi_fn", pass_fds=(fd,))
    sock.close()
    info = uds_get(path).json()
    assert info["server"] == [str(path), None]


def test_fd_that_is_not_a_stream_socket(tmp_path):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        result = subprocess_run_with_fd(udp.fileno())
    finally:
        udp.close()
    assert_cli_error(result, "stream")


def subprocess_run_with_fd(fd: int):
    return subprocess.run(
        [*ONELOOP, *APP, "--fd", str(fd), "cli_apps:wsgi_fn"],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
        pass_fds=(fd,),
        stdin=subprocess.DEVNULL,
    )


def test_fd_that_is_closed():
    result = run_cli(*APP, "--fd", "987", "cli_apps:wsgi_fn")
    assert_cli_error(result, "987")


def test_bind_failure_happens_before_lifespan_startup(tmp_path):
    """Sockets are bound before the app's lifespan startup runs, so a port in
    use fails fast with one line and the app's startup never runs (nothing to
    undo, no "Task was destroyed but it is pending!")."""
    marker = tmp_path / "lifespan.txt"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = run_cli(
            *APP,
            "--port",
            str(port),
            "cli_apps:lifespan_marker",
            env={"LIFESPAN_MARKER": str(marker)},
        )
    assert_cli_error(result, str(port))
    assert not marker.exists()


def test_bad_bind_values():
    for spec, fragment in [
        ("[::1", "["),
        ("127.0.0.1:http", "http"),
        ("127.0.0.1:70000", "70000"),
        ("fd://x", "fd://"),
        ("unix:", "unix"),
    ]:
        result = run_cli(*APP, "-b", spec, "cli_apps:wsgi_fn")
        assert_cli_error(result, fragment)


def test_unresolvable_host():
    result = run_cli(*APP, "--host", "no-such-host.invalid", "cli_apps:wsgi_fn")
    assert_cli_error(result, "no-such-host.invalid")


def test_reuse_port(launch):
    port = free_port()
    # --workers 0: each instance serves in the process started, so pids tell them apart
    one = launch(*APP, "--workers", "0", "--reuse-port", "--port", str(port), "cli_apps:asgi_fn")
    two = launch(*APP, "--workers", "0", "--reuse-port", "--port", str(port), "cli_apps:asgi_fn")
    pids = {get_json(f"http://127.0.0.1:{port}/")["pid"] for _ in range(40)}
    assert pids <= {one.proc.pid, two.proc.pid}
    assert one.proc.poll() is None and two.proc.poll() is None
    # without --reuse-port the same port cannot be bound a third time
    result = run_cli(*APP, "--port", str(port), "cli_apps:wsgi_fn")
    assert_cli_error(result, str(port))


def test_backlog_option(launch):
    port = free_port()
    launch(*APP, "--backlog", "8", "--port", str(port), "cli_apps:asgi_fn")
    assert get_json(f"http://127.0.0.1:{port}/")["kind"] == "asgi3-function"


# -- systemd socket activation ----------------------------------------------------

ACTIVATE = (
    "import os, sys\n"
    "fds = [int(x) for x in sys.argv[1].split(',')]\n"
    "for i, fd in enumerate(fds):\n"
    "    os.dup2(fd, 3 + i)\n"
    "for fd in fds:\n"
    "    if fd >= 3 + len(fds):\n"
    "        os.close(fd)\n"
    "os.environ['LISTEN_FDS'] = str(len(fds))\n"
    "os.environ['LISTEN_PID'] = sys.argv[2] if sys.argv[2] != 'self' else str(os.getpid())\n"
    "os.execvp(sys.executable, [sys.executable, '-m', 'oneloop', *sys.argv[3:]])\n"
)


def activated(launch, socks, *args, listen_pid="self", **kwargs):
    fds = [s.fileno() for s in socks]
    # the wrapper moves the sockets to fds 3, 4, ...: hand it copies numbered
    # 100 and up so that moving one cannot overwrite another
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
    try:
        return launch(
            "-c",
            ACTIVATE,
            ",".join(map(str, high)),
            listen_pid,
            *args,
            command=[sys.executable],
            pass_fds=tuple(high),
            **kwargs,
        )
    finally:
        for fd in high:
            os.close(fd)


def test_systemd_socket_activation(launch):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = activated(launch, [sock], *APP, "cli_apps:asgi_fn")
    sock.close()
    assert server.serving_urls() == [f"http://127.0.0.1:{port}"]
    info = get_json(f"http://127.0.0.1:{port}/activated")
    assert info["server"] == ["127.0.0.1", port]
    assert server.stop() == 0


def test_systemd_socket_activation_two_sockets(launch, tmp_path):
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(64)
    port = tcp.getsockname()[1]
    path = tmp_path / "activated.sock"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(path))
    unix.listen(16)
    server = activated(launch, [tcp, unix], *APP, "cli_apps:wsgi_fn", count=2)
    tcp.close()
    unix.close()
    assert len(server.serving_urls()) == 2
    assert get_json(f"http://127.0.0.1:{port}/")["SERVER_PORT"] == str(port)
    assert uds_get(path).json()["kind"] == "wsgi-function"


def test_systemd_fds_for_another_process_are_ignored(launch):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = free_port()
    server = activated(
        launch, [sock], *APP, "--port", str(port), "cli_apps:asgi_fn", listen_pid="1"
    )
    sock.close()
    assert server.serving_urls() == [f"http://127.0.0.1:{port}"]
    assert get_json(f"http://127.0.0.1:{port}/")["server"] == ["127.0.0.1", port]


def test_explicit_bind_wins_over_socket_activation(launch):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = free_port()
    server = activated(launch, [sock], *APP, "-b", f"127.0.0.1:{port}", "cli_apps:asgi_fn")
    sock.close()
    assert server.serving_urls() == [f"http://127.0.0.1:{port}"]
