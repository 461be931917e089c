"""Header hygiene between device and backend (RFC 9110 §7.6.1).

Hop-by-hop headers, and any header the Connection header names, are dropped in
both directions; ``Host`` is set by the client session for the backend. EAS
headers (Authorization, MS-ASProtocolVersion, X-MS-PolicyKey, User-Agent, ...)
pass unchanged; Content-Length and Expect never do (see ``framing.py``).
X-Forwarded-For is trusted only when the peer is a configured trusted proxy;
otherwise a device's own X-Forwarded-For is discarded, so a device cannot
forge its address in the backend's logs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["ClientAddress", "downstream_headers", "upstream_headers"]

HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE",
        "Trailer", "Transfer-Encoding", "Upgrade", "Proxy-Connection", "Host",
    )
)  # fmt: skip
_FORWARDING = frozenset(("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"))
# Set again from the body actually forwarded (framing.py), or answered by the
# gateway itself (100-continue): never copied to the backend.
_UPSTREAM_ONLY = frozenset(("content-length", "expect"))


class ClientAddress:
    """Works out the device's address from the peer and trusted proxies."""

    def __init__(self, trusted: Iterable[str]) -> None:
        self._trusted = [ipaddress.ip_network(n, strict=False) for n in trusted]

    def is_trusted(self, addr: str | None) -> bool:
        if not addr or not self._trusted:
            return False
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def chain(self, peer: str | None, xff: str | None) -> list[str]:
        """The X-Forwarded-For chain to send upstream, ending with ``peer``."""
        prior = [a.strip() for a in xff.split(",") if a.strip()] if xff else []
        if not self.is_trusted(peer):
            prior = []
        return [*prior, peer] if peer else prior

    def client(self, peer: str | None, xff: str | None) -> str | None:
        """The device's address: the right-most address not of a trusted proxy."""
        for addr in reversed(self.chain(peer, xff)):
            if not self.is_trusted(addr):
                return addr
        return peer


_DROP_UP = HOP_BY_HOP | _FORWARDING | _UPSTREAM_ONLY


def _dropped(
    headers: CIMultiDictProxy[str] | CIMultiDict[str], always: frozenset[str]
) -> frozenset[str]:
    """``always`` and what the Connection header names (the common case: nothing)."""
    named = headers.getall("Connection", ())
    if not named:
        return always
    return always | {t.strip().lower() for v in named for t in v.split(",")}


def upstream_headers(
    headers: CIMultiDictProxy[str], chain: list[str], proto: str
) -> CIMultiDict[str]:
    """Headers to send to the backend."""
    drop = _dropped(headers, _DROP_UP)
    out: CIMultiDict[str] = CIMultiDict(
        [(k, v) for k, v in headers.items() if k.lower() not in drop]
    )
    if chain:
        out["X-Forwarded-For"] = ", ".join(chain)
    out["X-Forwarded-Proto"] = proto
    return out


def downstream_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Headers to send back to the device."""
    drop = _dropped(headers, HOP_BY_HOP)
    return CIMultiDict([(k, v) for k, v in headers.items() if k.lower() not in drop])
