"""ActiveSync policies the gateway enforces itself (Ivanti's Assign/Revert Policy).

Approach. Named policies (``EasPolicy``: EASProvisionDoc settings) are assigned
per association, per user, per label, or as the default
(``PolicyAssignments``). Which one applies is decided **per device**, never
per mailbox: one physical device can enforce one policy only, so every
mailbox of a device gets the same one (this replaces the seed's "policies
from several accounts" flag with an answer). ``device_policy`` collects the
device's mailboxes (every association on any EAS DeviceId of its managed
device, or on the DeviceId alone when it is not registered, plus the
requesting one), looks up for each the most specific assignment
(association, then user; the device's labels and the default apply to all of
them), and takes the most specific one found on the device: association >
user > label > default, ties between two mailboxes (or two labels) broken by
the policy name in code-point order. The most specific wins because it is the
administrator's most deliberate choice (an association assignment names this
very device); the rule is total and needs no ordering of policies by
"strictness", which 40 independent settings do not have. ``source`` says
which assignment won, for the admin view and the logs.

``gate`` is the request-time check (pure; the proxy carries it out, see
``sentry.proxy.provisioning``) for a forwarded request that is not a
Provision:

* a policy applies and the device presents the final key the gateway issued
  for this association, for the policy's current content: ``Pass`` with the
  backend's key to substitute (``translate``);
* a policy applies and the key is missing, 0, stale or of another content:
  ``ProvisionRequired`` (142 without a key, 144 otherwise);
* no policy applies (never assigned, or reverted) but the device presents a
  key the gateway issued: ``ProvisionRequired(144)``, so it provisions with
  the backend again (Revert Policy);
* otherwise ``Pass`` unchanged (the backend's own provisioning).

The admin operations (``put_policy`` ... ``assign``) return changes with an
audit entry, like ``registry.py``. A policy still assigned cannot be deleted
(409); an assignment naming a policy or label that does not exist is a 409
(like every reference to something missing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from sentry.eas.policydoc import check_settings, settings_digest
from sentry.eas.status import CommonStatus
from sentry.model import (
    AssociationKey,
    Device,
    EasPolicy,
    PolicyAssignments,
    ProvisionRecord,
    association_ref,
    canonical_device_id,
)

from .audit import audited_change
from .changes import Changes, DeleteEasPolicy, PutEasPolicy, PutPolicyAssignments
from .errors import ConflictError, NotFoundError, ValidationError
from .snapshot import Snapshot

__all__ = [
    "SCOPES",
    "Pass",
    "ProvisionRequired",
    "Resolved",
    "assign",
    "current",
    "delete_policy",
    "device_policy",
    "gate",
    "policy_from",
    "put_policy",
]

Scope = Literal["default", "user", "label", "association"]
SCOPES: tuple[Scope, ...] = ("association", "user", "label", "default")
"""Assignment scopes, most specific first (the resolution order)."""


@dataclass(frozen=True, slots=True)
class Resolved:
    """The policy a device gets, its content digest and which assignment won
    (``association:DEVICE/user``, ``user:alice``, ``label:sales`` or ``default``)."""

    policy: EasPolicy
    digest: str
    source: str


@dataclass(frozen=True, slots=True)
class Pass:
    """Forward; with ``translate``, the device's key is replaced by ``backend_key``
    (None: the backend asked for no key, so none is sent)."""

    translate: bool = False
    backend_key: int | None = None


@dataclass(frozen=True, slots=True)
class ProvisionRequired:
    """Answer "provision first" (142/144 from 14.0 on, else HTTP 449)."""

    status: CommonStatus


PASS = Pass()


# --- resolution ---------------------------------------------------------------------


def device_policy(snapshot: Snapshot, key: AssociationKey) -> Resolved | None:
    """The policy every mailbox of ``key``'s device gets, or None (the backend's)."""
    if not snapshot.eas_policies:
        return None
    assignments = snapshot.policy_assignments
    device = snapshot.device_for_eas(key.device_id)
    candidates = _mailbox_candidates(snapshot, key, device, assignments)
    candidates += _device_candidates(snapshot, device, assignments)
    found = [c for c in candidates if c[1] in snapshot.eas_policies]
    if not found:
        return None
    _, name, source = min(found)
    policy = snapshot.eas_policies[name]
    return Resolved(policy, settings_digest(policy.settings), source)


def _mailboxes(
    snapshot: Snapshot, key: AssociationKey, device: Device | None
) -> set[AssociationKey]:
    ids = device.eas_ids if device is not None else (key.device_id,)
    found = {row.key for eas_id in ids for row in snapshot.on_device(eas_id)}
    found.add(key)
    return found


def _mailbox_candidates(
    snapshot: Snapshot,
    key: AssociationKey,
    device: Device | None,
    assignments: PolicyAssignments,
) -> list[tuple[int, str, str]]:
    by_row, by_user = assignments.associations, assignments.users
    if not by_row and not by_user:
        return []
    out: list[tuple[int, str, str]] = []
    for mailbox in _mailboxes(snapshot, key, device):
        if by_row:
            ref = association_ref(mailbox)
            if ref in by_row:
                out.append((0, by_row[ref], f"association:{ref}"))
        name = by_user.get(mailbox.user)
        if name is not None:
            out.append((1, name, f"user:{mailbox.user}"))
    return out


def _device_candidates(
    snapshot: Snapshot, device: Device | None, assignments: PolicyAssignments
) -> list[tuple[int, str, str]]:
    out: list[tuple[int, str, str]] = []
    if device is not None and assignments.labels:
        for label in snapshot.labels.values():
            carried = label.name in device.labels or device.id in label.devices
            if carried and label.name in assignments.labels:
                out.append((2, assignments.labels[label.name], f"label:{label.name}"))
    if assignments.default is not None:
        out.append((3, assignments.default, "default"))
    return out


# --- the request-time check -------------------------------------------------------------


def gate(
    snapshot: Snapshot, key: AssociationKey, policy_key: int | None
) -> Pass | ProvisionRequired:
    """What to do with a forwarded request that is not a Provision (module docstring)."""
    record = snapshot.provisioning.get(key)
    resolved = device_policy(snapshot, key)
    if resolved is None:
        if record is not None and policy_key and policy_key in (record.issued, record.pending):
            return ProvisionRequired(CommonStatus.InvalidPolicyKey)  # reverted
        return PASS
    if not policy_key:
        return ProvisionRequired(CommonStatus.DeviceNotProvisioned)
    if record is None or not current(record, resolved) or policy_key != record.issued:
        return ProvisionRequired(CommonStatus.InvalidPolicyKey)
    return Pass(True, record.backend_key)


def current(record: ProvisionRecord, resolved: Resolved) -> bool:
    """Whether ``record`` was provisioned with ``resolved``'s policy and content."""
    return record.policy == resolved.policy.name and record.digest == resolved.digest


# --- admin operations -------------------------------------------------------------------


def policy_from(name: str, body: Mapping[str, Any]) -> EasPolicy:
    """An ``EasPolicy`` from the admin API's JSON; ``ValidationError`` when bad."""
    name = name.strip()
    if not name or len(name) > 128 or not name.isprintable():
        raise ValidationError("a policy needs a printable name of 1-128 characters")
    settings = body.get("settings", {})
    if not isinstance(settings, Mapping):
        raise ValidationError("settings must be an object of EASProvisionDoc settings")
    description = body.get("description", "")
    allow = body.get("allow_non_provisionable", False)
    if not isinstance(description, str) or len(description) > 1000:
        raise ValidationError("description must be a string of at most 1000 characters")
    if not isinstance(allow, bool):
        raise ValidationError("allow_non_provisionable must be a boolean")
    try:
        checked = check_settings(settings)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    return EasPolicy(name, checked, description, allow)


def put_policy(
    snapshot: Snapshot, policy: EasPolicy, *, actor: str, now: float, note: str = ""
) -> Changes:
    """Create or replace a named policy (devices holding a key for its old
    content provision again at their next request)."""
    old = snapshot.eas_policies.get(policy.name)
    return audited_change(PutEasPolicy(policy), "put_eas_policy", f"eas_policy:{policy.name}",
                    old, policy, actor, note, now)  # fmt: skip


def delete_policy(
    snapshot: Snapshot, name: str, *, actor: str, now: float, note: str = ""
) -> Changes:
    """Delete a named policy; ``ConflictError`` while it is assigned anywhere."""
    old = snapshot.eas_policies.get(name)
    if old is None:
        raise NotFoundError(f"no ActiveSync policy {name!r}")
    if name in snapshot.policy_assignments.names():
        raise ConflictError(f"ActiveSync policy {name!r} is assigned; revert its assignments first")
    return audited_change(DeleteEasPolicy(name), "delete_eas_policy", f"eas_policy:{name}",
                    old, None, actor, note, now)  # fmt: skip


def assign(
    snapshot: Snapshot,
    scope: Scope,
    target: str,
    policy: str | None,
    *,
    actor: str,
    now: float,
    note: str = "",
) -> Changes:
    """Assign ``policy`` at ``scope``/``target`` (None: revert that assignment).

    ``target``: a principal (``user``), a label name (``label``), ``DEVICEID/user``
    (``association``), ignored for ``default``."""
    if policy is not None and policy not in snapshot.eas_policies:
        raise ConflictError(f"no ActiveSync policy {policy!r}")
    old = snapshot.policy_assignments
    if scope == "default":
        new, ref = replace(old, default=policy), "default"
    else:
        ref = _target(snapshot, scope, target)
        table = dict(getattr(old, _FIELD[scope]))
        if policy is None:
            table.pop(ref, None)
        else:
            table[ref] = policy
        new = _with_table(old, scope, table)
    before = _assigned(old, scope, ref)
    action = "assign_eas_policy" if policy is not None else "revert_eas_policy"
    target_text = f"eas_policy_assignment:{scope}" + ("" if scope == "default" else f":{ref}")
    return audited_change(PutPolicyAssignments(new), action, target_text,
                    before, policy, actor, note, now)  # fmt: skip


_FIELD: Mapping[str, str] = {"user": "users", "label": "labels", "association": "associations"}


def _with_table(old: PolicyAssignments, scope: Scope, table: dict[str, str]) -> PolicyAssignments:
    if scope == "user":
        return replace(old, users=table)
    if scope == "label":
        return replace(old, labels=table)
    return replace(old, associations=table)


def _assigned(assignments: PolicyAssignments, scope: Scope, ref: str) -> str | None:
    if scope == "default":
        return assignments.default
    table: Mapping[str, str] = getattr(assignments, _FIELD[scope])
    return table.get(ref)


def _target(snapshot: Snapshot, scope: Scope, target: str) -> str:
    target = target.strip()
    if scope == "user":
        principal = snapshot.canonical(target)
        if not principal:
            raise ValidationError(f"{target!r} names no principal")
        return principal
    if scope == "label":
        if target not in snapshot.labels:
            raise ConflictError(f"no label {target!r}")
        return target
    if scope == "association":
        device_id, sep, user = target.partition("/")
        principal = snapshot.canonical(user) if sep else None
        if not device_id or not principal:
            raise ValidationError("an association is named DEVICEID/user")
        return association_ref(AssociationKey(canonical_device_id(device_id), principal))
    raise ValidationError(f"unknown assignment scope {scope!r}")
