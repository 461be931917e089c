"""Composition root: build every component from the settings and run the sites.

``start_gateway`` is used by ``sentry run``, by the tests (port 0, read back)
and by bench/. It first checks every file the configuration points at
(``preflight``: certificates, log file, store path, token; a problem is a
``StartupError`` naming its key), then opens the store (a ``StoreOpenError``,
also a ``StartupError`` naming ``store.path``, when the file cannot be used:
locked by another gateway, damaged, read-only...), puts it under watch
(``store_watch``: a store that stops keeping changes durably makes the gateway
"registry unreachable" and not ready) and loads the snapshot,
makes the pools and routing of the configuration current in it (the
configuration is the source of truth for backends; each preference an admin
set survives restarts, the others follow the file; the ``preferences`` start
event says which came from where), re-keys the stored principals when the
configured realms changed (rows that collapse into one key are merged and
logged; users that would collapse stop the start with a ``StartupError`` on
``identity.realms``) and derives the established backend types rows from
before they were recorded lack (``_reconcile_identity``), starts the upstream
sessions and health checks, the optional demo backends, the device listener
(TLS unless disabled) and the admin listener (TLS optional; a warning when it
is not on loopback). ``Gateway.stop`` shuts down gracefully: stop accepting,
end held polls cleanly, flush state. ``run`` serves until SIGTERM/SIGINT and
reloads on SIGHUP (``sentry.reload``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from sentry.access import AccessState
from sentry.admin.api import SERVER_LIMITS, add_api, api_middlewares
from sentry.admin.auth import AdminTokens
from sentry.admin.console import add_console, console_middlewares
from sentry.admin.context import AdminContext
from sentry.admin.health import health_routes
from sentry.admin.token import TokenFile
from sentry.aio import create_task
from sentry.buildinfo import version
from sentry.certs import server_ssl_context
from sentry.cluster import Follower
from sentry.directory.service import DirectorySync
from sentry.errors import StartupError
from sentry.files import loose_mode
from sentry.model import Pool, Preferences, Realms, Routing
from sentry.observability import Metrics, configure_logging
from sentry.observability.logging import LogFile
from sentry.policy import (
    AppendHistory,
    ConflictError,
    PutAssociation,
    PutPool,
    PutPreferences,
    PutRealms,
    PutRouting,
    Snapshot,
    affected_keys,
    realm_changes,
    refresh,
)
from sentry.policy.audit import plain
from sentry.policy.changes import Change
from sentry.policy.established import missing_types
from sentry.policy.prefs import effective, file_preferences, sources
from sentry.preflight import preflight, resolve
from sentry.proxy.app import build_proxy_app
from sentry.proxy.authn import Authenticator
from sentry.proxy.connections import GatedSite, admin_listener, device_listener
from sentry.proxy.guard import track_phases
from sentry.proxy.handler import ProxyContext
from sentry.proxy.headers import ClientAddress
from sentry.proxy.redirects import RedirectCache, Redirector
from sentry.proxy.upstream import Upstreams
from sentry.settings import ListenSettings, PreferenceSettings, Settings, TlsSettings
from sentry.store.base import Store, StoreOpenError, StoreUnavailable
from sentry.store.factory import open_and_load, store_key, store_path, store_where
from sentry.store.postgres import PostgresStore
from sentry.store_watch import WatchedStore

__all__ = [
    "Gateway",
    "config_changes",
    "demo_banner",
    "is_loopback",
    "preferences_of",
    "run",
    "start_gateway",
]

log = structlog.get_logger("sentry")


@dataclass
class Gateway:
    """A running gateway and the handles to stop it."""

    settings: Settings
    metrics: Metrics
    store: WatchedStore
    state: AccessState
    upstreams: Upstreams
    proxy_url: str = ""
    admin_url: str = ""
    admin_token: str = ""
    runners: list[web.AppRunner] = field(default_factory=list)
    demo: list[Any] = field(default_factory=list)
    admin_app: web.Application | None = None
    root: Path = Path(".")
    token: TokenFile | None = None
    readonly_token: TokenFile | None = None  # admin.readonly_token_file
    tls: dict[str, ssl.SSLContext] = field(default_factory=dict)  # "gateway.tls"/"admin.tls"
    log_file: LogFile | None = None
    reloading: asyncio.Lock = field(default_factory=asyncio.Lock)
    authn: Authenticator | None = None
    redirect_cache: RedirectCache = field(default_factory=RedirectCache)
    directory: DirectorySync | None = None
    follower: Follower | None = None  # several nodes on one PostgreSQL (sentry.cluster)

    async def stop(self) -> None:
        """Graceful shutdown: stop accepting, end held polls, flush state."""
        if self.directory is not None:
            await self.directory.close()
        ended = self.state.longpolls.cancel_all()
        log.info("shutdown", held_polls_ended=ended)
        for runner in self.runners:
            await runner.shutdown()
        for runner in self.runners:
            await runner.cleanup()
        await self.upstreams.close()
        if self.authn is not None:
            await self.authn.close()
        if self.follower is not None:
            await self.follower.close()
        await self.state.close()
        await self.store.close()
        for backend in self.demo:
            await backend.stop()


def config_changes(settings: Settings, stored: Preferences) -> list[Change]:
    """Pools and routing from the configuration, as changes to the snapshot; and
    the preferences that apply (``sentry.policy.prefs.effective``): each one an
    administrator set keeps its stored value, every other one takes the file's
    (the built-in default where the file is silent)."""
    changes: list[Change] = [
        PutPool(Pool(p.name, p.type, tuple(p.servers))) for p in settings.pools
    ]
    r = settings.routing
    changes.append(
        PutRouting(Routing(users=dict(r.users), domains=dict(r.domains), default=r.default))
    )
    wanted = effective(stored, preferences_of(settings.preferences))
    if wanted != stored:
        changes.append(PutPreferences(wanted))
    return changes


async def _reconcile_identity(store: Store, snapshot: Snapshot, realms: Realms, now: float) -> None:
    """Re-key under the configured realms, then derive missing backend types;
    each step is one transaction followed by the decisions it moved."""
    try:
        rekey = realm_changes(snapshot, realms, now)
    except ConflictError as exc:
        raise StartupError("identity.realms", exc.message) from None
    if rekey:
        await _apply_and_refresh(store, snapshot, rekey, now)
        rows = [c.association.key for c in rekey if isinstance(c, PutAssociation)]
        for change in rekey:
            if isinstance(change, AppendHistory) and change.event.detail.get("merged"):
                log.warning("associations_merged", key=list(change.key), merged=change.event.detail)
        if len(rekey) > 1:  # more than recording the realms: something moved
            names = [r.name for r in realms.realms]
            log.info("principals_rekeyed", realms=names, rows=len(rows))
    derived = missing_types(snapshot, now)
    if derived:
        await _apply_and_refresh(store, snapshot, derived, now)
        log.info("backend_types_derived", scopes=len(derived))


async def _apply_and_refresh(
    store: Store, snapshot: Snapshot, changes: Sequence[Change], now: float
) -> None:
    keys = affected_keys([c for c in changes if not isinstance(c, PutRealms)], snapshot)
    await store.apply(changes)
    snapshot.apply(changes)
    moved = refresh(keys, snapshot, now)
    await store.apply(moved)
    snapshot.apply(moved)


def preferences_of(p: PreferenceSettings) -> Preferences:
    """The model's preferences from the configuration section."""
    return file_preferences(p)[0]


def _log_preferences(settings: Settings, prefs: Preferences) -> None:
    """One start event: every preference's value and where it came from."""
    _, given = file_preferences(settings.preferences)
    values = plain(prefs)
    log.info(
        "preferences",
        **{
            name: {"value": values[name], "source": source.value}
            for name, source in sources(prefs, given).items()
        },
    )


async def _start_demo(settings: Settings, gw: Gateway) -> None:
    from sentry.testing.backend import start_backend
    from sentry.testing.demo_cli import parse_users
    from sentry.testing.state import BackendConfig

    types = {p.name: p.type for p in settings.pools}
    for b in settings.demo.backends:
        config = BackendConfig(
            backend_type=types[b.pool],
            mailboxes=parse_users(b.users),
            seed_messages=b.messages,
            min_heartbeat=settings.demo.min_heartbeat_seconds,
        )
        gw.demo.append(await start_backend(config, "127.0.0.1", b.port, access_log=False))


async def _site(
    runner: web.AppRunner, key: str, listen: ListenSettings, ssl_ctx: Any = None, **gate: Any
) -> str:
    """Start ``runner`` on ``listen`` behind a connection gate (caps, timeouts, TLS;
    ``proxy/connections.py``); a bind failure is a ``StartupError`` naming ``key``."""
    host, port = listen.host, listen.port
    await runner.setup()
    site = GatedSite(runner, host, port, ssl_context=ssl_ctx, **gate)
    try:
        await site.start()
    except OSError as exc:
        raise StartupError(key, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return site.name


async def start_gateway(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.time,
    root: Path = Path("."),
    touch_flush: bool = True,
) -> Gateway:
    """Build and start everything; ports 0 in the settings are read back.

    ``touch_flush=False`` starts no periodic last-seen flush (the test harness
    writes them on demand with ``state.flush_touches()``; ``stop`` still does).
    A problem with a configured file or listener raises ``StartupError``."""
    report = preflight(settings, root, create=True)
    report.raise_first()
    for made in report.generated:
        log.info("certificate_generated", file=made, fqdn=settings.gateway.fqdn)
    for warning in report.warnings:
        log.warning("startup_warning", problem=warning)
    metrics = Metrics(registry or CollectorRegistry())
    opened, snapshot = await open_and_load(settings.store, root=root)
    changes = config_changes(settings, snapshot.prefs)
    await _apply_at_start(opened, changes, settings, root)
    snapshot.apply(changes)
    try:
        await _reconcile_identity(opened, snapshot, settings.identity.to_realms(), clock())
    except BaseException:
        await opened.close()
        raise
    _log_preferences(settings, snapshot.prefs)
    store = WatchedStore(
        opened, metrics, interval=settings.store.check_interval_seconds, clock=clock
    )
    state = AccessState(
        store,
        snapshot,
        metrics,
        clock=clock,
        touch_flush_seconds=settings.store.touch_flush_seconds if touch_flush else None,
        unverified_expiry_seconds=settings.store.unverified_expiry_seconds,
    )
    upstreams = Upstreams(settings.pools, metrics, clock=clock)
    r = settings.gateway.redirects
    cache = RedirectCache(
        r.cache_ttl_seconds, r.cache_max_entries, on_change=metrics.redirect_cache_entries.set
    )
    gw = Gateway(settings, metrics, store, state, upstreams, redirect_cache=cache, root=root)
    if isinstance(opened, PostgresStore):
        gw.follower = Follower(
            state,
            opened,
            metrics,
            view=opened.loaded or 0,
            poll_interval=settings.store.feed_poll_seconds,
            clock=clock,
        )
    try:
        await _start_parts(settings, gw, root)
    except BaseException:
        await gw.stop()
        raise
    return gw


async def _apply_at_start(
    store: Store, changes: list[Change], settings: Settings, root: Path
) -> None:
    """The configuration's changes; a store that cannot take them cannot start."""
    try:
        await store.apply(changes)
    except StoreUnavailable as exc:
        await store.close()
        where = store_where(settings.store, root=root)
        problem = f"{where} cannot be written: {exc.problem.detail}"
        raise StoreOpenError(problem, store_key(settings.store)) from None
    if settings.store.kind == "sqlite":
        _warn_loose_mode(store_path(settings.store, root=root))


def _warn_loose_mode(path: Path) -> None:
    """A state file others may read (made before files were created 0600)."""
    mode = loose_mode(path)
    if mode is not None:
        log.warning("file_mode_loose", path=str(path), mode=f"{mode:04o}", fix=f"chmod 600 {path}")


async def _start_parts(settings: Settings, gw: Gateway, root: Path) -> None:
    if settings.demo.enabled:
        await _start_demo(settings, gw)
    await gw.upstreams.start()
    gw.store.start()
    gw.state.start()
    if gw.follower is not None:
        # what other nodes wrote since the load (and this node's start-up
        # writes) before the first request is decided
        await gw.follower.catch_up("resumed")
        gw.follower.start()
    g = settings.gateway
    gw.authn = Authenticator(g.fqdn, settings.identity, gw.metrics, root=root, clock=gw.state.clock)
    await gw.authn.start()
    ssl_ctx = _tls(gw, "gateway.tls", g.tls)
    ctx = ProxyContext(
        settings=g,
        state=gw.state,
        upstreams=gw.upstreams,
        metrics=gw.metrics,
        addresses=ClientAddress(g.trusted_proxies),
        proto="https" if g.tls.enabled else "http",
        authn=gw.authn,
        redirects=Redirector(
            g.redirects, gw.upstreams.pools, gw.redirect_cache, gw.metrics, clock=gw.state.clock
        ),
        access_log=settings.logging.access_log,
    )
    proxy_runner = web.AppRunner(
        build_proxy_app(ctx),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=g.shutdown_grace_seconds,
        handler_cancellation=True,  # a device that hangs up ends its upstream request at once
    )
    gw.runners.append(proxy_runner)
    gate = device_listener(g, gw.metrics)
    gw.proxy_url = await _site(proxy_runner, "gateway.listen", g.listen, ssl_ctx, **gate)
    gw.token = TokenFile(resolve(root, settings.admin.token_file))
    gw.admin_token = gw.token.token
    if settings.admin.readonly_token_file is not None:
        gw.readonly_token = TokenFile(resolve(root, settings.admin.readonly_token_file))
    admin = AdminContext(gw.state, gw.store, gw.upstreams, gw.settings, gw.redirect_cache)
    if settings.directory.ldap is not None:
        gw.directory = admin.directory = DirectorySync(
            settings.directory.ldap,
            commit=admin.commit_in_thread,
            snapshot=lambda: gw.state.snapshot,
            metrics=gw.metrics,
            root=root,
            clock=gw.state.clock,
        )
    gw.admin_app = _admin_app(gw, admin)
    admin_runner = web.AppRunner(
        gw.admin_app, access_log=None, handle_signals=False, shutdown_timeout=2.0, **SERVER_LIMITS
    )
    gw.runners.append(admin_runner)
    a = settings.admin
    admin_tls = _tls(gw, "admin.tls", a.tls)
    gate = admin_listener(g, gw.metrics)
    gw.admin_url = await _site(admin_runner, "admin.listen", a.listen, admin_tls, **gate)
    if gw.directory is not None:
        gw.directory.start()
    if not is_loopback(a.listen.host):
        log.warning(
            "admin_listen_not_loopback",
            host=a.listen.host,
            tls=a.tls.enabled,
            problem="the admin API is reachable from the network"
            + ("" if a.tls.enabled else " and its token travels in clear (set admin.tls)"),
        )


def _tls(gw: Gateway, key: str, tls: TlsSettings) -> ssl.SSLContext | None:
    """The server context of a listener (files checked by ``preflight``)."""
    if not tls.enabled:
        return None
    _small_tls_buffers()
    ctx = server_ssl_context(resolve(gw.root, tls.cert), resolve(gw.root, tls.key))
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


TLS_READ_BUFFER = 16 * 1024


def _small_tls_buffers() -> None:
    """Give each TLS connection a 16 KiB read buffer instead of 256 KiB.

    Python 3.11's asyncio allocates ``SSLProtocol.max_size`` bytes per TLS
    connection up front; with every device holding a Ping open that is the
    dominant cost (about 300 KiB per held Ping, measured in bench/). 16 KiB is
    one TLS record, so reads lose nothing. The gateway owns its process, so
    changing this class attribute affects only its own connections.
    """
    import asyncio.sslproto

    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


def _readiness(gw: Gateway) -> Callable[[], list[str]]:
    def problems() -> list[str]:
        out = []
        status = gw.store.status
        if status.problem is not None:
            out.append(f"store {status.problem.fault.value}: {status.problem.detail}")
        for pool in gw.upstreams.pools.values():
            out.extend(pool.not_ready())
        if gw.follower is not None:
            out.extend(gw.follower.problems())
        if not gw.proxy_url:
            out.append("device listener not started")
        return out

    return problems


def _notes(gw: Gateway) -> Callable[[], list[str]]:
    """What ``/readyz`` adds without making the gateway not ready: a directory
    that cannot be synced (requests are decided from the last sync)."""
    return lambda: [] if gw.directory is None else gw.directory.notes()


def _admin_app(gw: Gateway, ctx: AdminContext) -> web.Application:
    tokens = AdminTokens(gw.token or gw.admin_token, gw.readonly_token)
    console = gw.settings.admin.console
    app = web.Application(
        middlewares=[
            track_phases,
            *api_middlewares(tokens),
            *(console_middlewares() if console.enabled else ()),
        ]
    )
    app.add_routes(health_routes(gw.metrics.registry, _readiness(gw), _notes(gw)))
    add_api(app, ctx)
    if console.enabled:
        add_console(app, ctx, tokens, console, secure=gw.settings.admin.tls.enabled)
    return app


def demo_banner(gw: Gateway) -> str:
    """What a new user needs after ``make run``: URLs, accounts, a command to try."""
    s = gw.settings
    lines = [
        "",
        "Sentry is running with the demo backends.",
        f"  devices (EAS):  {gw.proxy_url}/Microsoft-Server-ActiveSync",
        f"  admin:          {gw.admin_url}  (/metrics, /healthz, /readyz; /api/ with the token in "
        f"{s.admin.token_file})",
    ]
    if s.admin.console.enabled:
        readonly = s.admin.readonly_token_file
        also = f" (read-only: {readonly})" if readonly else ""
        lines.append(f"  web console:    {gw.admin_url}/  (sign in with that token{also})")
    lines += [
        "  demo mailboxes (user:password@domain -> pool):",
    ]
    for b in s.demo.backends:
        lines += [f"    {u.strip()}  -> {b.pool}" for u in b.users.split(",") if u.strip()]
    cmd = ".venv/bin/sentry demo-client --insecure --url"
    lines += [
        "  try (syncs alice's Inbox through the gateway):",
        f"    {cmd} {gw.proxy_url} --user alice --password alice-pw",
        "  the same mailbox, spelled as its realm allows (one association: alice@example.com):",
        f"    {cmd} {gw.proxy_url} --user 'EXAMPLE\\alice' --password alice-pw",
        "  then a gmail-type mailbox on the same phone (fails closed: one backend type a device):",
        f"    {cmd} {gw.proxy_url} --user carol@gmail.example --password carol-pw",
        "  the admin list shows both, with their realms (token in the file above):",
        "    .venv/bin/sentry admin list",
        "",
    ]
    return "\n".join(lines)


async def run(settings: Settings, *, root: Path = Path("."), config: Path | None = None) -> None:
    """``sentry run``: start, print where, serve until SIGTERM/SIGINT; on SIGHUP
    reopen the log file and reload ``config`` (see ``sentry.reload``)."""
    from sentry.reload import reload_gateway
    from sentry.settings import load_settings

    preflight(settings, root, create=False).raise_first()  # before logs leave the terminal
    try:
        log_file = configure_logging(settings.logging)
    except OSError as exc:
        raise StartupError("logging.file", f"{settings.logging.file}: {exc.strerror}") from None
    gw = await start_gateway(settings, root=root)
    gw.log_file = log_file
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if config is not None:
        path = config

        def hup() -> None:
            create_task(reload_gateway(gw, lambda: load_settings(path)), name="reload")

        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, hup)
    # "started" only once the signals are handled: a supervisor (or a test) that
    # sends SIGHUP on seeing it must not kill the process with the default action.
    log.info("started", devices=gw.proxy_url, admin=gw.admin_url, version=version())
    if settings.demo.enabled:
        print(demo_banner(gw), flush=True)
    try:
        await stop.wait()
    finally:
        await gw.stop()
        log.info("stopped")
        if log_file is not None:
            log_file.close()
