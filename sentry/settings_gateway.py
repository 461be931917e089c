"""Settings of the two listeners: the ``gateway`` and ``admin`` sections (part of ``settings``).

Approach. As in ``settings_directory``: the sections are frozen dataclasses
like every other section; ``settings`` builds them and calls
``gateway_problems`` for the checks types cannot express (and
``workers_problems`` for ``gateway.workers`` against the other sections),
turning the first ``(key path, problem)`` into a ``SettingsError``. This
module imports nothing from ``settings`` (``Settings`` only for an
annotation) so that the two cannot form a cycle.

``gateway`` is the device listener: where it listens (``listen``, ``tls``),
the bounds on every device connection (``connections``, ``header_limits``;
see ``sentry.proxy.connections``), how a backend's 451 redirect is followed
(``redirects``) and the request-level limits of ``GatewaySettings`` itself.
``admin`` is the admin listener (the same ``listen`` and ``tls`` shapes), its
token files and the web console on it (``console``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from sentry.settings import Settings

__all__ = [
    "MAX_WORKERS",
    "AdminSettings",
    "ConnectionSettings",
    "ConsoleSettings",
    "GatewaySettings",
    "HeaderLimitSettings",
    "ListenSettings",
    "RedirectSettings",
    "TlsSettings",
    "gateway_problems",
    "positive_problems",
    "workers_problems",
]

MAX_WORKERS = 64


@dataclass(frozen=True)
class ListenSettings:
    host: str = "127.0.0.1"
    port: int = 8443


@dataclass(frozen=True)
class TlsSettings:
    enabled: bool = True
    cert: str = "certs/sentry.pem"
    key: str = "certs/sentry.key"


@dataclass(frozen=True)
class ConnectionSettings:
    """Bounds on every device connection (see ``sentry.proxy.connections``)."""

    header_timeout_seconds: float = 20.0  # accept or first byte -> end of the head
    idle_timeout_seconds: float = 75.0  # keep-alive: end of a response -> next first byte
    body_timeout_seconds: float = 20.0  # no body byte for this long -> closed
    body_min_bytes_per_second: int = 500  # average body rate after the first timeout
    send_timeout_seconds: float = 60.0  # the device reads nothing of a response this long
    max: int | None = None  # concurrent connections; None: from RLIMIT_NOFILE
    heap_trim_after: int = 1000  # new connections, then malloc_trim once the burst ends; 0: never


@dataclass(frozen=True)
class HeaderLimitSettings:
    """Request head limits, applied to aiohttp's parser and checked exactly."""

    request_line_bytes: int = 8192  # method, target and version (without CRLF)
    field_bytes: int = 16384  # one header field: name plus value
    fields: int = 100  # number of header fields


@dataclass(frozen=True)
class RedirectSettings:
    """How the gateway follows a backend's 451 redirect (README "Redirects")."""

    max_hops: int = 2
    cache_ttl_seconds: float = 86400.0
    cache_max_entries: int = 100_000
    retry_after_seconds: int = 5


@dataclass(frozen=True)
class GatewaySettings:
    fqdn: str = "localhost"
    listen: ListenSettings = ListenSettings()
    tls: TlsSettings = TlsSettings()
    trusted_proxies: tuple[str, ...] = ()
    max_request_bytes: int = 50 * 1024 * 1024
    request_timeout_seconds: float = 120.0
    long_poll_margin_seconds: float = 90.0
    max_heartbeat_seconds: int = 3540
    shutdown_grace_seconds: float = 5.0
    workers: int = 1  # processes serving the listeners (sentry.supervisor); >1 needs postgresql
    event_loop: Literal["asyncio", "uvloop"] = "asyncio"  # uvloop: measured in bench/ (README)
    connections: ConnectionSettings = ConnectionSettings()
    header_limits: HeaderLimitSettings = HeaderLimitSettings()
    redirects: RedirectSettings = RedirectSettings()


@dataclass(frozen=True)
class ConsoleSettings:
    """The admin web console on the admin listener (``sentry.admin.console``)."""

    enabled: bool = True
    session_idle_seconds: float = 1800.0  # a session unused this long is signed out
    session_max_seconds: float = 43200.0  # and every session ends this long after sign-in
    max_sessions: int = 1000  # beyond: the oldest session ends


@dataclass(frozen=True)
class AdminSettings:
    listen: ListenSettings = ListenSettings(port=9090)
    token_file: str = "var/admin-token"
    readonly_token_file: str | None = None  # a second token that can read, never change
    tls: TlsSettings = TlsSettings(enabled=False)  # same files as the device listener
    console: ConsoleSettings = ConsoleSettings()


Problems = list[tuple[str, str]]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def positive_problems(path: str, value: float | None, *, allow_zero: bool = False) -> Problems:
    """``[(path, problem)]`` when ``value`` is below 0 (or 0 without ``allow_zero``)."""
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        return [(path, f"must be {'≥ 0' if allow_zero else '> 0'}")]
    return []


def gateway_problems(obj: object, path: str) -> Problems:
    """What is wrong with ``obj``, a section of this module at ``path``
    (``(key path, problem)``, in the order checked; empty: nothing)."""
    if isinstance(obj, ListenSettings) and not 0 <= obj.port <= 65535:
        return [(_join(path, "port"), "must be 0-65535")]
    if isinstance(obj, GatewaySettings):
        return _gateway(obj, path)
    if isinstance(obj, ConnectionSettings):
        return _connections(obj, path)
    if isinstance(obj, HeaderLimitSettings):
        return _header_limits(obj, path)
    if isinstance(obj, RedirectSettings):
        return _redirects(obj, path)
    if isinstance(obj, ConsoleSettings):
        return _console(obj, path)
    if isinstance(obj, AdminSettings) and obj.readonly_token_file is not None:
        return _readonly_token(obj, path)
    return []


def _gateway(g: GatewaySettings, path: str) -> Problems:
    out: Problems = []
    for i, cidr in enumerate(g.trusted_proxies):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            out.append((f"{_join(path, 'trusted_proxies')}[{i}]", "not an IP network"))
    out += positive_problems(_join(path, "max_request_bytes"), g.max_request_bytes)
    out += positive_problems(_join(path, "request_timeout_seconds"), g.request_timeout_seconds)
    margin = g.long_poll_margin_seconds
    out += positive_problems(_join(path, "long_poll_margin_seconds"), margin, allow_zero=True)
    if not 60 <= g.max_heartbeat_seconds <= 3540:
        out.append((_join(path, "max_heartbeat_seconds"), "must be 60-3540"))
    if not 1 <= g.workers <= MAX_WORKERS:
        out.append((_join(path, "workers"), f"must be 1-{MAX_WORKERS}"))
    return out


def _connections(c: ConnectionSettings, path: str) -> Problems:
    out: Problems = []
    for name in ("header", "idle", "body", "send"):
        key = f"{name}_timeout_seconds"
        out += positive_problems(_join(path, key), getattr(c, key))
    rate = c.body_min_bytes_per_second
    out += positive_problems(_join(path, "body_min_bytes_per_second"), rate, allow_zero=True)
    out += positive_problems(_join(path, "max"), c.max)
    out += positive_problems(_join(path, "heap_trim_after"), c.heap_trim_after, allow_zero=True)
    return out


def _header_limits(h: HeaderLimitSettings, path: str) -> Problems:
    out: Problems = []
    if not 64 <= h.request_line_bytes <= 65536:
        out.append((_join(path, "request_line_bytes"), "must be 64-65536"))
    if not 256 <= h.field_bytes <= 262144:
        out.append((_join(path, "field_bytes"), "must be 256-262144"))
    if not 8 <= h.fields <= 1000:
        out.append((_join(path, "fields"), "must be 8-1000"))
    return out


def _redirects(r: RedirectSettings, path: str) -> Problems:
    out: Problems = []
    if not 1 <= r.max_hops <= 10:
        out.append((_join(path, "max_hops"), "must be 1-10"))
    out += positive_problems(_join(path, "cache_ttl_seconds"), r.cache_ttl_seconds)
    out += positive_problems(_join(path, "cache_max_entries"), r.cache_max_entries)
    out += positive_problems(_join(path, "retry_after_seconds"), r.retry_after_seconds)
    return out


def _console(c: ConsoleSettings, path: str) -> Problems:
    out = positive_problems(_join(path, "session_idle_seconds"), c.session_idle_seconds)
    out += positive_problems(_join(path, "session_max_seconds"), c.session_max_seconds)
    out += positive_problems(_join(path, "max_sessions"), c.max_sessions)
    return out


def _readonly_token(a: AdminSettings, path: str) -> Problems:
    key = _join(path, "readonly_token_file")
    readonly = (a.readonly_token_file or "").strip()
    if not readonly:
        return [(key, "must not be empty (leave it out for no read-only token)")]
    if Path(readonly) == Path(a.token_file):
        return [(key, "must not be admin.token_file (a second, separate file)")]
    return []


def workers_problems(s: Settings) -> Problems:
    """Several worker processes share one state only through PostgreSQL: a
    SQLite file has one owner (the gateway holds a lock on it) and a memory
    store would be one separate state per process. The web console keeps its
    sign-ins in the process that made them, and the admin port is shared."""
    if s.gateway.workers == 1:
        return []
    if s.store.kind != "postgresql":
        why = {
            "sqlite": "a SQLite file is owned by one process",
            "memory": "a memory store would be a separate state in each process",
        }[s.store.kind]
        problem = (
            f"must be 1 with store.kind: {s.store.kind} ({why}); "
            "several workers share their state through store.kind: postgresql"
        )
        return [("gateway.workers", problem)]
    if s.demo.enabled:
        problem = (
            "must be false with gateway.workers > 1 (every worker would start "
            "the demo backends on the same ports)"
        )
        return [("demo.enabled", problem)]
    if s.admin.console.enabled:
        problem = (
            "must be false with gateway.workers > 1 (console sign-ins "
            "live in one process and the admin port is shared by all workers; the admin API, "
            "/metrics and /readyz work on every worker)"
        )
        return [("admin.console.enabled", problem)]
    return []
