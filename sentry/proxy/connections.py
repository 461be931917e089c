"""Bounded listeners: a connection cap below the descriptor limit, TLS at the gate.

Approach. aiohttp's ``TCPSite`` hands ``loop.create_server`` its ``web.Server``
as the protocol factory and lets asyncio wrap every accepted socket in TLS.
That leaves two holes an attacker with many sockets walks through: nothing
limits how many connections are open (at the descriptor limit ``accept``
fails in a loop and asyncio logs every failure), and a connection still in
its TLS handshake is invisible to the application (no callback reaches the
protocol until the handshake is done, and none at all if it fails).

``GatedSite`` is an aiohttp site whose protocol factory is a
``ConnectionGate``. The gate is called once per accepted socket, *before* any
TLS, so it sees every connection:

* at the cap (``gateway.connections.max``, by default derived from
  ``RLIMIT_NOFILE``: half of what is left after a reserve, because every
  device connection may hold one backend connection) it answers ``503`` on
  a plain listener, or just closes a TLS one (no handshake is spent on a
  refused client), counts ``sentry_connections_refused_total`` and warns at
  most once per interval with the number refused since the last warning;
* otherwise it builds the connection's protocol: on the device listener a
  ``h1server.DeviceConnection`` (the gateway's own HTTP/1.1, parsing with
  the limits of ``gateway.header_limits``), on the admin listener a
  ``GuardedHandler`` (aiohttp's ``RequestHandler``); both keep the guard's
  per-phase clocks. On a TLS listener it wraps that protocol itself, with a
  handshake timeout equal to the header timeout: the device listener's in
  the gateway's own ``tlsconn.TlsConnection`` (5.6 KiB less per held
  connection), the admin listener's in ``asyncio.sslproto.SSLProtocol``.
  The outermost protocol gives the slot back in ``connection_lost``, which
  asyncio calls for every accepted socket, handshake failures included.

``SSLProtocol`` is asyncio's own TLS implementation (the class the event loop
uses for ``create_server(ssl=...)``, constructed the same way); subclassing
it is the one place the gateway leans on an asyncio module without a
leading-underscore-free public name, and ``app.py`` already tunes its read
buffer. The admin listener uses the same gate with its own small cap.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import resource
import socket
import ssl
import time
from typing import Any

import structlog
from aiohttp import web

from sentry.heaptrim import Arrivals
from sentry.observability import Metrics
from sentry.observability.ratelimit import RateLimiter
from sentry.settings import ConnectionSettings, GatewaySettings, HeaderLimitSettings

from .guard import ConnectionLimits, GuardedHandler, track_phases
from .h1request import Limits
from .h1server import DeviceServer
from .tlsconn import TlsConnection

__all__ = [
    "ADMIN_MAX_CONNECTIONS",
    "FD_RESERVE",
    "ConnectionGate",
    "GatedSite",
    "admin_listener",
    "connection_cap",
    "connection_limits",
    "device_listener",
    "parser_limits",
]

log = structlog.get_logger("sentry.connections")

ADMIN_MAX_CONNECTIONS = 64
FD_RESERVE = 128 + ADMIN_MAX_CONNECTIONS  # listeners, store, logs, health checks, admin
SERVICE_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 10\r\nConnection: close\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def connection_limits(c: ConnectionSettings) -> ConnectionLimits:
    """The guard's clocks from ``gateway.connections``."""
    return ConnectionLimits(
        header_timeout=c.header_timeout_seconds,
        idle_timeout=c.idle_timeout_seconds,
        body_timeout=c.body_timeout_seconds,
        body_min_rate=c.body_min_bytes_per_second,
        send_timeout=c.send_timeout_seconds,
    )


def connection_cap(configured: int | None, reserve: int = FD_RESERVE) -> tuple[int, int]:
    """(cap, the cap the descriptor limit allows): ``configured`` or the
    safe value, never above the safe value."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    safe = max(1, (soft - reserve) // 2)
    return (safe if configured is None else min(configured, safe)), safe


def device_listener(
    g: GatewaySettings, metrics: Metrics, arrivals: Arrivals | None = None
) -> dict[str, Any]:
    """``GatedSite`` arguments of the device listener (TLS context apart);
    ``arrivals`` counts its accepted connections (``sentry.heaptrim``)."""
    cap, safe = connection_cap(g.connections.max)
    if g.connections.max is not None and g.connections.max > safe:
        log.warning("connections_max_lowered", configured=g.connections.max, max=cap)
    return {
        "limits": connection_limits(g.connections),
        "max_connections": cap,
        "metrics": metrics,
        "listener": "devices",
        "arrivals": arrivals,
    }


def admin_listener(g: GatewaySettings, metrics: Metrics) -> dict[str, Any]:
    """``GatedSite`` arguments of the admin listener (same clocks, small cap)."""
    return {
        "limits": connection_limits(g.connections),
        "max_connections": ADMIN_MAX_CONNECTIONS,
        "metrics": metrics,
        "listener": "admin",
    }


def parser_limits(h: HeaderLimitSettings) -> Limits:
    """The device listener's parser limits: ``gateway.header_limits``, exactly."""
    return Limits(request_line=h.request_line_bytes, field=h.field_bytes, fields=h.fields)


class _TlsConnection(asyncio.sslproto.SSLProtocol):
    """asyncio's server-side TLS protocol, giving the gate's slot back when closed."""

    def __init__(
        self, gate: ConnectionGate, app: asyncio.Protocol, context: ssl.SSLContext
    ) -> None:
        super().__init__(
            asyncio.get_running_loop(),
            app,
            context,
            None,  # type: ignore[arg-type]  # no waiter, as asyncio's own server passes
            server_side=True,
            ssl_handshake_timeout=gate.limits.header_timeout,  # type: ignore[arg-type]  # float ok
        )
        self._gate = gate
        # asyncio's backlog of writes waiting for the handshake, as a list: it
        # appends, reads [0], deletes [0] and clears; an empty deque is 624
        # bytes per connection, an empty list 56
        self._write_backlog = []  # type: ignore[assignment]

    def connection_lost(self, exc: BaseException | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self._gate.release()


class _Refused(asyncio.Protocol):
    def __init__(self, answer: bytes) -> None:
        self.answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self.answer:
            transport.write(self.answer)
        transport.close()


class ConnectionGate:
    """The protocol factory of a listener: cap, count, TLS (module comment)."""

    def __init__(
        self,
        server: web.Server | DeviceServer,
        *,
        limits: ConnectionLimits,
        max_connections: int,
        metrics: Metrics,
        listener: str,
        ssl_context: ssl.SSLContext | None = None,
        handler_args: dict[str, Any] | None = None,
        arrivals: Arrivals | None = None,
    ) -> None:
        self.server = server
        self.arrivals = Arrivals() if arrivals is None else arrivals
        self.limits = limits
        self.max_connections = max_connections
        self.ssl_context = ssl_context
        self.listener = listener
        self.open = 0
        self._metrics = metrics
        self._open_gauge = metrics.connections_open.labels(listener)
        self._refused = metrics.connections_refused.labels(listener)
        self._handler_args = {"access_log": None, **(handler_args or {})}
        self._loop = asyncio.get_running_loop()
        self._reports = RateLimiter(interval=10.0, burst=5)
        metrics.connections_max.labels(listener).set(max_connections)

    def __call__(self) -> asyncio.BaseProtocol:
        if self.open >= self.max_connections:
            return self._refuse()
        self.open += 1
        self.arrivals.count += 1
        self._open_gauge.inc()
        tls = self.ssl_context
        server = self.server
        if isinstance(server, DeviceServer):
            device = server.connection(self, outermost=tls is None)
            return device if tls is None else TlsConnection(self, device, tls)
        handler = GuardedHandler(
            self, server, outermost=tls is None, loop=self._loop, **self._handler_args
        )
        return handler if tls is None else _TlsConnection(self, handler, tls)

    def release(self) -> None:
        self.open -= 1
        self._open_gauge.dec()

    def _refuse(self) -> asyncio.Protocol:
        self._refused.inc()
        self._report("connections_refused", level="warning", open=self.open)
        return _Refused(b"" if self.ssl_context is not None else SERVICE_UNAVAILABLE)

    def timed_out(self, phase: str) -> None:
        self._metrics.connection_timeouts.labels(self.listener, phase).inc()
        if phase != "idle":  # idle keep-alive connections time out all day long
            self._report("connection_timeout", phase=phase)

    def tls_failed(self, reason: str, kind: str = "tls:handshake") -> None:
        """A TLS handshake that failed, or a record that did not decrypt
        (``tls:record``; ``tlsconn.py``): counted, logged at most once per
        interval per kind."""
        self._metrics.bad_requests.labels(kind).inc()
        event = "tls_handshake_failed" if kind == "tls:handshake" else "tls_record_failed"
        self._report(event, kind=kind, reason=reason)

    def bad_http(self, kind: str, reason: str) -> None:
        self._metrics.bad_requests.labels(f"http:{kind}").inc()
        self._report("bad_http", kind=kind, reason=reason)

    def _report(self, event: str, level: str = "info", **fields: Any) -> None:
        """Log ``event`` at most once per interval per kind, with the count skipped."""
        key = (event, fields.get("phase"), fields.get("kind"))
        allowed, suppressed = self._reports.allow(key, time.monotonic())
        if allowed:
            getattr(log, level)(event, listener=self.listener, suppressed=suppressed, **fields)


BACKLOG = 4096
"""Pending connections the kernel queues for a listener (capped by
``net.core.somaxconn``). aiohttp's 128 drops the SYNs of a reconnect storm
(every phone behind a network blip at once): they are retried after 1, 3, 7 s.
At 1024, a storm of 10,000 TLS reconnects on two workers still overflowed the
queues 4,245 times (``TcpExtListenOverflows``: the loop accepts while it does
handshakes); at 4096, none did. The supervisor binds its workers' shared
sockets with the same value."""


class GatedSite(web.BaseSite):
    """A TCP site whose connections go through a ``ConnectionGate``."""

    __slots__ = ("_gate_args", "_host", "_port", "_sock", "gate")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        sock: socket.socket | None = None,
        **gate_args: Any,
    ) -> None:
        """``sock``: an already bound socket to serve instead of binding
        ``host:port`` (a worker's inherited listener, ``sentry.supervisor``)."""
        super().__init__(runner, backlog=BACKLOG)
        self._host, self._port, self._sock = host, port, sock
        self._gate_args = gate_args
        self.gate: ConnectionGate | None = None

    @property
    def name(self) -> str:
        scheme = "https" if self._gate_args.get("ssl_context") else "http"
        shown = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{shown}:{self.port}"

    @property
    def port(self) -> int:
        if self._server is not None and getattr(self._server, "sockets", None):
            return int(self._server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        return self._port

    async def start(self) -> None:
        server = self._runner.server
        assert server is not None, "runner.setup() first"
        app = getattr(self._runner, "app", None)
        if app is None and not isinstance(server, DeviceServer):
            raise RuntimeError("a gated listener serves an application or a DeviceServer")
        if app is not None and track_phases not in app.middlewares:
            raise RuntimeError("a gated listener's app needs the track_phases middleware")
        await super().start()
        self.gate = ConnectionGate(server, **self._gate_args)
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._server = await loop.create_server(
                self.gate, sock=self._sock, backlog=self._backlog
            )
        else:
            self._server = await loop.create_server(
                self.gate, self._host, self._port, backlog=self._backlog
            )
