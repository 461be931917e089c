"""The audit log route: who changed what, when, why, and the state before -> after.

Every change the API makes carries its audit entry in the same change list
(the policy builds it), so the entry and the change are written in one
transaction: neither exists without the other. The log is read newest first,
filtered by actor (exact), target (a part of it: a DeviceId, a user, a label)
and time range (``since`` inclusive, ``until`` exclusive; an RFC 3339 date
or date-time, as the document states with ``format``: a date alone means its
midnight UTC). The store filters and counts, so a page of a long log costs one
query.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sentry.store.base import AuditFilter

from .errors import BadRequest
from .listing import PAGE_FIELDS
from .schema import Call, Field, Route
from .views import audit_view

__all__ = ["AUDIT_FIELDS", "ROUTES", "audit_filter", "parse_time"]

_TIME = "RFC 3339 date or date-time, e.g. 2026-12-01T08:00:00Z (a date alone: its midnight UTC)"
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2}))?")
_LEAP_SECOND = re.compile(r"(T\d{2}:\d{2}:)60")
_WHEN = ("date", "date-time")
AUDIT_FIELDS = {
    "actor": Field("string", "only entries by this actor (exact)", blank=False),
    "target": Field("string", "only entries whose target contains this text", blank=False),
    "since": Field("string", f"only entries at or after this {_TIME}", formats=_WHEN),
    "until": Field("string", f"only entries before this {_TIME}", formats=_WHEN),
}


def parse_time(text: str) -> float:
    """An RFC 3339 date (midnight UTC) or date-time (``Z`` or an offset; ``t``
    and ``z`` in any case; a leap second counts as :59) as Unix seconds;
    ValueError if not one."""
    upper = text.upper()
    if not _RFC3339.fullmatch(upper):
        raise ValueError(f"not an RFC 3339 date or date-time: {text!r}")
    moment = datetime.fromisoformat(_LEAP_SECOND.sub(r"\g<1>59", upper))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def audit_filter(query: dict[str, Any]) -> AuditFilter:
    """The store filter of the audit query parameters; 400 naming a bad time."""
    times: dict[str, float | None] = {"since": None, "until": None}
    problems = {}
    for name in times:
        if name in query:
            try:
                times[name] = parse_time(query[name])
            except ValueError:
                problems[name] = f"not an {_TIME}"
    if problems:
        raise BadRequest("invalid query parameters", problems)
    since, until = times["since"], times["until"]  # until <= since: an empty window
    return AuditFilter(query.get("actor"), query.get("target"), since, until)


async def _get_audit(call: Call) -> dict[str, Any]:
    offset, limit = call.query.get("offset", 0), call.query.get("limit", 100)
    entries, total = await call.ctx.store.audit(offset, limit, audit_filter(dict(call.query)))
    items = [audit_view(e) for e in entries]
    return {"items": items, "total": total, "offset": offset, "limit": limit}


ROUTES = (
    Route(
        "GET",
        "/api/audit",
        _get_audit,
        "The audit log, newest first (filtered by actor, target, time range)",
        "audit",
        query={**AUDIT_FIELDS, **PAGE_FIELDS},
        response="AuditPage",
        uses_store=True,
    ),
)
