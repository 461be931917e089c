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
is not on loopback): the sites, TLS contexts and admin application are built by
``sentry.listeners``, the ``/readyz`` checks by ``sentry.readiness``.
``Gateway.stop`` shuts down gracefully: stop accepting, end held polls cleanly,
flush state. ``run`` serves until SIGTERM/SIGINT and reloads on SIGHUP
(``sentry.reload``). Under ``gateway.workers`` the same ``run`` is one worker:
it serves the sockets its supervisor bound (``sentry.worker``,
``sentry.supervisor``) instead of binding its own, and answers ``/metrics`` for
the whole node.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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
from sentry.admin.api import SERVER_LIMITS
from sentry.admin.context import AdminContext
from sentry.admin.token import TokenFile
from sentry.aio import create_task
from sentry.buildinfo import version
from sentry.cluster import Follower
from sentry.directory.service import DirectorySync
from sentry.errors import StartupError
from sentry.files import loose_mode
from sentry.heaptrim import Arrivals, HeapTrimmer
from sentry.housekeeping import Housekeeping
from sentry.listeners import admin_app, server_tls, start_site, warn_if_exposed
from sentry.model import Pool, Preferences, Realms, Routing
from sentry.observability import LossyStream, Metrics, configure_logging
from sentry.observability.logging import LogFile, report_log_losses
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
from sentry.proxy.app import build_proxy_server
from sentry.proxy.authn import Authenticator
from sentry.proxy.connections import admin_listener, device_listener
from sentry.proxy.forwarding import answer_revoked_now
from sentry.proxy.h1server import DeviceRunner
from sentry.proxy.handler import ProxyContext
from sentry.proxy.headers import ClientAddress
from sentry.proxy.redirects import RedirectCache, Redirector
from sentry.proxy.upstream import Upstreams
from sentry.settings import PreferenceSettings, Settings
from sentry.store.base import Store, StoreOpenError, StoreUnavailable
from sentry.store.factory import open_and_load, store_key, store_path, store_where
from sentry.store.postgres import PostgresStore
from sentry.store_watch import WatchedStore
from sentry.worker import WorkerSpec

__all__ = [
    "Gateway",
    "config_changes",
    "demo_banner",
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
    runners: list[web.BaseRunner] = field(default_factory=list)
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
    worker: WorkerSpec | None = None  # under gateway.workers: this process's part
    follower: Follower | None = None  # several nodes on one PostgreSQL (sentry.cluster)
    housekeeping: Housekeeping | None = None  # last-seen flush, expiry, state gauges
    heap_trimmer: HeapTrimmer | None = None  # malloc_trim after a burst of new connections

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
        if self.housekeeping is not None:
            await self.housekeeping.close()
        if self.heap_trimmer is not None:
            await self.heap_trimmer.close()
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


async def start_gateway(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.time,
    root: Path = Path("."),
    touch_flush: bool = True,
    worker: WorkerSpec | None = None,
) -> Gateway:
    """Build and start everything; ports 0 in the settings are read back.

    ``touch_flush=False`` starts no periodic last-seen flush (the test harness
    writes them on demand with ``state.flush_touches()``; ``stop`` still does).
    ``worker``: this process is one of ``gateway.workers`` (``sentry.worker``).
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
        unverified_expiry_seconds=settings.store.unverified_expiry_seconds,
    )
    every = settings.store.touch_flush_seconds if touch_flush else None
    upstreams = Upstreams(settings.pools, metrics, clock=clock)
    r = settings.gateway.redirects
    cache = RedirectCache(
        r.cache_ttl_seconds, r.cache_max_entries, on_change=metrics.redirect_cache_entries.set
    )
    gw = Gateway(
        settings, metrics, store, state, upstreams, redirect_cache=cache, root=root, worker=worker
    )
    if isinstance(opened, PostgresStore):
        gw.follower = Follower(
            state,
            opened,
            metrics,
            view=opened.loaded or 0,
            poll_interval=settings.store.feed_poll_seconds,
            clock=clock,
        )
    gw.housekeeping = Housekeeping(state, metrics, every)
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
    if gw.housekeeping is not None:
        gw.housekeeping.start()
    if gw.follower is not None:
        # what other nodes wrote since the load (and this node's start-up
        # writes) before the first request is decided
        await gw.follower.catch_up("resumed")
        gw.follower.start()
    g = settings.gateway
    gw.authn = Authenticator(g.fqdn, settings.identity, gw.metrics, root=root, clock=gw.state.clock)
    await gw.authn.start()
    ssl_ctx = server_tls(gw, "gateway.tls", g.tls)
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
    # a revocation writes the devices' answers first, then their tasks account for them
    gw.state.longpolls.answer_now = functools.partial(answer_revoked_now, ctx)
    proxy_runner = DeviceRunner(build_proxy_server(ctx), shutdown_timeout=g.shutdown_grace_seconds)
    gw.runners.append(proxy_runner)
    arrivals = Arrivals()
    gate = device_listener(g, gw.metrics, arrivals)
    gw.proxy_url = await start_site(
        proxy_runner, "gateway.listen", g.listen, ssl_ctx, gw.worker, **gate
    )
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
    gw.admin_app = admin_app(gw, admin)
    admin_runner = web.AppRunner(
        gw.admin_app, access_log=None, handle_signals=False, shutdown_timeout=2.0, **SERVER_LIMITS
    )
    gw.runners.append(admin_runner)
    a = settings.admin
    admin_tls = server_tls(gw, "admin.tls", a.tls)
    gate = admin_listener(g, gw.metrics)
    gw.admin_url = await start_site(
        admin_runner, "admin.listen", a.listen, admin_tls, gw.worker, **gate
    )
    if gw.directory is not None:
        gw.directory.start()
    gw.heap_trimmer = HeapTrimmer(arrivals, gw.metrics, after=g.connections.heap_trim_after)
    gw.heap_trimmer.start()
    warn_if_exposed(a)


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


async def run(
    settings: Settings,
    *,
    root: Path = Path("."),
    config: Path | None = None,
    worker: WorkerSpec | None = None,
) -> None:
    """``sentry run``: start, print where, serve until SIGTERM/SIGINT; on SIGHUP
    reopen the log file and reload ``config`` (see ``sentry.reload``).

    ``worker``: one worker of ``gateway.workers`` (``sentry.supervisor``'s): it serves its
    inherited sockets, says when it is ready, and also drains when its supervisor is gone."""
    from sentry.reload import reload_gateway
    from sentry.settings import load_settings

    preflight(settings, root, create=False).raise_first()  # before logs leave the terminal
    fields = None if worker is None else {"worker": worker.index}
    try:
        log_file = configure_logging(settings.logging, fields=fields)
    except OSError as exc:
        raise StartupError("logging.file", f"{settings.logging.file}: {exc.strerror}") from None
    gw = await start_gateway(settings, root=root, worker=worker)
    gw.log_file = log_file
    report_log_losses(gw.metrics.log_writes_lost.inc)
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
    # "started" (and a worker's "ready") only once the signals are handled: a
    # supervisor (or a test) that sends SIGHUP on seeing it must not kill the
    # process with the default action.
    log.info("started", devices=gw.proxy_url, admin=gw.admin_url, version=version())
    if settings.demo.enabled and worker is None:
        print(demo_banner(gw), file=LossyStream(), flush=True)  # (stdout gone: not fatal)
    if worker is not None:

        def orphaned() -> None:
            log.warning("supervisor_gone", action="draining")
            stop.set()

        worker.watch_lifeline(orphaned)
        worker.announce_ready()
    try:
        await stop.wait()
    finally:
        await gw.stop()
        log.info("stopped")
        if log_file is not None:
            log_file.close()
