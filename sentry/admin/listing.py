"""The ActiveSync association list: filters, search by user name, paging.

Approach. A ``Query`` is the list's filter keys (the same keys serve the list
query string and the bulk actions' ``filter`` object). Everything but the
user search is the store's ``AssociationFilter``, with its exact meaning.

- A page without a user search is one ``Store.list_associations`` call: the
  store filters, counts and pages in SQL, in (user, device_id) order.
- The user search matches any part of the canonical principal, or the
  principal the typed text names (the one rule under the realms, then the
  alias index: ``bob``, ``CORP\\bob`` or bob's email find bob's rows), which
  the store's filter (exact user) cannot express, so it is served from the
  in-memory snapshot (which mirrors the store: every change is applied to
  both). With nothing else to filter, the matching principals are found in
  one pass over the keys and only the page's rows are built (the others are
  counted through the per-user index); otherwise ``matching`` runs.
- ``matching`` returns every matching row (the bulk actions, searches with
  filters) from one pass over the snapshot with ``predicate`` (the filter's
  checks, no more), or from the per-device index for a DeviceId filter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sentry.model import Association, Reason, ViolationKind, canonical_device_id
from sentry.policy import Snapshot
from sentry.store.base import AssociationFilter, AssociationState, Store, association_state

from .schema import Call, Field, Fields

__all__ = [
    "FILTER_FIELDS",
    "PAGE_FIELDS",
    "Query",
    "collect",
    "list_page",
    "matching",
    "page_of",
    "predicate",
    "row_order",
]

T = TypeVar("T")

FILTER_FIELDS: Fields = {
    "user": Field("string", "the canonical principal or a part of it (search by user name)"),
    "device_id": Field("string", "an EAS DeviceId (any case)"),
    "device_type": Field("string", "the EAS DeviceType, exactly"),
    "state": Field("string", choices=tuple(s.value for s in AssociationState)),
    "reason": Field(
        "string", "a reason code of the last decision", choices=tuple(r.value for r in Reason)
    ),
    "linked": Field("boolean", "linked to a managed device (true) or not (false)"),
    "pool": Field("string", "the backend pool of the last decision"),
    "verified": Field("boolean", "the backend accepted the association (false: unverified)"),
    "throwaway": Field("boolean", "on a DeviceId many phones share (validate, webservice)"),
    "never_seen": Field("boolean", "pre-approved rows no request has used yet (true) or not"),
    "violation": Field(
        "string",
        "a compliance violation kind the last decision recorded",
        choices=tuple(k.value for k in ViolationKind),
    ),
}
"""The filter keys, as list query parameters and as the bulk actions' ``filter``."""

PAGE_FIELDS: Fields = {
    "offset": Field("integer", "rows to skip (default 0)", minimum=0),
    "limit": Field("integer", "rows per page (default 100)", minimum=1, maximum=1000),
}


Predicate = Callable[[Association], bool]
_ANY = AssociationFilter()


@dataclass(frozen=True, slots=True)
class Query:
    """The store filter (without the user), the user search text (case-folded)
    and the principal that text names (``exact``)."""

    filter: AssociationFilter
    user: str | None = None
    exact: str | None = None

    @classmethod
    def of(cls, values: Mapping[str, Any], snapshot: Snapshot | None = None) -> Query:
        """A query from checked filter values; blank strings mean "any"."""
        given = {k: v for k, v in values.items() if k in FILTER_FIELDS and _given(v)}
        state = given.get("state")
        reason = given.get("reason")
        f = AssociationFilter(
            device_id=given.get("device_id"),
            device_type=given.get("device_type"),
            state=None if state is None else AssociationState(state),
            reason=None if reason is None else Reason(reason),
            linked=given.get("linked"),
            pool=given.get("pool"),
            verified=given.get("verified"),
            throwaway=given.get("throwaway"),
            never_seen=given.get("never_seen"),
            violation=given.get("violation"),
        )
        user = given.get("user")
        if user is None:
            return cls(f)
        exact = None if snapshot is None else snapshot.canonical(user)
        return cls(f, user.strip().casefold(), exact)

    def describe(self) -> dict[str, Any]:
        """The query as plain data (for the audit log)."""
        f = self.filter
        values = {
            "user": self.user,
            "device_id": f.device_id,
            "device_type": f.device_type,
            "state": None if f.state is None else f.state.value,
            "reason": None if f.reason is None else f.reason.value,
            "linked": f.linked,
            "pool": f.pool,
            "verified": f.verified,
            "throwaway": f.throwaway,
            "never_seen": f.never_seen,
            "violation": f.violation,
        }
        return {k: v for k, v in values.items() if v is not None}


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


async def list_page(
    store: Store, snapshot: Snapshot, query: Query, offset: int, limit: int
) -> tuple[list[Association], int]:
    """One page of the list and the number of matching rows."""
    if query.user is None:
        return await store.list_associations(query.filter, offset, limit)
    if query.filter == _ANY:
        return _walk(snapshot, _users_like(snapshot, query), offset, limit)
    rows = matching(snapshot, query)
    return rows[offset : offset + limit], len(rows)


def matching(snapshot: Snapshot, query: Query) -> list[Association]:
    """Every row matching ``query``, ordered by (user, device_id)."""
    return sorted(collect(snapshot, query), key=row_order)


def row_order(row: Association) -> tuple[str, str]:
    """The list's order: by user, then DeviceId."""
    return (row.key.user, row.key.device_id)


def collect(snapshot: Snapshot, query: Query) -> list[Association]:
    """Every row matching ``query``, in no particular order (one pass, no sort:
    the caller may sort elsewhere, e.g. off the event loop)."""
    keep, f, needle, exact = predicate(query.filter), query.filter, query.user, query.exact
    if needle is not None:
        return [
            r
            for r in snapshot.associations()
            if (needle in r.key.user or r.key.user == exact) and keep(r)
        ]
    if f.device_id is not None:
        return list(filter(keep, snapshot.on_device(canonical_device_id(f.device_id))))
    return list(filter(keep, snapshot.associations()))


def predicate(f: AssociationFilter) -> Predicate:
    """``f.matches`` reduced to the checks ``f`` sets: the same answer, several
    times faster in the loops over every row (a test holds them equal)."""
    checks: list[Predicate] = []
    if f.user is not None:
        checks.append(lambda r: r.key.user == f.user)
    if f.device_id is not None:
        device_id = canonical_device_id(f.device_id)
        checks.append(lambda r: r.key.device_id == device_id)
    if f.device_type is not None:
        checks.append(lambda r: r.device_type == f.device_type)
    if f.state is not None:
        checks.append(lambda r: association_state(r) is f.state)
    if f.reason is not None:
        checks.append(lambda r: f.reason in r.reasons)
    if f.linked is not None:
        checks.append(lambda r: (r.device is not None) is f.linked)
    if f.pool is not None:
        checks.append(lambda r: r.pool == f.pool)
    if f.verified is not None:
        checks.append(lambda r: (r.verified_at is not None) is f.verified)
    if f.throwaway is not None:
        checks.append(lambda r: r.throwaway is f.throwaway)
    if f.never_seen is not None:
        checks.append(lambda r: r.never_seen is f.never_seen)
    if f.violation is not None:
        checks.append(lambda r: f.violation in r.violations)
    if len(checks) == 1:
        return checks[0]
    return lambda r: all(check(r) for check in checks)


def _users_like(snapshot: Snapshot, query: Query) -> list[str]:
    """The mailbox principals containing the search text or equal to the
    principal it names, sorted."""
    needle, exact = query.user or "", query.exact
    keys = snapshot.keys()  # Snapshot has no __iter__
    return sorted({key.user for key in keys if needle in key.user or key.user == exact})


def _by_device(rows: list[Association]) -> list[Association]:
    return sorted(rows, key=lambda row: row.key.device_id)


def _walk(
    snapshot: Snapshot, users: list[str], offset: int, limit: int
) -> tuple[list[Association], int]:
    """A page of every row of ``users`` (counted, not built, before the page)."""
    total = sum(map(snapshot.device_count, users))
    page: list[Association] = []
    for user in users:
        count = snapshot.device_count(user)
        if offset >= count:
            offset -= count
            continue
        page += _by_device(snapshot.of_user(user))[offset : offset + limit - len(page)]
        offset = 0
        if len(page) >= limit:
            break
    return page, total


def page_of(found: list[T], call: Call, view: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
    """One page of ``found``, a snapshot list, by the query's ``offset`` and
    ``limit`` (``PAGE_FIELDS``; only the page's items are rendered)."""
    offset, limit = call.query.get("offset", 0), call.query.get("limit", 100)
    items = [view(x) for x in found[offset : offset + limit]]
    return {"items": items, "total": len(found), "offset": offset, "limit": limit}
