"""Admin actions on one association: Allow, Block, Reset, Wipe, Remove, Link To,
and Pre-approve (an Allow for a row before its first request).

Approach. Each action is a pure function of the snapshot returning changes;
nothing is applied here. It checks its input (a non-empty note and an actor),
finds the row (``NotFoundError``, 404) and asks the transition table whether
the action is allowed in the row's state (``TransitionError``, 409). The new
row keeps every other field and records the decision the table now gives it,
so the admin list shows at once why it is allowed or blocked. Each action
touches only its (device, user) row, plus a history event and an audit entry
with the note, the actor, the time and the state before -> after. (Remove
also re-flags the device's remaining rows for ambiguous policies, and Remove
or a Link To that moves the row to another device drops the established
backend type of a device left with no association.)

Pre-approve creates the row: the key from the admin's input (the route
follows from its principal), first seen now, never seen
(``last_seen`` 0.0), an Allow marked ``pre_approved``. The device's first
request finds it and fills in what the request shows. It is refused (409)
when the table would refuse it even with the Allow (no route for the
mailbox, or the device already established another backend type): an
approval that can never forward would only mislead.

After applying, the shell calls ``affected_keys``/``evaluate`` to end held
long polls that the action revoked.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from sentry.eas.request import THROWAWAY_DEVICE_IDS
from sentry.eas.versions import at_least
from sentry.model import (
    Association,
    AssociationKey,
    AuditEntry,
    HistoryEvent,
    Override,
    OverrideKind,
    Reason,
    WipeStatus,
)
from sentry.slots import fast_setter

from .ambiguity import ambiguity_changes
from .audit import audited, require_actor, require_note
from .changes import (
    AppendAudit,
    AppendHistory,
    Change,
    Changes,
    DeleteAssociation,
    DeleteProvision,
    PutAssociation,
)
from .decide import decision_detail, with_assessment
from .errors import NotFoundError, TransitionError, ValidationError
from .established import backend_scope, carried_type, release_scopes
from .indexes import DEVICE_SCOPE
from .reasons import ordered
from .rules import Candidate, assess
from .snapshot import Snapshot
from .transitions import Action, AdminState, state_of, transition

__all__ = ["allow", "block", "link_to", "preapprove", "remove", "reset", "wipe"]

# A canonical EAS DeviceId: plain (1-64 of these) or the hex of a base64 form's bytes.
_DEVICE_ID = re.compile(r"[A-Z0-9_-]{1,510}", re.ASCII)
_NEVER = (Reason.NO_BACKEND, Reason.MIXED_BACKEND)  # what even an Allow cannot beat


def allow(snapshot: Snapshot, key: AssociationKey, *, note: str, actor: str, now: float) -> Changes:
    """Admin Allow: forward this row whatever compliance, auto-block or limits say.

    Never beats a missing route or a mixed backend (fail closed). On a pending
    or failed wipe it cancels the wipe.
    """
    return _override(snapshot, key, Action.ALLOW, OverrideKind.ALLOW, note, actor, now)


def block(snapshot: Snapshot, key: AssociationKey, *, note: str, actor: str, now: float) -> Changes:
    """Admin Block: refuse this row (129) until an admin allows or removes it."""
    return _override(snapshot, key, Action.BLOCK, OverrideKind.BLOCK, note, actor, now)


def reset(snapshot: Snapshot, key: AssociationKey, *, note: str, actor: str, now: float) -> Changes:
    """Admin Reset: clear the Allow or Block; the decision table alone decides again.

    Not on a wipe (cancel it with Allow or Block first) nor on a wiped row.
    """
    note, actor = require_note(note), require_actor(actor)
    row = _existing(snapshot, key)
    transition(state_of(row), Action.RESET)
    new = replace(row, override=None)
    return _finish(snapshot, row, new, Action.RESET, note, actor, now)


def preapprove(
    snapshot: Snapshot,
    key: AssociationKey,
    *,
    note: str,
    actor: str,
    now: float,
) -> Changes:
    """Admin Pre-approve: create the (device, mailbox) row, allowed, before the
    device's first request (see the module comment). Like every new row it is
    unverified (not counted for the limits) until the backend accepts it."""
    note, actor = require_note(note), require_actor(actor)
    _check_new_key(key)
    transition(state_of(snapshot.get(key)), Action.PREAPPROVE)
    override = Override(OverrideKind.ALLOW, note, actor, now, pre_approved=True)
    candidate = Candidate(key, now, override=override)
    a = assess(candidate, snapshot, new=True)
    never = [r for r in _NEVER if r in a.reasons]
    if never:
        raise TransitionError(
            f"cannot pre-approve: even allowed, this association would be refused "
            f"({', '.join(r.value for r in ordered(never))})",
            AdminState.REMOVED.value,
            Action.PREAPPROVE.value,
        )
    row = Association(key, first_seen=now, last_seen=0.0, override=override)
    return _finish(snapshot, None, row, Action.PREAPPROVE, note, actor, now, created=True)


def _check_new_key(key: AssociationKey) -> None:
    if not key.user:
        raise ValidationError("a pre-approval needs a mailbox user")
    if not _DEVICE_ID.fullmatch(key.device_id):
        raise ValidationError(
            f"DeviceId {key.device_id[:80]!r} is not an EAS DeviceId (letters, digits, '-', '_')"
        )
    if key.device_id in THROWAWAY_DEVICE_IDS:
        raise ValidationError(f"DeviceId {key.device_id} is a throw-away id, never a device")


def wipe(
    snapshot: Snapshot,
    key: AssociationKey,
    *,
    account_only: bool = False,
    note: str,
    actor: str,
    now: float,
) -> Changes:
    """Admin Wipe: the row's next request gets the wipe (pending until acknowledged).

    An account-only wipe needs a 16.1 client (``AccountOnlyRemoteWipe``); asking
    it of an older one is refused rather than silently turned into a full wipe.
    """
    note, actor = require_note(note), require_actor(actor)
    row = _existing(snapshot, key)
    transition(state_of(row), Action.WIPE)
    if account_only and not at_least(row.protocol_version, 16, 1):
        raise TransitionError(
            f"an account-only wipe needs EAS 16.1; this device speaks "
            f"{row.protocol_version or 'an unknown version'}",
            state_of(row).value,
            Action.WIPE.value,
        )
    override = Override(OverrideKind.WIPE, note, actor, now, account_only)
    new = replace(row, override=override, wipe=WipeStatus.PENDING)
    return _finish(snapshot, row, new, Action.WIPE, note, actor, now)


def remove(
    snapshot: Snapshot, key: AssociationKey, *, note: str, actor: str, now: float
) -> Changes:
    """Admin Remove: delete the row; the device's next request creates a fresh one."""
    note, actor = require_note(note), require_actor(actor)
    row = _existing(snapshot, key)
    transition(state_of(row), Action.REMOVE)
    rest = [r for r in snapshot.on_device(key.device_id) if r.key != key]
    out: list[Change] = [DeleteAssociation(key), *ambiguity_changes(rest)]
    if key in snapshot.provisioning:  # the keys the gateway issued go with the row
        out.append(DeleteProvision(key))
    out.extend(release_scopes(snapshot, [key]))
    out.append(AppendHistory(key, HistoryEvent(now, "admin", {"action": "remove", "note": note})))
    out.append(_audit(key, row, None, Action.REMOVE, note, actor, now))
    return tuple(out)


def link_to(
    snapshot: Snapshot,
    key: AssociationKey,
    device_id: str,
    *,
    note: str,
    actor: str,
    now: float,
) -> Changes:
    """Admin Link To: tie the row to managed device ``device_id`` (it becomes linked
    when the mailbox user is registered)."""
    note, actor = require_note(note), require_actor(actor)
    row = _existing(snapshot, key)
    transition(state_of(row), Action.LINK_TO)
    device = snapshot.devices.get(device_id)
    if device is None:
        raise NotFoundError(f"no managed device {device_id!r}")
    if device.retired:
        raise ValidationError(f"managed device {device_id!r} is retired")
    new = replace(row, manual_link=device_id)
    target = DEVICE_SCOPE + device_id
    if backend_scope(row, snapshot) == target:
        return _finish(snapshot, row, new, Action.LINK_TO, note, actor, now)
    # The row leaves its device: that device may be left empty; the target may
    # take the row's type (its own type: the assessment is the same either way).
    released = release_scopes(snapshot, [key])
    carried = carried_type(snapshot, row, target, now)
    return (*released, *carried, *_finish(snapshot, row, new, Action.LINK_TO, note, actor, now))


def _override(
    snapshot: Snapshot,
    key: AssociationKey,
    action: Action,
    kind: OverrideKind,
    note: str,
    actor: str,
    now: float,
) -> Changes:
    note, actor = require_note(note), require_actor(actor)
    row = _existing(snapshot, key)
    transition(state_of(row), action)
    new = _with_override(row, Override(kind, note, actor, now), WipeStatus.NONE)
    return _finish(snapshot, row, new, action, note, actor, now)


# ``replace(row, override=..., wipe=...)`` without its per-call introspection
# (a bulk action sets them on a thousand rows).
_with_override = fast_setter(Association, "override", "wipe")


def _existing(snapshot: Snapshot, key: AssociationKey) -> Association:
    row = snapshot.get(key)
    if row is None:
        raise NotFoundError(f"no association for device {key.device_id!r}, user {key.user!r}")
    return row


def _finish(
    snapshot: Snapshot,
    old: Association | None,
    new: Association,
    action: Action,
    note: str,
    actor: str,
    now: float,
    *,
    created: bool = False,
) -> Changes:
    """Record the table's decision on ``new``; add history and audit.
    ``created``: ``new`` is not in the snapshot yet (pre-approve)."""
    row = with_assessment(new, assess(new, snapshot, new=created))
    name = action._value_  # the value without the ``value`` property's cost
    detail = {"action": name, "note": note, "actor": actor, **decision_detail(row)}
    before = None if old is None else _summary(old)
    entry = AuditEntry(now, actor, name, _target(row.key), note, before, _summary(row))
    return (
        PutAssociation(row),
        AppendHistory(row.key, HistoryEvent(now, "admin", detail)),
        AppendAudit(entry),
    )


def _audit(
    key: AssociationKey,
    old: Association | None,
    new: Association | None,
    action: Action,
    note: str,
    actor: str,
    now: float,
) -> Change:
    return audited(
        at=now,
        actor=actor,
        action=action.value,
        target=_target(key),
        note=note,
        before=None if old is None else _summary(old),
        after=None if new is None else _summary(new),
    )


def _target(key: AssociationKey) -> str:
    return f"association:{key.device_id}/{key.user}"


def _summary(row: Association) -> dict[str, Any]:
    """The audit entry's before or after of ``row``: JSON-ready as built, as
    ``audited`` would make it (``plain``), so ``_finish`` builds the entry
    directly (a bulk action's thousand rows are not converted again)."""
    return {"state": state_of(row)._value_, "link": row.manual_link, **decision_detail(row)}
