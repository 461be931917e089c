"""Routes of the directory sync: where it stands, and "sync now".

Approach. The sync belongs to ``sentry.directory.service`` (scheduled and
on-demand, off the event loop, applied through ``AdminContext.commit``); the
admin side shows its status and asks for a sync. ``POST
/api/directory/sync`` answers when the sync is done, with its report (the
same one its audit entry summarises): 409 when no directory is configured or
when the sync would remove more users than ``max_removed_percent`` allows
(``allow_mass_removal`` to proceed), 502 when the directory could not be
read (``kind``: connect, timeout, tls, bind, search, config), 503 when the
state store cannot keep changes. Nothing is changed by a sync that fails.
"""

from __future__ import annotations

from typing import Any

from sentry.directory.ldap import DirectoryError
from sentry.directory.service import DirectorySync, SyncReport
from sentry.model import UserSource
from sentry.policy.dirsync import SYNC_ERROR_KINDS

from .context import AdminContext, iso
from .errors import BadGateway, Conflict, Unavailable
from .schema import Call, Field, Route

__all__ = ["ROUTES", "SCHEMAS", "directory_view"]


def _sync_of(ctx: AdminContext) -> DirectorySync:
    if ctx.directory is None:
        raise Conflict("no directory is configured (directory.ldap in the configuration file)")
    return ctx.directory


def directory_view(ctx: AdminContext) -> dict[str, Any]:
    """The directory's configuration (no secrets) and the sync's state."""
    users = ctx.snapshot.users.values()
    counts = {s.value: sum(1 for u in users if u.source is s) for s in UserSource}
    missing = sum(1 for u in users if u.missing_since is not None)
    if ctx.directory is None:
        return {"configured": False, "users": counts, "missing_users": missing}
    sync, s = ctx.directory, ctx.directory.status
    cfg = sync.settings
    error = s.last_error
    return {
        "configured": True,
        "urls": list(cfg.urls),
        "base_dn": cfg.base_dn,
        "filter": cfg.filter,
        "bind_dn": cfg.bind_dn,
        "sync_interval_seconds": cfg.sync_interval_seconds,
        "removed_users": cfg.removed_users,
        "running": s.running,
        "healthy": error is None and s.last_success_at is not None,
        "last_attempt_at": iso(s.last_attempt_at),
        "last_success_at": iso(s.last_success_at),
        "failing_since": iso(s.failing_since),
        "last_error": None if error is None else {"kind": error.kind, "message": error.message},
        "next_sync_at": iso(s.next_sync_at) if cfg.sync_interval_seconds > 0 else None,
        "errors": {kind: s.errors.get(kind, 0) for kind in SYNC_ERROR_KINDS},
        "users": counts,
        "missing_users": missing,
        "last_report": None if s.last_report is None else _report(s.last_report),
    }


def _report(report: SyncReport) -> dict[str, Any]:
    view = report.view()
    return {**view, "started_at": iso(view["started_at"])}


async def _get_directory(call: Call) -> dict[str, Any]:
    return directory_view(call.ctx)


async def _sync_now(call: Call) -> dict[str, Any]:
    sync = _sync_of(call.ctx)
    try:
        report = await sync.sync(
            actor=call.actor,
            note=call.note,
            allow_mass_removal=bool(call.body.get("allow_mass_removal", False)),
        )
    except DirectoryError as exc:
        if exc.kind == "removal_limit":
            raise Conflict(exc.message) from None
        if exc.kind == "store":
            raise Unavailable(exc.message) from None
        raise BadGateway(f"the directory could not be synced: {exc.message}", exc.kind) from None
    return _report(report)


ROUTES = (
    Route(
        "GET",
        "/api/directory",
        _get_directory,
        "The directory: LDAP configuration (no secrets), sync state, users by source",
        "directory",
        response="DirectoryStatus",
    ),
    Route(
        "POST",
        "/api/directory/sync",
        _sync_now,
        "Sync the directory now; answers with the sync's report",
        "directory",
        body={
            "note": Field("string", "why (kept in the sync's audit entry)"),
            "allow_mass_removal": Field(
                "boolean", "apply even if more users than max_removed_percent would be removed"
            ),
        },
        response="DirectorySyncReport",
        conflict=True,
        changes=True,
        upstream="the directory",
        description="409 when no directory is configured, or when the sync would remove more "
        "LDAP users than `max_removed_percent` allows (nothing changed; repeat with "
        "`allow_mass_removal`). 502 when the directory could not be read (`kind`: connect, "
        "timeout, tls, bind, search, config): the users of the last sync stay.",
    ),
)

_S: dict[str, Any] = {"type": "string"}
_NS: dict[str, Any] = {"type": "string", "nullable": True}
_I: dict[str, Any] = {"type": "integer"}
_N: dict[str, Any] = {"type": "number"}
_B: dict[str, Any] = {"type": "boolean"}
_ISSUE = {
    "type": "object",
    "required": ["dn", "principal", "problem"],
    "properties": {"dn": _S, "principal": _NS, "problem": _S},
}
_TEXTS = {"type": "array", "items": _S}
_REPORT_FIELDS: dict[str, Any] = {
    "action": _S,
    "entries": _I,
    "counts": {"type": "object", "additionalProperties": _I},
    "added": _TEXTS,
    "changed": _TEXTS,
    "removed": _TEXTS,
    "returned": _TEXTS,
    "blocked": {"type": "array", "items": {"type": "object"}},
    "errors": {"type": "array", "items": _ISSUE},
    "warnings": {"type": "array", "items": _ISSUE},
    "push_problems": {"type": "array", "items": {"type": "object"}},
    "actor": _S,
    "started_at": _S,
    "server": _S,
    "pages": _I,
    "polls_ended": _I,
    "read_seconds": _N,
    "apply_seconds": _N,
    "duration_seconds": _N,
}
SCHEMAS: dict[str, Any] = {
    "DirectorySyncReport": {
        "type": "object",
        "required": list(_REPORT_FIELDS),
        "properties": _REPORT_FIELDS,
    },
    "DirectoryStatus": {
        "type": "object",
        "required": ["configured", "users", "missing_users"],
        "properties": {
            "configured": _B,
            "users": {"type": "object", "additionalProperties": _I},
            "missing_users": _I,
            "urls": _TEXTS,
            "base_dn": _S,
            "filter": _S,
            "bind_dn": _S,
            "sync_interval_seconds": _N,
            "removed_users": _S,
            "running": _B,
            "healthy": _B,
            "last_attempt_at": _NS,
            "last_success_at": _NS,
            "failing_since": _NS,
            "last_error": {"type": "object", "nullable": True},
            "next_sync_at": _NS,
            "errors": {"type": "object", "additionalProperties": _I},
            "last_report": {
                "allOf": [{"$ref": "#/components/schemas/DirectorySyncReport"}],
                "nullable": True,
            },
        },
    },
}
"""The OpenAPI schemas of the answers above."""
