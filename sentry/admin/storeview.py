"""Routes of the state store's health: see it, and recover a deleted or replaced file.

Approach. ``GET /api/store`` shows what ``/readyz`` and the
``store_degraded`` log event say, for people and scripts: healthy or the
fault, since when, and what to do. ``POST /api/store/recover`` is that "what
to do" for a database file deleted or replaced under the running gateway:
the store writes the state it still holds open back to ``store.path`` and
uses it from then on (``WatchedStore.recover``). It is refused with 409 when
there is nothing to recover or someone else's file is in the way (the answer
names it), and 503 when the store cannot write. A recovery is logged and
audited.
"""

from __future__ import annotations

from typing import Any

import structlog

from sentry.model import AuditEntry
from sentry.policy import AppendAudit
from sentry.store.base import StoreError, StoreUnavailable
from sentry.store_watch import StoreStatus

from .context import iso
from .errors import Conflict
from .schema import Call, Field, Route

__all__ = ["ROUTES", "store_view"]

log = structlog.get_logger("sentry.admin")


def store_view(status: StoreStatus, kind: str, path: str | None) -> dict[str, Any]:
    """The store's health as JSON."""
    p = status.problem
    return {
        "kind": kind,
        "path": path,
        "healthy": p is None,
        "fault": None if p is None else p.fault.value,
        "detail": None if p is None else p.detail,
        "since": iso(status.since),
        "advice": status.advice,
    }


def _view(call: Call) -> dict[str, Any]:
    s = call.ctx.settings.store
    path = s.path if s.kind == "sqlite" else None
    return store_view(call.ctx.store.status, s.kind, path)


async def _get_store(call: Call) -> dict[str, Any]:
    return _view(call)


async def _recover_store(call: Call) -> dict[str, Any]:
    store = call.ctx.store
    before = store.status.problem
    async with call.ctx.lock:
        try:
            await store.recover()
        except StoreUnavailable:
            raise
        except StoreError as exc:
            raise Conflict(f"cannot recover the store: {exc}") from None
        entry = AuditEntry(
            call.ctx.now(), call.actor, "store_recover", "store", call.note,
            None if before is None else {"fault": before.fault.value, "detail": before.detail},
            None,
        )  # fmt: skip
        await call.ctx.state.commit_held(lambda _snapshot, _now: [AppendAudit(entry)])
    log.warning("store_recovered_by_admin", actor=call.actor)
    return _view(call)


ROUTES = (
    Route(
        "GET",
        "/api/store",
        _get_store,
        "The state store's health: healthy, or its fault and what to do",
        "store",
        response="StoreStatus",
    ),
    Route(
        "POST",
        "/api/store/recover",
        _recover_store,
        "Write the state back to store.path after the file was deleted or replaced",
        "store",
        body={"note": Field("string", "why (kept in the audit log)")},
        response="StoreStatus",
        conflict=True,
        uses_store=True,  # not ``changes``: it changes no access state (it is audited itself)
        description=(
            "While the database file (or its write-ahead log) is deleted or replaced under "
            "the running gateway, the gateway keeps the state in memory and in the file it "
            "holds open. This writes that copy back to `store.path` (never over another "
            "file: move one that is there aside first) and resumes normal operation."
        ),
    ),
)
