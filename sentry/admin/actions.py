"""Admin actions on associations, one row or many, as change lists.

Approach. ``build_action`` turns one action (allow, block, reset, wipe,
remove, link, preapprove) on one row into the policy's change list; the
policy checks the note, the row and the transition table (preapprove is the
one action that creates its row). Link To a managed device that does not
exist or is retired is a conflict (409) here, checked before the policy.

``plan_bulk`` runs the same builder over many rows against a scratch copy of
the snapshot, applying each row's changes to the copy before building the
next: the rows are changed one after another, as if applied singly (Remove
re-flags its device's other rows, which a later row may be), yet the result
is ONE change list for ONE ``AccessState.commit``: one store transaction, one
pass of live revocation. A row the action cannot apply to (a wiped row, for
anything but Remove) is skipped with the reason; the others still change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sentry import policy
from sentry.model import AssociationKey
from sentry.policy import AdminError, Change, Changes, Snapshot
from sentry.policy.audit import audited

from .errors import Conflict, NotFound

__all__ = ["ACTIONS", "BULK_ACTIONS", "ActionOptions", "BulkPlan", "build_action", "plan_bulk"]

ACTIONS = ("allow", "block", "reset", "wipe", "remove", "link", "preapprove")
BULK_ACTIONS = ("allow", "block", "reset", "wipe", "remove")


@dataclass(frozen=True, slots=True)
class ActionOptions:
    """What an action needs besides the row."""

    action: str
    note: str
    actor: str
    account_only: bool = False  # wipe
    device: str = ""  # link: the managed device id


def build_action(
    snapshot: Snapshot, key: AssociationKey, opts: ActionOptions, now: float
) -> Changes:
    """The changes of one action on one row; raises ``AdminError``/``ApiError``."""
    note, actor = opts.note, opts.actor
    if opts.action == "allow":
        return policy.allow(snapshot, key, note=note, actor=actor, now=now)
    if opts.action == "block":
        return policy.block(snapshot, key, note=note, actor=actor, now=now)
    if opts.action == "reset":
        return policy.reset(snapshot, key, note=note, actor=actor, now=now)
    if opts.action == "preapprove":
        return policy.preapprove(snapshot, key, note=note, actor=actor, now=now)
    if opts.action == "wipe":
        only = opts.account_only
        return policy.wipe(snapshot, key, account_only=only, note=note, actor=actor, now=now)
    if opts.action == "remove":
        return policy.remove(snapshot, key, note=note, actor=actor, now=now)
    _check_link_target(snapshot, key, opts.device)
    return policy.link_to(snapshot, key, opts.device, note=note, actor=actor, now=now)


def _check_link_target(snapshot: Snapshot, key: AssociationKey, device_id: str) -> None:
    if snapshot.get(key) is None:
        raise NotFound(f"no association for device {key.device_id!r}, user {key.user!r}")
    device = snapshot.devices.get(device_id)
    if device is None:
        raise Conflict(f"cannot link: no managed device {device_id!r}")
    if device.retired:
        raise Conflict(f"cannot link: managed device {device_id!r} is retired")


@dataclass
class BulkPlan:
    """The one change list of a bulk action, and what it does to which row."""

    changes: list[Change] = field(default_factory=list)
    changed: list[AssociationKey] = field(default_factory=list)
    skipped: list[tuple[AssociationKey, str]] = field(default_factory=list)


def plan_bulk(
    snapshot: Snapshot,
    keys: Sequence[AssociationKey],
    opts: ActionOptions,
    now: float,
    filter_text: dict[str, object],
) -> BulkPlan:
    """Build the action on every row in ``keys`` (see the module comment)."""
    plan = BulkPlan()
    scratch = snapshot.copy()
    for key in keys:
        try:
            changes = build_action(scratch, key, opts, now)
        except AdminError as exc:
            plan.skipped.append((key, exc.message))
            continue
        scratch.apply(changes)
        plan.changes.extend(changes)
        plan.changed.append(key)
    if plan.changed:
        plan.changes.append(_summary(opts, now, filter_text, len(keys), plan))
    return plan


def _summary(
    opts: ActionOptions, now: float, filter_text: dict[str, object], matched: int, plan: BulkPlan
) -> Change:
    """One audit entry for the whole bulk action (each row has its own too)."""
    return audited(
        at=now,
        actor=opts.actor,
        action=f"bulk_{opts.action}",
        target="associations",
        note=opts.note,
        before={"filter": filter_text, "matched": matched},
        after={"changed": len(plan.changed), "skipped": len(plan.skipped)},
    )
