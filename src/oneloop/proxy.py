"""--proxy-headers: which peers may set X-Forwarded-For / X-Forwarded-Proto, and
which address in the chain is the real client."""

from __future__ import annotations

import ipaddress
from typing import Any


class TrustedProxies:
    def __init__(self, entries: list[str]) -> None:
        self.always = "*" in entries
        self.networks = []
        self.names = set()
        for entry in entries:
            if entry == "*":
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.add(entry)  # e.g. a UNIX socket peer name

    def trusts(self, host: str) -> bool:
        if self.always or host in self.names:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def __call__(
        self, client: Any, forwarded_for: bytes | str | None, forwarded_proto: bytes | str | None
    ):
        """(client, scheme) as the proxy reports them, or None to keep the peer's.

        The client is the right-most address of X-Forwarded-For that is not a
        trusted proxy itself (earlier entries may be forged by the client).
        """
        peer = client[0] if client else ""
        if client is not None and not self.trusts(peer):
            return None
        scheme = None
        if forwarded_proto:
            proto = _text(forwarded_proto).split(",")[-1].strip().lower()
            if proto in ("http", "https", "ws", "wss"):
                scheme = "https" if proto in ("https", "wss") else "http"
        new_client = client
        if forwarded_for:
            hops = [h.strip() for h in _text(forwarded_for).split(",") if h.strip()]
            host = next(
                (h for h in reversed(hops) if not self.trusts(h)), hops[0] if hops else None
            )
            if host:
                new_client = (host, 0)
        return new_client, scheme


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value
