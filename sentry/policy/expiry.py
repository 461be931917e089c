"""Expiring unverified associations: strangers leave no lasting trace.

Approach (issue 9 item 6). A row the backend never accepted (``verified_at``
None: only 401s, or never forwarded) is *unverified*: listed, never counted
for limits nor establishing a backend type. Anyone who knows a user name can
create such rows, so they do not stay: ``expire_unverified`` removes every
unverified row not seen for ``max_age`` seconds, unless an administrator
acted on it (an override, a wipe or a Link To keeps it: the admin's decision
must not vanish with it). The snapshot keeps the unverified keys in a set,
so a sweep costs O(unverified rows), never a scan of the table.

Each removed row gets an ``expired`` history event; one audit entry (actor
``system``) counts them and names the first ``AUDIT_KEYS``. A device scope
left with no association loses its established type, as on Remove.
"""

from __future__ import annotations

from sentry.model import Association, AssociationKey, HistoryEvent, WipeStatus

from .audit import audited
from .changes import AppendHistory, Change, Changes, DeleteAssociation
from .established import release_scopes
from .snapshot import Snapshot

__all__ = ["AUDIT_KEYS", "expire_unverified"]

AUDIT_KEYS = 50
"""How many expired keys the audit entry names (the count is always exact)."""


def expire_unverified(snapshot: Snapshot, now: float, max_age: float) -> Changes:
    """Remove the unverified rows not seen for ``max_age`` seconds (see above)."""
    cutoff = now - max_age
    found = (snapshot.get(k) for k in snapshot.unverified())
    keys = sorted(r.key for r in found if r is not None and _expirable(r, cutoff))
    if not keys:
        return ()
    detail = {"reason": "unverified", "max_age_seconds": max_age}
    out: list[Change] = []
    for key in keys:
        out += [DeleteAssociation(key), AppendHistory(key, HistoryEvent(now, "expired", detail))]
    out.extend(release_scopes(snapshot, keys))
    out.append(_audit(keys, now, max_age))
    return tuple(out)


def _expirable(row: Association, cutoff: float) -> bool:
    return (
        row.verified_at is None
        and row.last_seen <= cutoff
        and row.override is None
        and row.manual_link is None
        and row.wipe is WipeStatus.NONE
    )


def _audit(keys: list[AssociationKey], now: float, max_age: float) -> Change:
    named = [f"{k.device_id}/{k.user}" for k in keys[:AUDIT_KEYS]]
    return audited(
        at=now,
        actor="system",
        action="expire_unverified",
        target="associations",
        note=f"unverified associations not seen for {max_age:g} s",
        before={"count": len(keys), "keys": named},
        after=None,
    )
