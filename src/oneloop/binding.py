"""Listening sockets: --host/--port, --uds, --fd, -b HOST:PORT | unix:PATH |
fd://N, systemd socket activation, and the TLS context."""

from __future__ import annotations

import os
import socket
import ssl
import stat
from dataclasses import dataclass
from typing import Any

from . import _core
from .config import Config, ConfigError
from .logs import error_log


@dataclass
class Listener:
    sock: socket.socket
    server_addr: Any  # scope["server"]: (host, port) or (path, None)
    ssl_context: ssl.SSLContext | None
    is_unix: bool
    url: str
    created_path: str | None = None  # a UNIX socket file this process made
    inherited: bool = False  # given by --fd or systemd, not bound here

    def core_tuple(self) -> tuple:
        return (self.sock, self.server_addr, self.ssl_context, self.is_unix)

    def refuse_new(self) -> None:
        """The whole server stops: no new connection may arrive, so that the
        workers can take what is queued and nothing is left in the queue to
        be reset when the socket closes (a client refused has sent nothing
        and may go elsewhere). A TCP socket gets a filter that stops new
        handshakes in every process holding it; a UNIX socket file of ours
        is removed. A socket we were given (--fd, systemd) is left alone:
        whoever gave it holds it, and its queue outlives us."""
        if self.inherited:
            return
        if self.is_unix:
            self._remove_file()
            return
        try:
            _core.refuse_connections(self.sock)
        except OSError as exc:
            error_log.warning(
                "%s: new connections not refused (%s); queued ones may be reset", self.url, exc
            )

    def close(self, remove_file: bool = True) -> None:
        """Close the socket; remove a UNIX socket file we created (never one
        inherited through --fd or systemd). Workers of a supervisor close
        their copies with remove_file=False: the file is the supervisor's,
        and other workers go on serving on it."""
        self.sock.close()
        if remove_file:
            self._remove_file()

    def _remove_file(self) -> None:
        path, self.created_path = self.created_path, None
        if path:
            try:
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    os.unlink(path)
            except OSError:
                pass


def parse_address(spec: str) -> tuple[str, Any]:
    """('tcp', (host, port)) | ('unix', path) | ('fd', n) for a --bind value."""
    if spec.startswith("unix:"):
        path = spec[5:]
        if not path:
            raise ConfigError(f"--bind {spec!r}: empty UNIX socket path")
        return "unix", path
    if spec.startswith("fd://"):
        try:
            return "fd", int(spec[5:])
        except ValueError:
            raise ConfigError(f"--bind {spec!r}: fd:// needs a number") from None
    if spec.startswith("["):
        host, sep, port = spec[1:].partition("]")
        if not sep:
            raise ConfigError(f"--bind {spec!r}: unbalanced '['")
        port = port.lstrip(":")
    elif spec.count(":") == 1:
        host, port = spec.split(":")
    elif ":" in spec:  # a bare IPv6 address
        host, port = spec, ""
    else:
        host, port = spec, ""
    try:
        number = int(port) if port else 8000
    except ValueError:
        raise ConfigError(f"--bind {spec!r}: port {port!r} is not a number") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"--bind {spec!r}: port {number} out of range")
    return "tcp", (host or "0.0.0.0", number)


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    """Password callback when none was given: never prompt on the terminal."""
    raise _EncryptedKey


def make_ssl_context(config: Config) -> ssl.SSLContext | None:
    if not config.ssl_certfile:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    password = config.ssl_keyfile_password or _no_password
    for option, path in (
        ("--ssl-certfile", config.ssl_certfile),
        ("--ssl-keyfile", config.ssl_keyfile),
        ("--ssl-ca-certs", config.ssl_ca_certs),
    ):
        if path and not os.path.isfile(path):
            raise ConfigError(f"cannot set up TLS: {option} {path}: no such file")
    try:
        ctx.load_cert_chain(config.ssl_certfile, config.ssl_keyfile, password)
        if config.ssl_ca_certs:
            ctx.load_verify_locations(config.ssl_ca_certs)
        if config.ssl_ciphers:
            ctx.set_ciphers(config.ssl_ciphers)
    except _EncryptedKey:
        raise ConfigError(
            "cannot set up TLS: the private key is encrypted; give --ssl-keyfile-password"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot set up TLS: {_explain_tls_error(config, exc)}") from exc
    ctx.verify_mode = {
        "none": ssl.CERT_NONE,
        "optional": ssl.CERT_OPTIONAL,
        "required": ssl.CERT_REQUIRED,
    }[config.ssl_cert_reqs]
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _explain_tls_error(config: Config, exc: Exception) -> str:
    """OpenSSL's "[SSL] PEM lib" names neither the file nor the problem:
    look at the files and say which holds what is missing."""
    key_path = config.ssl_keyfile or config.ssl_certfile

    def holds(path: str, marker: bytes) -> bool:
        try:
            with open(path, "rb") as f:
                return marker in f.read()
        except OSError:
            return True  # unreadable: let OpenSSL's message stand

    if not holds(config.ssl_certfile, b"-----BEGIN CERTIFICATE-----"):
        return f"--ssl-certfile {config.ssl_certfile} holds no PEM certificate"
    if not holds(key_path, b"PRIVATE KEY-----"):
        if config.ssl_keyfile:
            return f"--ssl-keyfile {key_path} holds no PEM private key"
        return f"--ssl-certfile {key_path} holds no private key: give --ssl-keyfile"
    if "KEY_VALUES_MISMATCH" in str(exc):
        return f"the private key in {key_path} does not match the certificate in " + str(
            config.ssl_certfile
        )
    return str(exc)


def _tcp(host: str, port: int, config: Config) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if config.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(config.backlog)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def _unix(path: str, config: Config) -> socket.socket:
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)  # a stale socket from an earlier run
        else:
            raise ConfigError(f"cannot listen on unix:{path}: the path exists and is not a socket")
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        # Connecting needs write permission: a proxy running as another
        # user (nginx as www-data) must be able to (uvicorn's and gunicorn's
        # sockets are world-writable too). --umask narrows it.
        os.chmod(path, 0o666 & ~(config.umask or 0))
        sock.listen(config.backlog)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on unix:{path}: {exc.strerror}") from None
    return sock


def _from_fd(fd: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise OSError(exc.errno, f"fd {fd} is not a usable socket: {exc.strerror}") from None
    if sock.type != socket.SOCK_STREAM:
        raise ConfigError(f"fd {fd} is not a stream socket")
    # Forked workers share it; programs the app runs must not.
    sock.set_inheritable(False)
    return sock


def describe_socket(
    sock: socket.socket, ssl_context: ssl.SSLContext | None
) -> tuple[Any, bool, str]:
    if sock.family == socket.AF_UNIX:
        path = sock.getsockname()
        path = path.decode() if isinstance(path, bytes) else path
        return (path, None), True, f"unix:{path}"
    host, port = sock.getsockname()[:2]
    scheme = "https" if ssl_context else "http"
    shown = f"[{host}]" if ":" in host else host
    return (host, port), False, f"{scheme}://{shown}:{port}"


def _specs(config: Config) -> list[tuple[str, Any]]:
    if config.bind:
        return [parse_address(b) for b in config.bind]
    if config.uds:
        return [("unix", config.uds)]
    if config.fd is not None:
        return [("fd", config.fd)]
    listen_fds = systemd_fds()
    if listen_fds:
        return [("fd", fd) for fd in listen_fds]
    return [("tcp", (config.host, config.port))]


def systemd_fds() -> list[int]:
    """Sockets passed by systemd socket activation (LISTEN_FDS), if meant for
    us. The variables are then removed, as sd_listen_fds(1) does: they are
    not meant for the processes the app starts."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return list(range(3, 3 + count))


def open_listeners(config: Config) -> list[Listener]:
    ssl_context = make_ssl_context(config)
    listeners: list[Listener] = []
    try:
        for kind, where in _specs(config):
            if kind == "tcp":
                sock = _tcp(where[0], where[1], config)
            elif kind == "unix":
                sock = _unix(where, config)
            else:
                sock = _from_fd(where)
            sock.setblocking(False)
            addr, is_unix, url = describe_socket(sock, ssl_context)
            created = where if kind == "unix" else None
            listeners.append(
                Listener(sock, addr, ssl_context, is_unix, url, created, inherited=kind == "fd")
            )
    except BaseException:
        for listener in listeners:
            listener.sock.close()
        raise
    return listeners
