"""Ambiguous ActiveSync policies (design.md §5.10): a flag, never a refusal.

Approach. Each backend gives the device an ActiveSync policy; the gateway
records a fingerprint of it per association (``record_policy_fingerprint``).
One physical device can enforce only one policy, so when the associations of
a DeviceId carry two or more distinct non-empty fingerprints, every
association of that DeviceId is flagged ``ambiguous_policy`` for the admin.
The flag is recomputed whenever a fingerprint changes or a row is removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from sentry.model import Association, AssociationKey, HistoryEvent

from .changes import AppendHistory, Change, Changes, PutAssociation
from .errors import NotFoundError
from .snapshot import Snapshot

__all__ = ["ambiguity_changes", "device_ambiguous", "record_policy_fingerprint"]


def device_ambiguous(rows: Iterable[Association]) -> bool:
    """Whether ``rows`` (one device's associations) carry several policies."""
    return len({r.policy_fingerprint for r in rows if r.policy_fingerprint}) > 1


def ambiguity_changes(rows: list[Association], flag: bool | None = None) -> list[Change]:
    """``PutAssociation`` for each of ``rows`` whose flag differs from ``flag``
    (by default: whether ``rows``, one device's associations, are ambiguous)."""
    flag = device_ambiguous(rows) if flag is None else flag
    return [
        PutAssociation(replace(r, ambiguous_policy=flag))
        for r in rows
        if r.ambiguous_policy != flag
    ]


def record_policy_fingerprint(
    snapshot: Snapshot, key: AssociationKey, fingerprint: str | None, now: float
) -> Changes:
    """Record the policy the backend gave ``key`` and re-flag the device's rows."""
    row = snapshot.get(key)
    if row is None:
        raise NotFoundError(f"no association {key.device_id}/{key.user}")
    if row.policy_fingerprint == (fingerprint or None):
        return ()
    updated = replace(row, policy_fingerprint=fingerprint or None)
    rows = [updated if r.key == key else r for r in snapshot.on_device(key.device_id)]
    flag = device_ambiguous(rows)
    out: list[Change] = [PutAssociation(replace(updated, ambiguous_policy=flag))]
    out += ambiguity_changes([r for r in rows if r.key != key], flag)
    detail = {"fingerprint": fingerprint or None, "ambiguous": flag}
    out.append(AppendHistory(key, HistoryEvent(now, "policy", detail)))
    return tuple(out)
