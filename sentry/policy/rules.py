"""The decision table of design.md §4, applied to one association row.

Approach. ``assess`` first collects EVERY reason that applies (rows 1-8 and
the registry-outage rule), then ``_conclude`` reads them in table order:

1. wipe pending/failed -> answer with the wipe; wiped -> refuse   WIPE
2. no pool routes the mailbox -> refuse, always                      NO_BACKEND
3. the device's established backend type differs -> refuse, always   MIXED_BACKEND
4. admin Block -> refuse; 5. admin Allow -> forward (beats 6-8;    MANUAL
   with the preference ``compliance_overrides_allow``, 6 beats it)
6. the device is managed and non-compliant -> refuse                 COMPLIANCE
7. unlinked and auto-block on -> refuse                              AUTO_BLOCK
8. over max devices per mailbox / mailboxes per device -> refuse     *_LIMIT (177)
9. otherwise forward to the routed pool.

Compliance is a property of the physical device: it applies to every row
whose DeviceId belongs to (or was linked to) a non-compliant managed device,
whether or not that mailbox is entitled there. So is the backend type: the
*established* type is recorded per managed device (all its DeviceIds) or per
unregistered DeviceId (``EstablishedType``, set by the first association the
backend accepted, see ``established.py``), and a row whose pool is of
another type is MIXED_BACKEND. The mailbox is routed by its principal alone
(``Snapshot.pool_for``): nothing a request carries moves a row's pool.

Only *counted* rows occupy a slot of a limit: verified (the backend accepted
them) and not on a throwaway DeviceId. Counted rows rank by (verified_at,
other key part); rank >= max means this row is the excess. An unverified row
ranks after every counted one (it is refused while the counted rows fill the
limit, and never displaces one); a throwaway row is never limited. Remove
frees a slot.

The row is a ``Candidate`` not yet in the snapshot (``new=True``: first
sight) or a stored row, possibly carrying the change an admin action is
preparing; its peers are read from the snapshot. Only rows 2-3 and the limits
look at other rows, and only at the same device or the same mailbox (after a
count check that usually ends it), so a decision costs O(mailboxes on the
device). Decisions are memoised: equal ones are the same object.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple, Protocol

from sentry.eas.status import CommonStatus
from sentry.model import (
    THROWAWAY_DEVICE_IDS,
    Association,
    AssociationKey,
    Device,
    NewDeviceAccess,
    Override,
    OverrideKind,
    Pool,
    Preferences,
    Reason,
    RefusalStyle,
    UnlinkCause,
    Verdict,
    WipeStatus,
)

from .decisions import Decision, Forward, Refuse, Wipe
from .reasons import LIMIT_REASONS, refusal_status
from .snapshot import Snapshot

__all__ = [
    "Assessment",
    "Candidate",
    "Row",
    "assess",
    "decision_of",
    "link_of",
    "managed_device",
    "stored_decision",
    "verdict_of",
]

_NO_REASONS: frozenset[Reason] = frozenset()
_NO_VIOLATIONS: frozenset[str] = frozenset()
# Rows 6-8 and the outage rule: they refuse unless an admin allowed the row.
_REFUSING = LIMIT_REASONS | {Reason.COMPLIANCE, Reason.AUTO_BLOCK, Reason.REGISTRY_UNREACHABLE}
_WIPE_ANSWER = (WipeStatus.PENDING, WipeStatus.FAILED)


class Row(Protocol):
    """What the table reads of a row: an ``Association`` or a ``Candidate``."""

    @property
    def key(self) -> AssociationKey: ...
    @property
    def first_seen(self) -> float: ...
    @property
    def verified_at(self) -> float | None: ...
    @property
    def wipe(self) -> WipeStatus: ...
    @property
    def override(self) -> Override | None: ...
    @property
    def manual_link(self) -> str | None: ...


class Candidate(NamedTuple):
    """A row not stored yet (first sight): cheap to build, read like a ``Row``."""

    key: AssociationKey
    first_seen: float
    wipe: WipeStatus = WipeStatus.NONE
    override: Override | None = None
    manual_link: str | None = None
    verified_at: float | None = None


class Assessment(NamedTuple):
    """The table's result for one row, before it becomes a ``Decision``."""

    verdict: Verdict
    reasons: frozenset[Reason]
    violations: frozenset[str]
    device: str | None  # the linked managed device
    unlinked: UnlinkCause | None
    pool: Pool | None
    style: RefusalStyle = RefusalStyle.STATUS  # of a refusal


def managed_device(row: Row, snap: Snapshot) -> Device | None:
    """The managed device of a row: its Link To target, else its DeviceId's owner."""
    if row.manual_link is not None:
        device = snap.devices.get(row.manual_link)
        if device is not None and not device.retired:
            return device
    return snap.device_for_eas(row.key.device_id)


def link_of(row: Row, snap: Snapshot, device: Device | None) -> UnlinkCause | None:
    """None when the row is linked to ``device``, else why not (design.md §4)."""
    if device is None:
        return UnlinkCause.DEVICE_UNKNOWN
    user = row.key.user
    if user not in snap.users:
        return UnlinkCause.USER_UNKNOWN
    if user == device.owner or row.manual_link == device.id:
        return None
    return None if user in snap.pushed(device.id).principals else UnlinkCause.NOT_ENTITLED


def assess(row: Row, snap: Snapshot, *, new: bool = False, reachable: bool = True) -> Assessment:
    """Apply the decision table to ``row`` under ``snap``'s preferences; ``new``:
    the row is not in ``snap`` yet."""
    prefs = snap.prefs
    device = managed_device(row, snap)
    unlinked = link_of(row, snap, device)
    pool = snap.pool_for(row.key.user)
    reasons: list[Reason] = [Reason.WIPE] if row.wipe is not WipeStatus.NONE else []
    if pool is None:
        reasons.append(Reason.NO_BACKEND)
    elif _mixes_backend(row, pool, device, snap):
        reasons.append(Reason.MIXED_BACKEND)
    override = None if row.override is None else row.override.kind
    if override is OverrideKind.ALLOW or override is OverrideKind.BLOCK:
        reasons.append(Reason.MANUAL)
    violations = _NO_VIOLATIONS
    if device is not None and not device.compliant:
        reasons.append(Reason.COMPLIANCE)
        violations = device.violation_kinds
    if unlinked is not None or not reachable:
        _registration(reasons, unlinked, prefs, new=new, reachable=reachable)
    if prefs.max_devices_per_mailbox is not None or prefs.max_mailboxes_per_device is not None:
        _limits(reasons, row, snap, prefs, new)
    found = frozenset(reasons) if reasons else _NO_REASONS
    linked = device.id if device is not None and unlinked is None else None
    verdict = _conclude(row.wipe, override, found, prefs.compliance_overrides_allow)
    return Assessment(verdict, found, violations, linked, unlinked, pool, prefs.refusal_style)


def _registration(
    reasons: list[Reason],
    unlinked: UnlinkCause | None,
    prefs: Preferences,
    *,
    new: bool,
    reachable: bool,
) -> None:
    """AUTO_BLOCK, or during a registry outage the new-device preference."""
    if new and not reachable:
        if prefs.new_device_access_when_registry_unreachable is NewDeviceAccess.BLOCK:
            reasons.append(Reason.REGISTRY_UNREACHABLE)
    elif unlinked is not None and prefs.auto_block_unregistered:
        reasons.append(Reason.AUTO_BLOCK)


def _conclude(
    wipe: WipeStatus,
    override: OverrideKind | None,
    reasons: frozenset[Reason],
    compliance_first: bool = False,
) -> Verdict:
    if wipe in _WIPE_ANSWER:
        return Verdict.WIPE
    if wipe is WipeStatus.WIPED or Reason.NO_BACKEND in reasons or Reason.MIXED_BACKEND in reasons:
        return Verdict.REFUSE
    if override is OverrideKind.BLOCK:
        return Verdict.REFUSE
    if override is OverrideKind.ALLOW:
        if compliance_first and Reason.COMPLIANCE in reasons:
            return Verdict.REFUSE  # compliance_overrides_allow: row 6 beats row 5
        return Verdict.FORWARD
    return Verdict.REFUSE if reasons & _REFUSING else Verdict.FORWARD


def _mixes_backend(row: Row, pool: Pool, device: Device | None, snap: Snapshot) -> bool:
    """Whether the established type of the row's device (managed device, else
    DeviceId) differs from ``pool``'s type."""
    if len(snap.backend_types) < 2:
        return False  # one backend type configured: nothing to mix
    established = snap.established_for(device, row.key.device_id)
    return established is not None and established.backend_type != pool.type


def _rank(row: Row, other: str) -> tuple[float, str]:
    """Counted rows by when the backend first accepted them; unverified last."""
    verified = row.verified_at
    return (_UNVERIFIED if verified is None else verified), other


_UNVERIFIED = float("inf")


def _counts_before(peers: list[Association], row: Row, mine: tuple[float, str], side: int) -> int:
    """How many counted peers (not ``row``) rank before ``mine``; ``side`` picks
    the other key part (0: DeviceId, 1: user)."""
    key = row.key
    return sum(1 for p in peers if p.key != key and p.counted and _rank(p, p.key[side]) < mine)


def _limits(reasons: list[Reason], row: Row, snap: Snapshot, prefs: Preferences, new: bool) -> None:
    """Rank ``row`` among its mailbox's devices and its device's mailboxes
    (a throwaway DeviceId is never limited)."""
    key, others = row.key, 0 if new else 1
    if key.device_id in THROWAWAY_DEVICE_IDS:
        return
    limit = prefs.max_devices_per_mailbox
    if limit is not None and snap.device_count(key.user) - others >= limit:
        mine = _rank(row, key.device_id)
        if _counts_before(snap.of_user(key.user), row, mine, 0) >= limit:
            reasons.append(Reason.PER_MAILBOX_LIMIT)
    limit = prefs.max_mailboxes_per_device
    if limit is not None and snap.mailbox_count(key.device_id) - others >= limit:
        mine = _rank(row, key.user)
        if _counts_before(snap.on_device(key.device_id), row, mine, 1) >= limit:
            reasons.append(Reason.PER_DEVICE_LIMIT)


def decision_of(assessment: Assessment, row: Row) -> Decision:
    """The ``Decision`` an assessment of ``row`` stands for."""
    verdict, reasons, violations = assessment.verdict, assessment.reasons, assessment.violations
    if verdict is Verdict.FORWARD and assessment.pool is not None:
        return _forward(assessment.pool.name, assessment.pool.type, reasons, violations)
    if verdict is Verdict.WIPE:
        return Wipe(_account_only(row), reasons, violations)
    return _refuse(refusal_status(reasons), reasons, violations, assessment.style)


# Decisions are immutable values: equal ones are shared (a bounded memo, no state).
@lru_cache(maxsize=4096)
def _forward(
    pool: str, backend: str, reasons: frozenset[Reason], violations: frozenset[str]
) -> Forward:
    return Forward(pool, backend, reasons, violations)


@lru_cache(maxsize=4096)
def _refuse(
    status: CommonStatus,
    reasons: frozenset[Reason],
    violations: frozenset[str],
    style: RefusalStyle,
) -> Refuse:
    return Refuse(status, reasons, violations, style)


def stored_decision(row: Association, style: RefusalStyle = RefusalStyle.STATUS) -> Decision:
    """The decision recorded on ``row`` (registry outage: keep the last one); a
    refusal in ``style``.

    The wipe state is local, not registry data, so it still comes first.
    """
    if row.wipe in _WIPE_ANSWER:
        return Wipe(_account_only(row), row.reasons | {Reason.WIPE}, row.violations)
    blocked = CommonStatus.DeviceIsBlockedForThisUser
    if row.wipe is WipeStatus.WIPED:
        return Refuse(blocked, row.reasons | {Reason.WIPE}, style=style)
    if row.verdict is Verdict.FORWARD and row.pool is not None:
        return Forward(row.pool, row.backend_type or "", row.reasons, row.violations)
    if row.verdict is Verdict.REFUSE:
        return Refuse(refusal_status(row.reasons), row.reasons, row.violations, style)
    return Refuse(blocked, row.reasons, row.violations, style)


def verdict_of(decision: Decision) -> Verdict:
    """The ``Verdict`` a decision is stored as."""
    if isinstance(decision, Forward):
        return Verdict.FORWARD
    return Verdict.WIPE if isinstance(decision, Wipe) else Verdict.REFUSE


def _account_only(row: Row) -> bool:
    return row.override is not None and row.override.account_only
