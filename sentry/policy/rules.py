"""The decision table of design.md §4, applied to one association row.

Approach. ``assess`` first collects EVERY reason that applies (rows 1-9 and
the registry-outage rule), then ``_conclude`` reads them in table order:

1. wipe pending/failed -> answer with the wipe; wiped -> refuse   WIPE
2. no pool routes the mailbox -> refuse, always                      NO_BACKEND
3. the device's established backend type differs -> refuse, always   MIXED_BACKEND
4. admin Block -> refuse; 5. admin Allow -> forward (beats 6-9;    MANUAL
   with the preference ``compliance_overrides_allow``, 7 beats it)
6. the first device access rule that matches (``access_rules``):
   block -> refuse                                                   RULE_BLOCK
   quarantine -> refuse until an admin allows or blocks the row      QUARANTINE
   allow -> the row is exempt from 8 (auto-block), nothing else      RULE_ALLOW
7. the device is managed and non-compliant -> refuse                 COMPLIANCE
8. unlinked and auto-block on (and no allow rule) -> refuse          AUTO_BLOCK
9. over max devices per mailbox / mailboxes per device -> refuse     *_LIMIT (177)
10. otherwise forward to the routed pool.

Device access rules follow Exchange's ABQ order: a personal exemption (the
admin's Allow or Block of this row, a pre-approval) beats the rules, and the
rules beat the default access level (here auto-block of unregistered
devices). So rules sit after the hard refusals (1-3, which nothing lifts)
and the admin's own word on the row (4-5: allowing a quarantined row is what
quarantine is for), and before compliance, auto-block and the limits. An
allow rule lifts only auto-block: it says "this kind of device is welcome",
not "this device is compliant" nor "this mailbox may have more devices".
The matched rule's name is recorded on the row (``access_rule``) with its
reason, also when an admin override wins over it.

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
    DeviceInformation,
    NewDeviceAccess,
    Override,
    OverrideKind,
    Pool,
    Preferences,
    Reason,
    RefusalStyle,
    RuleAction,
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
# Rows 6-9 and the outage rule: they refuse unless an admin allowed the row.
_REFUSING = LIMIT_REASONS | {
    Reason.RULE_BLOCK,
    Reason.QUARANTINE,
    Reason.COMPLIANCE,
    Reason.AUTO_BLOCK,
    Reason.REGISTRY_UNREACHABLE,
}
_RULE_REASON = {
    RuleAction.ALLOW: Reason.RULE_ALLOW,
    RuleAction.BLOCK: Reason.RULE_BLOCK,
    RuleAction.QUARANTINE: Reason.QUARANTINE,
}
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
    @property
    def device_type(self) -> str: ...
    @property
    def user_agent(self) -> str | None: ...
    @property
    def protocol_version(self) -> str | None: ...
    @property
    def device_info(self) -> DeviceInformation | None: ...


class Candidate(NamedTuple):
    """A row not stored yet (first sight): cheap to build, read like a ``Row``.
    What the device said (DeviceType...) is what the device access rules see."""

    key: AssociationKey
    first_seen: float
    wipe: WipeStatus = WipeStatus.NONE
    override: Override | None = None
    manual_link: str | None = None
    verified_at: float | None = None
    device_type: str = ""
    user_agent: str | None = None
    protocol_version: str | None = None
    device_info: DeviceInformation | None = None


class Assessment(NamedTuple):
    """The table's result for one row, before it becomes a ``Decision``."""

    verdict: Verdict
    reasons: frozenset[Reason]
    violations: frozenset[str]
    device: str | None  # the linked managed device
    unlinked: UnlinkCause | None
    pool: Pool | None
    style: RefusalStyle = RefusalStyle.STATUS  # of a refusal
    rule: str | None = None  # the device access rule that matched


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
    rule = snap.rule_for(row) if snap.access_rules else None
    if rule is not None:
        reasons.append(_RULE_REASON[rule.action])
    violations = _NO_VIOLATIONS
    if device is not None and not device.compliant:
        reasons.append(Reason.COMPLIANCE)
        violations = device.violation_kinds
    if unlinked is not None or not reachable:
        exempt = rule is not None and rule.action is RuleAction.ALLOW
        _registration(reasons, unlinked, prefs, new=new, reachable=reachable, exempt=exempt)
    if prefs.max_devices_per_mailbox is not None or prefs.max_mailboxes_per_device is not None:
        _limits(reasons, row, snap, prefs, new)
    found = frozenset(reasons) if reasons else _NO_REASONS
    linked = device.id if device is not None and unlinked is None else None
    verdict = _conclude(row.wipe, override, found, prefs.compliance_overrides_allow)
    name = None if rule is None else rule.name
    style = prefs.refusal_style
    return Assessment(verdict, found, violations, linked, unlinked, pool, style, name)


def _registration(
    reasons: list[Reason],
    unlinked: UnlinkCause | None,
    prefs: Preferences,
    *,
    new: bool,
    reachable: bool,
    exempt: bool = False,
) -> None:
    """AUTO_BLOCK (not for a row an allow rule ``exempt``s), or during a
    registry outage the new-device preference."""
    if new and not reachable:
        if prefs.new_device_access_when_registry_unreachable is NewDeviceAccess.BLOCK:
            reasons.append(Reason.REGISTRY_UNREACHABLE)
    elif unlinked is not None and prefs.auto_block_unregistered and not exempt:
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
    rule = assessment.rule
    if verdict is Verdict.FORWARD and assessment.pool is not None:
        return _forward(assessment.pool.name, assessment.pool.type, reasons, violations, rule)
    if verdict is Verdict.WIPE:
        return Wipe(_account_only(row), reasons, violations, rule=rule)
    return _refuse(refusal_status(reasons), reasons, violations, assessment.style, rule)


# Decisions are immutable values: equal ones are shared (a bounded memo, no state).
@lru_cache(maxsize=4096)
def _forward(
    pool: str,
    backend: str,
    reasons: frozenset[Reason],
    violations: frozenset[str],
    rule: str | None = None,
) -> Forward:
    return Forward(pool, backend, reasons, violations, rule)


@lru_cache(maxsize=4096)
def _refuse(
    status: CommonStatus,
    reasons: frozenset[Reason],
    violations: frozenset[str],
    style: RefusalStyle,
    rule: str | None = None,
) -> Refuse:
    return Refuse(status, reasons, violations, style, rule)


def stored_decision(row: Association, style: RefusalStyle = RefusalStyle.STATUS) -> Decision:
    """The decision recorded on ``row`` (registry outage: keep the last one); a
    refusal in ``style``.

    The wipe state is local, not registry data, so it still comes first.
    """
    rule = row.access_rule
    if row.wipe in _WIPE_ANSWER:
        return Wipe(_account_only(row), row.reasons | {Reason.WIPE}, row.violations, rule=rule)
    blocked = CommonStatus.DeviceIsBlockedForThisUser
    if row.wipe is WipeStatus.WIPED:
        return Refuse(blocked, row.reasons | {Reason.WIPE}, style=style, rule=rule)
    if row.verdict is Verdict.FORWARD and row.pool is not None:
        return Forward(row.pool, row.backend_type or "", row.reasons, row.violations, rule)
    if row.verdict is Verdict.REFUSE:
        return Refuse(refusal_status(row.reasons), row.reasons, row.violations, style, rule)
    return Refuse(blocked, row.reasons, row.violations, style, rule)


def verdict_of(decision: Decision) -> Verdict:
    """The ``Verdict`` a decision is stored as."""
    if isinstance(decision, Forward):
        return Verdict.FORWARD
    return Verdict.WIPE if isinstance(decision, Wipe) else Verdict.REFUSE


def _account_only(row: Row) -> bool:
    return row.override is not None and row.override.account_only
