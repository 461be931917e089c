"""Reason codes: which refuse, which status a refusal carries, display order.

The codes themselves are ``sentry.model.Reason`` (the association stores
them). A refusal carries 177 MaximumDevicesReached when a device limit is the
only refusing reason, else 129 DeviceIsBlockedForThisUser. Because of the
table's order, a refused row whose reasons are all limits was refused by a
limit, so the status can be recomputed from a stored reason set alone.
"""

from __future__ import annotations

from collections.abc import Iterable

from sentry.eas.status import CommonStatus
from sentry.model import Reason

__all__ = ["LIMIT_REASONS", "REASON_ORDER", "ordered", "refusal_status"]

LIMIT_REASONS: frozenset[Reason] = frozenset({Reason.PER_MAILBOX_LIMIT, Reason.PER_DEVICE_LIMIT})
REASON_ORDER: dict[Reason, int] = {reason: i for i, reason in enumerate(Reason)}


def refusal_status(reasons: frozenset[Reason]) -> CommonStatus:
    """129, or 177 when the only reasons are device limits."""
    if reasons and reasons <= LIMIT_REASONS:
        return CommonStatus.MaximumDevicesReached
    return CommonStatus.DeviceIsBlockedForThisUser


def ordered(reasons: Iterable[Reason]) -> list[Reason]:
    """Reasons in decision-table order (for logs, lists and messages)."""
    return sorted(reasons, key=REASON_ORDER.__getitem__)
