"""The commit planner: what a durable change list does to the in-memory state.

Approach (design.md §2 and §4, live revocation). Every writer of the gateway
(a request that changes a row, the backend's first acceptance, an admin
action, a reload, the expiry sweep, and a change read from another node's
feed) ends the same way once its changes are durable: the changes reach the
snapshot, held long polls of associations that lost access are ended, and
the decisions those changes moved are recorded. ``absorb`` is that one
sequence, with no I/O::

    keys = affected_keys(changes, snapshot)    # before applying: what is replaced is still seen
    snapshot.apply(changes)
    refreshed = refresh(keys, snapshot, now)   # the moved decisions (not applied yet)
    revoked = [(k, evaluate(k)) for k in sorted(keys & held) if not Forward]
    snapshot.apply(refreshed)                  # recorded in memory

(``evaluate`` of a held key whose row ``refresh`` assessed reuses that
assessment: the state is the same, as the refreshed decisions are applied
after both.)

The shell (``sentry.access.AccessState``) writes the changes first, calls
this, ends the polls listed in ``revoked`` and writes ``refreshed`` (derived
data: it follows from what is durable and is derived again at the next
request, so its write is best effort). ``held`` is the set of keys that hold
a long poll; revocations come in key order, so a transcript is deterministic.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sentry.model import AssociationKey

from .affected import affected_keys
from .changes import Change, Changes
from .decide import evaluate, refresh
from .decisions import Decision, Forward
from .rules import Assessment, decision_of
from .snapshot import Snapshot

__all__ = ["Absorbed", "absorb"]


@dataclass(frozen=True, slots=True)
class Absorbed:
    """What absorbing one change list did to the snapshot."""

    keys: frozenset[AssociationKey]
    """The associations whose decision the changes may have altered."""
    revoked: tuple[tuple[AssociationKey, Decision], ...]
    """Held keys no longer allowed, with the decision that ends their polls."""
    refreshed: Changes
    """The changes recording the decisions that moved (already in the snapshot)."""


NOTHING = Absorbed(frozenset(), (), ())


def absorb(
    changes: Collection[Change],
    snapshot: Snapshot,
    held: Collection[AssociationKey],
    now: float,
    *,
    kept: AssociationKey | None = None,
) -> Absorbed:
    """Apply durable ``changes`` to ``snapshot``, record the decisions they moved,
    and say which held keys lost access.

    ``kept``: a row whose decision the changes themselves record and that a
    re-evaluation must not overwrite: a request decided during a registry
    outage records the decision the device got (the last one, or the
    new-device preference), not what the registry data in memory would say."""
    if not changes:
        return NOTHING
    keys = affected_keys(changes, snapshot)
    snapshot.apply(changes)
    assessed: dict[AssociationKey, Assessment] = {}
    refreshed = (
        refresh(keys - {kept} if kept else keys, snapshot, now, assessed=assessed) if keys else ()
    )
    revoked = _revoked(keys, held, assessed, snapshot, now) if held and keys else ()
    if refreshed:
        snapshot.apply(refreshed)
    return Absorbed(frozenset(keys), revoked, refreshed)


def _revoked(
    keys: set[AssociationKey],
    held: Collection[AssociationKey],
    assessed: dict[AssociationKey, Assessment],
    snapshot: Snapshot,
    now: float,
) -> tuple[tuple[AssociationKey, Decision], ...]:
    """The held keys no longer allowed, in key order. A key whose row
    ``refresh`` just assessed (on this same state: refreshed decisions are
    applied after) is decided from that assessment, as ``evaluate`` would:
    the key names its row (its user is a principal, not an alias)."""
    revoked: list[tuple[AssociationKey, Decision]] = []
    for key in sorted(keys.intersection(held)):
        a = assessed.get(key)
        row = None if a is None else snapshot.get(key)
        if row is not None and a is not None and snapshot.principal_of(key.user) == key.user:
            decision = decision_of(a, row)
        else:
            decision = evaluate(key, snapshot, now)
        if not isinstance(decision, Forward):
            revoked.append((key, decision))
    return tuple(revoked)
