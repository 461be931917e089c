"""The audit log route: who changed what, when, why, and the state before -> after.

Every change the API makes carries its audit entry in the same change list
(the policy builds it), so the entry and the change are written in one
transaction: neither exists without the other. The log is read newest first.
"""

from __future__ import annotations

from typing import Any

from .listing import PAGE_FIELDS
from .schema import Call, Route
from .views import audit_view

__all__ = ["ROUTES"]


async def _get_audit(call: Call) -> dict[str, Any]:
    offset, limit = call.query.get("offset", 0), call.query.get("limit", 100)
    entries, total = await call.ctx.store.audit(offset, limit)
    items = [audit_view(e) for e in entries]
    return {"items": items, "total": total, "offset": offset, "limit": limit}


ROUTES = (
    Route(
        "GET",
        "/api/audit",
        _get_audit,
        "The audit log, newest first",
        "audit",
        query=PAGE_FIELDS,
        response="AuditPage",
        uses_store=True,
    ),
)
