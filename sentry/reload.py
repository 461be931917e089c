"""SIGHUP: reopen the log file, then reload what can change without a restart.

Approach. The log file is reopened first, whatever the configuration says
(logrotate's ``postrotate`` sends SIGHUP). The file is then read and
validated (``load_settings``) and every file it points at checked before
anything changes; any problem is logged as ``reload_failed`` (naming the key
path) and the running configuration stays. Then, in this order:

1. pools added or changed: ``Upstreams.reconfigure`` (a new pool is served
   before routing can name it; requests in flight and held Pings keep their
   connections);
2. the snapshot: the pools, routing and file preferences that differ from it,
   as ONE change list through ``AccessState.commit`` (one transaction; held
   polls that lose access are answered at once, all others are untouched).
   If the store refuses it, the reload stops here (``reload_failed``): routing
   and preferences stay, and removed pools are still served;
3. pools removed from the file are retired, now that nothing routes to them;
4. TLS: the certificate and key are loaded again into the running contexts
   (new connections get them; a certificate is rotated without a restart);
5. the admin token file (and the read-only token file) is read again.

Preferences follow the start rule: the file's values apply unless an
administrator set them through the API. What cannot change while running
(listen addresses, TLS on or off, the store, logging, demo backends, gateway
limits) keeps its running value and is named in a ``reload_needs_restart``
warning.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from sentry.admin.api import ADMIN_CONTEXT
from sentry.certs import CertFileError, load_pair
from sentry.errors import StartupError
from sentry.policy import DeletePool, PutPool, PutPreferences, PutRouting, Snapshot
from sentry.policy.changes import Change
from sentry.preflight import check_log_file, resolve
from sentry.settings import Settings, SettingsError

if TYPE_CHECKING:
    from sentry.app import Gateway

__all__ = ["RELOADABLE", "ReloadResult", "needs_restart", "reload_gateway", "snapshot_changes"]

log = structlog.get_logger("sentry")

RELOADABLE = frozenset(
    {"pools", "routing", "preferences"}
    | {f"{t}.{f}" for t in ("gateway.tls", "admin.tls") for f in ("cert", "key")}
)
"""Key paths a reload applies; every other difference needs a restart."""


@dataclass
class ReloadResult:
    """What one reload did (also logged)."""

    ok: bool
    error: str | None = None
    changed: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)
    polls_ended: int = 0


async def reload_gateway(gw: Gateway, load: Callable[[], Settings]) -> ReloadResult:
    """Reopen the log file and apply the configuration ``load`` returns."""
    async with gw.reloading:
        _reopen_log(gw)
        try:
            new = load()
            _check(gw, new)
        except (SettingsError, StartupError) as exc:
            log.error("reload_failed", error=str(exc), kept="the running configuration")
            return ReloadResult(ok=False, error=str(exc))
        result = await _apply(gw, new)
    if not result.ok:
        return result
    if result.needs_restart:
        log.warning("reload_needs_restart", keys=result.needs_restart)
    log.info("config_reloaded", changed=result.changed, held_polls_ended=result.polls_ended)
    return result


def _reopen_log(gw: Gateway) -> None:
    if gw.log_file is None:
        return
    try:
        gw.log_file.reopen()
    except OSError as exc:
        log.error("log_reopen_failed", file=str(gw.log_file.path), error=exc.strerror)


def _check(gw: Gateway, new: Settings) -> None:
    """Raise ``StartupError`` for a file of ``new`` the reload would use and cannot."""
    for prefix, tls in (("gateway.tls", new.gateway.tls), ("admin.tls", new.admin.tls)):
        if prefix in gw.tls:
            try:
                load_pair(resolve(gw.root, tls.cert), resolve(gw.root, tls.key))
            except CertFileError as exc:
                raise StartupError(f"{prefix}.{exc.role}", str(exc)) from None
    check_log_file(new.logging, gw.root)
    # Not check_store_path: the store is open in this process, and opening and closing
    # its file here would drop the POSIX locks SQLite holds on it (a store change needs
    # a restart anyway).


async def _apply(gw: Gateway, new: Settings) -> ReloadResult:
    old = gw.settings
    effective = dataclasses.replace(
        old,
        gateway=_with_tls(old.gateway, new.gateway),
        admin=_with_tls(old.admin, new.admin),
        pools=new.pools,
        routing=new.routing,
        preferences=new.preferences,
    )
    result = ReloadResult(ok=True, needs_restart=needs_restart(old, new))
    wanted = {p.name for p in effective.pools}
    leaving = tuple(p for p in old.pools if p.name not in wanted)
    result.changed += gw.upstreams.reconfigure(effective.pools + leaving)  # add and change first
    try:
        done = await gw.state.commit(
            lambda snapshot, _now: snapshot_changes(effective, old, snapshot)
        )
        changes, result.polls_ended = done.changes, done.ended
    except Exception as exc:  # the store refused: routing and preferences stay as they were
        log.error("reload_failed", error=f"store: {exc}", kept="routing and preferences")
        return ReloadResult(ok=False, error=f"store: {exc}", changed=result.changed)
    result.changed += [_describe(c) for c in changes]
    result.changed += gw.upstreams.reconfigure(effective.pools)  # then remove, once unrouted
    for prefix, ctx in gw.tls.items():
        tls = effective.gateway.tls if prefix == "gateway.tls" else effective.admin.tls
        try:
            ctx.load_cert_chain(resolve(gw.root, tls.cert), resolve(gw.root, tls.key))
        except (OSError, ssl.SSLError) as exc:  # changed since the check: keep the loaded pair
            log.error("reload_failed", error=f"{prefix}: {exc}", kept="the loaded certificate")
    if gw.token is not None and gw.token.reload():
        result.changed.append("admin token")
    if gw.readonly_token is not None and gw.readonly_token.reload():
        result.changed.append("read-only token")
    gw.settings = effective
    if gw.admin_app is not None:
        gw.admin_app[ADMIN_CONTEXT].settings = effective
    return result


def _with_tls(old: Any, new: Any) -> Any:
    """``old`` with the certificate and key paths of ``new`` (TLS on/off stays)."""
    tls = dataclasses.replace(old.tls, cert=new.tls.cert, key=new.tls.key)
    return dataclasses.replace(old, tls=tls)


def snapshot_changes(new: Settings, old: Settings, snapshot: Snapshot) -> list[Change]:
    """The pool, routing and preference changes that make ``snapshot`` match
    ``new``; only what differs (an unchanged reload changes nothing)."""
    from sentry.app import config_changes

    # Preferences: each one an administrator set keeps its value, every other one
    # follows the new file (``sentry.policy.prefs.effective``).
    changes = [c for c in config_changes(new, snapshot.prefs) if _differs(c, snapshot)]
    wanted = {p.name for p in new.pools}
    changes += [DeletePool(name) for name in sorted(snapshot.pools) if name not in wanted]
    return changes


def _differs(change: Change, snapshot: Snapshot) -> bool:
    if isinstance(change, PutPool):
        return snapshot.pools.get(change.pool.name) != change.pool
    if isinstance(change, PutRouting):
        return snapshot.routing != change.routing
    if isinstance(change, PutPreferences):
        return snapshot.prefs != change.prefs
    return True


def _describe(change: Change) -> str:
    if isinstance(change, PutPool):
        return f"snapshot pool {change.pool.name}"
    if isinstance(change, DeletePool):
        return f"snapshot pool {change.name} removed"
    if isinstance(change, PutRouting):
        return "routing"
    if isinstance(change, PutPreferences):
        return "preferences"
    return type(change).__name__


def needs_restart(old: Settings, new: Settings) -> list[str]:
    """Key paths that differ between ``old`` and ``new`` and a reload does not apply."""
    return [k for k in _differences(old, new, "") if k not in RELOADABLE]


def _differences(old: Any, new: Any, path: str) -> Sequence[str]:
    if old == new:
        return []
    if path in RELOADABLE or not dataclasses.is_dataclass(old) or type(old) is not type(new):
        return [path or "(top level)"]
    out: list[str] = []
    for f in dataclasses.fields(old):
        sub = f"{path}.{f.name}" if path else f.name
        out += _differences(getattr(old, f.name), getattr(new, f.name), sub)
    return out
