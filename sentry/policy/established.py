"""One backend type per device: recording, keeping and resetting the established type.

Approach (design.md §4 row 3). The *scope* of an association is its managed
device (``device:<id>``: every EAS DeviceId of a registered device, and rows
an admin linked to it) or, unregistered, its DeviceId alone (``eas:<id>``).
Each scope has at most one ``EstablishedType``, and a row whose pool is of
another type is refused (MIXED_BACKEND, in ``rules``). The record is data,
not derived from the rows, so that:

- it is set only when the backend ACCEPTS a forwarded request of a row that
  has no established type in its scope (``backend_accepted``): a request with
  a wrong password (401), a refused one, an unverified row and a throwaway
  DeviceId never establish anything, so a stranger cannot lock a device onto
  a backend type;
- it stays when the association that set it is removed; it goes when the
  scope has no association left (``release_scopes``, called by every change
  that deletes or moves rows) or an administrator resets it
  (``reset_backend_type``: with a mandatory note, to a given type or to the
  type of the scope's oldest verified routed row);
- registering a device folds its DeviceIds' records into one for the device
  (the oldest wins: the others' rows become MIXED_BACKEND), and a DeviceId
  that leaves a device (retire, DeviceIds changed) keeps the device's type
  (``device_changes``); a verified row an admin links to a device that has
  no type yet brings its type along (``carried_type``). So a device with a
  verified, allowed mailbox always has an established type.

Every function is pure: it reads the snapshot and returns changes; the shell
applies them, ends held polls of rows that became MIXED_BACKEND
(``affected_keys`` covers the scope) and records the new decisions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from sentry.model import (
    THROWAWAY_DEVICE_IDS,
    Association,
    AssociationKey,
    Device,
    EstablishedType,
    HistoryEvent,
    Verdict,
    canonical_device_id,
)

from .audit import audited, require_actor, require_note
from .changes import (
    AppendHistory,
    Change,
    Changes,
    DeleteEstablished,
    PutAssociation,
    PutEstablished,
)
from .errors import ConflictError, NotFoundError, ValidationError
from .indexes import DEVICE_SCOPE, EAS_SCOPE
from .rules import managed_device
from .snapshot import Snapshot

__all__ = [
    "backend_accepted",
    "backend_scope",
    "carried_type",
    "device_changes",
    "missing_types",
    "release_scopes",
    "reset_backend_type",
    "scope_keys",
    "scope_of",
]


def scope_of(device: Device | None, device_id: str) -> str:
    """The scope name of a row on ``device_id`` whose managed device is ``device``."""
    return DEVICE_SCOPE + device.id if device is not None else EAS_SCOPE + device_id


def backend_scope(row: Association, snapshot: Snapshot) -> str:
    """The scope whose established type binds ``row``."""
    return scope_of(managed_device(row, snapshot), row.key.device_id)


def scope_keys(snapshot: Snapshot, scope: str) -> set[AssociationKey]:
    """The keys of every association bound by ``scope``."""
    if scope.startswith(EAS_SCOPE):
        rows = snapshot.on_device(scope[len(EAS_SCOPE) :])
        return {r.key for r in rows if managed_device(r, snapshot) is None}
    device_id = scope[len(DEVICE_SCOPE) :]
    device = snapshot.devices.get(device_id)
    keys = snapshot.manually_linked(device_id)
    for eas_id in () if device is None else device.eas_ids:
        keys.update(r.key for r in snapshot.on_device(eas_id))
    return {
        k
        for k in keys
        if (r := snapshot.get(k)) is not None and backend_scope(r, snapshot) == scope
    }


def backend_accepted(snapshot: Snapshot, key: AssociationKey, now: float) -> Changes:
    """The backend accepted a request forwarded for ``key``: the row becomes
    verified and, if its scope has no established type yet, establishes its
    pool's type. Nothing when the row is gone or already verified."""
    row = snapshot.get(key)
    if row is None or row.verified_at is not None:
        return ()
    new = replace(row, verified_at=now)
    out: list[Change] = [PutAssociation(new)]
    out.append(AppendHistory(key, HistoryEvent(now, "verified", {"pool": row.pool})))
    device = managed_device(row, snapshot)
    if _may_establish(new) and snapshot.established_for(device, key.device_id) is None:
        assert new.backend_type is not None
        record = EstablishedType(scope_of(device, key.device_id), new.backend_type, now, key)
        out.append(PutEstablished(record))
        detail = {"scope": record.scope, "backend_type": record.backend_type}
        out.append(AppendHistory(key, HistoryEvent(now, "established", detail)))
    return tuple(out)


def _may_establish(row: Association) -> bool:
    return row.counted and row.verdict is Verdict.FORWARD and row.backend_type is not None


def carried_type(snapshot: Snapshot, row: Association, scope: str, now: float) -> Changes:
    """A verified row moves into ``scope`` (Link To): it establishes the
    scope's type if the scope has none."""
    if not row.counted or snapshot.established(scope) is not None:
        return ()
    pool = snapshot.pool_for(row.key.user)
    if pool is None:
        return ()
    return (PutEstablished(EstablishedType(scope, pool.type, now, row.key)),)


def release_scopes(snapshot: Snapshot, removed: Iterable[AssociationKey]) -> Changes:
    """``DeleteEstablished`` for each scope that has no association left once
    the rows ``removed`` are gone (call before applying their deletion)."""
    gone = set(removed)
    scopes = {backend_scope(r, snapshot) for k in gone if (r := snapshot.get(k)) is not None}
    out: list[Change] = []
    for scope in sorted(scopes):
        if snapshot.established(scope) is not None and not scope_keys(snapshot, scope) - gone:
            out.append(DeleteEstablished(scope))
    return tuple(out)


def reset_backend_type(
    snapshot: Snapshot,
    scope: str,
    *,
    note: str,
    actor: str,
    now: float,
    backend_type: str | None = None,
) -> Changes:
    """An administrator resets a scope's established type: to ``backend_type``
    (a configured pool type), or to the type of the scope's oldest verified
    routed row (none: the next accepted row establishes it)."""
    note, actor = require_note(note), require_actor(actor)
    scope = _checked_scope(snapshot, scope)
    if backend_type is not None and backend_type not in snapshot.backend_types:
        known = ", ".join(sorted(snapshot.backend_types)) or "none"
        raise ConflictError(f"no pool has backend type {backend_type!r} (configured: {known})")
    old = snapshot.established(scope)
    new = _reset_record(snapshot, scope, backend_type, actor, note, now)
    change: Change = DeleteEstablished(scope) if new is None else PutEstablished(new)
    entry = audited(
        at=now,
        actor=actor,
        action="reset_backend_type",
        target=scope,
        note=note,
        before=None if old is None else _summary(old),
        after=None if new is None else _summary(new),
    )
    return (change, entry)


def _checked_scope(snapshot: Snapshot, scope: str) -> str:
    if scope.startswith(DEVICE_SCOPE):
        device = snapshot.devices.get(scope[len(DEVICE_SCOPE) :])
        if device is None:
            raise NotFoundError(f"no managed device {scope[len(DEVICE_SCOPE) :]!r}")
        if device.retired:
            raise ConflictError(f"managed device {device.id!r} is retired")
        return scope
    if not scope.startswith(EAS_SCOPE) or not scope[len(EAS_SCOPE) :].strip():
        raise ValidationError(f"not a backend-type scope: {scope!r}")
    device_id = canonical_device_id(scope[len(EAS_SCOPE) :])
    if device_id in THROWAWAY_DEVICE_IDS:
        raise ValidationError(
            f"DeviceId {device_id} is shared by many phones: it has no backend type"
        )
    holder = snapshot.device_for_eas(device_id)
    if holder is not None:
        raise ConflictError(
            f"DeviceId {device_id} belongs to managed device {holder.id!r}: reset the device"
        )
    scope = EAS_SCOPE + device_id
    if snapshot.established(scope) is None and not snapshot.mailbox_count(device_id):
        raise NotFoundError(f"no association and no backend type for DeviceId {device_id}")
    return scope


def _reset_record(
    snapshot: Snapshot, scope: str, backend_type: str | None, actor: str, note: str, now: float
) -> EstablishedType | None:
    if backend_type is not None:
        return EstablishedType(scope, backend_type, now, None, actor, note)
    rows = [r for k in scope_keys(snapshot, scope) if (r := snapshot.get(k)) is not None]
    for row in sorted((r for r in rows if r.counted), key=_by_verification):
        pool = snapshot.pool_for(row.key.user)
        if pool is not None:
            return EstablishedType(scope, pool.type, now, row.key, actor, note)
    return None


def _by_verification(row: Association) -> tuple[float, str, str]:
    return row.verified_at or 0.0, row.key.user, row.key.device_id


def _summary(e: EstablishedType) -> dict[str, object]:
    key = None if e.key is None else f"{e.key.device_id}/{e.key.user}"
    return {"backend_type": e.backend_type, "set_by": key, "actor": e.actor}


def device_changes(snapshot: Snapshot, old: Device | None, new: Device) -> Changes:
    """Keep one established type per device when a managed device is
    registered, changes DeviceIds or is retired (see the module comment)."""
    out: list[Change] = []
    scope = DEVICE_SCOPE + new.id
    record = snapshot.established(scope)
    before = set() if old is None or old.retired else set(old.eas_ids)
    staying = set() if new.retired else set(new.eas_ids)
    if new.retired:  # rows an admin linked to the device fall back to their DeviceId
        before |= {k.device_id for k in snapshot.manually_linked(new.id)}
    joined = [e for i in sorted(staying) if (e := snapshot.established(EAS_SCOPE + i))]
    if record is None and joined and staying:
        record = replace(min(joined, key=lambda e: (e.at, e.scope)), scope=scope)
        out.append(PutEstablished(record))
    out.extend(DeleteEstablished(e.scope) for e in joined)
    for eas_id in sorted(before - staying):
        keep = snapshot.mailbox_count(eas_id) and snapshot.established(EAS_SCOPE + eas_id) is None
        if record is not None and keep:
            out.append(PutEstablished(replace(record, scope=EAS_SCOPE + eas_id)))
    if new.retired and snapshot.established(scope) is not None:
        out.append(DeleteEstablished(scope))
    return tuple(out)


def missing_types(snapshot: Snapshot, now: float) -> Changes:
    """Establish the type of every scope that has verified rows but no record
    (rows from before types were recorded; run at start): the oldest verified
    routed row's pool type, as the first accepted request would have."""
    first: dict[str, Association] = {}
    for row in snapshot.associations():
        if not row.counted:
            continue
        device = managed_device(row, snapshot)
        if snapshot.established_for(device, row.key.device_id) is not None:
            continue
        scope = scope_of(device, row.key.device_id)
        held = first.get(scope)
        if (held is None or _by_verification(row) < _by_verification(held)) and snapshot.pool_for(
            row.key.user
        ):
            first[scope] = row
    out: list[Change] = []
    for scope, row in sorted(first.items()):
        pool = snapshot.pool_for(row.key.user)
        assert pool is not None
        out.append(PutEstablished(EstablishedType(scope, pool.type, now, row.key, "system")))
    return tuple(out)
