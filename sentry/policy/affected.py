"""Which associations a change list may have changed the decision of.

Approach (live revocation, design.md §4). After an admin, compliance or
preference change, the gateway must end held long polls that lost access.
``affected_keys(changes, snapshot)`` — called BEFORE the changes are applied,
so that what is being replaced or deleted can still be seen — returns every
key whose decision may differ; the shell then calls ``evaluate`` on those
that hold a poll, and ``refresh`` to record the new decisions.

A decision depends on the row itself, its managed device, its user, and —
through the mixed-backend rule and the limits — on the other rows of the same
DeviceId or the same mailbox. So the keys directly touched are widened by one
step to their device and mailbox neighbours (one step suffices: a decision
never depends on another row's decision). A device's established backend
type reaches every row of its scope (the managed device's DeviceIds, or the
DeviceId). Changes that reach every row (routing, pools, realms, limits and
registration preferences) return every key. New device access rules reach
exactly the rows whose first matching rule differs between the old list and
the new one (a rule looks at the row alone, so no widening).
"""

from __future__ import annotations

from collections.abc import Iterable

from sentry.model import AccessRules, AssociationKey, Device, Preferences

from . import changes as ch
from .access_rules import RuleSet, facts_of
from .established import scope_keys
from .snapshot import Snapshot

__all__ = ["affected_keys"]

_EVERYTHING = (ch.PutPool, ch.DeletePool, ch.PutRouting, ch.PutRealms)
_NO_DECISION = frozenset({ch.AppendHistory, ch.AppendAudit, ch.Touch})
"""Changes no decision depends on (exact types: ``_direct`` gives them no key)."""


def affected_keys(changes: Iterable[ch.Change], snapshot: Snapshot) -> set[AssociationKey]:
    """Keys whose decision ``changes`` may alter (call before applying them)."""
    direct: set[AssociationKey] = set()
    ruled: set[AssociationKey] = set()
    for change in changes:
        if type(change) is ch.PutAssociation:  # the common cases first (a bulk's 3,000)
            direct.add(change.association.key)
            continue
        if type(change) in _NO_DECISION:
            continue
        if isinstance(change, _EVERYTHING) or _prefs_matter(change, snapshot.prefs):
            return set(snapshot.keys())
        if isinstance(change, ch.PutAccessRules):
            ruled |= _rule_keys(snapshot, change.rules)
        else:
            direct |= _direct(change, snapshot)
    return _widen(direct, snapshot) | ruled


def _rule_keys(snapshot: Snapshot, rules: AccessRules) -> set[AssociationKey]:
    """Rows whose first matching device access rule differs under ``rules``."""
    old, new = snapshot.rule_set, RuleSet(rules)
    if not old.rules and not rules:
        return set()
    return {
        row.key
        for row in snapshot.associations()
        if new.first(facts := facts_of(row)) != old.first(facts)
    }


def _prefs_matter(change: ch.Change, old: Preferences) -> bool:
    """Only refusal_style changes nothing a recorded decision or a revocation
    depends on (it only changes how the next refusal looks on the wire)."""
    if not isinstance(change, ch.PutPreferences):
        return False
    new = change.prefs
    return (
        new.auto_block_unregistered != old.auto_block_unregistered
        or new.max_devices_per_mailbox != old.max_devices_per_mailbox
        or new.max_mailboxes_per_device != old.max_mailboxes_per_device
        or new.new_device_access_when_registry_unreachable
        != old.new_device_access_when_registry_unreachable
        or new.compliance_overrides_allow != old.compliance_overrides_allow
    )


def _direct(change: ch.Change, snapshot: Snapshot) -> set[AssociationKey]:
    if isinstance(change, ch.PutAssociation):
        return {change.association.key}
    if isinstance(change, ch.DeleteAssociation):
        return {change.key}
    if isinstance(change, ch.PutDevice):
        return _device_keys(snapshot, change.device.id, change.device)
    if isinstance(change, ch.DeleteDevice):
        return _device_keys(snapshot, change.device_id, None)
    if isinstance(change, ch.PutUser):
        return _user_keys(snapshot, change.user.principal)
    if isinstance(change, ch.DeleteUser):
        return _user_keys(snapshot, change.principal)
    if isinstance(change, ch.PutLabel | ch.DeleteLabel | ch.PutSetting | ch.DeleteSetting):
        return _labelled_keys(snapshot, change)
    if isinstance(change, ch.PutEstablished):
        return scope_keys(snapshot, change.established.scope)
    if isinstance(change, ch.DeleteEstablished):
        return scope_keys(snapshot, change.scope)
    return set()


def _device_keys(snapshot: Snapshot, device_id: str, new: Device | None) -> set[AssociationKey]:
    """Rows on the old and new DeviceIds of a managed device, and rows linked to it."""
    old = snapshot.devices.get(device_id)
    eas_ids = set(new.eas_ids if new else ()) | set(old.eas_ids if old else ())
    keys = snapshot.manually_linked(device_id)
    for eas_id in eas_ids:
        keys.update(row.key for row in snapshot.on_device(eas_id))
    return keys


def _user_keys(snapshot: Snapshot, user: str) -> set[AssociationKey]:
    """The user's rows, and the rows on devices the user owns (pushed mailboxes)."""
    keys = {row.key for row in snapshot.of_user(user)}
    for device_id in snapshot.devices_of(user):
        keys |= _device_keys(snapshot, device_id, None)
    return keys


def _labelled_keys(snapshot: Snapshot, change: ch.Change) -> set[AssociationKey]:
    """Rows on devices carrying a label that the change touches."""
    labels = _touched_labels(snapshot, change)
    keys: set[AssociationKey] = set()
    for device in snapshot.devices.values():
        listed = any(
            device.id in snapshot.labels[n].devices for n in labels if n in snapshot.labels
        )
        if listed or device.labels & labels or _newly_listed(change, device):
            keys |= _device_keys(snapshot, device.id, None)
    return keys


def _touched_labels(snapshot: Snapshot, change: ch.Change) -> set[str]:
    if isinstance(change, ch.PutLabel):
        return {change.label.name}
    if isinstance(change, ch.DeleteLabel):
        return {change.name}
    if isinstance(change, ch.PutSetting):
        name = change.setting.name
    elif isinstance(change, ch.DeleteSetting):
        name = change.name
    else:
        return set()
    return {lb.name for lb in snapshot.labels.values() if name in lb.settings}


def _newly_listed(change: ch.Change, device: Device) -> bool:
    return isinstance(change, ch.PutLabel) and device.id in change.label.devices


def _widen(keys: set[AssociationKey], snapshot: Snapshot) -> set[AssociationKey]:
    """Add the rows sharing a DeviceId or a mailbox with ``keys``."""
    out = set(keys)
    # each DeviceId and mailbox once: a bulk change to 1,000 rows of one
    # mailbox must not list that mailbox's rows 1,000 times
    for device_id in {key.device_id for key in keys}:
        out.update(row.key for row in snapshot.on_device(device_id))
    for user in {key.user for key in keys}:
        out.update(row.key for row in snapshot.of_user(user))
    return out
