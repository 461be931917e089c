"""The gateway's two listeners: sites, TLS contexts and the admin application.

Approach. ``sentry.app`` composes the components; what it takes to put them
on the network is here. ``start_site`` starts an ``AppRunner`` behind the
connection gate of ``proxy/connections.py`` (caps, timeouts, TLS) and turns a
bind failure into a ``StartupError`` naming the ``listen`` key; under
``gateway.workers`` it serves the socket the supervisor bound instead.
``server_tls`` builds a listener's server context (recorded on the gateway
for ``sentry.reload``) and shrinks asyncio's per-connection TLS read buffer.
``admin_app`` assembles the admin listener's application: health routes with
the ``/readyz`` checks of ``sentry.readiness``, the API and the optional web
console. ``warn_if_exposed`` logs an admin listener reachable from the
network.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from sentry import tlstickets
from sentry.admin.api import add_api, api_middlewares
from sentry.admin.auth import AdminTokens
from sentry.admin.console import add_console, console_middlewares
from sentry.admin.context import AdminContext
from sentry.admin.health import health_routes
from sentry.certs import server_ssl_context
from sentry.errors import StartupError
from sentry.preflight import resolve
from sentry.proxy.connections import GatedSite
from sentry.proxy.guard import track_phases
from sentry.readiness import readiness_notes, readiness_problems
from sentry.settings import AdminSettings, ListenSettings, TlsSettings
from sentry.worker import WorkerSpec, scrape_registry

if TYPE_CHECKING:
    from sentry.app import Gateway

__all__ = [
    "TLS_READ_BUFFER",
    "admin_app",
    "is_loopback",
    "server_tls",
    "start_site",
    "warn_if_exposed",
]

log = structlog.get_logger("sentry")


async def start_site(
    runner: web.BaseRunner,
    key: str,
    listen: ListenSettings,
    ssl_ctx: Any = None,
    worker: WorkerSpec | None = None,
    **gate: Any,
) -> str:
    """Start ``runner`` on ``listen`` behind a connection gate (caps, timeouts, TLS;
    ``proxy/connections.py``); a bind failure is a ``StartupError`` naming ``key``.
    A worker serves the socket its supervisor bound instead (``sentry.worker``)."""
    host, port = listen.host, listen.port
    await runner.setup()
    sock = None if worker is None else worker.socket(key)
    site = GatedSite(runner, host, port, sock=sock, ssl_context=ssl_ctx, **gate)
    try:
        await site.start()
    except OSError as exc:
        raise StartupError(key, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return site.name


def server_tls(gw: Gateway, key: str, tls: TlsSettings) -> ssl.SSLContext | None:
    """The server context of a listener (files checked by ``preflight``)."""
    if not tls.enabled:
        return None
    _small_tls_buffers()
    ctx = server_ssl_context(resolve(gw.root, tls.cert), resolve(gw.root, tls.key))
    keys = None if gw.worker is None else gw.worker.ticket_keys
    if keys is not None:
        try:
            tlstickets.install(ctx, keys)
        except tlstickets.TicketKeysUnavailable as exc:
            log.warning("tls_ticket_keys_not_shared", listener=key, reason=str(exc))
        else:
            log.info("tls_ticket_keys_shared", listener=key)
    gw.tls[key] = ctx
    return ctx


def is_loopback(host: str) -> bool:
    """Whether a listen address only accepts local connections."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(a: AdminSettings) -> None:
    """A warning when the admin listener is not on loopback (and worse without TLS)."""
    if not is_loopback(a.listen.host):
        log.warning(
            "admin_listen_not_loopback",
            host=a.listen.host,
            tls=a.tls.enabled,
            problem="the admin API is reachable from the network"
            + ("" if a.tls.enabled else " and its token travels in clear (set admin.tls)"),
        )


TLS_READ_BUFFER = 2 * 1024


def _small_tls_buffers() -> None:
    """Give each TLS connection of asyncio's ``SSLProtocol`` (the admin
    listener's; the device listener has its own layer, ``proxy/tlsconn.py``)
    a 2 KiB read buffer instead of 256 KiB.

    Python 3.11's asyncio allocates ``SSLProtocol.max_size`` bytes per TLS
    connection up front; with every device holding a Ping open that is the
    dominant cost (about 300 KiB per held Ping, measured in bench/). For
    aiohttp's protocol (not a buffered one) the buffer is allocated and the
    decrypted bytes are read in chunks of that size (asyncio joins the chunks
    of one read before the protocol sees them): 2 KiB holds a Ping or a
    FolderSync whole, a larger upload is read in more calls (a 16 KiB TLS
    record in eight), and each idle TLS connection is 2 KiB smaller than
    with 4 KiB (26.2 -> 24.2 KiB, ``bench_tlsconn.py``, 2026-12-04; 16 KiB
    cost 12 KiB more per held Ping than 4 KiB). The gateway owns its
    process, so changing this class attribute affects only its own
    connections.
    """
    import asyncio.sslproto

    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


def admin_app(gw: Gateway, ctx: AdminContext) -> web.Application:
    """The admin listener's application: health, API and (when enabled) console."""
    tokens = AdminTokens(gw.token or gw.admin_token, gw.readonly_token)
    console = gw.settings.admin.console
    app = web.Application(
        middlewares=[
            track_phases,
            *api_middlewares(tokens),
            *(console_middlewares() if console.enabled else ()),
        ]
    )
    w = gw.worker
    registry = gw.metrics.registry if w is None else scrape_registry(Path(w.run_dir))
    identity = None if w is None else w.identity
    app.add_routes(health_routes(registry, readiness_problems(gw), readiness_notes(gw), identity))
    add_api(app, ctx)
    if console.enabled:
        add_console(app, ctx, tokens, console, secure=gw.settings.admin.tls.enabled)
    return app
