"""Reason codes: which refuse, which status a refusal carries, display order.

The codes themselves are ``sentry.model.Reason`` (the association stores
them). A refusal carries 177 MaximumDevicesReached when the per-mailbox limit
is its only reason (an allow rule's RULE_ALLOW, which refuses nothing, aside):
177 means "too many devices for this user" (MS-ASCMD
2.2.2), which is exactly that limit. Everything else, the per-device limit
(too many mailboxes on one device) included, carries 129
DeviceIsBlockedForThisUser. Because of the table's order, a refused row whose
only reason is the per-mailbox limit was refused by it, so the status can be
recomputed from a stored reason set alone.
"""

from __future__ import annotations

from collections.abc import Iterable

from sentry.eas.status import CommonStatus
from sentry.model import Reason

__all__ = ["LIMIT_REASONS", "REASON_ORDER", "ordered", "refusal_status"]

LIMIT_REASONS: frozenset[Reason] = frozenset({Reason.PER_MAILBOX_LIMIT, Reason.PER_DEVICE_LIMIT})
REASON_ORDER: dict[Reason, int] = {reason: i for i, reason in enumerate(Reason)}


_MAILBOX_LIMIT_ONLY = frozenset({Reason.PER_MAILBOX_LIMIT})
_WITH_ALLOW_RULE = frozenset({Reason.PER_MAILBOX_LIMIT, Reason.RULE_ALLOW})


def refusal_status(reasons: frozenset[Reason]) -> CommonStatus:
    """177 when the per-mailbox limit is the only reason (an allow rule, which
    refuses nothing, aside), else 129."""
    if reasons in (_MAILBOX_LIMIT_ONLY, _WITH_ALLOW_RULE):
        return CommonStatus.MaximumDevicesReached
    return CommonStatus.DeviceIsBlockedForThisUser


def ordered(reasons: Iterable[Reason]) -> list[Reason]:
    """Reasons in decision-table order (for logs, lists and messages)."""
    return sorted(reasons, key=REASON_ORDER.__getitem__)
